"""Why int8/fp32 ratios measured on synthetic settings do not reproduce on real ones: files vs inputs.

int8_speed.py exports each model twice into its --work folder: ``synthetic`` (BN statistics from random data,
synthetic calibration, a random-normal input: the first round's setting) and ``photos`` (BN statistics from
real photos, photo calibration, a held-out photo as input). This script times edgezoo's fp32 and int8 files
of both settings, each fed both inputs, in one set of interleaved rounds (1 thread), so the change of the
ratio splits into what the files do (weights and calibration change scales, and with them the kernels
onnxruntime picks) and what the input does. It also counts, per file, the ops onnxruntime runs after its
graph optimisations.

    python benchmarks/int8_speed.py --work W [--inputs photos|synthetic] ...   # both, first
    python benchmarks/int8_speed_why.py --work W [--models mobilenet_v3_large,ghostnet_x1_0]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def optimized_ops(path: Path) -> dict[str, int]:
    from edgezoo.export.quantize import optimized_graph

    return dict(Counter(n.op_type for n in optimized_graph(path).graph.node).most_common())


def run(name: str, work: Path, rounds: int, bundles: dict[str, Path] | None = None) -> dict:
    from edgezoo.profile.latency import compare_interleaved
    from edgezoo.runtimes.onnxruntime import OrtRunner

    settings = {}
    for setting in ("synthetic", "photos"):
        info = json.loads((work / setting / name / "export.json").read_text())
        settings[setting] = info
    xs = {s: np.load(info["x"]) for s, info in settings.items()}
    fns, runners = {}, []
    for s, info in settings.items():
        for prec in ("fp32", "int8"):
            r = OrtRunner(info["paths"][f"edgezoo_{prec}"], threads=1).activate()
            runners.append(r)
            for xin, x in xs.items():
                fns[f"{s}_{prec}_x{xin}"] = (lambda r=r, x=x: r.infer({r.inputs[0].name: x}))
    for label, d in (bundles or {}).items():  # e.g. an earlier commit's export of the synthetic weights
        for prec in ("fp32", "int8"):
            r = OrtRunner(d / f"model.{prec}.onnx", threads=1).activate()
            runners.append(r)
            fns[f"{label}_{prec}_xsynthetic"] = (lambda r=r, x=xs["synthetic"]: r.infer({r.inputs[0].name: x}))
    res = compare_interleaved(fns, rounds=rounds, iters_per_round=10, warmup=5)
    for r in runners:
        r.deactivate()
    med = res.round_medians_ms
    out = {"model": name, "ms": {k: float(np.median(v)) for k, v in med.items()}, "ratio": {},
           "ops": {f"{s}_{p}": optimized_ops(Path(info["paths"][f"edgezoo_{p}"]))
                   for s, info in settings.items() for p in ("fp32", "int8")}}
    for s in settings:
        for xin in xs:
            per = [a / b for a, b in zip(med[f"{s}_int8_x{xin}"], med[f"{s}_fp32_x{xin}"])]
            out["ratio"][f"files {s}, input {xin}"] = float(np.median(per))
    for label in bundles or {}:
        per = [a / b for a, b in zip(med[f"{label}_int8_xsynthetic"], med[f"{label}_fp32_xsynthetic"])]
        out["ratio"][f"files {label}, input synthetic"] = float(np.median(per))
    return out


def render(rows: list[dict], meta: dict) -> str:
    lines = ["# Why the int8/fp32 ratio moved: files vs inputs (edgezoo files, onnxruntime, 1 thread)", "",
             f"Machine: {meta['cpu']}, onnxruntime {meta['onnxruntime']}; load average "
             f"{meta['load_start']:.1f} at start, {meta['load_end']:.1f} at end (shared machine); "
             f"{meta['rounds']} interleaved rounds x 10 runs.", "",
             "| model | files | input | fp32 ms | int8 ms | int8 / fp32 |", "|---|---|---|---|---|---|"]
    for r in rows:
        for s in ("synthetic", "photos"):
            for x in ("synthetic", "photos"):
                lines.append(f"| {r['model']} | {s} | {x} | {r['ms'][f'{s}_fp32_x{x}']:.2f} | "
                             f"{r['ms'][f'{s}_int8_x{x}']:.2f} | {r['ratio'][f'files {s}, input {x}']:.2f} |")
        for label in r.get("bundles", []):
            lines.append(f"| {r['model']} | {label} | synthetic | {r['ms'][f'{label}_fp32_xsynthetic']:.2f} | "
                         f"{r['ms'][f'{label}_int8_xsynthetic']:.2f} | "
                         f"{r['ratio'][f'files {label}, input synthetic']:.2f} |")
    lines += ["", "Ops onnxruntime runs (after its optimisations), per file:", ""]
    for r in rows:
        for k, ops in r["ops"].items():
            lines.append(f"- {r['model']} {k}: " + ", ".join(f"{op} x{n}" for op, n in ops.items()))
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--models", default="mobilenet_v3_large,mobilenet_v3_small,mobilenet_v2,ghostnet_x1_0")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--bundle", action="append", default=[], metavar="MODEL:LABEL=DIR",
                    help="also time DIR/model.fp32.onnx and model.int8.onnx (an export of the synthetic weights.pt, "
                         "e.g. by an earlier commit) with the synthetic input")
    args = ap.parse_args()
    bundles: dict[str, dict[str, Path]] = {}
    for b in args.bundle:
        model, _, rest = b.partition(":")
        label, _, d = rest.partition("=")
        bundles.setdefault(model, {})[label] = Path(d)
    from edgezoo.fileio import atomic_write_text, write_json
    from edgezoo.profile.latency import describe_machine

    meta = {**describe_machine(), "rounds": args.rounds, "load_start": os.getloadavg()[0],
            "started": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    rows = []
    for m in [m for m in args.models.split(",") if m]:
        rows.append(run(m, args.work, args.rounds, bundles.get(m)))
        rows[-1]["bundles"] = sorted(bundles.get(m, {}))
    meta["load_end"] = os.getloadavg()[0]
    write_json(args.out / "int8_speed_why.json", {"machine": meta, "models": rows})
    atomic_write_text(args.out / "int8_speed_why.md", render(rows, meta))
    for r in rows:
        print(r["model"], {k: round(v, 3) for k, v in r["ratio"].items()})


if __name__ == "__main__":
    main()
