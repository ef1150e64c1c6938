"""TensorRT engines from edgezoo's ONNX files, with the TensorRT 10+ API.

- int8 comes from the Q/DQ ONNX as a *strongly typed* network: the Q/DQ nodes say what runs in int8, so no
  calibrator and no INT8/FP16 builder flags (deprecated in 10.1 and removed in 11).
- fp16: the fp16 ONNX, also strongly typed; fp32: the fp32 ONNX, weakly typed with no precision flag (the
  builder stays in fp32; TF32 is disabled so the engine matches the ONNX within fp32 tolerances).
- One optimization profile over the batch (min 1, opt the preferred batch, max the largest) when the file has
  a dynamic batch, a fixed profile otherwise; a timing cache file reused across builds.

``plan_engine`` decides everything without TensorRT (tested here); ``build_engine`` imports TensorRT lazily
and says in one line what to install, and that it needs an NVIDIA GPU, when it is missing.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from edgezoo.errors import EdgezooError, InputError

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class EnginePlan:
    onnx_path: str
    engine_path: str
    precision: str
    strongly_typed: bool
    input_name: str
    dynamic_batch: bool
    # (min, opt, max) full input shapes of the one optimization profile
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    workspace_bytes: int
    timing_cache: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def plan_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, precision: str = "fp32",
                max_batch: int = 32, opt_batch: int | None = None, workspace_mb: int = 2048,
                timing_cache: str | os.PathLike | None = None) -> EnginePlan:
    """Read the ONNX file's input and decide the network flags and the batch profile."""
    import onnx

    if precision not in PRECISIONS:
        raise InputError(f"unknown TensorRT precision '{precision}'", f"use one of {', '.join(PRECISIONS)}")
    if max_batch < 1:
        raise InputError(f"max batch must be at least 1, got {max_batch}")
    model = onnx.load(os.fspath(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in inits)
    dims = inp.type.tensor_type.shape.dim
    rest = tuple(int(d.dim_value) for d in dims[1:])
    if any(d <= 0 for d in rest):
        raise InputError(f"{onnx_path}: only the batch dimension may be dynamic for a TensorRT engine")
    dynamic = not dims[0].dim_value
    ops = {n.op_type for n in model.graph.node}
    has_qdq = "QuantizeLinear" in ops and "DequantizeLinear" in ops
    if precision == "int8" and not has_qdq:
        raise InputError(f"{onnx_path} has no QuantizeLinear/DequantizeLinear nodes",
                         "TensorRT 10+ builds int8 from a Q/DQ ONNX: use the model.int8.onnx of the bundle")
    if dynamic:
        opt = opt_batch or min(max_batch, 8)
        if not 1 <= opt <= max_batch:
            raise InputError(f"optimal batch {opt} is outside 1..{max_batch}")
        profile = ((1, *rest), (opt, *rest), (max_batch, *rest))
    else:
        fixed = (int(dims[0].dim_value), *rest)
        profile = (fixed, fixed, fixed)
    # Strongly typed: tensor types in the file decide precision (Q/DQ -> int8, float16 tensors -> fp16).
    strongly_typed = precision in ("int8", "fp16")
    # No precision builder flags: strongly typed for fp16/int8, plain fp32 otherwise.
    return EnginePlan(
        onnx_path=os.fspath(onnx_path), engine_path=os.fspath(engine_path), precision=precision,
        strongly_typed=strongly_typed, input_name=inp.name, dynamic_batch=dynamic, profile=profile,
        workspace_bytes=workspace_mb << 20, timing_cache=os.fspath(timing_cache) if timing_cache else None,
    )


def build_engine(plan: EnginePlan) -> dict:
    """Build and write the engine of ``plan``; returns a small JSON-able report. Needs TensorRT 10+ and a GPU."""
    from edgezoo.runtimes.tensorrt import import_tensorrt

    trt = import_tensorrt()
    major = int(trt.__version__.split(".")[0])
    if major < 10:
        raise EdgezooError(f"TensorRT {trt.__version__} is too old", "edgezoo needs TensorRT 10 or newer")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    net_flags = 0
    if plan.strongly_typed:
        net_flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(net_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(plan.onnx_path):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EdgezooError(f"TensorRT cannot parse {plan.onnx_path}: {errors[0] if errors else 'unknown error'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    if not plan.strongly_typed and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    profile.set_shape(plan.input_name, *plan.profile)
    config.add_optimization_profile(profile)
    cache = None
    if plan.timing_cache:
        blob = Path(plan.timing_cache).read_bytes() if Path(plan.timing_cache).exists() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgezooError(f"TensorRT failed to build an engine from {plan.onnx_path}", "run with --debug for its log")
    from edgezoo.fileio import atomic_write_bytes

    atomic_write_bytes(plan.engine_path, bytes(serialized))
    if cache is not None:
        atomic_write_bytes(plan.timing_cache, bytes(config.get_timing_cache().serialize()))
    return {"tensorrt": trt.__version__, "engine": plan.engine_path, "size_bytes": Path(plan.engine_path).stat().st_size,
            **{k: v for k, v in plan.to_dict().items() if k in ("precision", "strongly_typed", "profile")}}
