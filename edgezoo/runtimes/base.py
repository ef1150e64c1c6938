"""The one interface every backend implements, after Polygraphy's runners: activate, infer, deactivate.

A comparison across backends is then a loop over runners. Construction is cheap and checks what it can
(file exists, backend installed); ``activate`` does the expensive part (load the model, build a session);
``infer`` runs one batch; ``deactivate`` frees it. No torch import here: this module is on the device path.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from edgezoo.errors import EdgezooError, InputError

Dim = int | str | None  # a fixed size, a symbolic name ("batch") or unknown


@dataclass(frozen=True)
class TensorInfo:
    """One input or output: name, shape (dynamic dimensions as str or None), numpy dtype and, for images,
    the layout as the file has it ("NCHW" or "NHWC"; None when not an image or not known).

    The dtype is what the runner takes and returns through ``infer``: a runner that quantizes for its
    backend (LiteRT's int8 inputs) still reports float32 here."""

    name: str
    shape: tuple[Dim, ...]
    dtype: np.dtype
    layout: str | None = field(default=None, compare=False)  # derived from the shape: not part of equality

    @property
    def dynamic(self) -> bool:
        return any(not isinstance(d, int) for d in self.shape)

    def describe(self) -> str:
        dims = "x".join(str(d) if d is not None else "?" for d in self.shape)
        return f"{self.name}: {np.dtype(self.dtype).name}[{dims}]"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": np.dtype(self.dtype).name}


class Runner(abc.ABC):
    """A model on one backend. Use as a context manager, or call activate()/deactivate() yourself."""

    #: short backend name shown in tables and JSON ("onnxruntime", "torch", "tensorrt")
    name: str = "runner"

    def __init__(self) -> None:
        self._active = False

    # -- lifecycle ---------------------------------------------------------------------------------------
    @property
    def is_active(self) -> bool:
        return self._active

    def activate(self) -> "Runner":
        """Load the model; idempotent."""
        if not self._active:
            self._activate()
            self._active = True
        return self

    def deactivate(self) -> None:
        """Free the model; idempotent, and safe after a failed activate."""
        if self._active:
            self._active = False
            self._deactivate()

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    # -- description and inference ---------------------------------------------------------------------
    @property
    def inputs(self) -> list[TensorInfo]:
        self._require_active()
        return self._inputs()

    @property
    def outputs(self) -> list[TensorInfo]:
        self._require_active()
        return self._outputs()

    def infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch; returns the outputs in the order of ``outputs``."""
        self._require_active()
        return self._infer(feeds)

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """Raise InputError when ``feeds`` cannot fit this model's inputs (names, rank, fixed dims)."""
        infos = {i.name: i for i in self.inputs}
        missing = set(infos) - set(feeds)
        extra = set(feeds) - set(infos)
        if missing or extra:
            raise InputError(f"{self.name}: inputs {sorted(feeds)} do not match the model's {sorted(infos)}")
        for name, arr in feeds.items():
            info = infos[name]
            if arr.ndim != len(info.shape) or any(
                isinstance(d, int) and d > 0 and d != s for d, s in zip(info.shape, arr.shape)
            ):
                raise InputError(f"input '{name}' of shape {tuple(arr.shape)} does not fit the model's "
                                 f"{info.describe()}")

    def _require_active(self) -> None:
        if not self._active:
            raise EdgezooError(f"{self.name} runner is not active", "call activate() or use it in a `with` block")

    # -- what a backend implements ---------------------------------------------------------------------
    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _deactivate(self) -> None: ...

    @abc.abstractmethod
    def _inputs(self) -> list[TensorInfo]: ...

    @abc.abstractmethod
    def _outputs(self) -> list[TensorInfo]: ...

    @abc.abstractmethod
    def _infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...

    def model_metadata(self):
        """The model's edgezoo metadata (``edgezoo.onnx_meta.ModelMetadata``) when it has any, else None."""
        return None

    def model_size_bytes(self) -> int | None:
        """Size of the model as stored (file or serialized bytes, or parameter bytes); None if unknown."""
        return None

    def describe(self) -> str:
        return self.name

    def settings(self) -> dict[str, Any]:
        """What actually ran, read back from the backend where it allows (threads, precision, streams...)."""
        return {}


def first_line(e: BaseException) -> str:
    """The first non-empty line of an exception message (backends tend to write pages)."""
    for line in str(e).splitlines():
        if line.strip():
            return line.strip()
    return type(e).__name__


def check_threads(threads: int | None) -> None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1):
        raise InputError(f"threads must be a whole number of at least 1, got {threads!r}")


def check_model_file(path, what: str) -> None:
    """Cheap checks with clear messages before a backend gives its own (longer) ones."""
    from edgezoo.fileio import check_model_path

    check_model_path(path, what)


def guess_layout(shape: Sequence[Any], channels: int | None = None) -> str | None:
    """"NCHW" or "NHWC" for a rank-4 image shape, from where the channel count sits; None if it cannot tell.

    ``channels`` (from the model's metadata) decides when given; otherwise a small last axis (1, 3 or 4)
    beside a larger second axis means channels-last, as TFLite files are."""
    if len(shape) != 4:
        return None
    c1, c3 = shape[1], shape[3]
    if channels is not None:
        if c1 == channels and c3 != channels:
            return "NCHW"
        if c3 == channels and c1 != channels:
            return "NHWC"
    small = (1, 3, 4)
    if isinstance(c1, int) and c1 in small and not (isinstance(c3, int) and c3 in small):
        return "NCHW"
    if isinstance(c3, int) and c3 in small and not (isinstance(c1, int) and c1 in small):
        return "NHWC"
    if isinstance(c1, int) and c1 in small:
        return "NCHW"
    return None


def shape_of(dims: Sequence[Any]) -> tuple[Dim, ...]:
    """Normalise a backend's shape: positive ints stay, everything else (-1, 0, names) becomes str/None."""
    out: list[Dim] = []
    for d in dims:
        if isinstance(d, (int, np.integer)) and d > 0:
            out.append(int(d))
        elif isinstance(d, str) and d:
            out.append(d)
        else:
            out.append(None)
    return tuple(out)


class native_output_silenced:
    """Point file descriptors 1 and 2 at a scratch file while a backend's native code runs (MNN prints its
    CPU features on import; converters print progress): lines the user did not ask for. Python's own
    exceptions are untouched; what the native side wrote is kept in ``text`` for an error message."""

    def __init__(self, fds: tuple[int, ...] = (1, 2)) -> None:
        self.fds = fds
        self.text = ""

    def __enter__(self) -> "native_output_silenced":
        import sys
        import tempfile

        sys.stdout.flush()
        sys.stderr.flush()
        self._sink = tempfile.TemporaryFile()
        self._saved = [(fd, os.dup(fd)) for fd in self.fds]
        for fd in self.fds:
            os.dup2(self._sink.fileno(), fd)
        return self

    def __exit__(self, *exc: object) -> None:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in self._saved:
            os.dup2(saved, fd)
            os.close(saved)
        self._sink.seek(0)
        self.text = self._sink.read()[-4000:].decode(errors="replace")
        self._sink.close()
