"""Loaders: build what a runner runs, then open the runner (after Polygraphy's loaders).

Runners (edgezoo.runtimes) take a file or bytes and never build models. What a command may need built first
lives here: a registry name on a runtime that runs ONNX is exported in memory through edgezoo's verified
exporter; a file of a kind a runtime's descriptor says it is ``built_from`` (an .onnx file on TensorRT) is
built on activate. ``open_model`` is what commands call; for a plain file it is ``open_runner`` and imports
nothing heavy (no torch).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from edgezoo.errors import InputError


def export_to_bytes(model, spec, input_size: Sequence[int] | None = None, tolerance: float = 1e-3) -> bytes:
    """Export a registry model through edgezoo's verified exporter and return the ONNX bytes (no file kept)."""
    from edgezoo.export.onnx import export_onnx
    from edgezoo.runtimes.base import first_line
    from edgezoo.runtimes.torch import registry_metadata

    meta = registry_metadata(spec, input_size)
    with tempfile.TemporaryDirectory(prefix="edgezoo-bench-") as tmp:
        path = Path(tmp) / f"{spec.name}.onnx"
        try:
            export_onnx(model, path, meta.input_size, metadata=meta, tolerance=tolerance)
        except RuntimeError as e:  # the exporter's tracing fails on input sizes the model cannot take
            raise InputError(f"{spec.name} cannot be exported at {meta.input_size}: {first_line(e)}") from None
        return path.read_bytes()


def registry_onnx(name: str, weights: str | None = None, input_size: Sequence[int] | None = None
                  ) -> tuple[str, bytes]:
    """(canonical name, ONNX bytes) of a registry model: built (BatchNorm recalibrated when no weights) and
    exported in memory."""
    from edgezoo.runtimes.torch import build_registry_model

    spec, module = build_registry_model(name, weights)
    return spec.name, export_to_bytes(module, spec, input_size)


def engine_loader(onnx_path: str | os.PathLike, precision: str | None = None, max_batch: int = 32
                  ) -> Callable[[], bytes]:
    """A function that builds a TensorRT engine from ``onnx_path`` and returns its bytes, for ``TrtRunner``.

    ``precision`` defaults to the file's own (its edgezoo metadata), else fp32; int8 needs the Q/DQ nodes of
    an edgezoo int8 export."""
    onnx_path = Path(onnx_path)

    def load() -> bytes:
        from edgezoo.export.tensorrt import build_engine, plan_engine
        from edgezoo.onnx_meta import read_metadata

        chosen = precision or read_metadata(onnx_path).precision or "fp32"
        with tempfile.TemporaryDirectory(prefix="edgezoo-trt-") as tmp:
            engine = Path(tmp) / "model.engine"
            build_engine(plan_engine(onnx_path, engine, precision=chosen, max_batch=max_batch))
            return engine.read_bytes()

    return load


def open_model(model: str | os.PathLike, runtime: str | None = None, **opts):
    """A (not yet active) runner for what the user typed, building it first where the runtime needs that.

    ``opts`` are ``open_runner``'s keyword arguments."""
    from edgezoo.runtimes import default_runtime, get_runtime, model_kind, normalize_runtime, open_runner, runs

    kind = model_kind(model)
    rt = normalize_runtime(runtime) or default_runtime(kind)
    if kind == "registry" and not runs(rt, kind) and runs(rt, "onnx"):
        name, data = registry_onnx(os.fspath(model), opts.get("weights"), opts.get("input_size"))
        runner = open_runner(data, rt, **_file_opts(opts))
        runner.source_name = name
        return runner
    if not runs(rt, kind) and kind in get_runtime(rt).built_from:
        path = Path(os.fspath(model))
        if not path.exists():
            raise InputError(f"no such file: {path}")
        return BUILDERS[(kind, rt)](path, opts)
    if kind != "registry":
        opts = _file_opts(opts)
    return open_runner(model, rt, **opts)


def _tensorrt_from_onnx(path: Path, opts: dict):
    from edgezoo.runtimes.tensorrt import TrtRunner

    return TrtRunner(engine_loader(path, opts.get("precision")))


# (kind, runtime) -> how a file of that kind is built into what the runtime runs: each runtime's
# descriptor names the kinds it is built from (``built_from``); the builders live here, on the export side
BUILDERS: dict[tuple[str, str], Callable] = {("onnx", "tensorrt"): _tensorrt_from_onnx}


def _file_opts(opts: dict) -> dict:
    # weights and input size shape a registry model; a file already has its weights and size
    return {k: v for k, v in opts.items() if k not in ("weights", "input_size")}


__all__ = ["open_model", "registry_onnx", "export_to_bytes", "engine_loader"]
