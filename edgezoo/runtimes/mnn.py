"""MNN (Alibaba's mobile runtime): .mnn files through MNN's Python API (``MNN.Interpreter`` and a session).

Threads: the session is created with ``numThread`` and the count is read back from the session
(``getSessionInfo(THREAD_NUMBER)``; the Python binding hands the C++ int back in a float's bits, so the bits
are read as an int). Layout: a model converted from ONNX keeps NCHW (MNN's "Caffe" dimension type), one from
TensorFlow/TFLite is NHWC; ``TensorInfo.layout`` says which, and feeds are taken in that layout. MNN resizes
a session to any batch, so the batch is reported as dynamic. The .mnn file keeps no edgezoo metadata (MNN's
converter has no place for it). No torch here; MNN is imported when a runner is made.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from edgezoo.errors import InputError, MissingDependencyError
from edgezoo.runtimes.base import (Runner, TensorInfo, check_model_file, check_threads, first_line, guess_layout,
                                   native_output_silenced)
from edgezoo.runtimes.descriptor import FileKind, RuntimeDescriptor
from edgezoo.runtimes.filecheck import flatbuffer_root

SUFFIXES = (".mnn",)
THREAD_NUMBER = 4  # MNN::Interpreter::SessionInfoCode
DIM_TENSORFLOW = 0  # MNN::Tensor::DimensionType: TENSORFLOW (NHWC), CAFFE (NCHW), CAFFE_C4 (NC4HW4)


def import_mnn():
    try:
        with native_output_silenced(fds=(1,)):  # MNN prints the CPU's features on import
            import MNN
    except ImportError:
        raise MissingDependencyError("MNN", "pip install 'edgezoo[mnn]'", "the mnn runtime needs it") from None
    return MNN


def check_mnn(path: Path) -> None:
    """An .mnn file is a FlatBuffers ``Net`` (no file identifier): its root offset must lie inside it."""
    flatbuffer_root(path, "an MNN model", None)


def _dtypes(mnn) -> list[tuple[Any, np.dtype]]:
    return [(mnn.Halide_Type_Float, np.dtype(np.float32)), (mnn.Halide_Type_Int, np.dtype(np.int32)),
            (mnn.Halide_Type_Uint8, np.dtype(np.uint8)), (mnn.Halide_Type_Double, np.dtype(np.float64)),
            (mnn.Halide_Type_Int64, np.dtype(np.int64))]


class MNNRunner(Runner):
    """An .mnn model in one MNN session on the CPU."""

    name = "mnn"

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        super().__init__()
        check_threads(threads)
        self.path = Path(path)
        if self.path.suffix.lower() not in SUFFIXES:
            raise InputError(f"mnn runs .mnn files; {self.path} is not one")
        check_model_file(self.path, "an MNN model")
        self.threads = threads
        self._mnn = import_mnn()
        self.interpreter = self.session = None
        self._names_in: list[str] = []
        self._names_out: list[str] = []
        self._threads_read: int | None = None

    def _activate(self) -> None:
        mnn = self._mnn
        with native_output_silenced() as quiet:
            try:
                self.interpreter = mnn.Interpreter(os.fspath(self.path))
                config: dict[str, Any] = {"backend": "CPU"}
                if self.threads is not None:
                    config["numThread"] = int(self.threads)
                self.session = self.interpreter.createSession(config)
            except Exception as e:
                error = first_line(e)
            else:
                error = None
        if error is not None or self.session is None:
            self.interpreter = self.session = None
            raise InputError(f"mnn cannot load {self.path}: {error or first_line(Exception(quiet.text))}",
                             "is it a complete .mnn file from MNN's converter?")
        self._names_in = list(self.interpreter.getSessionInputAll(self.session))
        self._names_out = list(self.interpreter.getSessionOutputAll(self.session))
        self._threads_read = self._read_threads()

    def _read_threads(self) -> int | None:
        try:
            bits = struct.unpack("<i", struct.pack("<f", self.interpreter.getSessionInfo(self.session, THREAD_NUMBER)))[0]
        except Exception:  # an MNN without this query
            return None
        return bits if 0 < bits <= 4096 else None

    def _deactivate(self) -> None:
        self.interpreter = self.session = None
        self._names_in, self._names_out = [], []

    def _dtype(self, tensor) -> np.dtype:
        kind = tensor.getDataType()
        return next((d for t, d in _dtypes(self._mnn) if kind == t), np.dtype(np.float32))

    def _halide(self, dtype: np.dtype):
        return next(t for t, d in _dtypes(self._mnn) if d == dtype)

    def _layout(self, tensor) -> str:
        return "NHWC" if tensor.getDimensionType() == DIM_TENSORFLOW else "NCHW"

    def _host_dim(self, tensor):
        mnn = self._mnn
        return mnn.Tensor_DimensionType_Tensorflow if tensor.getDimensionType() == DIM_TENSORFLOW \
            else mnn.Tensor_DimensionType_Caffe

    def _info(self, name: str, tensor, batch_free: bool) -> TensorInfo:
        dims = [int(d) for d in tensor.getShape()]
        shape = tuple(("batch" if batch_free and i == 0 else (d if d > 0 else None)) for i, d in enumerate(dims))
        layout = self._layout(tensor) if len(dims) == 4 else None
        return TensorInfo(name, shape, self._dtype(tensor), layout or guess_layout(shape))

    def _inputs(self) -> list[TensorInfo]:
        return [self._info(n, self.interpreter.getSessionInput(self.session, n), True) for n in self._names_in]

    def _outputs(self) -> list[TensorInfo]:
        return [self._info(n, self.interpreter.getSessionOutput(self.session, n), True) for n in self._names_out]

    def _infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        mnn, it, s = self._mnn, self.interpreter, self.session
        if sorted(feeds) != sorted(self._names_in):
            raise InputError(f"mnn: inputs {sorted(feeds)} do not match the model's {self._names_in}")
        tensors = {n: it.getSessionInput(s, n) for n in self._names_in}
        resized = False
        for name, tensor in tensors.items():
            arr = feeds[name]
            now = tuple(int(d) for d in tensor.getShape())
            if arr.ndim != len(now):
                raise InputError(f"input '{name}' of shape {tuple(arr.shape)} does not fit the model's "
                                 f"{self._info(name, tensor, True).describe()}")
            if tuple(arr.shape) != now:
                it.resizeTensor(tensor, tuple(int(d) for d in arr.shape))
                resized = True
        try:
            if resized:
                it.resizeSession(s)
            for name, tensor in tensors.items():
                dtype = self._dtype(tensor)
                arr = np.ascontiguousarray(feeds[name], dtype=dtype)
                host = mnn.Tensor(tuple(arr.shape), self._halide(dtype), arr, self._host_dim(tensor))
                tensor.copyFrom(host)
            code = it.runSession(s)
        except Exception as e:
            raise InputError(f"mnn cannot run {self.path}: {first_line(e)}",
                             "check the input size and batch against the model's inputs") from None
        if code not in (0, None):  # MNN's ErrorCode: NO_ERROR is 0
            raise InputError(f"mnn cannot run {self.path}: error code {code}",
                             "check the input size and batch against the model's inputs")
        outs = []
        for name in self._names_out:
            out = it.getSessionOutput(s, name)
            shape = tuple(int(d) for d in out.getShape())
            dtype = self._dtype(out)
            host = mnn.Tensor(shape, self._halide(dtype), np.zeros(shape, dtype), self._host_dim(out))
            out.copyToHostTensor(host)
            outs.append(np.array(host.getNumpyData(), dtype=dtype).reshape(shape))
        return outs

    def settings(self) -> dict[str, Any]:
        return {"threads": self._threads_read if self.is_active else self.threads, "threads_asked": self.threads,
                "backend": "CPU"}

    def model_size_bytes(self) -> int | None:
        return self.path.stat().st_size

    def describe(self) -> str:
        n = self._threads_read if self.is_active else self.threads
        thr = f", {n} thread{'s' if n != 1 else ''}" if n else ""
        return f"MNN {self._mnn.version()} (CPU{thr})"


MNN_FILE = FileKind("mnn", SUFFIXES, "an .mnn file", ".mnn files", check=check_mnn)


def open_file(model, threads=None) -> MNNRunner:
    return MNNRunner(model, threads=threads)


DESCRIPTOR = RuntimeDescriptor("mnn", (), (MNN_FILE,), open_file, extra="mnn")

__all__ = ["MNNRunner", "import_mnn", "check_mnn", "DESCRIPTOR"]
