"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization", section 4.1) on an fp32 ONNX graph.

For two convs joined by a positively homogeneous activation (f(s x) = s f(x) for s > 0: Relu, LeakyRelu,
or none), output channel i of the first can be divided by s_i and input channel i of
the second multiplied by s_i without changing the function. With r1_i, r2_i the channels' weight ranges,
s_i = sqrt(r1_i / r2_i) makes both ranges sqrt(r1_i r2_i): a per-tensor int8 grid then fits every channel
(depthwise convs, whose channels' ranges differ by orders of magnitude, gain most).

Clip(0, 6) (ReLU6) is not positively homogeneous per channel: clip(s x, 0, 6) != s clip(x, 0, 6). Pairs
joined by it are skipped and counted, never changed: the pass keeps fp32 outputs (up to float rounding).
(AIMET replaces ReLU6 by ReLU before equalizing, which changes the function; this pass does not.)

No torch: numpy and onnx.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

HOMOGENEOUS = {"Relu", "LeakyRelu"}


def _attr(node, name, default):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _is_relu_clip(node, init) -> bool | None:
    """Clip with min 0 and no max is a Relu (True); with a max it is ReLU6-like (False); else None."""
    if node.op_type != "Clip":
        return None
    lo = node.input[1] if len(node.input) > 1 and node.input[1] else None
    hi = node.input[2] if len(node.input) > 2 and node.input[2] else None
    lo_v = float(numpy_helper.to_array(init[lo])) if lo in init else (None if lo else float("-inf"))
    if lo_v != 0.0:
        return None
    return hi is None


def equalize(model: onnx.ModelProto, iterations: int = 4, min_range: float = 1e-8) -> tuple[onnx.ModelProto, dict]:
    """A copy of ``model`` with every eligible conv pair equalized; returns (model, report)."""
    src, model = model, onnx.ModelProto()
    model.CopyFrom(src)  # the caller's model is never modified
    g = model.graph
    init = {i.name: i for i in g.initializer}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    uses = {name: sum(1 for n in g.node for i in n.input if i == name) for name in init}

    def sole_consumer(tensor):
        c = consumers.get(tensor, [])
        return c[0] if len(c) == 1 and tensor not in outputs else None

    pairs, skipped = [], {"relu6_or_clip": 0, "other": 0}
    for n in g.node:
        if n.op_type != "Conv" or len(n.input) < 2 or n.input[1] not in init or uses.get(n.input[1], 0) != 1:
            continue
        nxt = sole_consumer(n.output[0])
        act = None
        if nxt is not None and (nxt.op_type in HOMOGENEOUS or _is_relu_clip(nxt, init) is True):
            act, nxt = nxt, sole_consumer(nxt.output[0])
        elif nxt is not None and nxt.op_type == "Clip":
            after = sole_consumer(nxt.output[0])
            if after is not None and after.op_type == "Conv":
                skipped["relu6_or_clip"] += 1
            continue
        if nxt is None or nxt.op_type != "Conv" or nxt.input[1] not in init or uses.get(nxt.input[1], 0) != 1:
            continue
        if len(n.input) > 2 and n.input[2] and uses.get(n.input[2], 0) != 1:
            skipped["other"] += 1
            continue
        w2 = numpy_helper.to_array(init[nxt.input[1]])
        channels = numpy_helper.to_array(init[n.input[1]]).shape[0]
        group2 = _attr(nxt, "group", 1)
        if not (group2 == 1 or (group2 == channels and w2.shape[0] == channels and w2.shape[1] == 1)):
            skipped["other"] += 1
            continue
        pairs.append((n, nxt, act))

    changes = []
    for it in range(iterations):
        for a, b, act in pairs:
            w1 = numpy_helper.to_array(init[a.input[1]]).astype(np.float64)
            w2 = numpy_helper.to_array(init[b.input[1]]).astype(np.float64)
            depthwise2 = _attr(b, "group", 1) > 1
            r1 = np.abs(w1.reshape(w1.shape[0], -1)).max(1)
            r2 = np.abs(w2.reshape(w2.shape[0], -1)).max(1) if depthwise2 else np.abs(
                np.moveaxis(w2, 1, 0).reshape(w2.shape[1], -1)).max(1)
            ok = (r1 > min_range) & (r2 > min_range)
            s = np.ones_like(r1)
            s[ok] = np.sqrt(r1[ok] / r2[ok])
            if np.allclose(s, 1.0, rtol=1e-3):
                continue
            shape1 = (-1,) + (1,) * (w1.ndim - 1)
            w1 = w1 / s.reshape(shape1)
            w2 = w2 * (s.reshape(shape1) if depthwise2 else s.reshape((1, -1) + (1,) * (w2.ndim - 2)))
            init[a.input[1]].CopyFrom(numpy_helper.from_array(w1.astype(np.float32), a.input[1]))
            init[b.input[1]].CopyFrom(numpy_helper.from_array(w2.astype(np.float32), b.input[1]))
            if len(a.input) > 2 and a.input[2]:
                b1 = numpy_helper.to_array(init[a.input[2]]).astype(np.float64) / s
                init[a.input[2]].CopyFrom(numpy_helper.from_array(b1.astype(np.float32), a.input[2]))
            if it == 0:
                changes.append(f"{a.name} -> {b.name}" + (f" (through {act.op_type})" if act is not None else "")
                               + f": channel ranges equalized (scales {s.min():.3g}..{s.max():.3g})")
    report = {"pass": "cross_layer_equalization", "pairs": len(pairs), "changes": changes,
              "skipped_pairs": skipped}
    return model, report


def channel_range_spread(model: onnx.ModelProto, node_name: str) -> float:
    """max / min over output channels of the per-channel weight range of conv ``node_name``."""
    init = {i.name: i for i in model.graph.initializer}
    node = next(n for n in model.graph.node if n.name == node_name)
    w = numpy_helper.to_array(init[node.input[1]])
    r = np.abs(w.reshape(w.shape[0], -1)).max(1)
    return float(r.max() / max(r.min(), 1e-30))
