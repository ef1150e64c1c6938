"""Peak resident memory of this process around a measurement (Linux; None elsewhere).

Linux keeps the peak (VmHWM) since process start; writing "5" to /proc/self/clear_refs resets it, so the
peak can be read per benchmark configuration. Where that is not allowed, the process-lifetime peak is
reported instead and ``reset_peak`` says so by returning False.
"""

from __future__ import annotations

import resource
import sys


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset the peak-RSS counter; True when the next ``peak_rss_bytes`` covers only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int | None:
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def rss_bytes() -> int | None:
    kb = _status_kb("VmRSS")
    return kb * 1024 if kb is not None else None
