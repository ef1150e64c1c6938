"""The export passes on an ONNX graph: what edgezoo.export.passes does on PyTorch modules, for ONNX sources.

- ``channels_first_input``: an N,H,W,C image input becomes N,C,H,W through a Transpose in front (which
  cancels against the Transpose to NCHW a TensorFlow-converted graph starts with), so that every file and
  every step after takes NCHW.
- ``upgrade_opset``: a graph older than the opset int8 needs (QuantizeLinear's per-channel axis: 13), as
  onnx.version_converter rewrites it; many published CNNs are opset 7-12.
- ``fold_batchnorm``: a BatchNormalization right after a Conv (the Conv's only consumer) folds into the
  Conv's weights and bias; BatchNormalization anywhere else stays.
- ``fold_hardsigmoid_gates``: a HardSigmoid right after a Conv (an SE gate) folds its ``alpha`` and ``beta``
  into the Conv, leaving Clip(0, 1), which every int8 runtime quantizes.
- ``spatial_mean_to_global_pool``: a ReduceMean over H and W of an NCHW tensor as GlobalAveragePool (and a
  Flatten when it dropped those axes): the same numbers, in the op every runtime's quantizer knows (MNN's
  crashes on ReduceMean).
- ``decompose_hardsigmoid`` / ``rewrite_hardswish``: HardSigmoid as Mul/Add/Clip and HardSwish as
  x * clip(x + 3, 0, 6) / 6 (Add, Clip, Mul: onnxruntime has no int8 kernel for either op).

Each pass returns a new graph and says what it changed (``GraphPassResult``); ``check_graph_pass`` runs both
graphs through onnxruntime on the same random batch. The passes read op types, never PyTorch classes: ReLU6
is already a Clip in an ONNX graph. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper


@dataclass
class GraphPassResult:
    name: str
    model: onnx.ModelProto
    changes: list[str] = field(default_factory=list)
    before_layout: str = "NCHW"  # of the input of the graph the pass was given (its check feeds it so)


@dataclass
class GraphPassCheck:
    name: str
    max_abs_diff: float
    max_abs_ref: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def to_dict(self) -> dict:
        return {"pass": self.name, "max_abs_diff": self.max_abs_diff, "max_abs_ref": self.max_abs_ref,
                "tolerance": self.tolerance, "exact": True, "ok": self.ok}


class _Graph:
    """Index of one graph: initializers by name, the consumers of each tensor, the graph outputs."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.inits = {t.name: t for t in model.graph.initializer}
        self.consumers: dict[str, list] = {}
        for n in model.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in model.graph.output}
        self.names = {t for n in model.graph.node for t in (*n.input, *n.output)} | set(self.inits)

    def array(self, name: str) -> np.ndarray | None:
        t = self.inits.get(name)
        return None if t is None else numpy_helper.to_array(t)

    def only_consumer(self, tensor: str, op_type: str):
        users = self.consumers.get(tensor, [])
        if len(users) == 1 and users[0].op_type == op_type and tensor not in self.outputs:
            return users[0]
        return None

    def fresh(self, base: str) -> str:
        name, k = base, 0
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def add_init(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name


def _working_copy(model: onnx.ModelProto) -> tuple[onnx.ModelProto, _Graph]:
    """A copy for a pass to edit (the caller's graph is never changed), and its index."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m, _Graph(m)


def _hardsigmoid_params(node) -> tuple[float, float]:
    """HardSigmoid's alpha and beta, with ONNX's defaults."""
    a = _attrs(node)
    return float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))


def simplify(model: onnx.ModelProto, fix_hw: tuple[int, int] | None = None,
             batch: int | None = None) -> GraphPassResult:
    """onnxsim's constant folding and fusions (a constant Pad into the Conv after it, ...), the batch kept
    dynamic; ``fix_hw``: first fix a dynamic height and width of the image input at this size; ``batch``:
    first fix a dynamic batch (then shape arithmetic on the batch folds away too).

    A graph with dynamic H/W computes shapes at run time (TF-style "same" padding: Shape, Gather, Ceil, Sub
    feeding a Pad); quantized, that float arithmetic on shapes gets Q/DQ too and pads by the wrong amount.
    At a fixed size it folds away and the Pad joins the Conv."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    changes = []
    fixed = {**({0: batch} if batch is not None else {}), **(dict(zip((2, 3), fix_hw)) if fix_hw else {})}
    if fixed:
        inits = {t.name for t in m.graph.initializer}
        vi = next(i for i in m.graph.input if i.name not in inits)
        dims = vi.type.tensor_type.shape.dim
        for axis, value in fixed.items():
            if not dims[axis].dim_value:
                dims[axis].ClearField("dim_param")
                dims[axis].dim_value = int(value)
                changes.append(f"{vi.name} {('batch', '', 'height', 'width')[axis]} fixed at {value}")
    before = len(m.graph.node)
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(m)
    except ImportError:
        return GraphPassResult("simplify", m, changes + ["onnxsim is not installed: graph left as it is"])
    except Exception as e:  # onnxsim fails on some graphs; the graph as it was is still correct
        return GraphPassResult("simplify", m, changes + [f"onnxsim failed ({type(e).__name__}): graph left as it is"])
    batch = [d.dim_param or d.dim_value for d in simplified.graph.input[0].type.tensor_type.shape.dim][:1]
    if ok and batch == [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim][:1]:
        m = simplified
        if len(m.graph.node) != before:
            changes.append(f"onnxsim: {before} -> {len(m.graph.node)} nodes")
    return GraphPassResult("simplify", m, changes)


def channels_first_input(model: onnx.ModelProto) -> GraphPassResult:
    """Input x [N,H,W,C] -> a new input [N,C,H,W] and Transpose(perm 0,2,3,1) to x, which the graph reads."""
    m, g = _working_copy(model)
    vi = next(i for i in m.graph.input if i.name not in g.inits)
    if vi.name in g.outputs:
        from edgezoo.errors import InputError

        raise InputError(f"the image input '{vi.name}' is also a graph output, which would change its layout",
                         "export the model with channels first")
    inner = g.fresh(f"{vi.name}_nhwc")
    for node in m.graph.node:
        for k, name in enumerate(node.input):
            if name == vi.name:
                node.input[k] = inner
    dims = list(vi.type.tensor_type.shape.dim)
    new_dims = [dims[0], dims[3], dims[1], dims[2]]
    copies = [onnx.TensorShapeProto.Dimension() for _ in new_dims]
    for c, d in zip(copies, new_dims):
        c.CopyFrom(d)
    del vi.type.tensor_type.shape.dim[:]
    vi.type.tensor_type.shape.dim.extend(copies)
    _rebuild(m, {0: [helper.make_node("Transpose", [vi.name], [inner], name=g.fresh(f"{vi.name}_to_nhwc"),
                                      perm=[0, 2, 3, 1]), m.graph.node[0]]})
    return GraphPassResult("channels_first_input", m, [f"{vi.name}: N,H,W,C -> N,C,H,W (a Transpose in front)"],
                           before_layout="NHWC")


def upgrade_opset(model: onnx.ModelProto, target: int) -> GraphPassResult:
    """The graph at opset ``target`` (onnx.version_converter); one clear error when it cannot convert."""
    from edgezoo.errors import InputError

    have = opset(model)
    name = f"upgrade_opset({target})"
    if have >= target:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        return GraphPassResult(name, m, [])
    try:
        m = onnx.version_converter.convert_version(model, target)
        onnx.checker.check_model(m)
    except Exception as e:  # the converter raises plain RuntimeError/ValidationError with a C++ message
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise InputError(f"the graph is opset {have} and onnx's version converter cannot bring it to opset "
                         f"{target}, which int8 needs: {first}",
                         "export it again at opset 13 or newer, or leave out --int8") from None
    return GraphPassResult(name, m, [f"opset {have} -> {target} (onnx.version_converter)"])


def opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _conv_params(g: _Graph, conv) -> tuple[np.ndarray, np.ndarray] | None:
    """(weight, bias) of a Conv whose weight (and bias) are initializers; None otherwise."""
    if len(conv.input) < 2:
        return None
    w = g.array(conv.input[1])
    if w is None or w.dtype != np.float32:
        return None
    b = g.array(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else np.zeros(w.shape[0], np.float32)
    if b is None:
        return None
    return w, b


def _set_conv_params(g: _Graph, conv, w: np.ndarray, b: np.ndarray, tag: str) -> None:
    """New initializers (the old ones may be shared with other nodes; unused ones are pruned later)."""
    wn = g.add_init(f"{conv.input[1]}_{tag}", w.astype(np.float32))
    bn = g.add_init(f"{conv.name or conv.output[0]}_bias_{tag}", b.astype(np.float32))
    del conv.input[1:]
    conv.input.extend([wn, bn])


def _rebuild(model: onnx.ModelProto, replace: dict[int, list]) -> None:
    """Replace node ``i`` by ``replace[i]`` (an empty list drops it), all at once: the graph's nodes are
    rebuilt only after every edit, because rebuilding detaches the node objects a pass still holds."""
    if not replace:
        return
    nodes = []
    for i, n in enumerate(model.graph.node):
        if i in replace:
            nodes.extend(replace[i])
        else:
            nodes.append(n)
    copies = [onnx.NodeProto() for _ in nodes]
    for c, n in zip(copies, nodes):
        c.CopyFrom(n)
    del model.graph.node[:]
    model.graph.node.extend(copies)


def _position(model: onnx.ModelProto, node) -> int:
    """Index of ``node`` in the graph (found by its outputs: the message objects are not stable)."""
    return next(i for i, n in enumerate(model.graph.node) if list(n.output) == list(node.output))


def _prune_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    if len(keep) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)


def _conv_then(g: _Graph, op_type: str):
    """(conv, its only consumer of ``op_type``, (W, b)) for each Conv of constant weights so followed."""
    for conv in list(g.model.graph.node):
        if conv.op_type != "Conv":
            continue
        after = g.only_consumer(conv.output[0], op_type)
        params = _conv_params(g, conv)
        if after is not None and params is not None:
            yield conv, after, params


def fold_batchnorm(model: onnx.ModelProto) -> GraphPassResult:
    m, g = _working_copy(model)
    changes = []
    drop: dict[int, list] = {}
    for conv, bn, (w, b) in _conv_then(g, "BatchNormalization"):
        if len(bn.output) != 1:
            continue
        scale, shift, mean, var = (g.array(n) for n in bn.input[1:5])
        if any(v is None for v in (scale, shift, mean, var)):
            continue
        eps = float(_attrs(bn).get("epsilon", 1e-5))
        k = (scale / np.sqrt(var + eps)).astype(np.float64)
        _set_conv_params(g, conv, w * k.reshape(-1, *([1] * (w.ndim - 1))), (b - mean) * k + shift, "bnfold")
        drop[_position(m, bn)] = []
        changes.append(f"{bn.name or bn.output[0]} -> {conv.name or conv.output[0]}")
        conv.output[0] = bn.output[0]
    _rebuild(m, drop)
    _prune_initializers(m)
    left = sum(1 for n in m.graph.node if n.op_type == "BatchNormalization")
    if left:
        changes.append(f"{left} BatchNormalization left (no Conv of constant weights right before them)")
    return GraphPassResult("fold_batchnorm", m, changes)


def _clip(g: _Graph, x: str, y: str, lo: float, hi: float, name: str, version: int):
    if version >= 11:
        lo_n = g.add_init(f"{name}_min", np.array(lo, np.float32))
        hi_n = g.add_init(f"{name}_max", np.array(hi, np.float32))
        return helper.make_node("Clip", [x, lo_n, hi_n], [y], name=name)
    return helper.make_node("Clip", [x], [y], name=name, min=lo, max=hi)


def fold_hardsigmoid_gates(model: onnx.ModelProto) -> GraphPassResult:
    """Conv -> HardSigmoid(alpha, beta) == Conv(alpha W, alpha b + beta) -> Clip(0, 1)."""
    m, g = _working_copy(model)
    version = opset(m)
    changes = []
    edits: dict[int, list] = {}
    for conv, hs, (w, b) in _conv_then(g, "HardSigmoid"):
        alpha, beta = _hardsigmoid_params(hs)
        _set_conv_params(g, conv, w * alpha, b * alpha + beta, "hsigfold")
        edits[_position(m, hs)] = [_clip(g, conv.output[0], hs.output[0], 0.0, 1.0,
                                         g.fresh(f"{hs.name or 'hsig'}_clip"), version)]
        changes.append(f"{hs.name or hs.output[0]} folded into {conv.name or conv.output[0]}")
    _rebuild(m, edits)
    _prune_initializers(m)
    return GraphPassResult("fold_hardsigmoid_gates", m, changes)


def decompose_hardsigmoid(model: onnx.ModelProto) -> GraphPassResult:
    """HardSigmoid(x) = clip(alpha x + beta, 0, 1) as Mul, Add, Clip."""
    m, g = _working_copy(model)
    version = opset(m)
    changes = []
    edits: dict[int, list] = {}
    for k, hs in enumerate(m.graph.node):
        if hs.op_type != "HardSigmoid":
            continue
        alpha, beta = _hardsigmoid_params(hs)
        base = hs.name or hs.output[0]
        t1, t2 = g.fresh(f"{base}_scaled"), g.fresh(f"{base}_shifted")
        new = [helper.make_node("Mul", [hs.input[0], g.add_init(f"{base}_alpha", np.array(alpha, np.float32))], [t1],
                                name=g.fresh(f"{base}_mul")),
               helper.make_node("Add", [t1, g.add_init(f"{base}_beta", np.array(beta, np.float32))], [t2],
                                name=g.fresh(f"{base}_add")),
               _clip(g, t2, hs.output[0], 0.0, 1.0, g.fresh(f"{base}_clip"), version)]
        edits[k] = new
        changes.append(f"{base}: HardSigmoid -> Mul, Add, Clip")
    _rebuild(m, edits)
    return GraphPassResult("decompose_hardsigmoid", m, changes)


def rewrite_hardswish(model: onnx.ModelProto, form: str = "mul_relu6") -> GraphPassResult:
    """HardSwish(x) = x * clip(x + 3, 0, 6) / 6 (``mul_relu6``); ``keep`` changes nothing."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    name = f"rewrite_activations(hardswish={form})"
    if form == "keep":
        return GraphPassResult(name, m, [])
    if form != "mul_relu6":
        raise ValueError(f"graph h-swish form {form!r}: only keep and mul_relu6 exist for ONNX graphs")
    g = _Graph(m)
    version = opset(m)
    changes = []
    edits: dict[int, list] = {}
    for k, hs in enumerate(m.graph.node):
        if hs.op_type != "HardSwish":
            continue
        x, base = hs.input[0], hs.name or hs.output[0]
        t1, t2, t3 = g.fresh(f"{base}_plus3"), g.fresh(f"{base}_relu6"), g.fresh(f"{base}_prod")
        new = [helper.make_node("Add", [x, g.add_init(f"{base}_three", np.array(3.0, np.float32))], [t1],
                                name=g.fresh(f"{base}_add")),
               _clip(g, t1, t2, 0.0, 6.0, g.fresh(f"{base}_clip"), version),
               helper.make_node("Mul", [x, t2], [t3], name=g.fresh(f"{base}_mul")),
               helper.make_node("Mul", [t3, g.add_init(f"{base}_sixth", np.array(1 / 6, np.float32))],
                                [hs.output[0]], name=g.fresh(f"{base}_scale"))]
        edits[k] = new
        changes.append(f"{base}: HardSwish -> Add, Clip, Mul, Mul")
    _rebuild(m, edits)
    return GraphPassResult(name, m, changes)


def spatial_mean_to_global_pool(model: onnx.ModelProto) -> GraphPassResult:
    """ReduceMean(x, axes=H,W) of a 4-D x == GlobalAveragePool(x), then Flatten(axis=1) when keepdims=0."""
    m, g = _working_copy(model)
    ranks = {v.name: len(v.type.tensor_type.shape.dim)
             for v in (*onnx.shape_inference.infer_shapes(m).graph.value_info, *m.graph.input)
             if v.type.tensor_type.HasField("shape")}
    changes = []
    edits: dict[int, list] = {}
    for k, node in enumerate(m.graph.node):
        if node.op_type != "ReduceMean" or ranks.get(node.input[0]) != 4:
            continue
        a = _attrs(node)
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = g.array(node.input[1])  # opset 18: the axes are an input
        if axes is None or sorted(int(x) % 4 for x in np.ravel(axes)) != [2, 3]:
            continue
        base = node.name or node.output[0]
        if int(a.get("keepdims", 1)):
            new = [helper.make_node("GlobalAveragePool", [node.input[0]], [node.output[0]], name=g.fresh(f"{base}_gap"))]
        else:
            pooled = g.fresh(f"{base}_pooled")
            new = [helper.make_node("GlobalAveragePool", [node.input[0]], [pooled], name=g.fresh(f"{base}_gap")),
                   helper.make_node("Flatten", [pooled], [node.output[0]], name=g.fresh(f"{base}_flatten"), axis=1)]
        edits[k] = new
        changes.append(f"{base}: ReduceMean over H, W -> GlobalAveragePool")
    _rebuild(m, edits)
    _prune_initializers(m)
    return GraphPassResult("spatial_mean_to_global_pool", m, changes)


def check_graph_pass(before: onnx.ModelProto, result: GraphPassResult, input_size, batch: int = 2,
                     seed: int = 0) -> GraphPassCheck:
    """Max |before(x) - after(x)| over every output, through onnxruntime, on a fixed random batch."""
    from edgezoo.export.agreement import run_model

    x = np.random.default_rng(seed).standard_normal((batch, *input_size), dtype=np.float32)
    ref = run_model(before, x.transpose(0, 2, 3, 1) if result.before_layout == "NHWC" else x)
    out = run_model(result.model, x)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(ref, out))
    scale = max(float(np.max(np.abs(a))) for a in ref)
    return GraphPassCheck(result.name, diff, scale, 1e-4 * max(1.0, scale))
