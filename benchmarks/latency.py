"""PyTorch eager vs onnxruntime fp32, every zoo model, batch 1, its default input size, 1 and 2 threads.

Both run in this one process in interleaved rounds (edgezoo.profile.latency.compare_interleaved), and the
figure is the median of per-round ratios ORT / torch, with its interquartile range. Random-init models with
BatchNorm statistics recalibrated on random data (edgezoo.runtimes.torch.build_registry_model); the ONNX is
edgezoo's own verified export (opset 17, simplified), run by OrtRunner with all graph optimisations.

Budget: each (model, threads) pair gets ``--rounds`` rounds; the runs per round are chosen from a short
probe so that a round lasts about ``--round-s`` seconds (at least 1 run of each). It then measures how
stable the ratio mode itself is: the same ONNX in two sessions, compared three times with the CLI's
defaults (15 rounds x 10 runs).

    python benchmarks/latency.py                       # all models: about 15 minutes on 2 busy cores
    python benchmarks/latency.py --models mobilenet_v2 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


from _common import machine  # noqa: E402


def probe_ms(fn) -> float:
    """Rough time of one call: one untimed call, then 3 timed (1 when calls are slow: budget matters)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    n = 3 if first < 0.1 else 1
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) * 1e3 / n


def compare_model(name: str, threads_list: list[int], rounds: int, round_s: float, cap_s: float,
                  min_rounds: int = 3) -> dict:
    from edgezoo.profile.latency import compare_interleaved
    from edgezoo.runtimes.inputs import feeds_for
    from edgezoo.runtimes.onnxruntime import OrtRunner
    from edgezoo.export.loaders import export_to_bytes
    from edgezoo.runtimes.torch import TorchRunner, build_registry_model

    t0 = time.perf_counter()
    spec, module = build_registry_model(name)
    data = export_to_bytes(module, spec)
    entry = {"model": spec.name, "input_size": list(spec.input_size), "onnx_bytes": len(data),
             "prepare_s": round(time.perf_counter() - t0, 1), "threads": {}}
    for threads in threads_list:
        ort_runner = OrtRunner(data, threads=threads)
        torch_runner = TorchRunner(module, threads=threads, input_size=spec.input_size)
        with torch_runner, ort_runner:
            x = feeds_for(ort_runner, batch=1)["input"]
            feeds = {"input": x}
            fns = {"torch": lambda: torch_runner.infer(feeds), "onnxruntime": lambda: ort_runner.infer(feeds)}
            per_pair = probe_ms(fns["torch"]) + probe_ms(fns["onnxruntime"])
            iters = max(1, int(round(round_s * 1e3 / per_pair)))
            # fewer rounds (never under min_rounds) where calls are so slow that the pair would exceed cap_s
            n_rounds = max(min_rounds, min(rounds, int(cap_s * 1e3 / (per_pair * iters))))
            res = compare_interleaved(fns, rounds=n_rounds, iters_per_round=iters, warmup=2)
        entry["threads"][str(threads)] = {
            "rounds": res.rounds, "iters_per_round": iters, "counts": res.counts,
            "torch_p50_ms": res.stats["torch"].p50, "ort_p50_ms": res.stats["onnxruntime"].p50,
            "ratio_ort_over_torch": res.ratio_median["onnxruntime"],
            "ratio_q25": res.ratio_q25["onnxruntime"], "ratio_q75": res.ratio_q75["onnxruntime"],
            "ratio_min": res.ratio_min["onnxruntime"], "ratio_max": res.ratio_max["onnxruntime"],
            "round_ratios": res.round_ratios["onnxruntime"],
        }
    return entry


def stability(name: str, runs: int = 3, threads: int = 1) -> dict:
    """The ratio mode on two identical things: the same ONNX bytes in two sessions, the CLI's defaults."""
    from edgezoo.profile.latency import compare_interleaved
    from edgezoo.runtimes.inputs import feeds_for
    from edgezoo.runtimes.onnxruntime import OrtRunner
    from edgezoo.export.loaders import export_to_bytes
    from edgezoo.runtimes.torch import build_registry_model

    spec, module = build_registry_model(name)
    data = export_to_bytes(module, spec)
    out = []
    for _ in range(runs):
        with OrtRunner(data, threads=threads) as a, OrtRunner(data, threads=threads) as b:
            feeds = feeds_for(a, batch=1)
            res = compare_interleaved({"A": lambda: a.infer(feeds), "B": lambda: b.infer(feeds)},
                                      rounds=15, iters_per_round=10, warmup=5)
        out.append({"ratio_median": res.ratio_median["B"], "q25": res.ratio_q25["B"], "q75": res.ratio_q75["B"],
                    "min": res.ratio_min["B"], "max": res.ratio_max["B"], "counts": res.counts,
                    "p50_ms": res.stats["A"].p50})
    return {"model": spec.name, "threads": threads, "rounds": 15, "iters_per_round": 10, "runs": out}


def write_markdown(report: dict, path: Path) -> None:
    from edgezoo.fileio import atomic_write_text

    m = report["machine"]
    thr = report["settings"]["threads"]
    lines = [
        "# PyTorch eager vs onnxruntime fp32, batch 1",
        "",
        f"Machine: {m.get('cpu', '?')}, {m.get('cpus')} CPUs, {m.get('platform')}; onnxruntime "
        f"{m.get('onnxruntime')}, torch {m.get('torch')}; load average at start "
        f"{', '.join(f'{x:.1f}' for x in m.get('load_average_at_start', []))}, at end "
        f"{', '.join(f'{x:.1f}' for x in m.get('load_average_at_end', []))} (1, 5, 15 min). {m['note'][:1].upper() + m['note'][1:]}.",
        "",
        f"Method: {report['settings']['method']}",
        "",
        "Ratio = ORT time / PyTorch time (median of per-round ratios; < 1 means onnxruntime is faster); IQR of "
        "the per-round ratios and rounds x runs per round in brackets. p50s are over all timed runs of the "
        "comparison.",
        "",
        "| model | input | " + " | ".join(f"torch {t}t p50 ms | ORT {t}t p50 ms | ORT/torch {t}t" for t in thr) + " |",
        "|---|---|" + "---|---|---|" * len(thr),
    ]
    for e in report["models"]:
        if "error" in e:
            lines.append(f"| {e['model']} | - | " + " | ".join(["-", "-", f"failed: {e['error']}"] * len(thr)) + " |")
            continue
        cells = []
        for t in thr:
            r = e["threads"][str(t)]
            cells += [f"{r['torch_p50_ms']:.2f}", f"{r['ort_p50_ms']:.2f}",
                      f"{r['ratio_ort_over_torch']:.2f} ({r['ratio_q25']:.2f}-{r['ratio_q75']:.2f}, "
                      f"{r['rounds']}x{r['iters_per_round']})"]
        lines.append(f"| {e['model']} | {'x'.join(map(str, e['input_size'][1:]))} | " + " | ".join(cells) + " |")
    ok = [e for e in report["models"] if "error" not in e]
    if ok:
        for t in thr:
            rs = [e["threads"][str(t)]["ratio_ort_over_torch"] for e in ok]
            lines.append("")
            lines.append(f"At {t} thread(s): ORT/torch median over models {np.median(rs):.2f}, "
                         f"range {min(rs):.2f}-{max(rs):.2f} ({len(rs)} models).")
    if ok and len(thr) > 1:
        # A second thread that makes a model slower is the machine's load, not the runtime: say so in the file
        lo, hi = min(thr), max(thr)
        slower = {rt: sum(e["threads"][str(hi)][f"{rt}_p50_ms"] > e["threads"][str(lo)][f"{rt}_p50_ms"] for e in ok)
                  for rt in ("torch", "ort")}
        if any(slower.values()):
            lines += ["", f"**Read the {hi}-thread columns as a measurement of contention, not of the runtimes.** "
                      f"With {hi} threads, PyTorch was slower than with {lo} on {slower['torch']} of {len(ok)} models "
                      f"and onnxruntime on {slower['ort']}: on a 2-core machine a second thread competes with "
                      "anything else that runs, and a descheduled thread holds up the others at the barrier "
                      "(PyTorch's OpenMP suffers far more than onnxruntime's pool). The 1-thread ratios are the "
                      "ones to quote."]
    st = report.get("stability")
    if st:
        lines += ["", f"## How stable the ratio mode is (identical models: {st['model']} in two onnxruntime "
                  f"sessions, {st['threads']} thread, {st['rounds']} rounds x {st['iters_per_round']} runs, "
                  f"the CLI's defaults)", "",
                  "| run | median B/A | IQR | min-max | p50 ms |", "|---|---|---|---|---|"]
        for i, r in enumerate(st["runs"], 1):
            lines.append(f"| {i} | {r['ratio_median']:.3f} | {r['q25']:.3f}-{r['q75']:.3f} | "
                         f"{r['min']:.3f}-{r['max']:.3f} | {r['p50_ms']:.2f} |")
        meds = [r["ratio_median"] for r in st["runs"]]
        lines += ["", f"Medians across the three runs: {min(meds):.3f}-{max(meds):.3f} (ideal 1.000)."]
    lines += ["", f"Written {report['written']} by `python benchmarks/latency.py` in {report['elapsed_s']:.0f} s.", ""]
    atomic_write_text(path, "\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", help="registry names (default: every registered model)")
    ap.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--round-s", type=float, default=0.5, help="target seconds per round (both models)")
    ap.add_argument("--cap-s", type=float, default=6.0,
                    help="seconds of timed rounds per (model, threads) beyond which rounds are cut (to >= 3)")
    ap.add_argument("--stability-model", default="mobilenet_v2")
    ap.add_argument("--no-stability", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "latency")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the existing .json")
    args = ap.parse_args(argv)
    if args.markdown_only:
        import json

        write_markdown(json.loads(args.out.with_suffix(".json").read_text()), args.out.with_suffix(".md"))
        return 0

    from edgezoo.fileio import write_json
    from edgezoo.models.registry import list_models

    names = args.models or list_models()
    start = time.perf_counter()
    report = {
        "machine": machine(),
        "settings": {
            "threads": args.threads, "rounds": args.rounds, "round_s": args.round_s, "cap_s": args.cap_s,
            "batch": 1,
            "method": (f"{args.rounds} interleaved rounds per model and thread count (order alternating), runs "
                       f"per round chosen so a round takes about {args.round_s} s (at least 1 of each); where "
                       f"calls are so slow that the rounds would take over {args.cap_s} s, fewer rounds (at least "
                       "3: the table says how many); 2 warm-up "
                       "runs of each; random-init weights, BatchNorm recalibrated on 8 random images; ONNX from "
                       "edgezoo's verified exporter (opset 17, onnxsim), onnxruntime CPU, all graph optimisations; "
                       "intra-op threads set on both runtimes."),
        },
        "models": [],
    }
    for i, name in enumerate(names, 1):
        t0 = time.perf_counter()
        try:
            entry = compare_model(name, args.threads, args.rounds, args.round_s, args.cap_s)
        except Exception as e:  # noqa: BLE001  (one model failing must not lose the others)
            entry = {"model": name, "error": str(e).splitlines()[0][:200]}
        report["models"].append(entry)
        summary = ", ".join(f"{t}t {entry['threads'][str(t)]['ratio_ort_over_torch']:.2f}" for t in args.threads) \
            if "threads" in entry else entry["error"]
        print(f"[{i}/{len(names)}] {name}: ORT/torch {summary} ({time.perf_counter() - t0:.0f} s)", flush=True)
    if not args.no_stability:
        report["stability"] = stability(args.stability_model)
        print("stability:", [round(r["ratio_median"], 3) for r in report["stability"]["runs"]], flush=True)
    report["elapsed_s"] = time.perf_counter() - start
    report["machine"]["load_average_at_end"] = os.getloadavg()
    report["written"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    write_json(args.out.with_suffix(".json"), report)
    write_markdown(report, args.out.with_suffix(".md"))
    print(f"wrote {args.out.with_suffix('.json')} and .md in {report['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
