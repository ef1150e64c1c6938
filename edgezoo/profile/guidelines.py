"""The four ShuffleNet V2 guidelines (Ma et al., ECCV 2018, section 2), checked on a static graph profile.

  G1  "Equal channel width minimizes memory access cost (MAC)."
  G2  "Excessive group convolution increases MAC."
  G3  "Network fragmentation reduces degree of parallelism."
  G4  "Element-wise operations are non-negligible."

Each check returns a ``Finding``: the guideline, a severity, the model-level figure, and the layers (or
blocks) that contribute most. The severity thresholds are edgezoo's own rules of thumb, stated next to each
check; the paper gives measurements, not thresholds. Each finding carries one line of advice: what the paper
recommends for that guideline (section 2's closing remarks and section 3's unit design).
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


# What the paper recommends for each guideline (Ma et al. 2018, end of section 2 and section 3).
ADVICE = {
    "G1": "use equal input and output channel widths in 1x1 convs (c1:c2 near 1:1), as ShuffleNet V2's units do",
    "G2": "be careful with group convolution: choose the group count by the target platform, and prefer "
          "fewer groups (or channel split) where memory access dominates",
    "G3": "reduce fragmentation: fewer, wider branches per block (the paper's units have two), fewer small "
          "ops between convs",
    "G4": "reduce element-wise ops: drop or fuse ReLU/Add/Mul where the runtime does not (ShuffleNet V2 moves "
          "the ReLU to one branch and replaces the residual Add with Concat)",
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
    advice: str = ""

    def __post_init__(self) -> None:
        if not self.advice:
            self.advice = ADVICE.get(self.guideline, "")

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


def parallel_branches(p: GraphProfile) -> dict[str, int]:
    """Join node name -> parallel conv branches that meet there, from the graph's structure alone.

    A join (Concat, Add, Mul, ...) has one input per incoming path; the nodes on input k's path since the
    fork are its ancestors that no other input of the join shares. The input is a conv branch when those
    exclusive ancestors hold a conv or gemm. So an Inception block's concat counts its four branches, a
    residual Add counts one (the identity path has no conv), and a GhostNet module counts one (the cheap
    conv reads the primary conv's output: both lie on one path). Node names play no part."""
    producer = {o: k for k, n in enumerate(p.nodes) for o in n.outputs}
    anc: list[int] = []  # bit k set: node k is an ancestor of (or is) node i; python ints as bitsets
    mac_mask = 0
    for i, n in enumerate(p.nodes):  # ONNX nodes are in topological order
        a = 1 << i
        for t in n.inputs:
            k = producer.get(t)
            if k is not None and k < i:
                a |= anc[k]
        anc.append(a)
        if n.category in MAC_OPS:
            mac_mask |= 1 << i
    out = {}
    for i, n in enumerate(p.nodes):
        if n.op_type not in JOIN_OPS:
            continue
        sets = [anc[producer[t]] for t in n.inputs if t in producer]
        if len(sets) < 2:
            continue
        count = 0
        for k, a in enumerate(sets):
            others = 0
            for j, b in enumerate(sets):
                if j != k:
                    others |= b
            if a & ~others & mac_mask:
                count += 1
        out[n.name] = count
    return out


def check_g3(p: GraphProfile, depth: int = 2, top: int = 5) -> Finding:
    """Fragmentation: parallel conv branches at each join, found from the graph's structure (fork/join), and
    small ops (kernels that are not a conv/gemm, view ops excluded) per conv. Rows are per block (node-name
    scope at ``depth``, for reading only; the verdict does not depend on names). Severity: 4+ parallel
    branches at a join or 2+ small ops per conv -> high; 2-3 branches or 1.5+ small ops per conv -> medium."""
    branches = parallel_branches(p)
    rows = []
    for g in p.groups(depth):
        kernels = [n for n in g.nodes if n.op_type not in VIEW_OPS]
        if not kernels:
            continue
        convs = sum(1 for n in kernels if n.category in MAC_OPS)
        joins = [(branches[n.name], n.name) for n in g.nodes if n.name in branches]
        parallel, join = max(joins, default=(min(convs, 1), ""))
        rows.append({"block": g.name, "kernels": len(kernels), "convs": convs, "small_ops": len(kernels) - convs,
                     "parallel_branches": parallel, "join": join,
                     "small_ops_list": sorted({n.op_type for n in kernels if n.category not in MAC_OPS})})
    convs = sum(r["convs"] for r in rows)
    small = sum(r["small_ops"] for r in rows)
    per_conv = small / convs if convs else float(small)
    parallel = max([*branches.values(), min(convs, 1)], default=0)
    branched = sum(1 for v in branches.values() if v >= 2)
    wide = sum(1 for v in branches.values() if v >= 4)
    sev = "high" if parallel >= 4 or per_conv >= 2 else "medium" if parallel >= 2 or per_conv >= 1.5 else "low"
    rows.sort(key=lambda r: (-r["parallel_branches"], -r["kernels"]))
    return Finding(
        "G3", "network fragmentation", sev,
        f"up to {parallel} parallel conv branches at a join ({branched} joins branch, {wide} with 4 or more); "
        f"{per_conv:.2f} small ops per conv; {len(rows)} blocks, "
        f"{sum(r['kernels'] for r in rows) / max(len(rows), 1):.1f} kernels per block",
        per_conv, rows[:top],
        "branches from the graph's fork/join structure; blocks (for the rows only) from node-name scopes at "
        "depth %d" % depth)


def check_g4(p: GraphProfile, op_times=None, top: int = 5, fused: dict[str, str] | None = None) -> Finding:
    """Element-wise ops: share of the memory traffic (bytes at stored dtype), in the file and in what the
    runtime runs. ``fused`` maps a node to the kernel that absorbs it (``fusion.runtime_fusions`` from
    onnxruntime's optimized graph; default ``fusion.static_fusions``, its CPU rules): a ReLU fused into the
    conv before it moves no bytes of its own. The paper also counts depthwise convs here (high MAC/FLOPs).
    Severity on the share of bytes the runtime's element-wise kernels move, or, with measured op times, on
    their share of the measured time: >= 30% high, >= 15% medium."""
    from edgezoo.profile.fusion import static_fusions

    fused = static_fusions(p) if fused is None else fused
    ew = [n for n in p.nodes if n.category == "elementwise"]
    run = [n for n in ew if n.name not in fused]
    total_bytes = max(p.total("bytes_read") + p.total("bytes_written"), 1)
    run_total = max(sum(n.bytes for n in p.nodes if n.name not in fused), 1)
    total_mac = max(p.total("mem_access"), 1)
    ew_bytes = sum(n.bytes for n in ew)
    dw_bytes = sum(n.bytes for n in p.nodes if n.category == "depthwise")
    share = ew_bytes / total_bytes
    run_share = sum(n.bytes for n in run) / run_total
    mac_share = sum(n.mem_access for n in ew) / total_mac
    flop_share = sum(n.flops for n in ew) / max(p.total("flops"), 1)
    by_type: dict[str, dict] = {}
    for n in ew:
        d = by_type.setdefault(n.op_type, {"op_type": n.op_type, "count": 0, "fused": 0, "bytes": 0,
                                           "bytes_run": 0})
        d["count"] += 1
        d["bytes"] += n.bytes
        if n.name in fused:
            d["fused"] += 1
        else:
            d["bytes_run"] += n.bytes
    layers = sorted(by_type.values(), key=lambda d: (-d["bytes_run"], -d["bytes"]))
    for d in layers:
        d["share_of_bytes"] = round(d["bytes"] / total_bytes, 4)
    n_fused = len(ew) - len(run)
    figure = (f"element-wise ops the runtime runs: {run_share:.1%} of bytes moved ({len(run)} kernels; "
              f"{n_fused} more fused into convs); in the file {share:.1%} of bytes, {mac_share:.1%} of memory "
              f"access cost, {flop_share:.1%} of FLOPs; with depthwise convs {(ew_bytes + dw_bytes) / total_bytes:.1%}"
              f" of bytes")
    value, basis = run_share, "bytes the runtime's element-wise kernels move"
    if op_times is not None and getattr(op_times, "total_ms", 0):
        t = sum(ms for op, ms in op_times.by_type.items() if op in ELEMENTWISE_TIME_OPS)
        value, basis = t / op_times.total_ms, "measured time"
        figure += f"; measured {value:.1%} of time (after the runtime's fusions)"
    return Finding("G4", "element-wise operations", _sev(value, 0.15, 0.30), figure, value, layers[:top],
                   f"severity on the {basis}; ReLU, Add, Mul, h-swish, ... have few FLOPs but a full read and "
                   f"write of their tensors unless fused")


def check_guidelines(p: GraphProfile, op_times=None, depth: int = 2, top: int = 5,
                     fused: dict[str, str] | None = None) -> list[Finding]:
    return [check_g1(p, top), check_g2(p, top), check_g3(p, depth, top), check_g4(p, op_times, top, fused)]
