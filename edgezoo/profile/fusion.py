"""What the runtime actually runs: onnxruntime's optimized graph, matched back to the file's nodes.

onnxruntime rewrites a graph before running it: it fuses Conv + Relu/Clip/... into one kernel (FusedConv, or
an NCHWc Conv with an ``activation`` attribute), folds BatchNormalization into the conv, lets an NCHWc conv
add a residual input, and runs DequantizeLinear -> Conv -> QuantizeLinear as QLinearConv only where its QDQ
selectors accept the pattern. A static count of the file cannot know which of these happened, so the
profiler asks: it opens the model through the Runner with ``optimized_model_filepath`` set, reads the graph
onnxruntime saved, and matches each runtime node to the file's node by the names onnxruntime gives
(the node's own name, or its output tensor's name + a suffix such as ``_nchwc``).

Without onnxruntime (or when it cannot load the file) ``static_fusions`` gives the rules onnxruntime's CPU
provider applies to float graphs (Conv/Gemm followed by an activation it fuses, Conv followed by
BatchNormalization), which tests/test_guidelines.py checks against the optimized graph.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field

from edgezoo.profile.graph import GraphProfile, NodeProfile

# Activations onnxruntime's ConvActivationFusion (and the NCHWc transformer) fold into the preceding conv.
FUSABLE_ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh"}
MAC_CATEGORIES = {"conv", "depthwise", "group_conv", "gemm"}
RUNTIME_SUFFIXES = re.compile(r"(_nchwc|_quant|_fused|_token_\d+|_output_\d+_nchwc)+$")


@dataclass
class RuntimeNode:
    name: str
    op_type: str
    domain: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass
class RuntimeGraph:
    """The nodes onnxruntime runs, as it saved them after its graph optimisations."""

    nodes: list[RuntimeNode]
    level: str = "all"
    by_name: dict[str, list[RuntimeNode]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for n in self.nodes:
            for key in {n.name, RUNTIME_SUFFIXES.sub("", n.name), *n.outputs}:
                if key:
                    self.by_name.setdefault(key, []).append(n)

    def matches(self, node: NodeProfile, names=()) -> list[RuntimeNode]:
        """Runtime nodes named after ``node`` or after one of its outputs (or after ``names``)."""
        seen, out = set(), []
        for key in (node.name, *node.outputs, *names):
            for r in self.by_name.get(key, ()):
                if id(r) not in seen and r.op_type not in ("ReorderInput", "ReorderOutput"):
                    seen.add(id(r))
                    out.append(r)
        return out


def runtime_graph(source, level: str = "all") -> RuntimeGraph | None:
    """The optimized graph onnxruntime runs for ``source`` (path or bytes), or None when onnxruntime is missing
    or cannot load the file (then the static rules stand in)."""
    from edgezoo.errors import EdgezooError

    try:
        from edgezoo.runtimes.onnxruntime import OrtRunner, import_onnxruntime

        ort = import_onnxruntime()
    except EdgezooError:
        return None
    import onnx

    with tempfile.TemporaryDirectory(prefix="edgezoo-opt-") as tmp:
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        try:
            data = source if isinstance(source, (bytes, bytearray)) else os.fspath(source)
            with OrtRunner(data, threads=1, graph_optimization=level, session_options=opts):
                pass
            proto = onnx.load(opts.optimized_model_filepath, load_external_data=False)
        except (EdgezooError, OSError, onnx.onnx_cpp2py_export.checker.ValidationError, Exception):
            return None
    nodes = [RuntimeNode(n.name, n.op_type, n.domain, tuple(n.input), tuple(n.output)) for n in proto.graph.node]
    return RuntimeGraph(nodes, level)


def _same_kind(original: str, runtime: str) -> bool:
    return runtime in (original, "Fused" + original, "QLinear" + original) or \
        (original in ("Conv", "Gemm", "MatMul") and runtime in ("QLinearConv", "QGemm", "QLinearMatMul",
                                                                  "MatMulIntegerToFloat", "DynamicQuantizeMatMul"))


def static_fusions(p: GraphProfile) -> dict[str, str]:
    """Node name -> the conv/gemm it is folded into, by onnxruntime's CPU fusion rules for float graphs:
    an activation in FUSABLE_ACTIVATIONS, or a BatchNormalization, that reads a conv/gemm output nobody else
    reads."""
    producer = {o: n for n in p.nodes for o in n.outputs}
    uses: dict[str, int] = {}
    for n in p.nodes:
        for i in n.inputs:
            uses[i] = uses.get(i, 0) + 1
    fused = {}
    for n in p.nodes:
        if n.int8 or len(n.inputs) != 1:
            continue
        src = producer.get(n.inputs[0])
        if src is None or src.category not in MAC_CATEGORIES or uses.get(n.inputs[0]) != 1:
            continue
        if n.op_type in FUSABLE_ACTIVATIONS or (n.op_type == "BatchNormalization" and src.category != "gemm"):
            fused[n.name] = src.name
    return fused


def runtime_fusions(p: GraphProfile, rt: RuntimeGraph) -> dict[str, str]:
    """Node name -> the runtime node (its name) that does its work, for the file's nodes that do not run as
    kernels of their own in onnxruntime's optimized graph. Element-wise, pooling and data nodes only: a
    conv or gemm always runs."""
    producer = {o: n for n in p.nodes for o in n.outputs}
    fused = {}
    for n in p.nodes:
        if n.category in MAC_CATEGORIES:
            continue
        found = rt.matches(n)
        if any(_same_kind(n.op_type, r.op_type) for r in found):
            continue
        if found:  # done by another kernel: name the file's conv/gemm feeding it when there is one
            src = next((producer[i] for i in n.inputs if i in producer and producer[i].category in MAC_CATEGORIES),
                       None)
            fused[n.name] = src.name if src is not None else found[0].name
        elif n.op_type not in ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"):
            fused[n.name] = "(removed by the runtime)"
    return fused


def float_in_runtime(p_nodes, rt: RuntimeGraph) -> set[str]:
    """Names of the file's nodes that onnxruntime left as float ops between DequantizeLinear and
    QuantizeLinear (its QDQ selectors did not take them): a runtime node of the same op type, named after the
    node or its output, that reads a DequantizeLinear output."""
    dq_out = {o for r in rt.nodes if r.op_type == "DequantizeLinear" for o in r.outputs}
    left = set()
    for n in p_nodes:
        name, op, outputs = n.name, n.op_type, tuple(o for o in n.output if o)
        for key in (name, *outputs):
            for r in rt.by_name.get(key, ()):
                if r.op_type == op and (any(i in dq_out for i in r.inputs) or _reads_reordered_dq(r, rt, dq_out)):
                    left.add(name)
    return left


def _reads_reordered_dq(r: RuntimeNode, rt: RuntimeGraph, dq_out: set[str]) -> bool:
    """An NCHWc conv reads its activation through a ReorderInput of the DQ's output."""
    producers = {o: x for x in rt.nodes for o in x.outputs}
    for i in r.inputs:
        p = producers.get(i)
        if p is not None and p.op_type == "ReorderInput" and any(j in dq_out for j in p.inputs):
            return True
    return False
