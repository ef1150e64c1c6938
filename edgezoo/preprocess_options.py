"""The one grammar of the preprocessing options (`--mean`, `--std`, `--labels`, `--layout`) that `serve`
and `export` share. No torch here."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from edgezoo.errors import InputError

LAYOUTS = ("NCHW", "NHWC")


def parse_floats(text: Optional[str | Sequence[float]], what: str, n: Optional[int] = None) -> Optional[tuple]:
    """'0.485,0.456,0.406' -> (0.485, 0.456, 0.406); a sequence of numbers passes through. ``what`` names
    the option (without dashes) in the error; ``n``: the count required."""
    if text is None:
        return None
    if isinstance(text, str):
        try:
            vals = tuple(float(x) for x in text.replace(" ", "").split(",") if x)
        except ValueError:
            raise InputError(f"--{what} must be comma-separated numbers; got '{text}'") from None
    else:
        try:
            vals = tuple(float(x) for x in text)
        except (TypeError, ValueError):
            raise InputError(f"--{what} must be comma-separated numbers; got '{text}'") from None
    if not vals or (n is not None and len(vals) != n):
        raise InputError(f"--{what} needs {n or 'some'} comma-separated numbers; got '{text}'")
    return vals


def read_labels(path: Path | str) -> list[str]:
    """A text file, one class label per line (blank lines skipped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read labels from {path}: {e}") from None
    return [ln.strip() for ln in lines if ln.strip()]


def parse_layout(text: Optional[str]) -> Optional[str]:
    if text is None:
        return None
    layout = text.strip().upper()
    if layout not in LAYOUTS:
        raise InputError(f"--layout '{text}' is not a layout", f"use {' or '.join(LAYOUTS)}")
    return layout
