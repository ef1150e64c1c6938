"""Static profile of an ONNX graph: per node MACs, element-wise work, params, bytes and memory access cost.

Works on any ONNX file (ours, torchvision's, a user's) with onnx and numpy alone: no PyTorch.

Counting rules (the papers' own: MobileNet v1 §3, ShuffleNet v2 §2 count multiply-adds):
  * MACs = multiply-accumulates of Conv / ConvTranspose / Gemm / MatMul (and their int8 forms), without the
    bias term. Conv: ``N*Cout*Hout*Wout * (Cin/groups)*kh*kw``; Gemm/MatMul: ``M*N*K``.
    (onnx-tool adds element-wise ops and one MAC per output for the bias, which puts it 2-12% above the
    published figures; tests/test_profile_graph.py checks ours against the zoo's reference figures.)
  * Element-wise, pooling and reduction work is counted separately, in ``ops`` (one op per output element;
    pooling: one per window element).
  * Bytes are counted at each tensor's stored dtype. In a QDQ graph, ``DequantizeLinear -> Conv ->
    QuantizeLinear`` is one int8 conv (what onnxruntime runs as QLinearConv): it reads int8 activations and
    int8 weights and writes int8; the Q/DQ nodes it absorbs are not reported on their own.
  * Memory access cost ("MAC" in the ShuffleNet V2 paper, here ``mem_access``, in elements) = input
    activations + outputs + weights. For a 1x1 conv: ``hw(c1 + c2) + c1*c2`` (paper Eq. 1).
  * CIO (HarDNet, paper Eq. 1) = sum over conv layers of ``c_in*h_in*w_in + c_out*h_out*w_out``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from edgezoo.errors import InputError, MissingDependencyError
from edgezoo.onnx_bounds import (check_computed_constants, check_declared_sizes, constant_tensors, memory_budget,
                                 symbolic_shapes)
from edgezoo.runtimes.onnxruntime import ORT_DTYPES

# Ops whose MACs we count, and which input holds the weight (the reduction dimension comes from it).
CONV_OPS = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "ConvTranspose": 1}
GEMM_OPS = {"Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"}

ELEMENTWISE_OPS = {
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Neg", "Abs", "Reciprocal", "Max", "Min", "Sum",
    "Mean", "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf", "Gelu",
    "Elu", "Selu", "Softplus", "Mish", "Where", "Equal", "Greater", "Less", "Not", "And", "Or", "Cast",
    "BatchNormalization", "InstanceNormalization", "LayerNormalization", "QuantizeLinear", "DequantizeLinear",
    "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "Dropout", "Floor", "Ceil", "Round",
}
POOL_OPS = {
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "ReduceSum",
    "ReduceMin", "Softmax", "LogSoftmax", "QLinearAveragePool", "QLinearGlobalAveragePool", "LpPool",
}
DATA_OPS = {
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose", "Concat", "Split", "Slice", "Gather",
    "Pad", "Expand", "Tile", "Resize", "Upsample", "DepthToSpace", "SpaceToDepth", "QLinearConcat",
}
# Ops that only change a tensor's shape: runtimes alias the buffer, so they move no bytes.
VIEW_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}
# Ops onnxruntime runs in int8 when a QDQ graph wraps them in DequantizeLinear/QuantizeLinear (its QDQ
# selectors); any other op between a DQ and a Q stays a float island (DQ -> op -> Q run separately).
INT8_CAPABLE = {
    "Conv", "MatMul", "Gemm", "Add", "Mul", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool", "Reshape",
    "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Relu", "Clip", "Sigmoid", "LeakyRelu", "Split", "Resize",
    "Gather", "Softmax", "Slice", "Pad", "ConvTranspose", "Where", "ArgMax",
}
QUANT_PARAM_INPUTS = {  # inputs of the QOperator ops that are scales / zero points, not weights
    "QLinearConv": {1, 2, 4, 5, 6, 7}, "QLinearMatMul": {1, 2, 4, 5, 6, 7}, "QuantizeLinear": {1, 2},
    "DequantizeLinear": {1, 2}, "ConvInteger": {2, 3}, "MatMulInteger": {2, 3},
}


@dataclass
class NodeProfile:
    name: str
    op_type: str
    category: str  # conv | depthwise | group_conv | gemm | elementwise | pool | data | other
    input_shapes: list[list[int]]
    output_shapes: list[list[int]]
    dtype: str  # stored dtype of the main output ("float32", "int8", ...)
    macs: int = 0
    ops: int = 0  # element-wise / pooling / reduction work, not in macs
    params: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    mem_access: int = 0  # ShuffleNet V2's memory access cost, in elements
    cio: int = 0  # HarDNet's CIO contribution (convs only)
    kernel: tuple[int, ...] = ()
    group: int = 1
    int8: bool = False  # runs as an int8 kernel (QDQ-wrapped or QOperator)
    scope: tuple[str, ...] = ()  # name components, e.g. ("features", "features.3", "block")
    inputs: tuple[str, ...] = ()  # tensor names, with folded Q/DQ nodes looked through (graph edges)
    outputs: tuple[str, ...] = ()
    weights: dict[str, int] = field(default_factory=dict)  # initializer name -> elements (shared ones once)
    sized: bool = True  # False: shapes unknown (after an op nobody can size), so counts are missing

    @property
    def flops(self) -> int:
        """Arithmetic operations: a MAC is two (multiply and add)."""
        return 2 * self.macs + self.ops

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOPs per byte moved (the roofline's x axis)."""
        return self.flops / self.bytes if self.bytes else 0.0

    def to_dict(self) -> dict:
        return {
            "name": self.name, "op_type": self.op_type, "category": self.category,
            "input_shapes": self.input_shapes, "output_shapes": self.output_shapes, "dtype": self.dtype,
            "macs": self.macs, "ops": self.ops, "flops": self.flops, "params": self.params,
            "bytes_read": self.bytes_read, "bytes_written": self.bytes_written, "mem_access": self.mem_access,
            "intensity": round(self.intensity, 4), "cio": self.cio, "kernel": list(self.kernel),
            "group": self.group, "int8": self.int8, "block": block_of(self, 2), "stage": block_of(self, 1),
            "sized": self.sized,
        }


TOTAL_FIELDS = ("macs", "ops", "flops", "params", "bytes_read", "bytes_written", "mem_access", "cio")


def _sum(nodes: Iterable[NodeProfile], key: str) -> int:
    """Total of ``key`` over nodes; params count each initializer once, however many nodes share it."""
    if key != "params":
        return sum(getattr(n, key) for n in nodes)
    seen: dict[str, int] = {}
    for n in nodes:
        seen.update(n.weights)
    return sum(seen.values())


@dataclass
class GroupTotals:
    name: str
    nodes: list[NodeProfile] = field(default_factory=list)

    def total(self, key: str) -> int:
        return _sum(self.nodes, key)

    def to_dict(self) -> dict:
        d = {"name": self.name, "nodes": len(self.nodes)}
        d.update({k: self.total(k) for k in TOTAL_FIELDS})
        d["bytes"] = d["bytes_read"] + d["bytes_written"]
        return d


@dataclass
class GraphProfile:
    source: str
    inputs: dict[str, list[int]]
    nodes: list[NodeProfile]
    skipped_constant: int = 0  # nodes that only compute constants (folded by any runtime)
    absorbed_qdq: int = 0  # Q/DQ nodes folded into int8 kernels
    notes: list[str] = field(default_factory=list)  # what the user should know (ignored options, ...)
    unknown_ops: list[str] = field(default_factory=list)  # "domain::Op" the profiler cannot size or count
    qdq_fusion: str = "assumed"  # "assumed" (static QDQ rules) or "onnxruntime" (read from its optimized graph)

    def total(self, key: str) -> int:
        return _sum(self.nodes, key)

    @property
    def macs(self) -> int:
        return self.total("macs")

    @property
    def cio_without_depthwise(self) -> int:
        return sum(n.cio for n in self.nodes if n.category != "depthwise")

    def totals(self) -> dict:
        d = {k: self.total(k) for k in TOTAL_FIELDS}
        d["bytes"] = d["bytes_read"] + d["bytes_written"]
        d["intensity"] = round(d["flops"] / d["bytes"], 4) if d["bytes"] else 0.0
        d["cio_without_depthwise"] = self.cio_without_depthwise
        d["conv_macs"] = sum(n.macs for n in self.nodes if n.category in ("conv", "depthwise", "group_conv"))
        d["gemm_macs"] = sum(n.macs for n in self.nodes if n.category == "gemm")
        d["nodes"] = len(self.nodes)
        d["int8_nodes"] = sum(n.int8 for n in self.nodes)
        return d

    def groups(self, depth: int = 2) -> list[GroupTotals]:
        """Totals per block (depth 2) or stage (depth 1), from the node names' scopes, in graph order."""
        out: dict[str, GroupTotals] = {}
        for n in self.nodes:
            key = block_of(n, depth)
            out.setdefault(key, GroupTotals(key)).nodes.append(n)
        return list(out.values())

    def by_op_type(self) -> list[GroupTotals]:
        out: dict[str, GroupTotals] = {}
        for n in self.nodes:
            out.setdefault(n.op_type, GroupTotals(n.op_type)).nodes.append(n)
        return sorted(out.values(), key=lambda g: (-g.total("bytes_read") - g.total("bytes_written"), g.name))

    def heaviest(self, n: int = 10, key: str = "macs") -> list[NodeProfile]:
        return sorted(self.nodes, key=lambda x: -getattr(x, key))[:n]

    def to_dict(self, depth: int = 2) -> dict:
        return {
            "source": self.source, "inputs": self.inputs, "totals": self.totals(),
            "skipped_constant_nodes": self.skipped_constant, "absorbed_qdq_nodes": self.absorbed_qdq,
            "qdq_fusion": self.qdq_fusion, "notes": self.notes, "unknown_ops": self.unknown_ops,
            "blocks": [g.to_dict() for g in self.groups(depth)],
            "stages": [g.to_dict() for g in self.groups(1)],
            "op_types": [g.to_dict() for g in self.by_op_type()],
            "nodes": [n.to_dict() for n in self.nodes],
        }


def scope_of(name: str) -> tuple[str, ...]:
    """Exporter scopes: '/features/features.3/block/block.0/Conv' -> ('features', 'features.3', 'block', 'block.0')."""
    if "/" in name:
        parts = [p for p in name.split("/") if p]
        return tuple(parts[:-1])
    if "." in name:  # "layer1.0.conv1" style
        return tuple(name.split(".")[:-1])
    return ()


def short_name(name: str) -> str:
    """Drop the scope parts the next part repeats: '/features/features.2/block/block.0/block.0.0/Conv' ->
    'features.2/block.0.0/Conv' (for tables; JSON and CSV keep the full name)."""
    parts = [p for p in name.split("/") if p]
    keep = [p for k, p in enumerate(parts) if not (k + 1 < len(parts) and parts[k + 1].startswith(p + "."))]
    return "/".join(keep) or name


def block_of(node: NodeProfile, depth: int) -> str:
    return "/".join(node.scope[:depth]) or "(top)"


# ---------------------------------------------------------------------------------------------- loading

def load_model(source) -> "onnx.ModelProto":  # noqa: F821
    """An ONNX ModelProto from a path, bytes or a ModelProto; bad files raise InputError (one clear line)."""
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError("onnx", "pip install onnx", "the profiler reads ONNX graphs") from None
    if isinstance(source, onnx.ModelProto):
        check_declared_sizes(source, "the model")
        return source
    if isinstance(source, (bytes, bytearray)):
        data, label = bytes(source), "the ONNX bytes"
    else:
        from edgezoo.fileio import check_model_path

        path = Path(source)
        label = str(path)
        if not path.exists():
            raise InputError(f"no such file: {path}", "give an .onnx file or a model name from `edgezoo list`")
        data = check_model_path(path, "an ONNX file").read_bytes()
    if not data:
        raise InputError(f"{label} is empty, not an ONNX model")
    other = other_format(data)
    if other is not None:
        raise not_onnx(label, other)
    try:
        proto = onnx.load_from_string(data)
    except Exception as e:  # protobuf's DecodeError and friends: truncated or not ONNX at all
        raise InputError(f"{label} is not a readable ONNX model ({type(e).__name__})",
                         "is the file complete? re-export or re-copy it") from None
    if not proto.graph.node or not proto.graph.output:
        raise InputError(f"{label} is not a valid ONNX model: the graph has no nodes or no outputs",
                         "is the file complete? re-export or re-copy it")
    produced = {o for n in proto.graph.node for o in n.output}
    known = produced | {i.name for i in proto.graph.input} | {t.name for t in proto.graph.initializer}
    missing = [o.name for o in proto.graph.output if o.name not in known]
    if missing:
        raise InputError(f"{label} is not a valid ONNX model: output '{missing[0]}' is never computed",
                         "is the file complete? re-export or re-copy it")
    check_declared_sizes(proto, label)
    looped = node_in_cycle(proto.graph)
    if looped is not None:
        raise InputError(f"{label} is not a valid ONNX model: the graph has a cycle (through node "
                         f"'{looped.name or looped.op_type}'); an ONNX graph must be acyclic",
                         "re-export the model; no runtime will load this file")
    return proto


# Files of the other runtimes, told apart by their first bytes: profile reads ONNX graphs only.
_MAGIC = ((lambda d: d[4:8] == b"TFL3", "a TFLite (.tflite) file"),
          (lambda d: d[4:6] == b"ET" and d[6:8].isdigit(), "an ExecuTorch (.pte) program"),
          (lambda d: d.lstrip()[:5] in (b"<?xml", b"<net "), "an OpenVINO IR (.xml) file"))


def other_format(data: bytes) -> str | None:
    """What a model file of another runtime is, from its first bytes; None when it may be ONNX."""
    head = data[:64]
    return next((what for test, what in _MAGIC if test(head)), None)


def not_onnx(label: str, what: str) -> InputError:
    return InputError(f"{label} is {what}: profile and guidelines read ONNX graphs",
                      f"time it on its runtime with `edgezoo bench {label}`; profile the .onnx it was converted from")


def node_in_cycle(graph) -> "onnx.NodeProto | None":  # noqa: F821
    """A node on a cycle of ``graph`` (Kahn's algorithm over the tensors nodes produce), or None if acyclic."""
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    waiting = [len({producer[t] for t in n.input if t in producer}) for n in graph.node]
    users: dict[int, set[int]] = {}
    for i, n in enumerate(graph.node):
        for p in {producer[t] for t in n.input if t in producer}:
            users.setdefault(p, set()).add(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    for i in ready:  # grows while iterating: a breadth-first topological order
        for u in users.get(i, ()):
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    if len(ready) == len(graph.node):
        return None
    return next(n for i, n in enumerate(graph.node) if waiting[i] > 0)


def _dims(type_proto) -> list | None:
    tt = type_proto.tensor_type
    if not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]


def _fix_input_shapes(proto, input_size: Sequence[int] | None, batch: int,
                      notes: list[str] | None = None) -> dict[str, list[int]]:
    """Replace symbolic input dims: batch -> ``batch``; others from input_size (C,H,W) or edgezoo metadata."""
    from edgezoo.onnx_meta import get_metadata

    given = input_size is not None
    if input_size is None:
        meta = get_metadata(proto)
        input_size = meta.input_size
    inits = {t.name for t in proto.graph.initializer}
    fixed = {}
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        dims = _dims(vi.type)
        if dims is None:
            raise InputError(f"graph input '{vi.name}' has no shape", "pass --input-size")
        new = []
        for i, d in enumerate(dims):
            if isinstance(d, int) and d > 0:
                if i == 0 and d != batch and batch != 1 and notes is not None:
                    notes.append(f"--batch {batch} has no effect: input '{vi.name}' has a fixed batch of {d}, "
                                 f"so the counts are for batch {d}")
                new.append(d)
            elif i == 0:
                new.append(batch)
            elif input_size is not None and len(dims) == len(input_size) + 1:
                new.append(int(input_size[i - 1]))
            else:
                raise InputError(f"graph input '{vi.name}' has an unknown dimension {i} ({d or '?'})",
                                 "pass --input-size C,H,W")
        if given and len(new) == len(input_size) + 1 and list(new[1:]) != list(map(int, input_size)):
            # the graph's own fixed dims win: constant reshapes inside it were computed for them
            raise InputError(f"graph input '{vi.name}' has fixed shape {'x'.join(map(str, new[1:]))}; "
                             f"it cannot be profiled at {'x'.join(map(str, input_size))}",
                             "drop --input-size, or export the model at that size")
        for d, v in zip(vi.type.tensor_type.shape.dim, new):
            d.Clear()
            d.dim_value = v
        fixed[vi.name] = new
    return fixed


def _itemsize(elem_type: int) -> int:
    import onnx

    try:
        return int(onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize)
    except Exception:  # int4, float8 and other exotic types: count a byte
        return 1


def _dtype_name(elem_type: int) -> str:
    import onnx

    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
    except Exception:
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _infer_shapes(proto) -> dict[str, tuple[list[int] | None, int]]:
    """name -> (static shape or None, elem_type) for every tensor, by onnx shape inference (data propagation on)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception as e:
        raise InputError(f"ONNX shape inference failed: {str(e).splitlines()[0][:200]}",
                         "is this a valid ONNX model? `python -m onnx.checker` says more") from None
    g = inferred.graph
    info: dict[str, tuple[list[int] | None, int]] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        dims = _dims(vi.type)
        static = dims if dims is not None and all(isinstance(d, int) and d > 0 or d == 0 for d in dims) else None
        info[vi.name] = (static, vi.type.tensor_type.elem_type)
    for t in g.initializer:
        info[t.name] = (list(t.dims), t.data_type)
    for n in g.node:  # Constant nodes: inference sometimes leaves them out
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    info.setdefault(n.output[0], (list(a.t.dims), a.t.data_type))
    return info


def _unknown(info: dict, nodes) -> list[str]:
    return [o for n in nodes for o in n.output if o and info.get(o, (None, 0))[0] is None]


def _symbolic_shapes(work, info: dict, label: str = "the model") -> None:
    """Second pass for what onnx's inference left unknown: onnxruntime's symbolic shape inference (it
    propagates Shape/Gather/Concat arithmetic through Reshape, as transformers' exports need). Fills only
    tensors still unknown; any failure leaves them to the run."""
    inferred = symbolic_shapes(work, label)  # bounded: see edgezoo.onnx_bounds
    if inferred is None:
        return
    g = inferred.graph
    for vi in [*g.value_info, *g.output]:
        if info.get(vi.name, (None, 0))[0] is not None:
            continue
        dims = _dims(vi.type)
        if dims is not None and all(isinstance(d, int) and d >= 0 for d in dims):
            info[vi.name] = (dims, vi.type.tensor_type.elem_type or info.get(vi.name, (None, 1))[1])


def _shapes_by_running(proto, inputs: dict[str, list[int]], info: dict, wanted: list[str]) -> None:
    """Last resort for the tensors still unknown: run the model once on zeros through the onnxruntime Runner,
    with only those tensors added as outputs (the rest are not kept in memory)."""
    import onnx

    from edgezoo.runtimes.onnxruntime import OrtRunner

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    have = {o.name for o in m.graph.output}
    for o in wanted:
        if o not in have:
            m.graph.output.add().name = o
            have.add(o)
    try:
        # optimizations off: a fused graph would no longer produce the intermediate tensors asked for;
        # the run may build tensors no inference could size, so it gets a memory budget
        with memory_budget(), OrtRunner(m.SerializeToString(), threads=1, graph_optimization="disable") as runner:
            feed = {i.name: np.zeros(inputs[i.name], dtype=i.dtype) for i in runner.inputs}
            outs = runner.infer(feed)
            names = [o.name for o in runner.outputs]
    except MemoryError:
        raise _run_too_large() from None
    except InputError as e:
        if "allocate" in e.message:  # onnxruntime's arena refused a buffer past the budget
            raise _run_too_large() from None
        raise InputError(f"cannot resolve this graph's tensor shapes: {e.message[:200]}",
                         "pass --input-size, or simplify the model with onnxsim") from None
    for name, v in zip(names, outs):
        elem = info.get(name, (None, 1))[1]
        info[name] = (list(np.shape(v)), elem)


def _run_too_large() -> InputError:
    return InputError("cannot resolve this graph's tensor shapes: running it once needs more than half of this "
                      "machine's memory (a tensor no inference could size)",
                      "pass a smaller --input-size; if the model is yours, simplify it with onnxsim")


# Domains whose ops onnx or onnxruntime can size; any other domain is a custom op library.
KNOWN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}


# --------------------------------------------------------------------------------------------- profiling

def profile_onnx(source, input_size: Sequence[int] | None = None, batch: int = 1, runtime=None) -> GraphProfile:
    """Profile an ONNX model (path, bytes or ModelProto) at ``batch`` and input_size (C,H,W; default: the
    file's static shape or edgezoo metadata).

    Shapes come from onnx's shape inference, then onnxruntime's symbolic shape inference, and only what both
    leave unknown from one run. ``runtime``: onnxruntime's optimized graph (``fusion.runtime_graph``); with
    it, a DequantizeLinear -> op -> QuantizeLinear counts as an int8 kernel only where onnxruntime fused it.
    """
    import onnx

    proto, label, work, inputs, info, notes = _checked_shapes(source, input_size, batch)
    graph = work.graph
    nodes = list(graph.node)
    custom = sorted({f"{n.domain}::{n.op_type}" for n in nodes if n.domain not in KNOWN_DOMAINS})
    if _unknown(info, nodes):
        _symbolic_shapes(work, info, label)
    wanted = _unknown(info, nodes)
    if wanted and not custom:
        full = onnx.ModelProto()
        full.CopyFrom(proto)
        _fix_input_shapes(full, input_size, batch)
        _shapes_by_running(full, inputs, info, wanted)
    elif custom:
        # no runtime here knows a custom op library: count the nodes whose shapes are known, name the rest
        ops = ", ".join(custom)
        unsized = len({id(n) for n in nodes for o in n.output if o in set(wanted)})
        notes.append(f"custom op{'s' if len(custom) > 1 else ''} {ops} not counted (no shape or cost rule)"
                     + (f"; {unsized} node{'s' if unsized != 1 else ''} whose shapes depend on "
                        f"{'them' if len(custom) > 1 else 'it'} are not sized" if unsized else ""))

    producer = {o: n for n in nodes for o in n.output if o}
    consumers: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            if i:
                consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in graph.output}

    const, const_nodes = constant_tensors(graph)

    # QDQ: a node runs in int8 when onnxruntime can fuse it (INT8_CAPABLE) and every activation input comes
    # through a DequantizeLinear. The DQs that feed only such nodes, and the Qs right after them, vanish.
    def via_dq(t: str) -> bool:
        p = producer.get(t)
        return p is not None and p.op_type == "DequantizeLinear"

    quantized = set()
    for n in nodes:
        if id(n) in const_nodes or n.op_type not in INT8_CAPABLE:
            continue
        data = [i for i in n.input if i and i not in const]
        dq_any = any(via_dq(i) for i in n.input if i)
        if dq_any and data and all(via_dq(i) for i in data):
            quantized.add(id(n))
    if runtime is not None:  # what onnxruntime actually fused, not what it could
        from edgezoo.profile.fusion import float_in_runtime

        left = float_in_runtime([n for n in nodes if id(n) in quantized], runtime)
        quantized = {id(n) for n in nodes if id(n) in quantized and n.name not in left}
    absorbed = set()
    for n in nodes:
        if n.op_type == "DequantizeLinear" and id(n) not in const_nodes:
            cons = consumers.get(n.output[0], [])
            if cons and n.output[0] not in graph_outputs and all(id(c) in quantized for c in cons):
                absorbed.add(id(n))
    q_out_dtype: dict[str, int] = {}  # tensor written by a quantized node -> its int8 dtype
    for n in nodes:
        if id(n) not in quantized:
            continue
        for o in n.output:
            cons = consumers.get(o, [])
            if cons and o not in graph_outputs and all(c.op_type == "QuantizeLinear" for c in cons):
                q_out_dtype[o] = info.get(cons[0].output[0], (None, 3))[1]
                absorbed.update(id(c) for c in cons)

    def stored(t: str, consumer_quantized: bool) -> tuple[list[int], int, bool]:
        """Shape, bytes per element and constness of tensor t as the consuming kernel reads it."""
        shape, elem = info.get(t, (None, 1))
        if consumer_quantized and via_dq(t):
            src = producer[t].input[0]
            s_shape, s_elem = info.get(src, (shape, 3))
            return list(shape or s_shape or []), _itemsize(s_elem), t in const
        if t in q_out_dtype:
            return list(shape or []), _itemsize(q_out_dtype[t]), False
        return list(shape or []), _itemsize(elem), t in const

    # Edges through the folded Q/DQ nodes, so that a QDQ graph keeps its connectivity (G3 needs it).
    alias = {}
    for n in nodes:
        if id(n) in absorbed:
            alias[n.output[0]] = n.input[0]

    def resolve(t: str) -> str:
        while t in alias:
            t = alias[t]
        return t

    def weight_source(t: str) -> str:  # a weight read through its DequantizeLinear is the int8 initializer
        p = producer.get(t)
        return p.input[0] if p is not None and p.op_type == "DequantizeLinear" and id(p) in const_nodes else t

    profiles = []
    for n in nodes:
        if id(n) in const_nodes or id(n) in absorbed:
            continue
        prof = _profile_node(n, stored, info, id(n) in quantized, q_out_dtype, weight_source)
        prof.inputs = tuple(resolve(i) for i in n.input if i and i not in const)
        prof.outputs = tuple(o for o in n.output if o)
        prof.sized = all(info.get(o, (None, 0))[0] is not None for o in n.output if o) and \
            all(info.get(i, (None, 0))[0] is not None for i in n.input if i)
        if not prof.sized:  # unknown shapes would count as one element: count nothing rather than a guess
            prof.macs = prof.ops = prof.bytes_read = prof.bytes_written = prof.mem_access = prof.cio = 0
        profiles.append(prof)
    return GraphProfile(label, inputs, profiles, skipped_constant=len(const_nodes), absorbed_qdq=len(absorbed),
                        notes=notes, unknown_ops=custom, qdq_fusion="onnxruntime" if runtime is not None else "assumed")


def check_profilable(source, input_size: Sequence[int] | None = None, batch: int = 1) -> None:
    """Every check ``profile_onnx`` makes before it lets any tool build a tensor (edgezoo.onnx_bounds):
    for callers that hand the file to onnxruntime first (the optimized-graph view)."""
    _checked_shapes(source, input_size, batch)


def _checked_shapes(source, input_size, batch):
    """(model, label, weightless copy with fixed inputs, input shapes, onnx-inferred shapes, notes), once the
    file's declared sizes and its computed constants are within bounds."""
    proto = load_model(source)
    label = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<model>"
    work = _without_weight_data(proto)  # shapes need no weight values: copying and inferring is then cheap
    notes: list[str] = []
    inputs = _fix_input_shapes(work, input_size, batch, notes)
    info = _infer_shapes(work)
    check_computed_constants(work.graph, info, constant_tensors(work.graph)[0], label)
    return proto, label, work, inputs, info, notes


def _without_weight_data(proto):
    """A copy whose large initializers keep dims and dtype but no values. Small ones (Reshape shapes, axes,
    scalars) keep their values: shape inference reads them."""
    import onnx

    graph = proto.graph
    big = [t for t in graph.initializer if math.prod(t.dims) > 64]
    saved = [(t, t.raw_data) for t in big if t.raw_data]
    saved_fields = []
    for t in big:
        for f in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            vals = getattr(t, f)
            if len(vals):
                saved_fields.append((t, f, list(vals)))
    try:
        for t in big:
            t.ClearField("raw_data")
            for f in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                t.ClearField(f)
        work = onnx.ModelProto()
        work.CopyFrom(proto)
    finally:  # the caller's model is left as it was
        for t, raw in saved:
            t.raw_data = raw
        for t, f, vals in saved_fields:
            getattr(t, f).extend(vals)
    return work


def _numel(shape: Iterable[int]) -> int:
    return int(math.prod(shape)) if shape is not None else 0


def _attr(node, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            import onnx

            return onnx.helper.get_attribute_value(a)
    return default


def _profile_node(n, stored, info, quantized: bool, q_out_dtype: dict, weight_source=lambda t: t) -> NodeProfile:
    op = n.op_type
    ins = [(i, *stored(i, quantized)) for i in n.input if i]  # (name, shape, itemsize, const)
    skip_params = QUANT_PARAM_INPUTS.get(op, set())
    outs = []
    for o in n.output:
        if not o:
            continue
        shape, elem = info.get(o, (None, 1))
        size = _itemsize(q_out_dtype[o]) if o in q_out_dtype else _itemsize(elem)
        outs.append((o, list(shape or []), size, q_out_dtype.get(o, elem)))
    out_elems = sum(_numel(s) for _, s, _, _ in outs)
    act_in = [(s, b) for k, (_, s, b, c) in enumerate(ins) if not c]
    weights = []  # (shape, itemsize) of constant inputs that are parameters
    weight_names: dict[str, int] = {}
    for k, (name, s, b, c) in enumerate(ins):
        if not c or k in skip_params:
            continue
        elem = info.get(name, (None, 1))[1]
        if elem == 7:  # int64 constants are shapes, axes and indices, not parameters
            continue
        if op not in CONV_OPS and op not in GEMM_OPS and _numel(s) <= 1:
            continue  # scalar constants of element-wise ops (x + 3, x / 6)
        weights.append((s, b))
        weight_names[weight_source(name)] = _numel(s)

    macs = ops = 0
    kernel: tuple[int, ...] = ()
    group = 1
    category = "other"
    if op in CONV_OPS:
        w_shape = ins[CONV_OPS[op]][1] if len(ins) > CONV_OPS[op] else []
        group = int(_attr(n, "group", 1))
        kernel = tuple(w_shape[2:])
        if op == "ConvTranspose":  # each input element meets (Cout/g)*kh*kw weights
            macs = _numel(ins[0][1]) * _numel(w_shape[1:])
        else:  # each output element is a dot product of length (Cin/g)*kh*kw
            macs = out_elems * _numel(w_shape[1:])
        cin = ins[0][1][1] if len(ins[0][1]) > 1 else 0
        category = "conv" if group == 1 else ("depthwise" if group == cin else "group_conv")
    elif op in GEMM_OPS:
        a = ins[0][1]
        if op == "Gemm":
            k = a[0] if _attr(n, "transA", 0) else (a[1] if len(a) > 1 else a[0])
        else:
            k = a[-1] if a else 0
        macs = out_elems * int(k)
        category = "gemm"
    elif op in ELEMENTWISE_OPS:
        ops = out_elems
        category = "elementwise"
    elif op in POOL_OPS:
        if op in ("MaxPool", "AveragePool", "LpPool", "QLinearAveragePool"):
            kernel = tuple(_attr(n, "kernel_shape", ()))
            ops = out_elems * _numel(kernel)
        else:  # global pools and reductions touch every input element once
            ops = _numel(ins[0][1])
        category = "pool"
    elif op in DATA_OPS:
        category = "data"

    if op in VIEW_OPS:
        bytes_read = bytes_written = 0
        mem_access = 0
    else:
        # constant int64 inputs (shapes, axes, pads) and quantization scales / zero points are not data the
        # kernel streams through
        bytes_read = sum(_numel(s) * b for k, (name, s, b, c) in enumerate(ins)
                         if k not in skip_params and not (c and info.get(name, (None, 1))[1] == 7))
        bytes_written = sum(_numel(s) * size for _, s, size, _ in outs)
        mem_access = sum(_numel(s) for s, _ in act_in) + out_elems + sum(_numel(s) for s, _ in weights)
    cio = 0
    if op in CONV_OPS:  # HarDNet: input + output feature maps of every conv
        cio = _numel(ins[0][1]) + out_elems
    main_elem = outs[0][3] if outs else 1
    return NodeProfile(
        name=n.name or (n.output[0] if n.output else op), op_type=op, category=category,
        input_shapes=[s for _, s, _, _ in ins], output_shapes=[s for _, s, _, _ in outs],
        dtype=_dtype_name(main_elem), macs=int(macs), ops=int(ops),
        params=sum(_numel(s) for s, _ in weights), bytes_read=int(bytes_read), bytes_written=int(bytes_written),
        mem_access=int(mem_access), cio=int(cio), kernel=tuple(int(k) for k in kernel), group=group,
        int8=quantized or op.startswith("QLinear") or op.endswith("Integer"), scope=scope_of(n.name or ""),
        weights=weight_names,
    )
