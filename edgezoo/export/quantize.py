"""int8 (QDQ, U8S8) and fp16 from an fp32 ONNX file, and the numbers that say how close they stay.

- ``quantize_int8``: onnxruntime static quantization in QDQ format, uint8 activations with int8 weights
  (signed activations run slowly on x86), per-channel weights by default, MinMax / Entropy / Percentile
  calibration. Every op type in the graph that has a quantized form is listed for quantization, HardSwish
  and HardSigmoid included (onnxruntime's default list, ``onnxruntime.quantization.registry``, leaves them out).
- ``float_islands``: nodes that still compute in float between DequantizeLinear and QuantizeLinear after
  onnxruntime has fused what it can: what an int8 graph really runs in float.
- ``to_fp16``: float16 weights and compute, fp32 inputs/outputs unless asked.
- ``compare_models``: top-1 agreement, cosine, SQNR of the outputs; ``layer_sqnr``: per-tensor SQNR of the
  int8 model's quantized activations against the fp32 model's, worst first.

No torch import: this runs wherever onnxruntime does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import onnx

from edgezoo.errors import EdgezooError, InputError
from edgezoo.runtimes.comparator import sqnr_db

METHODS = ("minmax", "entropy", "percentile")
# Ops that int8 runtimes can take quantized in QDQ form; onnxruntime's default list misses the hard ones.
EXTRA_QUANTIZABLE = ("HardSigmoid", "HardSwish", "ReduceMean")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# Ops that only move or select bytes: running them on uint8 between Q/DQ is not "float compute".
DATA_MOVEMENT = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Split", "Concat",
                 "Gather", "Identity", "MaxPool", "Pad", "Resize", "Shape", "Cast"}


class _ArrayReader:
    """onnxruntime's CalibrationDataReader protocol over an (N, C, H, W) array, ``batch`` images at a time
    (1 for a dynamic batch; a fixed-batch model gets full batches, the last one padded by repeating images)."""

    def __init__(self, input_name: str, data: np.ndarray, batch: int = 1):
        self.input_name = input_name
        self.data = data
        self.batch = batch
        self.i = 0

    def get_next(self):
        if self.i >= len(self.data):
            return None
        x = _pad_rows(self.data[self.i: self.i + self.batch], self.batch)
        self.i += self.batch
        return {self.input_name: x}

    def rewind(self):
        self.i = 0


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """Repeat the last row until ``x`` has ``rows`` rows (a fixed-batch model takes nothing else)."""
    if len(x) >= rows:
        return x
    return np.concatenate([x, np.repeat(x[-1:], rows - len(x), axis=0)])


def _input(model: onnx.ModelProto):
    inits = {i.name for i in model.graph.initializer}
    return next(i for i in model.graph.input if i.name not in inits)


def _input_name(model: onnx.ModelProto) -> str:
    return _input(model).name


def _fixed_batch(model: onnx.ModelProto) -> int:
    dims = _input(model).type.tensor_type.shape.dim
    return dims[0].dim_value if len(dims) and dims[0].dim_value > 0 else 1


def quantize_int8(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration: np.ndarray,
    per_channel: bool = True,
    method: str = "minmax",
    op_types: Iterable[str] | None = None,
    exclude_nodes: Sequence[str] = (),
    percentile: float = 99.999,
    extra_options: dict | None = None,
    share_concat_scales: bool = True,
    reduce_range: bool = False,
    bias_correction: bool = False,
    weight_type: str = "int8",
) -> dict:
    """Static QDQ U8S8 quantization of ``fp32_path`` into ``out_path``; returns a JSON-able report.

    ``op_types``: op types to quantize (default: every type in the graph onnxruntime can quantize, plus
    HardSwish/HardSigmoid). ``exclude_nodes``: node names left in float (mixed precision).
    ``reduce_range``: 7-bit weights (-64..63). x86 CPUs without VNNI run u8 x s8 products through
    VPMADDUBSW, whose 16-bit pair sums saturate with full-range weights (onnxruntime's quantization docs);
    7-bit weights cannot saturate there.
    ``bias_correction``: fold the mean output shift of each conv's quantized weights into its bias
    (edgezoo.export.bias_correction), then quantize the corrected model again.
    ``weight_type``: "int8" (U8S8, the default) or "uint8" (U8U8: onnxruntime's x86 u8u8 kernels widen to
    16 bits before multiplying, so they do not saturate on CPUs without VNNI either, and keep 8-bit weights).
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    if method not in METHODS:
        raise InputError(f"unknown calibration method '{method}'", f"use one of {', '.join(METHODS)}")
    if weight_type not in ("int8", "uint8"):
        raise InputError(f"unknown weight type '{weight_type}'", "use int8 or uint8")
    calibration = np.asarray(calibration, dtype=np.float32)
    if calibration.ndim != 4 or len(calibration) == 0:
        raise InputError(f"calibration data must be a non-empty (N, C, H, W) array, got shape {calibration.shape}")
    model = onnx.load(os.fspath(fp32_path))
    pooled = reducemean_to_global_pool(model)
    graph_ops = {n.op_type for n in model.graph.node}
    if op_types is None:
        known = set(QDQRegistry) | set(QLinearOpsRegistry) | set(EXTRA_QUANTIZABLE)
        op_types = sorted(graph_ops & known)
    else:
        op_types = sorted(set(op_types))
    calib_method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                    "percentile": CalibrationMethod.Percentile}[method]
    options = {
        "ActivationSymmetric": False,  # uint8 activations with a zero point
        "WeightSymmetric": True,  # int8 weights, zero point 0 (what VNNI and TensorRT want)
        "CalibMovingAverage": False,
    }
    if method == "percentile":
        options["CalibPercentile"] = percentile
    options.update(extra_options or {})
    reader = _ArrayReader(_input_name(model), calibration, batch=_fixed_batch(model))
    # Calibration over the whole set runs once: bias correction reads only the quantized weights of a first
    # pass, which do not depend on activation ranges (one batch calibrates it), and the Concat pass
    # quantizes the same model again with the ranges onnxruntime cached from the full pass.
    with tempfile.TemporaryDirectory(prefix="edgezoo-calib-") as cache_dir:
        ranges = Path(cache_dir) / "ranges.json"
        corrected = None
        if bias_correction:
            from edgezoo.export.bias_correction import correct_biases

            first = _ArrayReader(reader.input_name, calibration[: reader.batch], batch=reader.batch)
            q = _quantize_static(model, first, op_types, per_channel, calib_method, exclude_nodes, options,
                                 reduce_range, weight_type)
            model, corrected = correct_biases(model, q, calibration, batch=max(2, reader.batch))  # 2: memory
        q = _quantize_static(model, reader, op_types, per_channel, calib_method, exclude_nodes, options,
                             reduce_range, weight_type, ranges_cache=ranges)
        shared = 0
        if share_concat_scales:
            overrides = concat_scale_overrides(q)
            if overrides:
                # Second pass: every Concat input takes its output's scale and zero point, so the int8 Concat
                # is a copy instead of a requantization of each element (GhostNet: ~10% of its int8 time).
                user = dict(options.get("TensorQuantOverrides", {}))
                options["TensorQuantOverrides"] = {**overrides, **user}
                reader.rewind()
                q = _quantize_static(model, reader, op_types, per_channel, calib_method, exclude_nodes, options,
                                     reduce_range, weight_type, ranges_cache=ranges)
                shared = len(overrides)
    _copy_metadata(model, q)
    data = q.SerializeToString()
    from edgezoo.fileio import atomic_write_bytes

    atomic_write_bytes(out_path, data)
    return {
        "format": "QDQ", "activations": "uint8", "weights": weight_type,
        "per_channel": per_channel, "reduce_range": reduce_range, "method": method, "calibration_images": int(len(calibration)),
        "op_types": list(op_types), "excluded_nodes": list(exclude_nodes),
        "size_bytes": len(data), "reducemean_as_global_pool": pooled, "concat_inputs_sharing_scale": shared,
        "bias_correction": None if corrected is None else {"convs": corrected["convs"],
                                                           "changes": corrected["changes"]},
    }


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantizer logs advice on the root logger and its C++ side warns about unused
    initializers on stderr: neither is for our users. Errors still surface as exceptions.

    Both are silenced for the duration only: the root logger's level is put back, and file descriptor 2
    (where onnxruntime's C++ logger writes) is pointed at a scratch file and then restored. onnxruntime's
    own log severity, which it offers no way to read back, is never changed.
    """
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    sys.stderr.flush()
    saved_fd = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved_fd, 2)
    finally:
        os.close(saved_fd)
        root.setLevel(level)


def _copy_metadata(src: onnx.ModelProto, dst: onnx.ModelProto) -> None:
    have = {p.key for p in dst.metadata_props}
    for p in src.metadata_props:
        if p.key not in have:
            entry = dst.metadata_props.add()
            entry.key, entry.value = p.key, p.value


def _quantize_static(model, reader, op_types, per_channel, calib_method, exclude_nodes, options,
                     reduce_range: bool = False, weight_type: str = "int8",
                     ranges_cache: Path | None = None) -> onnx.ModelProto:
    """``ranges_cache``: a file for onnxruntime's calibration cache (written when absent, read when present),
    where this onnxruntime has one (1.32 does); without it every call calibrates."""
    import inspect

    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    cache = {}
    if ranges_cache is not None and "calibration_cache_path" in inspect.signature(quantize_static).parameters:
        cache["calibration_cache_path"] = str(ranges_cache)

    with tempfile.TemporaryDirectory(prefix="edgezoo-quant-") as tmp:
        # Calibration writes augmented models beside the temporary file, never next to the user's files.
        src = Path(tmp) / "fp32.onnx"
        onnx.save(model, src)
        dst = Path(tmp) / "int8.onnx"
        try:
            with _quiet():
                quantize_static(
                    str(src), str(dst), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types,
                    per_channel=per_channel, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QUInt8 if weight_type == "uint8" else QuantType.QInt8,
                    nodes_to_exclude=list(exclude_nodes),
                    calibrate_method=calib_method, extra_options=options, **cache,
                )
        except Exception as e:  # onnxruntime raises plain exceptions; say which step failed
            raise EdgezooError(f"int8 quantization failed: {type(e).__name__}: {str(e).splitlines()[0]}") from None
        return onnx.load(str(dst))


def concat_scale_overrides(q: onnx.ModelProto) -> dict:
    """TensorQuantOverrides giving each float input of a quantized Concat the Concat output's scale/zero point."""
    init = {i.name: i for i in q.graph.initializer}
    producer = {o: n for n in q.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in q.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    overrides: dict[str, list] = {}
    for n in q.graph.node:
        if n.op_type != "Concat":
            continue
        outs = consumers.get(n.output[0], [])
        if len(outs) != 1 or outs[0].op_type != "QuantizeLinear" or len(outs[0].input) < 3:
            continue
        if outs[0].input[1] not in init or outs[0].input[2] not in init:
            continue
        scale = onnx.numpy_helper.to_array(init[outs[0].input[1]])
        zp = onnx.numpy_helper.to_array(init[outs[0].input[2]])
        for i in n.input:
            dq = producer.get(i)
            qn = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if qn is not None and qn.op_type == "QuantizeLinear":
                overrides[qn.input[0]] = [{"scale": np.array(scale, dtype=np.float32),
                                           "zero_point": np.array(zp, dtype=zp.dtype)}]
    return overrides


def reducemean_to_global_pool(model: onnx.ModelProto) -> int:
    """ReduceMean over H and W of a 4-D tensor -> GlobalAveragePool (+ Flatten when keepdims=0), in place.

    Same function; onnxruntime has an int8 GlobalAveragePool but no int8 ReduceMean, which would stay a
    float island (ShuffleNet v2's ``x.mean([2, 3])``). Returns how many nodes were rewritten.
    """
    inits = {i.name: i for i in model.graph.initializer}
    new_nodes, count = [], 0
    for n in model.graph.node:
        if n.op_type == "ReduceMean":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            axes = attrs.get("axes")
            if axes is None and len(n.input) > 1 and n.input[1] in inits:
                axes = onnx.numpy_helper.to_array(inits[n.input[1]]).tolist()
            if axes is not None and sorted(int(a) for a in axes) in ([2, 3], [-2, -1]) and _rank(model, n.input[0]) == 4:
                keep = attrs.get("keepdims", 1)
                pooled = n.output[0] if keep else n.output[0] + "_gap"
                new_nodes.append(onnx.helper.make_node("GlobalAveragePool", [n.input[0]], [pooled], name=n.name + "_gap"))
                if not keep:
                    new_nodes.append(onnx.helper.make_node("Flatten", [pooled], [n.output[0]], name=n.name + "_flat",
                                                           axis=1))
                count += 1
                continue
        new_nodes.append(n)
    if count:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
    return count


def _rank(model: onnx.ModelProto, name: str) -> int | None:
    for vi in list(model.graph.value_info) + list(model.graph.input):
        if vi.name == name and vi.type.tensor_type.HasField("shape"):
            return len(vi.type.tensor_type.shape.dim)
    inferred = onnx.shape_inference.infer_shapes(model)
    for vi in inferred.graph.value_info:
        if vi.name == name:
            return len(vi.type.tensor_type.shape.dim)
    return None


# ---------------------------------------------------------------------------------------- float islands

def optimized_graph(path_or_bytes: str | os.PathLike | bytes, threads: int = 1) -> onnx.ModelProto:
    """The graph onnxruntime actually runs on this CPU (all optimizations, QDQ fused into QLinear ops)."""
    from edgezoo.runtimes.onnxruntime import OrtRunner, import_onnxruntime

    with tempfile.TemporaryDirectory(prefix="edgezoo-opt-") as tmp:
        out = os.path.join(tmp, "optimized.onnx")
        so = import_onnxruntime().SessionOptions()
        so.optimized_model_filepath = out  # it warns that this NCHWc file is machine-specific: we only read it
        with OrtRunner(path_or_bytes, threads=threads, graph_optimization="all", session_options=so):
            pass  # opening the session writes the optimized graph
        return onnx.load(out)


def float_islands(model: onnx.ModelProto) -> list[dict]:
    """Compute nodes that take a dequantized (float) activation and whose result is quantized again.

    Run it on ``optimized_graph(...)`` to see what onnxruntime runs in float; on the QDQ file itself it lists
    every op that has Q/DQ around it (which a runtime may or may not fuse). Data-movement ops are not
    counted: they work on bytes whatever the type.
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    consts = {t.name for t in model.graph.initializer}

    def dequantized_activation(name: str) -> bool:  # a DQ of a weight or bias does not make a float island
        p = producer.get(name)
        return p is not None and p.op_type == "DequantizeLinear" and p.input[0] not in consts

    islands = []
    for n in model.graph.node:
        if n.op_type in QDQ_OPS or n.op_type in DATA_MOVEMENT:
            continue
        from_dq = any(dequantized_activation(i) for i in n.input)
        to_q = any(c.op_type == "QuantizeLinear" for o in n.output for c in consumers.get(o, []))
        if from_dq and to_q:
            islands.append({"name": n.name, "op_type": n.op_type})
    return islands


def island_summary(islands: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i in islands:
        counts[i["op_type"]] = counts.get(i["op_type"], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


# ---------------------------------------------------------------------------------------------- fp16

def to_fp16(fp32_path: str | os.PathLike, out_path: str | os.PathLike, keep_io_types: bool = True) -> dict:
    """float16 weights and activations; inputs/outputs stay float32 unless ``keep_io_types`` is False."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(os.fspath(fp32_path))
    half = convert_float_to_float16(model, keep_io_types=keep_io_types, disable_shape_infer=False)
    _copy_metadata(model, half)
    data = half.SerializeToString()
    from edgezoo.fileio import atomic_write_bytes

    atomic_write_bytes(out_path, data)
    return {"keep_io_types": keep_io_types, "size_bytes": len(data)}


# ------------------------------------------------------------------------------------------ agreement

def _runner(path_or_model, threads: int | None = None):
    """An (inactive) onnxruntime Runner on the CPU for a file, its bytes or a ModelProto."""
    from edgezoo.runtimes.onnxruntime import OrtRunner

    from edgezoo.runtimes.onnxruntime import import_onnxruntime

    src = path_or_model.SerializeToString() if isinstance(path_or_model, onnx.ModelProto) else path_or_model
    # no memory arena: these sessions run models with every activation as an output, and an arena keeps the
    # largest batch's worth for the session's life (hundreds of MB per session on MobileNetV3)
    options = import_onnxruntime().SessionOptions()
    options.enable_cpu_mem_arena = False
    return OrtRunner(src, threads=threads, session_options=options)


def run_batched(runner, inputs: np.ndarray, batch: int = 8, outputs=None) -> list[np.ndarray]:
    """Run ``inputs`` through an active Runner (``edgezoo.runtimes``) in chunks; ``outputs``: names of the
    outputs to return (default all). A fixed-batch model gets its own batch size, the last chunk padded and
    the padding's outputs dropped."""
    name = runner.inputs[0].name
    fixed = runner.inputs[0].shape[0]
    step = fixed if isinstance(fixed, int) and fixed > 0 else batch
    names = [o.name for o in runner.outputs]
    pick = list(range(len(names))) if outputs is None else [names.index(o) for o in outputs]
    parts: list[list[np.ndarray]] = []
    for i in range(0, len(inputs), step):
        chunk = inputs[i:i + step].astype(np.float32)
        out = runner.infer({name: _pad_rows(chunk, step) if step == fixed else chunk})
        out = [out[k] for k in pick]
        parts.append([o[:len(chunk)] if np.ndim(o) else o for o in out])
    # 0-d outputs (constants made graph outputs) are the same in every batch
    return [np.concatenate([p[k] for p in parts]) if np.ndim(parts[0][k]) else parts[0][k]
            for k in range(len(parts[0]))]


def output_agreement(ref: np.ndarray, test: np.ndarray) -> dict:
    ref2, test2 = ref.reshape(len(ref), -1), test.reshape(len(test), -1)
    num = np.sum(ref2 * test2, axis=1)
    den = np.linalg.norm(ref2, axis=1) * np.linalg.norm(test2, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)
    return {
        "images": int(len(ref)),
        "top1_agreement": float(np.mean(ref2.argmax(1) == test2.argmax(1))),
        "cosine_mean": float(np.mean(cos)),
        "cosine_min": float(np.min(cos)),
        "sqnr_db": sqnr_db(ref, test),
        "max_abs_diff": float(np.max(np.abs(ref - test))),
    }


def compare_models(ref_path, test_path, inputs: np.ndarray, worst_layers: int = 10, layer_ref_path=None) -> dict:
    """Outputs of ``test`` against ``ref`` on ``inputs``; plus the worst per-layer SQNR when ``test`` has Q/DQ.

    ``layer_ref_path``: the fp32 file ``test`` was quantized from, when it differs from ``ref`` (rewritten
    activation forms rescale some intermediate tensors: per-layer figures must compare like with like).
    """
    inputs = np.asarray(inputs, dtype=np.float32)
    with _runner(ref_path) as r:
        ref = run_batched(r, inputs)[0]
    with _runner(test_path) as r:
        test = run_batched(r, inputs)[0]
    result = output_agreement(ref, test)
    if worst_layers:
        try:
            result["worst_layers"] = layer_sqnr(layer_ref_path or ref_path, test_path,
                                                inputs[: min(len(inputs), 16)])[:worst_layers]
        except Exception as e:  # a diagnosis that fails must not fail the export; say so in the report
            result["worst_layers_error"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    return result


def layer_sqnr(ref_path, qdq_path, inputs: np.ndarray) -> list[dict]:
    """SQNR of every quantized activation of a QDQ model against the same tensor of the fp32 model.

    The QDQ quantizer keeps the float tensor's name X on the input of its QuantizeLinear; the matching
    DequantizeLinear output is what the int8 model carries forward. Both become extra graph outputs.
    Worst first.
    """
    ref_model = onnx.load(os.fspath(ref_path))
    q_model = onnx.load(os.fspath(qdq_path))
    ref_names = {o for n in ref_model.graph.node for o in n.output}
    producer = {o: n for n in q_model.graph.node for o in n.output}
    pairs: list[tuple[str, str, str]] = []  # (float name, dequantized name, producing op in fp32)
    ref_producer = {o: n for n in ref_model.graph.node for o in n.output}
    for n in q_model.graph.node:
        if n.op_type != "DequantizeLinear":
            continue
        q = producer.get(n.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        x = q.input[0]
        if x in ref_names and ref_producer[x].op_type != "Constant":
            pairs.append((x, n.output[0], ref_producer[x].op_type))
    if not pairs:
        return []
    seen = set()
    pairs = [p for p in pairs if not (p[0] in seen or seen.add(p[0]))]
    _add_outputs(ref_model, [p[0] for p in pairs])
    _add_outputs(q_model, [p[1] for p in pairs])
    # every activation of both models for every image would be GBs: a few images at a time, and only the
    # signal and noise power of each tensor kept (SQNR of the whole set = ratio of the summed powers)
    signal, noise = np.zeros(len(pairs)), np.zeros(len(pairs))
    with _runner(ref_model) as rr, _runner(q_model) as rq:
        for i in range(0, len(inputs), 2):
            chunk = inputs[i:i + 2]
            ref_out = run_batched(rr, chunk, batch=2, outputs=[p[0] for p in pairs])
            q_out = run_batched(rq, chunk, batch=2, outputs=[p[1] for p in pairs])
            for k, (r, t) in enumerate(zip(ref_out, q_out)):
                r = r.astype(np.float64)
                signal[k] += float(np.sum(r * r))
                noise[k] += float(np.sum((r - t) ** 2))
            del ref_out, q_out
    rows = [{"tensor": x, "op_type": op, "sqnr_db": round(_power_ratio_db(s, n), 2)}
            for (x, _, op), s, n in zip(pairs, signal, noise)]
    return sorted(rows, key=lambda r: r["sqnr_db"])


def _power_ratio_db(signal: float, noise: float) -> float:
    """sqnr_db from summed powers (same edge cases)."""
    if noise == 0:
        return float("inf")
    if signal == 0:
        return float("-inf")
    return float(10.0 * np.log10(signal / noise))


def _add_outputs(model: onnx.ModelProto, names: list[str]) -> None:
    have = {o.name for o in model.graph.output}
    for name in names:
        if name not in have:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
