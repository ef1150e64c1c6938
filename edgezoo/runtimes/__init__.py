"""Runtimes: one small interface (open, describe, infer, close), one module per backend.

``Runner`` (base.py) is the interface, after Polygraphy's runners: ``activate()``, ``infer(feeds)``,
``deactivate()``, ``inputs`` / ``outputs``. Backends: ``OrtRunner`` (onnxruntime.py, no torch),
``TorchRunner`` (torch.py), ``TrtRunner`` (tensorrt.py). ``open_runner`` picks one for what the user typed:
an .onnx file, a TensorRT engine or a registry name. Backend modules are imported only when used, so the
device side (onnxruntime + numpy) never loads torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from edgezoo.errors import InputError
from edgezoo.runtimes.base import Runner, TensorInfo

RUNTIMES = {
    "onnxruntime": "onnxruntime", "ort": "onnxruntime",
    "torch": "torch", "pytorch": "torch", "eager": "torch",
    "tensorrt": "tensorrt", "trt": "tensorrt",
}


def normalize_runtime(runtime: str | None) -> str | None:
    if runtime is None or runtime.lower() == "auto":
        return None
    try:
        return RUNTIMES[runtime.lower()]
    except KeyError:
        raise InputError(f"unknown runtime '{runtime}'", "choose from auto, onnxruntime, torch, tensorrt") from None


def model_kind(model: str | os.PathLike) -> str:
    """'onnx', 'engine' or 'registry' for what the user typed (a path that exists, or looks like a file)."""
    from edgezoo.runtimes.tensorrt import is_engine_path

    text = os.fspath(model)
    path = Path(text)
    if is_engine_path(text):
        return "engine"
    if path.suffix.lower() == ".onnx" or path.exists() or os.sep in text or "/" in text:
        return "onnx"
    return "registry"


def default_runtime(kind: str) -> str:
    return {"onnx": "onnxruntime", "engine": "tensorrt", "registry": "torch"}[kind]


def open_runner(
    model: str | os.PathLike,
    runtime: str | None = None,
    threads: int | None = None,
    providers: str | Sequence[str] | None = None,
    graph_optimization: str = "all",
    weights: str | None = None,
    input_size: Sequence[int] | None = None,
) -> Runner:
    """A (not yet active) runner for an .onnx file, a TensorRT engine or a registry name.

    A registry name on onnxruntime is exported in memory through edgezoo's verified exporter first, so
    a zoo model and its export can be compared without writing files.
    """
    kind = model_kind(model)
    rt = normalize_runtime(runtime) or default_runtime(kind)
    if rt == "onnxruntime":
        from edgezoo.runtimes.onnxruntime import OrtRunner

        if kind == "onnx":
            return OrtRunner(model, threads=threads, providers=providers, graph_optimization=graph_optimization)
        if kind == "engine":
            raise InputError(f"{model} is a TensorRT engine; onnxruntime runs .onnx files", "use --runtime tensorrt")
        from edgezoo.runtimes.torch import build_registry_model, export_to_bytes

        spec, module = build_registry_model(os.fspath(model), weights)
        data = export_to_bytes(module, spec, input_size)
        runner = OrtRunner(data, threads=threads, providers=providers, graph_optimization=graph_optimization)
        runner.source_name = spec.name
        return runner
    if rt == "torch":
        if kind != "registry":
            raise InputError(f"the torch runtime takes a registry model name, not the file {model}",
                             "use --runtime onnxruntime for .onnx files")
        from edgezoo.runtimes.torch import TorchRunner

        return TorchRunner(os.fspath(model), threads=threads, weights=weights, input_size=input_size)
    if rt == "tensorrt":
        if kind == "registry":
            raise InputError("the tensorrt runtime takes an engine or an .onnx file, not a registry name",
                             "export the model first: edgezoo export NAME")
        from edgezoo.runtimes.tensorrt import TrtRunner

        return TrtRunner(model)
    raise AssertionError(rt)


__all__ = ["Runner", "TensorInfo", "open_runner", "model_kind", "normalize_runtime", "RUNTIMES"]
