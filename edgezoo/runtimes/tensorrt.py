"""TensorRT: run a serialized engine with TensorRT's own Python API (10.x).

The runner takes an engine file, engine bytes, or a loader (a function returning engine bytes, called on
activate): building an engine from ONNX is the export side's job (``edgezoo.export.loaders.engine_loader``),
so this module does not import edgezoo.export.

``tensorrt`` and ``cuda-python`` are imported lazily: neither is a dependency of edgezoo, and both need an
NVIDIA GPU. When they are missing the runner says so in one line at construction, before any work.
Untested here (no GPU, no TensorRT in this environment); the tests cover the missing-dependency path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgezoo.errors import InputError, MissingDependencyError
from edgezoo.runtimes.base import Runner, TensorInfo, guess_layout, shape_of
from edgezoo.runtimes.descriptor import FileKind, RuntimeDescriptor

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
GPU_NOTE = "TensorRT needs an NVIDIA GPU with a CUDA driver"


def import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise MissingDependencyError("TensorRT", "pip install tensorrt cuda-python", GPU_NOTE) from None
    return tensorrt


def import_cudart():
    """cuda-python's runtime bindings (the module moved in cuda-python 12.6)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise MissingDependencyError("cuda-python", "pip install cuda-python",
                                         "the TensorRT runner moves buffers with it") from None
    return cudart


def _cuda(result):
    """cuda-python returns (error, *values); raise on error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise InputError(f"CUDA call failed: {err}", GPU_NOTE)
    return values[0] if len(values) == 1 else values


class TrtRunner(Runner):
    """A TensorRT engine: a serialized engine file, its bytes, or a loader that returns them."""

    name = "tensorrt"

    def __init__(self, engine: str | os.PathLike | bytes | Callable[[], bytes], max_batch: int = 32) -> None:
        super().__init__()
        self.path: Path | None = None
        self._loader: Callable[[], bytes] | None = None
        self._serialized: bytes | None = None
        if isinstance(engine, (bytes, bytearray)):
            self._serialized = bytes(engine)
        elif callable(engine):
            self._loader = engine
        else:
            self.path = Path(engine)
            if not self.path.exists():
                raise InputError(f"no such file: {self.path}")
            if self.path.suffix.lower() == ".onnx":
                raise InputError(f"TrtRunner runs engines; {self.path} is an .onnx file",
                                 "build one with edgezoo.export.loaders.engine_loader or `edgezoo export --target tensorrt`")
        self._trt = import_tensorrt()
        self._cudart = import_cudart()
        self.max_batch = max_batch
        self.engine = self.context = self.stream = None
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _engine_bytes(self) -> bytes:
        if self._serialized is not None:
            return self._serialized
        if self._loader is not None:
            return bytes(self._loader())
        return self.path.read_bytes()

    def _activate(self) -> None:
        trt = self._trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._serialized = self._engine_bytes()
        runtime = trt.Runtime(self._logger)
        self.engine = runtime.deserialize_cuda_engine(self._serialized)
        if self.engine is None:
            raise InputError(f"TensorRT cannot load {self.path or 'the engine bytes'} as an engine",
                             "engines only load with the TensorRT version and GPU that built them")
        self.context = self.engine.create_execution_context()
        self.stream = _cuda(self._cudart.cudaStreamCreate())

    def _deactivate(self) -> None:
        for ptr, _ in self._buffers.values():
            self._cudart.cudaFree(ptr)
        self._buffers.clear()
        if self.stream is not None:
            self._cudart.cudaStreamDestroy(self.stream)
        self.engine = self.context = self.stream = None

    def _io(self, mode) -> list[TensorInfo]:
        trt = self._trt
        out = []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            if self.engine.get_tensor_mode(name) == mode:
                dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
                shape = shape_of(list(self.engine.get_tensor_shape(name)))
                out.append(TensorInfo(name, shape, dtype, guess_layout(shape)))
        return out

    def _inputs(self) -> list[TensorInfo]:
        return self._io(self._trt.TensorIOMode.INPUT)

    def _outputs(self) -> list[TensorInfo]:
        return self._io(self._trt.TensorIOMode.OUTPUT)

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:  # grow only: benchmarks call infer thousands of times with one shape
            if ptr:
                self._cudart.cudaFree(ptr)
            ptr = _cuda(self._cudart.cudaMalloc(nbytes))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def _infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        cudart, ctx = self._cudart, self.context
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for info in self._inputs():
            arr = np.ascontiguousarray(feeds[info.name], dtype=info.dtype)
            if not ctx.set_input_shape(info.name, arr.shape):
                raise InputError(f"the engine cannot take input '{info.name}' of shape {arr.shape}",
                                 "rebuild it with an optimisation profile that covers this shape")
            ptr = self._buffer(info.name, arr.nbytes)
            _cuda(cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, h2d, self.stream))
            ctx.set_tensor_address(info.name, ptr)
        results = []
        for info in self._outputs():
            shape = tuple(ctx.get_tensor_shape(info.name))
            host = np.empty(shape, dtype=info.dtype)
            ptr = self._buffer(info.name, host.nbytes)
            ctx.set_tensor_address(info.name, ptr)
            results.append((host, ptr))
        if not ctx.execute_async_v3(self.stream):
            raise InputError("TensorRT failed to run the engine")
        for host, ptr in results:
            _cuda(cudart.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, d2h, self.stream))
        _cuda(cudart.cudaStreamSynchronize(self.stream))
        return [h for h, _ in results]

    def model_size_bytes(self) -> int | None:
        if self._serialized is not None:
            return len(self._serialized)
        return self.path.stat().st_size if self.path is not None else None

    def describe(self) -> str:
        return f"TensorRT {self._trt.__version__}"


def is_engine_path(path: Any) -> bool:
    return Path(str(path)).suffix.lower() in ENGINE_SUFFIXES


ENGINE = FileKind("engine", ENGINE_SUFFIXES, "a TensorRT engine", "TensorRT engines (.engine, .plan, .trt)")


def open_file(model) -> TrtRunner:
    # no options: the GPU runs the engine, and host threads do not apply
    return TrtRunner(model)


DESCRIPTOR = RuntimeDescriptor(
    "tensorrt", ("trt",), (ENGINE,), open_file, extra="tensorrt", install="pip install tensorrt cuda-python",
    options=(), built_from=("onnx",))
