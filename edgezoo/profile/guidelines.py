"""The four ShuffleNet V2 guidelines (Ma et al., ECCV 2018, section 2), checked on a static graph profile.

  G1  "Equal channel width minimizes memory access cost (MAC)."
  G2  "Excessive group convolution increases MAC."
  G3  "Network fragmentation reduces degree of parallelism."
  G4  "Element-wise operations are non-negligible."

Each check returns a ``Finding``: the guideline, a severity, the model-level figure, and the layers (or
blocks) that contribute most. The severity thresholds are edgezoo's own rules of thumb, stated next to each
check; the paper gives measurements, not thresholds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from edgezoo.profile.graph import VIEW_OPS, GraphProfile, NodeProfile

SEVERITIES = ("ok", "low", "medium", "high")
JOIN_OPS = {"Concat", "Add", "Sum", "Mul", "QLinearConcat", "QLinearAdd", "QLinearMul"}
MAC_OPS = {"conv", "depthwise", "group_conv", "gemm"}
# Op types whose measured time counts as element-wise in G4 (onnxruntime's names included).
ELEMENTWISE_TIME_OPS = {
    "Add", "Sub", "Mul", "Div", "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Tanh",
    "BatchNormalization", "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "QuantizeLinear",
    "DequantizeLinear", "Sum", "Max", "Min", "Pow", "Sqrt", "Exp", "Erf", "Gelu", "Cast", "PRelu",
}


@dataclass
class Finding:
    guideline: str  # G1 .. G4
    title: str
    severity: str  # ok | low | medium | high
    figure: str  # the headline number, in words
    value: float  # the same number, for machines (a fraction unless the figure says otherwise)
    layers: list[dict[str, Any]] = field(default_factory=list)  # worst contributors first
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sev(value: float, medium: float, high: float) -> str:
    return "high" if value >= high else "medium" if value >= medium else "low"


def is_pointwise(n: NodeProfile) -> bool:
    return n.category == "conv" and len(n.kernel) == 2 and all(k == 1 for k in n.kernel) and \
        len(n.output_shapes[0]) == 4


def g1_lower_bound(hw: int, macs: int) -> float:
    """Paper Eq. 1: MAC >= 2*sqrt(hw*B) + B/(hw), with B = hw*c1*c2 (equality iff c1 = c2)."""
    return 2 * math.sqrt(hw * macs) + macs / hw


def check_g1(p: GraphProfile, top: int = 5) -> Finding:
    """1x1 convs: memory access cost above the equal-width bound. Severity on the extra MAC of all 1x1 convs
    together: >= 25% high, >= 10% medium."""
    rows = []
    for n in p.nodes:
        if not is_pointwise(n):
            continue
        N, c2, h, w = n.output_shapes[0]
        c1 = n.input_shapes[0][1]
        hw = N * h * w  # batch folds into the feature map: B/hw stays c1*c2
        # the paper's MAC assumes the same hw in and out; a strided 1x1 reads more, which is not G1's point
        mac = hw * (c1 + c2) + c1 * c2
        bound = g1_lower_bound(hw, n.macs)
        rows.append({"name": n.name, "c1": c1, "c2": c2, "hw": h * w, "ratio": f"1:{c2 / c1:.2g}" if c2 >= c1
                     else f"{c1 / c2:.2g}:1", "mac": mac, "bound": bound, "excess": mac / bound - 1})
    if not rows:
        return Finding("G1", "balanced 1x1 convolutions", "ok", "no 1x1 convolutions", 0.0)
    total, bound = sum(r["mac"] for r in rows), sum(r["bound"] for r in rows)
    excess = total / bound - 1
    unbalanced = sum(1 for r in rows if max(r["c1"], r["c2"]) >= 4 * min(r["c1"], r["c2"]))
    rows.sort(key=lambda r: -(r["mac"] - r["bound"]))
    for r in rows:
        r["excess"], r["bound"] = round(r["excess"], 4), round(r["bound"])
    return Finding(
        "G1", "balanced 1x1 convolutions", _sev(excess, 0.10, 0.25),
        f"1x1 convs move {excess:.1%} more than the c1=c2 bound ({len(rows)} convs, {unbalanced} with c1:c2 "
        f"beyond 1:4)", excess, rows[:top],
        "MAC = hw(c1+c2) + c1c2 >= 2*sqrt(hwB) + B/hw; the worst layers waste the most elements.")


def check_g2(p: GraphProfile, top: int = 5) -> Finding:
    """Group convs (depthwise excluded: it is G4's). At fixed input and FLOPs B, a g-group conv has g times
    the output channels of a g=1 conv: MAC = hw*c1 + B*g/c1 + B/hw (paper Eq. 2), so the extra over g=1 is
    B*(g-1)/c1 = hw*c2*(1-1/g) for 1x1, and the same hw*c2*(1-1/g) for a kxk kernel. Severity on that extra
    as a share of the model's memory access cost: >= 10% high, >= 3% medium."""
    rows = []
    for n in p.nodes:
        if n.category != "group_conv":
            continue
        out = n.output_shapes[0]
        extra = math.prod(out) * (1 - 1 / n.group)
        rows.append({"name": n.name, "groups": n.group, "c1": n.input_shapes[0][1], "c2": out[1],
                     "kernel": "x".join(map(str, n.kernel)), "mac": n.mem_access, "extra_vs_g1": round(extra)})
    if not rows:
        return Finding("G2", "group convolutions", "ok", "no group convolutions (depthwise ones count under G4)", 0.0)
    extra = sum(r["extra_vs_g1"] for r in rows)
    share = extra / max(p.total("mem_access"), 1)
    rows.sort(key=lambda r: -r["extra_vs_g1"])
    return Finding(
        "G2", "group convolutions", _sev(share, 0.03, 0.10),
        f"{len(rows)} group convs (g up to {max(r['groups'] for r in rows)}) add {share:.1%} to the model's "
        f"memory access cost vs g=1 at equal FLOPs", share, rows[:top],
        "extra MAC vs g=1 at fixed input and FLOPs = hw*c2*(1 - 1/g)")


def _conv_branches(join: NodeProfile, members: dict[str, NodeProfile]) -> int:
    """Parallel conv branches meeting at ``join``: inputs whose conv ancestors (inside the block) include one
    that no other input depends on. A ShuffleNetV2 unit's identity half has none; a GhostNet module's two
    halves are in series (the cheap op's input is the primary conv's output), so it counts one."""
    def ancestors(t: str, seen: set) -> set:
        node = members.get(t)
        if node is None or node.name in seen:
            return set()
        seen.add(node.name)
        acc = {node.name} if node.category in MAC_OPS else set()
        for i in node.inputs:
            acc |= ancestors(i, seen)
        return acc

    sets = [ancestors(t, set()) for t in join.inputs]
    count = 0
    for k, s in enumerate(sets):
        others = set().union(*(x for j, x in enumerate(sets) if j != k)) if len(sets) > 1 else set()
        if s - others:
            count += 1
    return count


def check_g3(p: GraphProfile, depth: int = 2, top: int = 5) -> Finding:
    """Fragmentation per block: kernels launched (view ops excluded), convs, small ops (everything that is
    not a conv/gemm), and parallel conv branches. Severity: 4+ parallel branches or 2+ small ops per conv
    -> high; 2-3 branches or 1.5+ small ops per conv -> medium."""
    rows = []
    for g in p.groups(depth):
        kernels = [n for n in g.nodes if n.op_type not in VIEW_OPS]
        if not kernels:
            continue
        members = {o: n for n in g.nodes for o in n.outputs}
        convs = sum(1 for n in kernels if n.category in MAC_OPS)
        joins = [n for n in kernels if n.op_type in JOIN_OPS and len(n.inputs) >= 2]
        parallel = max((_conv_branches(j, members) for j in joins), default=min(convs, 1))
        rows.append({"block": g.name, "kernels": len(kernels), "convs": convs, "small_ops": len(kernels) - convs,
                     "parallel_branches": parallel,
                     "small_ops_list": sorted({n.op_type for n in kernels if n.category not in MAC_OPS})})
    convs = sum(r["convs"] for r in rows)
    small = sum(r["small_ops"] for r in rows)
    per_conv = small / convs if convs else float(small)
    parallel = max((r["parallel_branches"] for r in rows), default=0)
    branched = sum(1 for r in rows if r["parallel_branches"] >= 2)
    sev = "high" if parallel >= 4 or per_conv >= 2 else "medium" if parallel >= 2 or per_conv >= 1.5 else "low"
    rows.sort(key=lambda r: (-r["parallel_branches"], -r["kernels"]))
    return Finding(
        "G3", "network fragmentation", sev,
        f"{len(rows)} blocks, {sum(r['kernels'] for r in rows) / max(len(rows), 1):.1f} kernels per block, "
        f"{per_conv:.2f} small ops per conv, up to {parallel} parallel conv branches ({branched} blocks branch)",
        per_conv, rows[:top], "blocks from node-name scopes at depth %d" % depth)


def check_g4(p: GraphProfile, op_times=None, top: int = 5) -> Finding:
    """Element-wise ops: share of the memory traffic (bytes at stored dtype) and of the memory access cost;
    the paper also counts depthwise convs here (high MAC/FLOPs). With measured op times, their share of time.
    Severity on the byte share: >= 30% high, >= 15% medium."""
    ew = [n for n in p.nodes if n.category == "elementwise"]
    total_bytes = max(p.total("bytes_read") + p.total("bytes_written"), 1)
    total_mac = max(p.total("mem_access"), 1)
    ew_bytes = sum(n.bytes for n in ew)
    dw_bytes = sum(n.bytes for n in p.nodes if n.category == "depthwise")
    share = ew_bytes / total_bytes
    mac_share = sum(n.mem_access for n in ew) / total_mac
    flop_share = sum(n.flops for n in ew) / max(p.total("flops"), 1)
    by_type: dict[str, dict] = {}
    for n in ew:
        d = by_type.setdefault(n.op_type, {"op_type": n.op_type, "count": 0, "bytes": 0})
        d["count"] += 1
        d["bytes"] += n.bytes
    layers = sorted(by_type.values(), key=lambda d: -d["bytes"])
    for d in layers:
        d["share_of_bytes"] = round(d["bytes"] / total_bytes, 4)
    figure = (f"element-wise ops: {share:.1%} of bytes moved, {mac_share:.1%} of memory access cost, "
              f"{flop_share:.1%} of FLOPs; with depthwise convs {(ew_bytes + dw_bytes) / total_bytes:.1%} of bytes")
    if op_times is not None and getattr(op_times, "total_ms", 0):
        t = sum(ms for op, ms in op_times.by_type.items() if op in ELEMENTWISE_TIME_OPS)
        figure += f"; measured {t / op_times.total_ms:.1%} of time (after the runtime's fusions)"
    return Finding("G4", "element-wise operations", _sev(share, 0.15, 0.30), figure, share, layers[:top],
                   "ReLU, Add, Mul, h-swish, ... have few FLOPs but a full read and write of their tensors")


def check_guidelines(p: GraphProfile, op_times=None, depth: int = 2, top: int = 5) -> list[Finding]:
    return [check_g1(p, top), check_g2(p, top), check_g3(p, depth, top), check_g4(p, op_times, top)]
