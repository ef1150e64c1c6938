"""LiteRT (TFLite): .tflite files through ``ai_edge_litert.interpreter.Interpreter`` (with its default XNNPACK
delegate), ``threads`` passed as the interpreter's ``num_threads``.

Inputs are described as the file has them: a converted torch model usually keeps NCHW, a TensorFlow model is
NHWC (``TensorInfo.layout`` says which). The contract stays float in, float out: an int8/uint8 quantized
input is quantized here with the tensor's own scale and zero point, and a quantized output dequantized, so
the same float feeds run every runtime. Integer inputs that carry no quantization (token ids) pass as they
are. No torch here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgezoo.errors import InputError, MissingDependencyError
from edgezoo.runtimes.base import Runner, TensorInfo, check_model_file, check_threads, first_line, guess_layout
from edgezoo.runtimes.descriptor import FileKind, RuntimeDescriptor
from edgezoo.runtimes.filecheck import check_tflite

SUFFIXES = (".tflite",)


def import_litert():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise MissingDependencyError("LiteRT", "pip install 'edgezoo[litert]'",
                                     "the litert runtime needs ai-edge-litert") from None
    return Interpreter


def _quantization(detail: dict[str, Any]) -> tuple[float, int] | None:
    """(scale, zero point) of a per-tensor quantized tensor, else None."""
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind in "iu" and scale:
        return float(scale), int(zero)
    return None


def _name(detail: dict[str, Any]) -> str:
    # converters name inputs "serving_default_args_0:0" and the like; keep the name as the file has it
    return detail["name"]


class LiteRTRunner(Runner):
    """A .tflite model in a LiteRT interpreter."""

    name = "litert"

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        super().__init__()
        check_threads(threads)
        self.path = Path(path)
        if self.path.suffix.lower() not in SUFFIXES:
            raise InputError(f"litert runs .tflite files; {self.path} is not one")
        check_model_file(self.path, "a .tflite file")
        self.threads = threads
        self._interpreter_cls = import_litert()
        self.interpreter = None
        self._in: list[dict[str, Any]] = []
        self._out: list[dict[str, Any]] = []
        self._plan: list[tuple] = []
        self._out_plan: list[tuple] = []

    def _activate(self) -> None:
        try:
            self.interpreter = self._interpreter_cls(model_path=os.fspath(self.path), num_threads=self.threads)
            self.interpreter.allocate_tensors()
        except Exception as e:  # ValueError / RuntimeError with the flatbuffer verifier's detail
            self.interpreter = None
            raise InputError(f"litert cannot load {self.path}: {first_line(e)}",
                             "is it a complete, valid .tflite file?") from None
        self._in = self.interpreter.get_input_details()
        self._out = self.interpreter.get_output_details()
        self._make_plan()

    def _deactivate(self) -> None:
        self.interpreter = None
        self._in, self._out = [], []
        self._plan, self._out_plan = [], []

    def settings(self) -> dict[str, Any]:
        # the interpreter does not report its thread count back; this is what it was built with
        return {"threads": self.threads, "quantized_inputs": [_name(d) for d in self._in if _quantization(d)],
                "quantized_outputs": [_name(d) for d in self._out if _quantization(d)]}

    def _info(self, detail: dict[str, Any]) -> TensorInfo:
        dims = detail.get("shape_signature", detail["shape"])
        shape = tuple(int(d) if d > 0 else None for d in dims)
        dtype = np.dtype(np.float32) if _quantization(detail) else np.dtype(detail["dtype"])
        return TensorInfo(_name(detail), shape, dtype, guess_layout(shape))

    def _inputs(self) -> list[TensorInfo]:
        return [self._info(d) for d in self._in]

    def _outputs(self) -> list[TensorInfo]:
        return [self._info(d) for d in self._out]

    def _infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        it = self.interpreter
        plan = self._plan
        if len(feeds) != len(plan) or any(name not in feeds for name, *_ in plan):
            raise InputError(f"litert: inputs {sorted(feeds)} do not match the model's {[p[0] for p in plan]}")
        arrays = [feeds[name] if isinstance(feeds[name], np.ndarray) else np.asarray(feeds[name])
                  for name, *_ in plan]
        if any(arr.shape != shape for arr, (_, _, shape, _, _) in zip(arrays, plan)):
            self._resize(arrays)  # a new shape: allocate once for it, not on every call
        for arr, (_, index, _, dtype, quantized), d in zip(arrays, self._plan, self._in):
            if quantized is None and arr.dtype == dtype and arr.flags.c_contiguous:
                it.set_tensor(index, arr)  # one copy, into the interpreter's buffer
            else:
                it.set_tensor(index, _to_tensor(arr, d))
        try:
            it.invoke()
        except Exception as e:
            raise InputError(f"litert cannot run {self.path}: {first_line(e)}") from None
        return [_from_tensor(it.get_tensor(index), detail) for index, detail in self._out_plan]

    def _resize(self, arrays: list[np.ndarray]) -> None:
        it = self.interpreter
        for arr, d in zip(arrays, self._in):
            if tuple(arr.shape) != tuple(d["shape"]):
                sig = d.get("shape_signature", d["shape"])
                if len(sig) != arr.ndim or any(s > 0 and s != a for s, a in zip(sig, arr.shape)):
                    raise InputError(f"input '{_name(d)}' of shape {tuple(arr.shape)} does not fit the model's "
                                     f"{self._info(d).describe()}")
                it.resize_tensor_input(d["index"], list(arr.shape))
        it.allocate_tensors()
        self._in, self._out = it.get_input_details(), it.get_output_details()
        self._make_plan()

    def _make_plan(self) -> None:
        """Per input: (name, index, shape, dtype, detail when it needs quantizing); per output: (index, detail
        when it needs dequantizing). Computed when the tensors are allocated, read on every call."""
        self._plan = [(_name(d), d["index"], tuple(int(x) for x in d["shape"]), np.dtype(d["dtype"]),
                       d if _quantization(d) else None) for d in self._in]
        self._out_plan = [(d["index"], d if _quantization(d) else None) for d in self._out]

    def model_size_bytes(self) -> int | None:
        return self.path.stat().st_size

    def describe(self) -> str:
        try:
            from importlib.metadata import version

            v = " " + version("ai-edge-litert")
        except Exception:
            v = ""
        thr = f", {self.threads} thread{'s' if self.threads != 1 else ''}" if self.threads else ""
        q = " int8 I/O" if self.is_active and any(_quantization(d) for d in self._in + self._out) else ""
        return f"LiteRT{v} (XNNPACK{thr}{q})"


def _to_tensor(arr: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    q = _quantization(detail)
    dtype = np.dtype(detail["dtype"])
    if q is None:
        return np.ascontiguousarray(arr, dtype=dtype)
    scale, zero = q
    info = np.iinfo(dtype)
    return np.clip(np.round(arr.astype(np.float32) / scale) + zero, info.min, info.max).astype(dtype)


def _from_tensor(arr: np.ndarray, detail: dict[str, Any] | None) -> np.ndarray:
    q = _quantization(detail) if detail is not None else None
    if q is None:
        return np.array(arr)
    scale, zero = q
    return ((arr.astype(np.float32) - zero) * scale).astype(np.float32)



TFLITE = FileKind("tflite", SUFFIXES, "a .tflite file", ".tflite files", check=check_tflite)


def open_file(model, threads=None) -> LiteRTRunner:
    return LiteRTRunner(model, threads=threads)


DESCRIPTOR = RuntimeDescriptor("litert", ("tflite", "tfl"), (TFLITE,), open_file, extra="litert")

__all__ = ["LiteRTRunner", "import_litert"]
