"""Which activation forms (and which float layers, if any) an int8 graph uses, per model and backend.

Measured on onnxruntime 1.32 CPU (benchmarks/int8_speed.py; see its results for the figures):
- onnxruntime has no int8 kernel for HardSwish or HardSigmoid: listed for quantization they run as
  DQ -> op -> Q float islands. Decomposed into Add/Clip/Mul they run fully int8 (QLinearAdd/QLinearMul).
- An SE gate's h-sigmoid folds exactly into the conv before it (passes.fold_hardsigmoid_gates): no op left.

Backends:
- ``onnxruntime``: h-swish as x * relu6(x + 3) (Add, Clip, Mul: all QLinear ops) with the / 6 folded into the
  next layer's weights where that layer is linear (passes.defer_hardswish_scale): one int8 elementwise pass
  fewer per h-swish (MobileNet v3 large: 19 of 21 h-swish; QLinearMul 4.8 -> 2.7 ms in one profile), no
  float islands. int8/fp32 at 1 thread: 0.74-0.80 against the plain flow's 0.91-0.96 (int8_speed.md).
- ``onnxruntime`` also keeps a small RGB stem conv (3 input channels, kernel <= 3x3, <= 32 outputs, feeding
  convs rather than a pool) in float:
  onnxruntime's u8s8 conv is slow for 3 input channels, and the stem sits where the float input gets
  quantized anyway, so no extra boundary appears. Measured (1 thread, int8/fp32, int8 stem -> float stem):
  MobileNet v3 large 0.78 -> 0.73, v3 small 1.05 -> 0.97, GhostNet 0.68 -> 0.64, MobileNet v2 0.55 -> 0.52;
  SQNR no worse. SqueezeNet 1.0's 7x7x96 stem holds 21% of its MACs and must stay int8 (0.44 -> 1.08), and so
  must ShuffleNet's stems, followed by a max-pool (ShuffleNet v2 0.65 -> 1.06).
- ``tensorrt``: h-swish kept as one HardSwish op with Q/DQ around it; TensorRT fuses it into the conv.
- ``openvino``: the same (OpenVINO's CPU plugin fuses HSwish into the conv as a post-op). Read from the
  onnxruntime file instead, the decomposed Add/Clip/Mul cost MobileNetV3-Large 2.1 ms of PowerStatic and
  1.6 ms of FakeQuantize per run in OpenVINO's own counters (benchmarks/results/targets.md).
- ``generic``: the decomposed form, which every int8 runtime (TFLite, OpenVINO, QNN) takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgezoo.errors import InputError

BACKENDS = ("onnxruntime", "tensorrt", "openvino", "generic")


@dataclass
class Int8Forms:
    backend: str
    hardswish: str  # a passes.rewrite_activations form
    reason: str
    defer_scale: bool = False  # passes.defer_hardswish_scale before the rewrite
    float_op_types: tuple[str, ...] = ()  # op types deliberately left in float (mixed precision)
    float_depthwise: bool = False  # depthwise convs left in float (their int8 kernels can be slower)
    float_stem: bool = False  # a small RGB stem conv left in float (see the module docstring)
    notes: list[str] = field(default_factory=list)

    @property
    def intended_float(self) -> str | None:
        parts = list(self.float_op_types) + (["depthwise Conv"] if self.float_depthwise else []) + (
            ["small RGB stem Conv"] if self.float_stem else [])
        return ", ".join(parts) or None

    @property
    def expects_islands(self) -> bool:
        """Whether float ops between DQ and Q are by design (a float stem has no DQ before it: not an island)."""
        return bool(self.float_op_types or self.float_depthwise)

    def describe(self) -> str:
        form = "x * relu6(x + 3) with / 6 folded into the next layer" if self.defer_scale else self.hardswish
        s = f"backend {self.backend}: h-swish as {form}, SE h-sigmoid folded into its conv"
        if self.intended_float:
            s += f"; kept in float: {self.intended_float}"
        return s + f" ({self.reason})"

    def float_layers(self, graph) -> list[str]:
        """Names of the nodes of an ONNX ``graph`` these forms leave in float (read through
        ``int8_recipe.float_nodes``, which adds the recipe's own)."""
        out = [n.name for n in graph.node if n.op_type in self.float_op_types]
        if self.float_stem:
            out += small_stem_convs(graph)
        if self.float_depthwise:
            for n in graph.node:
                group = next((a.i for a in n.attribute if a.name == "group"), 1)
                if n.op_type == "Conv" and group > 1:
                    out.append(n.name)
        return out


STEM_MAX_KERNEL_AREA = 9
STEM_MAX_OUT_CHANNELS = 32


# Element-wise ops an activation is made of (h-swish decomposed is Add, Clip, Mul, Div).
_ACTIVATION_OPS = {"Relu", "Clip", "LeakyRelu", "HardSwish", "HardSigmoid", "Sigmoid", "Add", "Mul", "Div"}


def small_stem_convs(graph) -> list[str]:
    """Convs that read the graph input with 3 channels, a kernel of at most 3x3 and <= 32 outputs, and whose
    output (through its activation) feeds only convs.

    A stem followed by a pool stays int8: in ShuffleNet v1/v2 (conv -> ReLU -> MaxPool) a float stem made the
    int8 model slower than fp32 (ShuffleNet v2 int8/fp32 0.65 -> 1.06, 1 thread).
    """
    weights = {t.name: tuple(t.dims) for t in graph.initializer}
    inputs = {i.name for i in graph.input}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def feeds_only_convs(tensor: str) -> bool:
        frontier, seen = [tensor], set()
        while frontier:
            t = frontier.pop()
            for c in consumers.get(t, []):
                if c.name in seen:
                    continue
                seen.add(c.name)
                if c.op_type in _ACTIVATION_OPS:
                    frontier.extend(c.output)
                elif c.op_type != "Conv":
                    return False
        return bool(seen)

    out = []
    for n in graph.node:
        if n.op_type != "Conv" or n.input[0] not in inputs or len(n.input) < 2:
            continue
        shape = weights.get(n.input[1])  # (out, in, kh, kw)
        if shape and len(shape) == 4 and shape[1] == 3 and shape[2] * shape[3] <= STEM_MAX_KERNEL_AREA \
                and shape[0] <= STEM_MAX_OUT_CHANNELS and feeds_only_convs(n.output[0]):
            out.append(n.name)
    return out


def has_hardswish(model) -> bool:
    """Whether a PyTorch model (an nn.Hardswish module) or an ONNX graph (a HardSwish node) has h-swish."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        return any(n.op_type == "HardSwish" for n in model.graph.node)
    from torch import nn

    return any(isinstance(m, nn.Hardswish) for m in model.modules())


def choose(model, backend: str = "onnxruntime") -> Int8Forms:
    """The forms for ``model``, a PyTorch module or an ONNX graph (read by op type, not by class).

    On a graph the / 6 of a decomposed h-swish stays a Mul (no defer into the next layer's weights)."""
    import onnx

    if backend not in BACKENDS:
        raise InputError(f"unknown int8 backend '{backend}'", f"use one of {', '.join(BACKENDS)}")
    graph = isinstance(model, onnx.ModelProto)
    has_hswish = has_hardswish(model)
    float_stem = backend == "onnxruntime"
    if not has_hswish:
        return Int8Forms(backend, "keep", "no h-swish in this model", float_stem=float_stem)
    if backend == "tensorrt":
        return Int8Forms(backend, "keep", "TensorRT fuses a quantized HardSwish into the conv before it")
    if backend == "openvino":
        return Int8Forms(backend, "keep", "OpenVINO's CPU plugin fuses HSwish into the conv before it as a post-op")
    if backend == "generic":
        return Int8Forms(backend, "mul_relu6", "Add/Clip/Mul quantize on every int8 runtime", defer_scale=not graph)
    return Int8Forms(backend, "mul_relu6",
                     "onnxruntime has no int8 HardSwish/HardSigmoid kernel; Add/Clip/Mul run as QLinear ops",
                     defer_scale=not graph, float_stem=float_stem)


def source_model(model, forms: Int8Forms, apply=None):
    """The PyTorch model in ``forms``: h-sigmoid gates folded, h-swish in the backend's form. ``apply(fn,
    model, *args, label=...)`` runs (and may check and record) each pass; returns (model, pass names)."""
    from edgezoo.export import passes as P

    def plain(fn, current, *args, label=None, **kwargs):
        return fn(current, *args, **kwargs).model

    apply = apply or plain
    names = ["fold_hardsigmoid_gates"]
    m = apply(P.fold_hardsigmoid_gates, model)
    if forms.defer_scale:
        m = apply(P.defer_hardswish_scale, m)
        names.append("defer_hardswish_scale")
    label = f"rewrite_activations(hardswish={forms.hardswish})"
    m = apply(P.rewrite_activations, m, relu6="clip", hardswish=forms.hardswish, label=label)
    names.append(label)
    return m.eval(), names


def source_graph(graph, forms: Int8Forms, apply=None):
    """The ONNX graph in ``forms``, by op type: SE gates' HardSigmoid folded into their conv, other
    HardSigmoid and HardSwish decomposed where the backend has no int8 kernel for them. ``apply(fn, graph,
    *args)`` runs (and may check and record) each pass; returns (graph, pass names)."""
    from edgezoo.export import graph_passes as G

    def plain(fn, current, *args, **kwargs):
        return fn(current, *args, **kwargs).model

    apply = apply or plain
    names = ["fold_hardsigmoid_gates"]
    g = apply(G.fold_hardsigmoid_gates, graph)
    if forms.backend in ("onnxruntime", "generic"):  # neither has an int8 HardSigmoid
        g = apply(G.decompose_hardsigmoid, g)
        names.append("decompose_hardsigmoid")
    g = apply(G.rewrite_hardswish, g, forms.hardswish)
    names.append(f"rewrite_activations(hardswish={forms.hardswish})")
    return g, names
