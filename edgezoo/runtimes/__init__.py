"""Runtimes: one small interface (activate, describe, infer, deactivate), one module per backend.

``Runner`` (base.py) is the interface, after Polygraphy's runners: ``activate()``, ``infer(feeds)``,
``deactivate()``, ``inputs`` / ``outputs``. Backends, each in its own module and imported only when used:

=============  ===========================  =================  ====================
runtime        runner                       takes              extra
=============  ===========================  =================  ====================
onnxruntime    OrtRunner (onnxruntime.py)   .onnx (or bytes)   (core)
openvino       OpenVinoRunner (openvino.py) .onnx, .xml + .bin edgezoo[openvino]
executorch     ExecuTorchRunner             .pte               edgezoo[executorch]
litert         LiteRTRunner (litert.py)     .tflite            edgezoo[litert]
tensorrt       TrtRunner (tensorrt.py)      .engine/.plan/.trt edgezoo[tensorrt]
torch          TorchRunner (torch.py)       a registry name    edgezoo[torch]
=============  ===========================  =================  ====================

``open_runner`` picks one by the file's suffix (or the runtime asked for) and says in one line when a
runtime cannot take a file. Runners take a file (or bytes); they do not build models: exporting a registry
name or building a TensorRT engine from ONNX is the job of ``edgezoo.export.loaders``, which then calls
``open_runner``. The device side (onnxruntime + numpy) never loads torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from edgezoo.errors import InputError
from edgezoo.runtimes.base import Runner, TensorInfo

RUNTIMES = {
    "onnxruntime": "onnxruntime", "ort": "onnxruntime",
    "openvino": "openvino", "ov": "openvino",
    "executorch": "executorch", "et": "executorch", "xnnpack": "executorch",
    "litert": "litert", "tflite": "litert", "tfl": "litert",
    "torch": "torch", "pytorch": "torch", "eager": "torch",
    "tensorrt": "tensorrt", "trt": "tensorrt",
}
# what each runtime takes (model kinds, see model_kind) and how to say it in an error
ACCEPTS = {
    "onnxruntime": (("onnx",), ".onnx files"),
    "openvino": (("onnx", "ir"), ".onnx files and OpenVINO IR (.xml + .bin)"),
    "executorch": (("pte",), ".pte files"),
    "litert": (("tflite",), ".tflite files"),
    "tensorrt": (("engine",), "TensorRT engines (.engine, .plan, .trt)"),
    "torch": (("registry",), "registry model names"),
}
DEFAULT_RUNTIME = {"onnx": "onnxruntime", "ir": "openvino", "pte": "executorch", "tflite": "litert",
                   "engine": "tensorrt", "registry": "torch"}
KIND_BY_SUFFIX = {".onnx": "onnx", ".xml": "ir", ".pte": "pte", ".tflite": "tflite",
                  ".engine": "engine", ".plan": "engine", ".trt": "engine"}
KIND_NAMES = {"onnx": "an .onnx file", "ir": "an OpenVINO IR (.xml) file", "pte": "a .pte file",
              "tflite": "a .tflite file", "engine": "a TensorRT engine", "registry": "a registry model name"}


def runtime_names() -> list[str]:
    return sorted(set(RUNTIMES.values()))


def normalize_runtime(runtime: str | None) -> str | None:
    if runtime is None or runtime.strip().lower() == "auto":
        return None
    try:
        return RUNTIMES[runtime.strip().lower()]
    except KeyError:
        raise InputError(f"unknown runtime '{runtime}'", f"choose from auto, {', '.join(runtime_names())}") from None


def model_kind(model: str | os.PathLike | bytes) -> str:
    """'onnx', 'ir', 'pte', 'tflite', 'engine' or 'registry' for what the user typed: a known suffix decides;
    a path that exists or has a folder in it, with another suffix, is taken for ONNX; else a registry name."""
    if isinstance(model, (bytes, bytearray)):
        return "onnx"
    text = os.fspath(model)
    path = Path(text)
    kind = KIND_BY_SUFFIX.get(path.suffix.lower())
    if kind is not None:
        return kind
    if path.exists() or os.sep in text or "/" in text:
        return "onnx"
    return "registry"


def default_runtime(kind: str) -> str:
    return DEFAULT_RUNTIME[kind]


def check_runtime_takes(runtime: str, kind: str, model: str | os.PathLike | bytes) -> None:
    """InputError when ``runtime`` cannot take a model of ``kind``: "litert runs .tflite files; m.onnx is an .onnx file"."""
    kinds, what = ACCEPTS[runtime]
    if kind in kinds:
        return
    shown = "the model bytes" if isinstance(model, (bytes, bytearray)) else os.fspath(model)
    hint = f"it runs on {DEFAULT_RUNTIME[kind]}"
    if kind == "registry":
        hint = "export it first (edgezoo export NAME), or use `edgezoo bench NAME -r RUNTIME`, which exports in memory"
    elif runtime == "tensorrt" and kind == "onnx":
        hint = "build an engine first (edgezoo export NAME --target tensorrt), or bench it: edgezoo bench FILE -r tensorrt"
    raise InputError(f"{runtime} runs {what}; {shown} is {KIND_NAMES[kind]}", hint)


def open_runner(
    model: str | os.PathLike | bytes,
    runtime: str | None = None,
    threads: int | None = None,
    providers: str | Sequence[str] | None = None,
    graph_optimization: str = "all",
    weights: str | None = None,
    input_size: Sequence[int] | None = None,
    precision: str | None = None,
    streams: int | None = None,
) -> Runner:
    """A (not yet active) runner for a model file (or ONNX bytes) or, on torch, a registry name.

    ``providers`` and ``graph_optimization`` are onnxruntime's; ``precision`` and ``streams`` OpenVINO's
    (precision default f32; see edgezoo.runtimes.openvino); ``weights`` and ``input_size`` the torch
    runner's. An option the chosen runtime has no use for is an error rather than silently ignored.
    """
    kind = model_kind(model)
    rt = normalize_runtime(runtime) or default_runtime(kind)
    check_runtime_takes(rt, kind, model)
    if providers is not None and rt != "onnxruntime":
        raise InputError(f"execution providers are onnxruntime's; {rt} has none", "drop --provider")
    if (precision is not None or streams is not None) and rt != "openvino":
        raise InputError(f"precision and streams are OpenVINO options; {rt} does not take them",
                         "use --runtime openvino, or drop them")
    if rt == "onnxruntime":
        from edgezoo.runtimes.onnxruntime import OrtRunner

        return OrtRunner(model, threads=threads, providers=providers, graph_optimization=graph_optimization)
    if rt == "openvino":
        from edgezoo.runtimes.openvino import OpenVinoRunner

        return OpenVinoRunner(model, threads=threads, streams=streams, precision=precision)
    if rt == "executorch":
        from edgezoo.runtimes.executorch import ExecuTorchRunner

        return ExecuTorchRunner(model, threads=threads)
    if rt == "litert":
        from edgezoo.runtimes.litert import LiteRTRunner

        return LiteRTRunner(model, threads=threads)
    if rt == "torch":
        from edgezoo.runtimes.torch import TorchRunner

        return TorchRunner(os.fspath(model), threads=threads, weights=weights, input_size=input_size)
    if rt == "tensorrt":
        from edgezoo.runtimes.tensorrt import TrtRunner

        return TrtRunner(model)
    raise AssertionError(rt)


__all__ = ["Runner", "TensorInfo", "open_runner", "model_kind", "normalize_runtime", "check_runtime_takes",
           "runtime_names", "RUNTIMES", "ACCEPTS"]
