"""Roofline: each layer's bound (compute or memory), the model's lower-bound latency, and how close a
runtime gets to it.

  attainable GFLOP/s = min(peak GFLOP/s, bandwidth GB/s * intensity),  intensity = FLOPs / bytes moved.

A layer's bound time is max(FLOPs / peak, bytes / bandwidth); the model's lower bound is the sum over layers
(layers run one after another at batch 1). The peaks are this machine's, measured (the best of several
runs of large compute-bound MatMul and Conv kernels, fp32 and int8 QDQ, through the onnxruntime Runner; a
large numpy copy), or a target device's given figures; the report says which. The bandwidth of a large copy is DRAM
bandwidth; small tensors that stay in cache can beat it, so a measured layer may run "faster than its bound".
No torch import: this runs on a device with onnxruntime and numpy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgezoo.profile.graph import GraphProfile, NodeProfile

from edgezoo.profile.fusion import MAC_CATEGORIES, RUNTIME_SUFFIXES, static_fusions

PEAK_FIELDS = ("peak_gflops", "bandwidth_gbs", "peak_int8_gops")


@dataclass
class MachinePeaks:
    peak_gflops: float  # fp32 FLOP/s (a MAC is 2 FLOPs), in G
    bandwidth_gbs: float  # bytes read + written per second, in G
    peak_int8_gops: float | None = None  # int8 ops/s, in G; None: int8 layers use peak_gflops
    source: str = "given"
    threads: int = 1
    origin: dict[str, str] = field(default_factory=dict)  # field -> "measured" | "given"

    def __post_init__(self) -> None:
        default = "measured" if self.source.startswith("measured") else "given"
        for k in PEAK_FIELDS:
            self.origin.setdefault(k, default)

    @property
    def how(self) -> str:
        """'measured', 'given', or 'given + measured' for the peaks as a whole."""
        kinds = {self.origin[k] for k in PEAK_FIELDS if getattr(self, k) is not None}
        return " + ".join(sorted(kinds)) or "given"

    @property
    def ridge(self) -> float:
        """Intensity (FLOPs/byte) where a layer turns from memory- to compute-bound."""
        return self.peak_gflops / self.bandwidth_gbs

    def to_dict(self) -> dict[str, Any]:
        return {"peak_gflops": self.peak_gflops, "bandwidth_gbs": self.bandwidth_gbs,
                "peak_int8_gops": self.peak_int8_gops, "source": self.source, "threads": self.threads,
                "peaks_were": self.how, "origin": dict(self.origin),
                "ridge_flops_per_byte": round(self.ridge, 3)}


def _peak_kernels(int8: bool, n: int, conv_c: int, conv_hw: int):
    """Compute-bound kernels as ONNX bytes with their FLOP counts: an n^3 MatMul and a 3x3 conv of conv_c
    channels on conv_hw^2 (onnxruntime runs convs through its NCHWc kernels, which can outrun its GEMM, so
    a MatMul alone understates the peak a conv layer reaches). int8: the same as QDQ graphs (u8 activations,
    s8 weights), which onnxruntime runs as QLinearMatMul / QLinearConv."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    kernels = []
    for kind in ("matmul", "conv"):
        if kind == "matmul":
            x_shape, w = [n, n], rng.standard_normal((n, n), dtype=np.float32)
            flops = 2 * n ** 3
        else:
            x_shape = [1, conv_c, conv_hw, conv_hw]
            w = rng.standard_normal((conv_c, conv_c, 3, 3), dtype=np.float32)
            flops = 2 * conv_hw * conv_hw * conv_c * conv_c * 9
        op = (lambda a, b, y: helper.make_node("MatMul", [a, b], [y])) if kind == "matmul" else \
            (lambda a, b, y: helper.make_node("Conv", [a, b], [y], pads=[1, 1, 1, 1]))
        inits = []
        if int8:
            s = numpy_helper.from_array(np.array(0.02, np.float32), "s")
            zu = numpy_helper.from_array(np.array(128, np.uint8), "zu")
            zs = numpy_helper.from_array(np.array(0, np.int8), "zs")
            wq = numpy_helper.from_array(np.clip(np.round(w * 20), -127, 127).astype(np.int8), "wq")
            inits = [s, zu, zs, wq]
            nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zu"], ["xq"]),
                     helper.make_node("DequantizeLinear", ["xq", "s", "zu"], ["xd"]),
                     helper.make_node("DequantizeLinear", ["wq", "s", "zs"], ["wd"]), op("xd", "wd", "y"),
                     helper.make_node("QuantizeLinear", ["y", "s", "zu"], ["yq"]),
                     helper.make_node("DequantizeLinear", ["yq", "s", "zu"], ["out"])]
        else:
            inits = [numpy_helper.from_array(w, "w")]
            nodes = [op("x", "w", "out")]
        g = helper.make_graph(nodes, f"peak_{kind}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], initializer=inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        feed = {"x": rng.standard_normal(x_shape, dtype=np.float32)}
        kernels.append((kind, m.SerializeToString(), feed, flops))
    return kernels


def _best_seconds(fn, repeats: int, budget_s: float) -> float:
    fn()  # warm-up
    best = float("inf")
    start = time.perf_counter()
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
        if time.perf_counter() - start > budget_s:
            break
    return best


def _kernel_peak(int8: bool, threads: int, n: int, conv_c: int, conv_hw: int, repeats: int, budget_s: float):
    """Best GFLOP/s (or GOP/s) over the kernels, each the best of ``repeats`` runs, through the Runner."""
    from edgezoo.runtimes.onnxruntime import OrtRunner

    best, which = 0.0, ""
    for kind, data, feed, flops in _peak_kernels(int8, n, conv_c, conv_hw):
        with OrtRunner(data, threads=threads) as runner:
            t = _best_seconds(lambda: runner.infer(feed), repeats, budget_s)
        if flops / t / 1e9 > best:
            best, which = flops / t / 1e9, kind
    return best, which


def measure_peaks(threads: int = 1, int8: bool = True, n: int = 1024, copy_mib: int = 256,
                  budget_s: float = 1.0, conv_c: int = 256, conv_hw: int = 28, repeats: int = 10) -> MachinePeaks:
    """This machine's peaks: for fp32 (and int8 QDQ) the best over an n^3 MatMul and a conv_c-channel 3x3
    conv, each the best of ``repeats`` runs (or ``budget_s`` seconds), through the onnxruntime Runner; the
    bandwidth from the best of a few ``copy_mib`` MiB numpy copies (256 MiB: beyond most last-level caches,
    so it is DRAM bandwidth). A peak is a best case by definition, so the best run is the figure (not a
    median); a layer can still beat it (cache-resident tensors, a kernel better than these), and the report
    says so when one does."""
    gflops, k32 = _kernel_peak(False, threads, n, conv_c, conv_hw, repeats, budget_s)
    int8_gops, k8 = (None, "")
    if int8:
        int8_gops, k8 = _kernel_peak(True, threads, n, conv_c, conv_hw, repeats, budget_s)
    src = np.ones(copy_mib * 2 ** 20 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    t = _best_seconds(lambda: np.copyto(dst, src), 5, budget_s)
    bandwidth = 2 * src.nbytes / t / 1e9  # a copy reads and writes every byte
    del src, dst
    return MachinePeaks(round(gflops, 2), round(bandwidth, 2), round(int8_gops, 2) if int8_gops else None,
                        f"measured on this machine ({threads} thread{'s' if threads > 1 else ''}; best of "
                        f"{n}^3 MatMul and {conv_c}ch 3x3 conv at {conv_hw}x{conv_hw}: fp32 {k32}"
                        + (f", int8 {k8}" if k8 else "") + f"; {copy_mib} MiB copy)", threads)


@dataclass
class LayerBound:
    name: str
    op_type: str
    category: str
    flops: int
    bytes: int
    intensity: float
    compute_ms: float
    memory_ms: float
    fused_into: str | None = None  # an activation assumed fused into this conv/gemm: no time of its own
    measured_ms: float | None = None
    int8: bool = False

    @property
    def bound(self) -> str:
        if self.fused_into:
            return "fused"
        return "compute" if self.compute_ms >= self.memory_ms else "memory"

    @property
    def bound_ms(self) -> float:
        return 0.0 if self.fused_into else max(self.compute_ms, self.memory_ms)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op_type": self.op_type, "category": self.category, "flops": self.flops,
                "bytes": self.bytes, "intensity": round(self.intensity, 4), "bound": self.bound,
                "bound_ms": round(self.bound_ms, 6), "compute_ms": round(self.compute_ms, 6),
                "memory_ms": round(self.memory_ms, 6), "fused_into": self.fused_into,
                "measured_ms": None if self.measured_ms is None else round(self.measured_ms, 6)}


@dataclass
class RooflineReport:
    peaks: MachinePeaks
    layers: list[LayerBound]
    measured_total_ms: float | None = None
    unattributed_ms: dict[str, float] = field(default_factory=dict)  # runtime-only ops (layout reorders, ...)
    batch: int = 1

    def roof(self, l: "LayerBound") -> float:
        """Attainable GFLOP/s for a layer's intensity under these peaks."""
        pk = self.peaks
        peak = pk.peak_int8_gops if (l.int8 and pk.peak_int8_gops) else pk.peak_gflops
        return min(peak, pk.bandwidth_gbs * l.intensity)

    def above_roof(self) -> list["LayerBound"]:
        """Measured layers faster than the roof allows: the peaks are then an underestimate for them."""
        return [l for l in self.layers if l.measured_ms and l.flops and not l.fused_into
                and l.flops / (l.measured_ms * 1e6) > self.roof(l)]

    @property
    def lower_bound_ms(self) -> float:
        return sum(l.bound_ms for l in self.layers)

    @property
    def compute_ms(self) -> float:
        return sum(l.compute_ms for l in self.layers if not l.fused_into)

    @property
    def memory_ms(self) -> float:
        return sum(l.memory_ms for l in self.layers if not l.fused_into)

    def by_op_type(self) -> list[dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        for l in self.layers:
            r = rows.setdefault(l.op_type, {"op_type": l.op_type, "count": 0, "bound_ms": 0.0, "memory_bound": 0,
                                            "measured_ms": None})
            r["count"] += 1
            r["bound_ms"] += l.bound_ms
            r["memory_bound"] += l.bound == "memory"
            if l.measured_ms is not None:
                r["measured_ms"] = (r["measured_ms"] or 0.0) + l.measured_ms
        for r in rows.values():
            m = r["measured_ms"]
            r["achieved_fraction"] = round(r["bound_ms"] / m, 4) if m else None
            r["bound_ms"] = round(r["bound_ms"], 6)
            r["measured_ms"] = None if m is None else round(m, 6)
        key = (lambda r: -(r["measured_ms"] or 0)) if self.measured_total_ms else (lambda r: -r["bound_ms"])
        return sorted(rows.values(), key=key)

    def to_dict(self) -> dict[str, Any]:
        d = {"peaks": self.peaks.to_dict(), "lower_bound_ms": round(self.lower_bound_ms, 6),
             "compute_ms": round(self.compute_ms, 6), "memory_ms": round(self.memory_ms, 6),
             "memory_bound_layers": sum(l.bound == "memory" for l in self.layers),
             "compute_bound_layers": sum(l.bound == "compute" for l in self.layers),
             "by_op_type": self.by_op_type(), "layers": [l.to_dict() for l in self.layers]}
        d["batch"] = self.batch
        if self.measured_total_ms is not None:
            above = self.above_roof()
            d["above_roof"] = [{"name": l.name, "achieved_gflops": round(l.flops / (l.measured_ms * 1e6), 3),
                                "roof_gflops": round(self.roof(l), 3)} for l in above]
            d["measured_total_ms"] = round(self.measured_total_ms, 6)
            d["achieved_fraction"] = round(self.lower_bound_ms / self.measured_total_ms, 4)
            d["unattributed_ms"] = {k: round(v, 6) for k, v in self.unattributed_ms.items()}
        return d


def analyze(p: GraphProfile, peaks: MachinePeaks, op_times=None, assume_fusion: bool = True,
            fused: dict[str, str] | None = None, batch: int = 1) -> RooflineReport:
    """Bounds per layer. ``fused``: node -> the node that absorbs it (``fusion.runtime_fusions``, read from
    onnxruntime's optimized graph); default: onnxruntime's CPU fusion rules (``fusion.static_fusions``)."""
    if not assume_fusion:
        fused = {}
    elif fused is None:
        fused = static_fusions(p)
    by_name = {n.name: n for n in p.nodes}
    heads = {k: by_name[v] for k, v in fused.items() if v in by_name}
    layers = []
    for n in p.nodes:
        peak = peaks.peak_int8_gops if (n.int8 and peaks.peak_int8_gops) else peaks.peak_gflops
        layers.append(LayerBound(
            n.name, n.op_type, n.category, n.flops, n.bytes, n.intensity,
            compute_ms=n.flops / (peak * 1e9) * 1e3, memory_ms=n.bytes / (peaks.bandwidth_gbs * 1e9) * 1e3,
            fused_into=fused.get(n.name), int8=n.int8))
    report = RooflineReport(peaks, layers, batch=batch)
    if op_times is not None:
        _join_measured(p, report, op_times, heads)
    return report


_RUNTIME_SUFFIXES = RUNTIME_SUFFIXES


def _join_measured(p: GraphProfile, report: RooflineReport, op_times, heads: dict[str, NodeProfile]) -> None:
    """Attribute each runtime node's time to a graph node. onnxruntime renames what it rewrites: an NCHWc conv
    is named after its output tensor + '_nchwc' (the fused activation's output when it fused one), QDQ fusions
    add '_quant'. Time of a node fused into a conv goes to that conv; layout reorders stay unattributed."""
    by_name = {n.name: n for n in p.nodes}
    producer = {o: n for n in p.nodes for o in n.outputs}
    layer = {l.name: l for l in report.layers}
    for l in report.layers:
        l.measured_ms = None
    for rec in op_times.nodes:
        name, ms = rec["name"], float(rec["time_ms"])
        node = by_name.get(name)
        if node is None:
            base = _RUNTIME_SUFFIXES.sub("", name)
            node = by_name.get(base) or producer.get(base) or producer.get(name)
        if node is None:
            report.unattributed_ms[rec["op_type"]] = report.unattributed_ms.get(rec["op_type"], 0.0) + ms
            continue
        target = heads.get(node.name, node)
        if target.category == "elementwise" and rec["op_type"] in ("Conv", "FusedConv", "QLinearConv"):
            # conv + residual add fused by the runtime (named after the add's output): the conv did the work
            src = next((producer[i] for i in target.inputs if i in producer
                        and producer[i].category in MAC_CATEGORIES), None)
            target = src or target
        l = layer[target.name]
        l.measured_ms = (l.measured_ms or 0.0) + ms
    report.measured_total_ms = float(op_times.total_ms)


def plot_roofline(report: RooflineReport, path, title: str = "") -> None:
    """PNG: left, the roofline with each layer as a point (achieved GFLOP/s when measured, else its attainable
    roof value, hollow); right, time by op type (the bound, and measured when available)."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    from edgezoo.fileio import atomic_write_bytes

    pk = report.peaks
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1.25, 1]})
    layers = [l for l in report.layers if l.flops > 0 and l.bytes > 0 and not l.fused_into]
    xs = np.array([l.intensity for l in layers] or [1.0])
    lo, hi = max(xs.min() / 2, 1e-3), max(xs.max() * 2, pk.ridge * 4)
    grid = np.logspace(np.log10(lo), np.log10(hi), 200)
    ax.loglog(grid, np.minimum(pk.peak_gflops, pk.bandwidth_gbs * grid), "k-", lw=2,
              label=f"fp32 roof: {pk.peak_gflops:.0f} GFLOP/s, {pk.bandwidth_gbs:.0f} GB/s")
    if pk.peak_int8_gops and any(l.int8 for l in layers):
        ax.loglog(grid, np.minimum(pk.peak_int8_gops, pk.bandwidth_gbs * grid), "k--", lw=1,
                  label=f"int8 roof: {pk.peak_int8_gops:.0f} GOP/s")
    colors = {"conv": "tab:blue", "depthwise": "tab:orange", "group_conv": "tab:purple", "gemm": "tab:green",
              "elementwise": "tab:red", "pool": "tab:brown", "data": "tab:gray", "other": "tab:pink"}
    seen = set()
    for l in layers:
        measured = l.measured_ms is not None and l.measured_ms > 0
        y = l.flops / (l.measured_ms * 1e6) if measured else l.flops / (l.bound_ms * 1e6)
        c = colors.get(l.category, "tab:pink")
        ax.scatter([l.intensity], [y], s=22, c=c if measured else "none", edgecolors=c,
                   label=l.category if l.category not in seen else None, alpha=0.8)
        seen.add(l.category)
    above = {l.name for l in report.above_roof()}
    if above:
        xa = [l.intensity for l in layers if l.name in above]
        ya = [l.flops / (l.measured_ms * 1e6) for l in layers if l.name in above]
        ax.scatter(xa, ya, s=60, marker="x", c="k", label=f"{len(above)} above the roof")
    ax.set_xlabel("arithmetic intensity (FLOPs / byte)")
    ax.set_ylabel("GFLOP/s (" + ("achieved, filled" if report.measured_total_ms else "attainable") + ")")
    ax.set_title(f"roofline {title}".strip() + f"\npeaks {pk.how}"
                 + (f"; {len(above)} layers beat them (cache-resident or a faster kernel)" if above else ""),
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")

    rows = report.by_op_type()[:12][::-1]
    ys = np.arange(len(rows))
    bx.barh(ys - 0.2, [r["bound_ms"] for r in rows], 0.4, label="roofline bound", color="tab:blue")
    if report.measured_total_ms:
        bx.barh(ys + 0.2, [r["measured_ms"] or 0 for r in rows], 0.4, label="measured", color="tab:red")
    bx.set_yticks(ys, [r["op_type"] for r in rows], fontsize=8)
    bx.set_xlabel("ms per image" if report.batch == 1 else f"ms per batch of {report.batch}")
    head = f"lower bound {report.lower_bound_ms:.2f} ms"
    if report.measured_total_ms:
        head += f", measured {report.measured_total_ms:.2f} ms"
        if report.unattributed_ms:
            head += f"\n({sum(report.unattributed_ms.values()):.2f} ms in runtime-only ops: layout reorders, ...)"
    bx.set_title(f"time by op type: {head}", fontsize=9)
    bx.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def bound_shares(report: RooflineReport, p50_ms: dict[str, float]) -> dict[str, float]:
    """Per runtime: the share of the roofline's lower-bound latency its whole-file p50 reaches (1 = at the
    bound)."""
    return {rt: round(report.lower_bound_ms / ms, 4) for rt, ms in p50_ms.items() if ms > 0}
