"""The lite path (issue 7): accuracy after the rewrites + distillation, and int8 latency against the original fp32.

Accuracy (digits, as in int8_accuracy.py, 48 px): for MobileNet v3 large / small and GhostNet 1.0, top-1 on
the held-out images of the original fp32 model, its plain int8 export, and the lite int8 export
(`edgezoo export NAME --int8 --lite --distill-images TRAIN_PNGS --distill-steps N`), all through
``run_export``. Distillation sees the training split's images without their labels.

Latency (224x224, batch 1, onnxruntime CPU, 1 thread): random-init models with BN statistics recalibrated on
random inputs, exported by the same pipeline (weights do not change the graph), timed interleaved with
``compare_interleaved``; figures are median per-round ratios to the original fp32 model.
Goals: lite int8 / original fp32 <= 0.55 (MNv3-L), 0.6 (MNv3-S), 0.6 (GhostNet); lite int8 top-1 within 1
point of the original fp32.

    python benchmarks/lite.py [--steps 80] [--distill-steps 200] [--models ...] [--skip-accuracy|--skip-latency]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _digits as D  # noqa: E402
from int8_accuracy import export  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ["mobilenet_v3_large", "mobilenet_v3_small", "ghostnet_x1_0"]
GOALS = {"mobilenet_v3_large": 0.55, "mobilenet_v3_small": 0.6, "ghostnet_x1_0": 0.6}
# From one onnxruntime profile of the random-init MobileNetV3-Small lite model (1 thread, 60 runs, same machine,
# under load): why the lite int8 file gains little over the lite fp32 one (shown only when the goal is missed).
MISSED_WHY = (
    "For MobileNetV3-Small the rewrites do their part (lite fp32 is about 0.73 of the original, and the lite int8 "
    "graph runs in int8 with no float islands), but int8 gains little over the lite fp32 model: in one profile "
    "(ms, lite fp32 -> lite int8) depthwise convs went 0.43 -> 0.59 (onnxruntime's int8 depthwise kernel is slower "
    "than its fp32 one here) while pointwise convs went 1.09 -> 0.67 and the classifier 0.52 -> 0.18, "
    "plus 0.23 of input QuantizeLinear/Transpose/QLinearAdd. The 3-channel stem conv, 0.21 -> 0.47 in int8, is "
    "now left in float by the pipeline (int8_forms.small_stem_convs)."
)


def accuracy_rows(models: list[str], steps: int, distill_steps: int, tmp: Path) -> list[dict]:
    from edgezoo.models.registry import get_spec

    data = D.load_split(D.SIZE)
    calib = D.write_png_folder(data["x_train"][:300], tmp / "calib")
    unlabelled = D.write_png_folder(data["x_train"], tmp / "train_images")  # no labels: file names only
    rows = []
    for name in models:
        spec = get_spec(name)
        x_test = D.to_input(data["x_test"], spec.mean, spec.std)
        _, weights, _ = D.trained_model(name, data, steps=steps)
        t = time.perf_counter()
        plain = export(name, D.SIZE, weights, calib, tmp / f"{name}-plain")
        lite = export(name, D.SIZE, weights, calib, tmp / f"{name}-lite", lite=True,
                      distill_images=unlabelled, distill_steps=distill_steps)
        rep = lite.report["lite"]
        row = {
            "model": name,
            "fp32_top1": D.top1_onnx(plain.files["fp32"], x_test, data["y_test"]),
            "int8_top1": D.top1_onnx(plain.files["int8"], x_test, data["y_test"]),
            "lite_fp32_top1": D.top1_onnx(lite.files["fp32"], x_test, data["y_test"]),
            "lite_int8_top1": D.top1_onnx(lite.files["int8"], x_test, data["y_test"]),
            "rewrites": rep["rewrites"], "n_changes": len(rep["changes"]),
            "distillation": rep["distillation"],
            "heldout_agreement_fp32": rep["heldout_agreement_fp32"],
            "heldout_agreement_int8": rep.get("heldout_agreement_int8"),
            "lite_int8_float_islands": lite.report["int8"]["float_islands"]["count"],
            "seconds": round(time.perf_counter() - t, 1),
        }
        row["lite_int8_delta"] = round(row["lite_int8_top1"] - row["fp32_top1"], 2)
        row["accuracy_goal_met"] = row["lite_int8_delta"] >= -1.0
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def latency_rows(models: list[str], tmp: Path, rounds: int = 21, iters: int = 10) -> list[dict]:
    import numpy as np
    import torch

    from edgezoo.models.registry import create_model, get_spec
    from edgezoo.profile.latency import compare_interleaved
    from edgezoo.runtimes.onnxruntime import OrtRunner
    from edgezoo.models.batchnorm import random_images, recalibrate_bn

    rows = []
    for name in models:
        spec = get_spec(name)
        model = recalibrate_bn(create_model(name), random_images(spec.input_size), batch_size=8)
        weights = tmp / f"{name}-random.pt"
        torch.save(model.state_dict(), weights)
        plain = export_224(name, weights, tmp / f"{name}-224-plain")
        lite = export_224(name, weights, tmp / f"{name}-224-lite", lite=True, distill_steps=1)
        files = {"fp32": plain.files["fp32"], "int8": plain.files["int8"],
                 "lite_fp32": lite.files["fp32"], "lite_int8": lite.files["int8"]}
        runners = {k: OrtRunner(p, threads=1).activate() for k, p in files.items()}
        x = np.random.default_rng(0).standard_normal((1, *spec.input_size)).astype(np.float32)
        fns = {k: (lambda r=r: r.infer({r.inputs[0].name: x})) for k, r in runners.items()}
        res = compare_interleaved(fns, rounds=rounds, iters_per_round=iters, warmup=10)
        for r in runners.values():
            r.deactivate()
        row = {
            "model": name,
            "fp32_ms": round(res.stats["fp32"].p50, 3),
            **{f"{k}_ms": round(res.stats[k].p50, 3) for k in ("int8", "lite_fp32", "lite_int8")},
            **{f"{k}_ratio": round(res.ratio_median[k], 3) for k in ("int8", "lite_fp32", "lite_int8")},
            "lite_int8_ratio_range": [round(res.ratio_min["lite_int8"], 3), round(res.ratio_max["lite_int8"], 3)],
            "rounds": res.rounds, "iters_per_round": res.iters_per_round,
            "int8_float_islands": plain.report["int8"]["float_islands"]["count"],
            "lite_int8_float_islands": lite.report["int8"]["float_islands"]["count"],
            "goal": GOALS.get(name),
        }
        row["latency_goal_met"] = row["goal"] is not None and row["lite_int8_ratio"] <= row["goal"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def export_224(name: str, weights: Path, out: Path, **extra):
    from edgezoo.export.pipeline import ExportOptions, run_export

    return run_export(ExportOptions(name=name, weights=weights, int8=True, out=out, **extra))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200, help="training steps per model (as int8_accuracy.py)")
    ap.add_argument("--distill-steps", type=int, default=600)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args()
    models = args.models.split(",")
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    machine = D.machine()
    out: dict = {"benchmark": "lite", "machine": machine, "train_steps": args.steps,
                 "distill_steps": args.distill_steps, "goals_latency": GOALS}
    with tempfile.TemporaryDirectory(prefix="edgezoo-lite-") as tmp:
        tmp = Path(tmp)
        if not args.skip_latency:
            t = time.perf_counter()
            out["latency"] = latency_rows(models, tmp)
            out["latency_seconds"] = round(time.perf_counter() - t, 1)
        if not args.skip_accuracy:
            t = time.perf_counter()
            out["accuracy"] = accuracy_rows(models, args.steps, args.distill_steps, tmp)
            out["accuracy_seconds"] = round(time.perf_counter() - t, 1)
    out["total_seconds"] = round(time.perf_counter() - t0, 1)
    from edgezoo.fileio import atomic_write_text, write_json

    RESULTS.mkdir(exist_ok=True)
    old = RESULTS / "lite.json"
    if old.exists() and (args.skip_accuracy or args.skip_latency):  # a partial rerun keeps the other half
        prev = json.loads(old.read_text())
        for k in ("latency", "accuracy", "latency_seconds", "accuracy_seconds"):
            out.setdefault(k, prev.get(k))
    write_json(RESULTS / "lite.json", out)
    atomic_write_text(RESULTS / "lite.md", render(out))


def render(r: dict) -> str:
    m = r["machine"]
    lines = ["# Lite int8: rewrites + distillation (MobileNet v3, GhostNet)", ""]
    if r.get("accuracy"):
        lines += [
            f"## Accuracy (digits, {D.SIZE} px, held-out images)", "",
            f"Models trained {r['train_steps']} steps from scratch (as in int8_accuracy.md); lite = h-swish -> ReLU "
            f"and SE blocks replaced by their mean gate folded into the next conv, then {r['distill_steps']} "
            "steps of distillation from the original on the training images without labels (batch 32, KL at "
            "T=4, BN recalibrated then frozen). All four columns are ONNX files from `run_export`, run by "
            "onnxruntime. Goal: lite int8 at most 1 point below the original fp32.", "",
            "| model | original fp32 | plain int8 | lite fp32 | lite int8 | Δ lite int8 vs fp32 | lite agreement with "
            "original (held-out distill images, before -> after distill) | goal |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for a in r["accuracy"]:
            ag = a["heldout_agreement_fp32"]
            agree = (f"{100 * ag['before_distillation']:.1f}% -> {100 * ag['after_distillation']:.1f}%"
                     if ag.get("after_distillation") is not None else "-")
            lines.append(f"| {a['model']} | {a['fp32_top1']:.2f} | {a['int8_top1']:.2f} | {a['lite_fp32_top1']:.2f} | "
                         f"{a['lite_int8_top1']:.2f} | {a['lite_int8_delta']:+.2f} | {agree} | "
                         f"{'met' if a['accuracy_goal_met'] else '**not met**'} |")
        lines.append("")
    if r.get("latency"):
        lines += [
            "## Latency (224x224, batch 1, onnxruntime CPU, 1 thread, interleaved)", "",
            "Ratios are medians over rounds of (median of 10 runs) / (the original fp32's, same round).", "",
            "| model | original fp32 ms | plain int8 / fp32 | lite fp32 / fp32 | lite int8 / fp32 (min-max) | goal | "
            "float islands int8 / lite int8 | met |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for t in r["latency"]:
            lo, hi = t["lite_int8_ratio_range"]
            lines.append(f"| {t['model']} | {t['fp32_ms']:.2f} | {t['int8_ratio']:.3f} | {t['lite_fp32_ratio']:.3f} | "
                         f"{t['lite_int8_ratio']:.3f} ({lo:.2f}-{hi:.2f}) | <= {t['goal']} | "
                         f"{t['int8_float_islands']} / {t['lite_int8_float_islands']} | "
                         f"{'met' if t['latency_goal_met'] else '**not met**'} |")
        missed = [t["model"] for t in r["latency"] if not t["latency_goal_met"]]
        if missed:
            lines += ["", f"Latency goal not met: {', '.join(missed)}. " + MISSED_WHY]
        lines.append("")
    lines += [f"Machine: {m['cpu']}, {m['cores']} cores, load average {m['load_average_at_start']:.1f} at the start "
              f"({m['note']}; during the latency part another helper's int8 speed benchmark was running, hence "
              f"the wide min-max ranges); torch {m['torch']}, onnxruntime {m['onnxruntime']}. Run time: "
              f"accuracy part {(r.get('accuracy_seconds') or 0) / 60:.1f} min (models trained beforehand by "
              f"int8_accuracy.py and cached), latency part {(r.get('latency_seconds') or 0) / 60:.1f} min.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
