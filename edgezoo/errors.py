"""The errors users see.

Every error that bad input can cause is an ``EdgezooError``: the CLI prints its message (and hint) in one
line, exits non-zero and shows no traceback unless ``--debug``. Anything else is a bug in edgezoo.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class EdgezooError(Exception):
    """A problem with the user's input or environment, with what to do about it."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UnknownModelError(EdgezooError, KeyError):
    def __init__(self, name: str, known: Iterable[str]):
        close = difflib.get_close_matches(name.lower(), list(known), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see `edgezoo list` for the names"
        super().__init__(f"unknown model '{name}'", hint)
        self.name = name
        self.suggestions = close


class WeightsError(EdgezooError):
    """A checkpoint that does not fit the model it is loaded into."""


class InputError(EdgezooError):
    """A bad file, shape, size or option value."""


class MissingDependencyError(EdgezooError):
    """An optional dependency (or device) that this command needs is not installed."""

    def __init__(self, what: str, install: str, why: str | None = None):
        msg = f"{what} is not installed" + (f" ({why})" if why else "")
        super().__init__(msg, f"install it with: {install}")


class VerificationError(EdgezooError):
    """A conversion step whose output disagrees with the step before it beyond tolerance."""

    exit_code = 3


def require_torch() -> None:
    """Registry models need PyTorch; .onnx files do not. Say so plainly when it is missing."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "PyTorch", "pip install 'edgezoo[torch]'",
            "registry models need it; .onnx files run on onnxruntime without it",
        ) from None
