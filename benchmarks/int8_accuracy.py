"""int8 accuracy on real labelled images (issue 5): every zoo family, fp32 vs int8 per-channel and per-tensor.

Each family's canonical model is trained briefly from scratch on scikit-learn's digits (upscaled to 48 px, see
_digits.py), then exported through the real pipeline (``run_export``: BN folding, activation forms, ONNX,
static QDQ int8 calibrated on PNG files from the training split via ``--calib DIR``), and top-1 of the fp32
and int8 ONNX files is measured with onnxruntime on the held-out split. Goal: int8 within 1 point of fp32.

The 10-class models go through the pipeline as temporary registry entries (same builder, num_classes=10,
48 px input), because ``ExportOptions`` has no class-count option and a 10-class checkpoint does not fit the
1000-class model ``create_model`` builds.

    python benchmarks/int8_accuracy.py [--steps 80] [--models a,b,...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _digits as D  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# One model per family: the paper's headline configuration (the smallest HarDNet, to keep CPU time sane).
MODELS = ["mobilenet_v3_large", "mobilenet_v3_small", "ghostnet_x1_0", "squeezenet1_1", "mobilenet_v1",
          "mobilenet_v2", "shufflenet_v1_g3_x1_0", "shufflenet_v2_x1_0", "effnet", "hardnet39ds"]
CALIB_COUNT = 64
EVAL_COUNT = 32


def digits_spec(name: str, size: int):
    """A registry entry for ``name`` with 10 classes at the benchmark's size (registered once per process)."""
    from edgezoo.models import registry

    spec = registry.get_spec(name)
    alias = f"digits{size}_{spec.name}"
    try:
        return registry.get_spec(alias)
    except registry.UnknownModelError:
        pass
    return registry.register(dataclasses.replace(
        spec, name=alias, aliases=(), num_classes=10, input_size=(3, size, size),
        kwargs={**spec.kwargs, "num_classes": 10}, remap_state_dict=None, labels=tuple(str(i) for i in range(10)),
    ))


def export(name: str, size: int, weights: Path, calib: Path, out: Path, int8: bool = True, per_tensor: bool = False,
           **extra):
    from edgezoo.export.pipeline import ExportOptions, run_export

    opts = ExportOptions(name=digits_spec(name, size).name, weights=weights, int8=int8, calib=calib,
                         calib_count=CALIB_COUNT, eval_count=EVAL_COUNT, per_tensor=per_tensor,
                         input_size=size, out=out, **extra)
    return run_export(opts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200, help="training steps per model (batch 48)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from edgezoo.errors import EdgezooError
    from edgezoo.models.registry import get_spec

    t0 = time.perf_counter()
    splits = {}
    machine = D.machine()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgezoo-int8acc-") as tmp:
        tmp = Path(tmp)
        for name in args.models.split(","):
            spec = get_spec(name)
            size = D.size_for(spec)
            if size not in splits:
                data = D.load_split(size)
                calib = D.write_png_folder(data["x_train"][:300], tmp / f"calib{size}")  # training split only
                splits[size] = (data, calib)
            data, calib = splits[size]
            x_test = D.to_input(data["x_test"], spec.mean, spec.std)
            t = time.perf_counter()
            model, weights, train_s = D.trained_model(name, data, steps=args.steps)
            torch_top1 = D.top1_torch(model, x_test, data["y_test"])
            row = {"family": spec.family, "model": name, "input_px": size, "train_steps": args.steps,
                   "train_seconds": round(train_s, 1), "torch_fp32_top1": torch_top1}
            for mode in ("per_channel", "per_tensor"):
                try:
                    outcome = export(name, size, weights, calib, tmp / f"{name}-{mode}",
                                     per_tensor=(mode == "per_tensor"))
                except EdgezooError as e:  # one family failing to export must not lose the others' figures
                    row["error"] = f"{mode}: {e}"
                    break
                files = outcome.files
                if mode == "per_channel":
                    row["fp32_top1"] = D.top1_onnx(files["fp32"], x_test, data["y_test"])
                row[f"int8_{mode}_top1"] = D.top1_onnx(files["int8"], x_test, data["y_test"])
                row[f"int8_{mode}_delta"] = round(row[f"int8_{mode}_top1"] - row["fp32_top1"], 2)
                islands = outcome.report["int8"]["float_islands"]
                row[f"int8_{mode}_float_islands"] = islands["count"]
                row[f"int8_{mode}_agreement"] = outcome.report["int8"]["agreement"].get("top1_agreement")
            row["goal_met"] = "error" not in row and all(row[f"int8_{m}_delta"] >= -1.0
                                                         for m in ("per_channel", "per_tensor"))
            row["seconds"] = round(time.perf_counter() - t, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    total = round(time.perf_counter() - t0, 1)
    result = {
        "benchmark": "int8_accuracy",
        "dataset": f"scikit-learn digits, upscaled bilinear 8->{D.SIZE} px (EFFNet: 32 px, its classifier's size), RGB",
        "split": {"train": int(len(data["x_train"])), "test": int(len(data["x_test"])), "stratified": True,
                  "seed": D.SEED},
        "training": f"{args.steps} steps of AdamW (one-cycle, max lr 2e-3, SqueezeNet 5e-4, batch 48, random "
                    "shifts, label smoothing 0.05) from scratch, then BN statistics re-estimated on 512 training images",
        "calibration": f"{CALIB_COUNT} PNGs sampled by the pipeline from 300 training-split images (--calib DIR), "
                       "MinMax, QDQ U8S8",
        "machine": machine, "total_seconds": total, "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    from edgezoo.fileio import atomic_write_text, write_json

    old = RESULTS / "int8_accuracy.json"
    if old.exists():  # a run over some models keeps the other models' rows (same settings only)
        prev = json.loads(old.read_text())
        if prev.get("training") == result["training"]:
            done = {row["model"] for row in rows}
            kept = [row for row in prev["rows"] if row["model"] not in done]
            order = {m: i for i, m in enumerate(MODELS)}
            result["rows"] = sorted(kept + rows, key=lambda row: order.get(row["model"], len(order)))
            if kept:  # the kept rows' time is part of the table's cost
                result["total_seconds"] = round(total + prev.get("total_seconds", 0), 1)
    write_json(RESULTS / "int8_accuracy.json", result)
    atomic_write_text(RESULTS / "int8_accuracy.md", render(result))


def render(r: dict) -> str:
    lines = [
        "# int8 accuracy on real labelled images",
        "",
        f"Data: {r['dataset']}; {r['split']['train']} training / {r['split']['test']} held-out images "
        f"(stratified, seed {r['split']['seed']}). One held-out image is {100 / r['split']['test']:.2f} points.",
        f"Training: {r['training']}.",
        "Export: `run_export` (the `edgezoo export NAME --int8 --calib DIR` path) at the training size; "
        f"calibration: {r['calibration']}.",
        "Top-1 of the exported ONNX files, run by onnxruntime on the held-out images. Goal: int8 within 1 point "
        "of fp32 (counted as met when int8 is at most 1 point below; int8 above fp32 is not a failure).",
        "",
        "| family | model | fp32 top-1 | int8 per-channel | Δ | int8 per-tensor | Δ | float islands (pc/pt) | goal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        if "error" in row:
            lines.append(f"| {row['family']} | {row['model']} | {row.get('fp32_top1', float('nan')):.2f} | "
                         f"export failed: {row['error']} | | | | | **not met** |")
            continue
        lines.append(
            f"| {row['family']} | {row['model']} | {row['fp32_top1']:.2f} | {row['int8_per_channel_top1']:.2f} | "
            f"{row['int8_per_channel_delta']:+.2f} | {row['int8_per_tensor_top1']:.2f} | "
            f"{row['int8_per_tensor_delta']:+.2f} | {row['int8_per_channel_float_islands']}/"
            f"{row['int8_per_tensor_float_islands']} | {'met' if row['goal_met'] else '**not met**'} |")
    missed = [row["model"] for row in r["rows"] if not row["goal_met"]]
    lines += ["", "Goal met for every family." if not missed else f"Goal not met for: {', '.join(missed)}.", "",
              f"Machine: {r['machine']['cpu']}, {r['machine']['cpus']} cores, load average "
              f"{r['machine']['load_average_at_start'][0]:.1f} at the start ({r['machine']['note']}); torch "
              f"{r['machine']['torch']}, onnxruntime {r['machine']['onnxruntime']}. Total run time "
              f"{r['total_seconds'] / 60:.1f} min ("
              + ("training included" if any(row.get("train_seconds") for row in r["rows"])
                 else "the models were trained by an earlier run and loaded from its cache") + ").", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
