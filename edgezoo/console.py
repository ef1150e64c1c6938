"""The terminals edgezoo prints to, and number formatting shared by the commands.

Its own module so that command modules do not import ``edgezoo.cli`` (which imports them).
"""

from __future__ import annotations

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def fmt_count(n: float | None, unit: str = "") -> str:
    if n is None:
        return "-"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"
