"""ShuffleNet V2's four guideline experiments (Ma et al. 2018, section 2, Tables 1-4), rebuilt as ONNX and
measured with onnxruntime on 1 thread at batch 1, beside the paper's ARM column and edgezoo's static profile.

Each table's networks are small stacks of 1x1 (and, for Table 4, 3x3) convolutions on a 56x56 input (see
Ma et al. 2018, section 2). For each column (one width setting) the variants are timed in
interleaved rounds (as edgezoo.profile.latency.compare_interleaved does, timed by thread CPU time), so background load on this shared machine
hits them alike; the figure is the median latency -> images/s. Orderings are compared with the paper's ARM
column by Kendall's tau over the variants of each column.

Choices the paper leaves open (each stated in the results):
  * Table 1: plain 1x1 convs, no bias, no BN/activation (the paper says only "two convolution layers").
  * Table 2: c=180 with g=8 (ARM x1) is not divisible by 8; 184 is used (FLOPs +3.3%).
  * Table 3: a serial fragment has c/sqrt(n) channels (equal FLOPs; UNVERIFIED in the reference); the n
    parallel fragments each map c -> c/n and are concatenated (equal FLOPs, block in = out = c).
  * Table 4: ResNet bottleneck with in = out = c and a c/4 middle (ResNet's 4x), ReLU after each conv (the
    last after the shortcut add), 56x56. The only reading whose MACs give ARM throughputs in the range of
    Table 1's (1.9-2.7 GMAC/s vs 4.9-5.4 GMAC/s); with a middle of c the ARM figures would imply >20 GMAC/s.

Usage: python benchmarks/shufflenet_v2_guidelines.py [--rounds 8] [--iters 5] [--quick] [--report-only]
The reading of the figures (per table: does the paper's ordering hold, and why not) is hand-written in
benchmarks/results/shufflenet_v2_guidelines_verdicts.md and merged into the report.
Writes benchmarks/results/shufflenet_v2_guidelines.{json,md,png}.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgezoo.fileio import atomic_write_text, write_json  # noqa: E402
from edgezoo.profile.graph import profile_onnx  # noqa: E402
from edgezoo.profile.latency import op_times  # noqa: E402
from edgezoo.profile.roofline import analyze, measure_peaks  # noqa: E402

HW = 56
BLOCKS = 10
RESULTS = ROOT / "benchmarks" / "results"


# ------------------------------------------------------------------------------------------ network builder

class Net:
    """A tiny ONNX graph builder: 1x1 / kxk convs (no bias), ReLU, Add, Concat; deterministic weights."""

    def __init__(self, c_in: int):
        self.nodes, self.inits = [], []
        self.c_in = c_in
        self.n = 0
        self.rng = np.random.default_rng(0)

    def _name(self, scope: str, op: str) -> str:
        self.n += 1
        return f"/{scope}/{op}_{self.n}"

    def conv(self, x: str, cin: int, cout: int, scope: str, k: int = 1, group: int = 1) -> str:
        w = f"w{self.n}"
        std = math.sqrt(2.0 / (cin // group * k * k))  # He init keeps activations finite through 10 blocks
        self.inits.append(numpy_helper.from_array(
            (self.rng.standard_normal((cout, cin // group, k, k)) * std).astype(np.float32), w))
        y = f"t{self.n}"
        self.nodes.append(helper.make_node("Conv", [x, w], [y], name=self._name(scope, "Conv"), group=group,
                                           kernel_shape=[k, k], pads=[k // 2] * 4))
        return y

    def relu(self, x: str, scope: str) -> str:
        y = f"r{self.n}"
        self.nodes.append(helper.make_node("Relu", [x], [y], name=self._name(scope, "Relu")))
        return y

    def add(self, a: str, b: str, scope: str) -> str:
        y = f"a{self.n}"
        self.nodes.append(helper.make_node("Add", [a, b], [y], name=self._name(scope, "Add")))
        return y

    def concat(self, xs: list[str], scope: str) -> str:
        y = f"c{self.n}"
        self.nodes.append(helper.make_node("Concat", xs, [y], name=self._name(scope, "Concat"), axis=1))
        return y

    def model(self, out: str) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, "bench",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, self.c_in, HW, HW])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], initializer=self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        return m


def g1_net(c1: int, c2: int) -> onnx.ModelProto:
    net, x = Net(c1), "input"
    for b in range(BLOCKS):
        x = net.conv(x, c1, c2, f"block{b}")
        x = net.conv(x, c2, c1, f"block{b}")
    return net.model(x)


def g2_net(c: int, g: int) -> onnx.ModelProto:
    net, x = Net(c), "input"
    for b in range(BLOCKS):
        x = net.conv(x, c, c, f"block{b}", group=g)
    return net.model(x)


def g3_net(c: int, kind: str) -> onnx.ModelProto:
    n = int(kind[0])
    parallel = kind.endswith("parallel")
    width = c if (parallel or n == 1) else int(round(c / math.sqrt(n)))
    net, x = Net(width), "input"
    for b in range(BLOCKS):
        if parallel:
            x = net.concat([net.conv(x, width, width // n, f"block{b}") for _ in range(n)], f"block{b}")
        else:
            for _ in range(n):
                x = net.conv(x, width, width, f"block{b}")
    return net.model(x)


def g4_net(c: int, relu: bool, shortcut: bool) -> onnx.ModelProto:
    net, x = Net(c), "input"
    mid = c // 4
    for b in range(BLOCKS):
        s = f"block{b}"
        y = net.conv(x, c, mid, s)
        y = net.relu(y, s) if relu else y
        y = net.conv(y, mid, mid, s, k=3)
        y = net.relu(y, s) if relu else y
        y = net.conv(y, mid, c, s)
        y = net.add(y, x, s) if shortcut else y
        x = net.relu(y, s) if relu else y
    return net.model(x)


# --------------------------------------------------------------------------------- the paper's four tables

def tables() -> list[dict]:
    """Each table: columns (width settings) of rows (variants) with the paper's ARM images/s."""
    t1_rows = [("1:1", (32, 32), (76.2, 21.7, 5.3)), ("1:2", (22, 44), (72.9, 20.5, 5.1)),
               ("1:6", (13, 78), (69.1, 17.9, 4.6)), ("1:12", (9, 108), (57.6, 15.1, 4.4))]
    t1 = {"table": 1, "guideline": "G1", "title": "c1:c2 ratio of 1x1 convs (equal FLOPs)", "columns": []}
    for j, mult in enumerate((1, 2, 4)):
        t1["columns"].append({"name": f"x{mult}", "rows": [
            {"variant": r, "setting": f"c1={c1 * mult}, c2={c2 * mult}", "paper_arm": arm[j],
             "build": (g1_net, (c1 * mult, c2 * mult))} for r, (c1, c2), arm in t1_rows]})
    t2_rows = [(1, 64, (40.0, 10.2, 2.3)), (2, 90, (35.0, 9.5, 2.2)), (4, 128, (32.9, 8.7, 2.1)),
               (8, 180, (27.8, 7.5, 1.8))]
    t2 = {"table": 2, "guideline": "G2", "title": "groups of 1x1 convs (equal FLOPs)", "columns": []}
    for j, mult in enumerate((1, 2, 4)):
        rows = []
        for g, c, arm in t2_rows:
            cc = c * mult
            if cc % g:  # 180 / 8: the paper's setting is not divisible; the nearest multiple above
                cc = (cc // g + 1) * g
            rows.append({"variant": f"g={g}", "setting": f"c={cc}" + (" (paper 180)" if cc != c * mult else ""),
                         "paper_arm": arm[j], "build": (g2_net, (cc, g))})
        t2["columns"].append({"name": f"x{mult}", "rows": rows})
    t3_rows = [("1-fragment", (40.2, 10.1, 2.3)), ("2-fragment-series", (38.6, 10.1, 2.2)),
               ("4-fragment-series", (38.4, 10.1, 2.3)), ("2-fragment-parallel", (33.4, 9.1, 2.2)),
               ("4-fragment-parallel", (35.0, 8.4, 2.1))]
    t3 = {"table": 3, "guideline": "G3", "title": "fragments per block, in series or parallel (equal FLOPs)",
          "columns": []}
    for j, c in enumerate((64, 128, 256)):
        t3["columns"].append({"name": f"c={c}", "rows": [
            {"variant": k, "setting": f"c={c}", "paper_arm": arm[j], "build": (g3_net, (c, k))} for k, arm in t3_rows]})
    t4_rows = [((True, True), (56.7, 16.9, 5.0)), ((True, False), (61.9, 18.8, 5.2)),
               ((False, True), (57.3, 18.2, 5.1)), ((False, False), (66.3, 20.2, 5.4))]
    t4 = {"table": 4, "guideline": "G4", "title": "ReLU and shortcut in a bottleneck unit", "columns": []}
    for j, c in enumerate((32, 64, 128)):
        t4["columns"].append({"name": f"c={c}", "rows": [
            {"variant": f"ReLU {'yes' if r else 'no'}, shortcut {'yes' if s else 'no'}", "setting": f"c={c}",
             "paper_arm": arm[j], "build": (g4_net, (c, r, s))} for (r, s), arm in t4_rows]})
    return [t1, t2, t3, t4]


# ------------------------------------------------------------------------------------------------ measuring

LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED"}


def session(model: onnx.ModelProto, level: str = "all"):
    """level 'all' is onnxruntime's default (with the NCHWc layout transform on x86: blocked channels, fused
    activations); 'extended' stops before layout changes, so every conv goes through im2col + GEMM."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((1, model.graph.input[0].type.tensor_type.shape.dim[1].dim_value,
                                                  HW, HW), dtype=np.float32)
    return lambda: sess.run(None, {"input": x})


def cpu_time_interleaved(fns: dict, rounds: int, iters: int, warmup: int = 3) -> dict:
    """Like edgezoo.profile.latency.compare_interleaved (ABBA rounds), but each run is timed by the CPU time of
    this thread as well as by the wall clock. With intra_op_num_threads=1 onnxruntime runs the whole graph on
    the calling thread (process time = thread time, checked), so CPU time is the single-core cost that the
    paper's single-thread ARM column measures, and other jobs preempting us do not inflate it. On this
    shared machine (load average ~10 on 2 vCPUs while this ran) wall time was 2-2.5x the CPU time, and how
    much depended on whether a run fitted in a scheduler time slice, which distorts wall-clock orderings."""
    names = list(fns)
    cpu = {k: [] for k in names}
    wall = {k: [] for k in names}
    ratios = {k: [] for k in names}
    for _ in range(warmup):
        for k in names:
            fns[k]()
    for r in range(rounds):
        this = {}
        for k in (names if r % 2 == 0 else names[::-1]):
            ts = []
            for _ in range(iters):
                c, w = time.thread_time(), time.perf_counter()
                fns[k]()
                ts.append((time.thread_time() - c) * 1e3)
                wall[k].append((time.perf_counter() - w) * 1e3)
            cpu[k].extend(ts)
            this[k] = float(np.median(ts))
        for k in names:
            ratios[k].append(this[k] / this[names[0]])
    return {"cpu_ms": {k: float(np.median(v)) for k, v in cpu.items()},
            "wall_ms": {k: float(np.median(v)) for k, v in wall.items()},
            "ratio": {k: float(np.median(v)) for k, v in ratios.items()}}


def kendall_tau(a: list[float], b: list[float]) -> float:
    n, s = len(a), 0
    for i in range(n):
        for j in range(i + 1, n):
            s += np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
    return float(s / (n * (n - 1) / 2))


def run(rounds: int, iters: int, quick: bool) -> dict:
    peaks = measure_peaks(threads=1)
    out = {"machine": machine(), "rounds": rounds, "iters_per_round": iters, "peaks": peaks.to_dict(),
           "tables": []}
    for t in tables():
        tab = {k: v for k, v in t.items() if k != "columns"}
        tab["columns"] = []
        columns = t["columns"][:1] if quick else t["columns"]
        for col in columns:
            models = {r["variant"]: r["build"][0](*r["build"][1]) for r in col["rows"]}
            fns = {f"{k}|{lv}": session(m, lv) for k, m in models.items() for lv in LEVELS}
            t0 = time.time()
            res = cpu_time_interleaved(fns, rounds=rounds, iters=iters)
            rows = []
            for r in col["rows"]:
                k = r["variant"]
                prof = profile_onnx(models[k])
                tot = prof.totals()
                roof = analyze(prof, peaks)
                ms, ms_ext = res["cpu_ms"][f"{k}|all"], res["cpu_ms"][f"{k}|extended"]
                ran = op_times(models[k].SerializeToString(), threads=1, runs=2, warmup=1)
                convs = [n for n in ran.nodes if n["op_type"] == "Conv"]
                rows.append({
                    "variant": k, "setting": r["setting"], "paper_arm_ips": r["paper_arm"],
                    "ours_cpu_ms_p50": round(ms, 4), "ours_ips": round(1000 / ms, 2),
                    "ours_wall_ms_p50": round(res["wall_ms"][f"{k}|all"], 4),
                    "cpu_ratio_vs_first_per_round": round(res["ratio"][f"{k}|all"], 4),
                    "ours_ips_no_layout": round(1000 / ms_ext, 2),
                    "nchwc_convs": f"{sum(n['name'].endswith('_nchwc') for n in convs)}/{len(convs)}",
                    "macs": tot["macs"], "mem_access": tot["mem_access"], "bytes": tot["bytes"],
                    "intensity": tot["intensity"], "elementwise_bytes_share": round(
                        sum(n.bytes for n in prof.nodes if n.category == "elementwise") / tot["bytes"], 4),
                    "nodes": tot["nodes"], "roofline_bound_ms": round(roof.lower_bound_ms, 4),
                    "memory_bound_layers": sum(l.bound == "memory" for l in roof.layers),
                    "layers": len(roof.layers),
                })
            paper = [r["paper_arm_ips"] for r in rows]
            ours = [r["ours_ips"] for r in rows]
            ext = [r["ours_ips_no_layout"] for r in rows]
            tab["columns"].append({"name": col["name"], "rows": rows, "kendall_tau": round(kendall_tau(paper, ours), 3),
                                   "kendall_tau_no_layout": round(kendall_tau(paper, ext), 3),
                                   "same_order": [r["variant"] for r in sorted(rows, key=lambda r: -r["paper_arm_ips"])]
                                   == [r["variant"] for r in sorted(rows, key=lambda r: -r["ours_ips"])],
                                   "seconds": round(time.time() - t0, 1)})
            print(f"table {t['table']} {col['name']}: tau {tab['columns'][-1]['kendall_tau']:+.2f} "
                  f"(no layout {tab['columns'][-1]['kendall_tau_no_layout']:+.2f}) "
                  f"({tab['columns'][-1]['seconds']} s)", flush=True)
        out["tables"].append(tab)
    # Table 4's "why": what onnxruntime actually runs for the full bottleneck (ReLU + shortcut) at c=32
    t4 = op_times(g4_net(32, True, True).SerializeToString(), threads=1, runs=20, warmup=5)
    out["g4_runtime_op_types"] = {k: round(v, 4) for k, v in t4.by_type.items()}
    out["g4_runtime_total_ms"] = round(t4.total_ms, 4)
    out["load_after"] = os.getloadavg()
    return out


def machine() -> dict:
    from edgezoo.profile.latency import describe_machine

    info = describe_machine()
    info["loadavg_before"] = os.getloadavg()
    return info


# -------------------------------------------------------------------------------------------------- report

def markdown(res: dict) -> str:
    m, pk = res["machine"], res["peaks"]
    lines = [
        "# ShuffleNet V2 guideline experiments (Tables 1-4), rebuilt and measured here",
        "",
        f"Machine: {m.get('cpu', '?')}, {m.get('cpus', '?')} vCPUs, onnxruntime {m.get('onnxruntime', '?')}, "
        f"1 thread, batch 1, 56x56 input, 10 stacked blocks. Shared with other jobs (load average "
        f"{m['loadavg_before'][0]:.1f} before, {res['load_after'][0]:.1f} after), so only the per-column "
        f"orderings and ratios are meaningful: variants were timed in interleaved rounds ({res['rounds']} rounds "
        f"x {res['iters_per_round']} runs), images/s = 1000 / median CPU ms of the inference thread (onnxruntime "
        f"runs a 1-thread session on the caller's thread; wall-clock medians, 2-2.5x higher under this load, "
        f"are in the JSON).",
        f"Roofline peaks measured at the start (1 thread): {pk['peak_gflops']} GFLOP/s fp32, "
        f"{pk['bandwidth_gbs']} GB/s copy bandwidth (ridge {pk['ridge_flops_per_byte']} FLOPs/byte).",
        "",
        "Paper column: Snapdragon 810, single thread (\"ARM\" in Table 1, \"CPU\" in Tables 2-4). MACs, memory",
        "access cost (elements, the paper's MAC) and intensity are edgezoo's static profile of each ONNX network.",
        "Kendall's tau compares the order of the variants within a column (+1: same order, -1: reversed).",
        "\"ours\" is onnxruntime's default (ORT_ENABLE_ALL: on x86 it converts convs whose channels are multiples",
        "of the SIMD block to the blocked NCHWc layout; \"NCHWc convs\" counts those), \"no NCHWc\" stops at",
        "ORT_ENABLE_EXTENDED so every conv runs as im2col + GEMM: the two differ by an implementation detail the",
        "paper's guidelines do not model, channel alignment.",
        "",
    ]
    for t in res["tables"]:
        lines += [f"## Table {t['table']} ({t['guideline']}): {t['title']}", ""]
        for col in t["columns"]:
            lines += [f"**{col['name']}**: Kendall tau {col['kendall_tau']:+.2f} (default onnxruntime), "
                      f"{col['kendall_tau_no_layout']:+.2f} (no layout transform); same order as the paper: "
                      f"{'yes' if col['same_order'] else 'no'}", "",
                      "| variant | setting | paper ARM img/s | ours img/s | ours, no NCHWc img/s | NCHWc convs | MACs | "
                      "memory access (elements) | FLOPs/byte | element-wise share of bytes |",
                      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for r in col["rows"]:
                lines.append(f"| {r['variant']} | {r['setting']} | {r['paper_arm_ips']} | {r['ours_ips']:.1f} | "
                             f"{r['ours_ips_no_layout']:.1f} | {r['nchwc_convs']} | {r['macs'] / 1e6:.1f}M | "
                             f"{r['mem_access'] / 1e6:.2f}M | {r['intensity']:.1f} | {r['elementwise_bytes_share']:.0%} |")
            lines.append("")
        lines += [VERDICT_PLACEHOLDER.format(t["table"]), ""]
    lines += ["Table 4, what onnxruntime runs for the full unit (ReLU + shortcut, c=32), ms per run by op type: "
              + ", ".join(f"{k} {v}" for k, v in res["g4_runtime_op_types"].items())
              + f" (total {res['g4_runtime_total_ms']} ms).", ""]
    lines += ["Plot: `shufflenet_v2_guidelines.png` (throughput relative to each column's first row, paper vs ours).",
              ""]
    return "\n".join(lines)


VERDICT_PLACEHOLDER = "<!-- verdict table {} -->"


def plot(res: dict, path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgezoo.fileio import atomic_write_bytes

    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    for ax, t in zip(axes.flat, res["tables"]):
        labels, paper, ours, ext, xs = [], [], [], [], []
        x = 0
        for col in t["columns"]:
            first_p, first_o = col["rows"][0]["paper_arm_ips"], col["rows"][0]["ours_ips"]
            for r in col["rows"]:
                short = r["variant"].replace("-fragment-", "-").replace(", ", "\n")
                labels.append(col["name"] + "\n" + short)
                paper.append(r["paper_arm_ips"] / first_p)
                ours.append(r["ours_ips"] / first_o)
                ext.append(r["ours_ips_no_layout"] / col["rows"][0]["ours_ips_no_layout"])
                xs.append(x)
                x += 1
            x += 0.6
        xs = np.array(xs)
        ax.bar(xs - 0.27, paper, 0.27, label="paper ARM (Snapdragon 810, 1 thread)", color="tab:gray")
        ax.bar(xs, ours, 0.27, label="ours: onnxruntime default (NCHWc), 1 thread", color="tab:blue")
        ax.bar(xs + 0.27, ext, 0.27, label="ours: no layout transform (im2col+GEMM)", color="tab:orange")
        ax.set_yscale("log")
        ax.axhline(1.0, color="k", lw=0.6)
        ax.set_xticks(xs, labels, fontsize=6)
        ax.set_ylabel("images/s relative to the column's first row")
        ax.set_title(f"Table {t['table']} ({t['guideline']}): {t['title']}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="first column of each table only")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--report-only", action="store_true",
                    help="rebuild the .md and .png from the existing .json (after editing the verdicts file)")
    args = ap.parse_args()
    name = "shufflenet_v2_guidelines" + ("_quick" if args.quick else "")
    if args.report_only:
        import json

        res = json.loads((args.out / f"{name}.json").read_text())
    else:
        res = run(args.rounds, args.iters, args.quick)
        write_json(args.out / f"{name}.json", res)
    md_path = args.out / f"{name}.md"
    md = markdown(res)
    verdicts_file = args.out / "shufflenet_v2_guidelines_verdicts.md"  # hand-written reading of the figures
    if verdicts_file.exists():
        for k, block in parse_verdicts(verdicts_file.read_text()).items():
            md = md.replace(VERDICT_PLACEHOLDER.format(k), block)
    atomic_write_text(md_path, md)
    plot(res, args.out / f"{name}.png")
    print(f"wrote {md_path}")


def parse_verdicts(text: str) -> dict[int, str]:
    """'## Table N' sections of the verdicts file -> their text."""
    out, cur, buf = {}, None, []
    for line in text.splitlines():
        if line.startswith("## Table "):
            if cur is not None:
                out[cur] = "\n".join(buf).strip()
            cur, buf = int(line.split()[2]), []
        elif cur is not None:
            buf.append(line)
    if cur is not None:
        out[cur] = "\n".join(buf).strip()
    return out


if __name__ == "__main__":
    main()
