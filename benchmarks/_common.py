"""What every benchmark here shares: the machine description and onnxruntime sessions through the Runner.

Import as ``from _common import machine, session`` (Python puts a script's own folder on sys.path).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED_NOTE = ("shared machine: other jobs ran at the same time, so absolute times are noisy; "
               "ratios come from interleaved rounds in one process")


def load_average() -> tuple[float, float, float] | None:
    """1, 5 and 15-minute load averages (what ``uptime`` prints), None where the OS has none."""
    try:
        return tuple(os.getloadavg())
    except (OSError, AttributeError):
        return None


def machine(note: str = SHARED_NOTE) -> dict:
    """``edgezoo.profile.latency.describe_machine()``, the load average at the start, torch's version (when it
    is installed) and a note saying the machine was not quiet."""
    from edgezoo.profile.latency import describe_machine

    info = describe_machine()
    info["load_average_at_start"] = load_average()
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    info["note"] = note
    return info


def session(model, threads: int = 1, graph_optimization: str = "all"):
    """An active onnxruntime Runner (``edgezoo.runtimes.onnxruntime.OrtRunner``) for a path, bytes or an
    ``onnx.ModelProto``: ``threads`` intra-op threads, one inter-op thread. Deactivate it when done (or use
    ``with``)."""
    from edgezoo.runtimes.onnxruntime import OrtRunner

    src = model.SerializeToString() if hasattr(model, "SerializeToString") else model
    return OrtRunner(src, threads=threads, graph_optimization=graph_optimization).activate()
