"""What an int8 graph really runs in float, and where its error comes from, layer by layer.

- ``optimized_graph`` / ``float_islands``: the graph onnxruntime runs on this CPU, and the nodes that still
  compute in float between DequantizeLinear and QuantizeLinear there (the one reader of what runs in float).
- ``layer_sqnr``: per-tensor SQNR of a QDQ model's quantized activations against the fp32 model's, worst first.

No torch here.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import onnx

from edgezoo.export.agreement import ort_runner, run_batched

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# Ops that only move or select bytes: running them on uint8 between Q/DQ is not "float compute".
DATA_MOVEMENT = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Split", "Concat",
                 "Gather", "Identity", "MaxPool", "Pad", "Resize", "Shape", "Cast"}


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
    with ort_runner(ref_model) as rr, ort_runner(q_model) as rq:
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
