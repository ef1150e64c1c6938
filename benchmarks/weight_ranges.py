"""MinMax against MSE-chosen per-channel weight ranges (edgezoo.export.weight_rounding) for the QDQ int8 files
(onnxruntime target; OpenVINO converts the same QDQ), EfficientNet-Lite0 with its packaged ImageNet checkpoint.

Calibration: 64 images of one half of ``../shared/data/imagenet-sample`` (benchmarks/accuracy.py's split);
evaluation: the other half (250 images): output SQNR and top-1 agreement against the fp32 ONNX, top-1 against
the labels. Writes benchmarks/results/weight_ranges.json and .md.

    python benchmarks/weight_ranges.py [--model efficientnet_lite0] [--calib-count 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    import torch

    from accuracy import DATA, checkpoint, split_sample
    from edgezoo.export import passes as P
    from edgezoo.export.accuracy import compare_to_reference, outputs_of
    from edgezoo.export.calibration import load_images
    from edgezoo.export.labelled import load_labelled
    from edgezoo.export.onnx import export_onnx
    from edgezoo.export.targets import TargetContext
    from edgezoo.export.targets.onnxruntime import qdq_file
    from edgezoo.fileio import write_json
    from edgezoo.models.presets import default_preset
    from edgezoo.models.registry import create_model, get_spec

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--calib-count", type=int, default=64)
    ap.add_argument("--weight-bits", default="8,7", help="8: full-range int8 weights; 7: reduce_range, what the "
                    "recipe takes on x86 CPUs without VNNI (comma-separated)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    a = ap.parse_args()
    spec = get_spec(a.model)
    p = default_preset(spec)
    size = tuple(spec.input_size)
    model = create_model(spec.name, weights=str(checkpoint(a.model[-1])))
    m = P.fold_batchnorm(model.eval()).model
    m = P.rewrite_channel_shuffle(m).model
    m = P.drop_noop_slices(m).model.eval()
    with tempfile.TemporaryDirectory(prefix="ez-ranges-") as tmp:
        tmp = Path(tmp)
        calib_dir, eval_dir = split_sample(DATA, tmp)
        files = sorted(calib_dir.iterdir())[: a.calib_count]
        calib = load_images(files, size, p.mean, p.std, p.crop_pct, p.interpolation)
        ev = load_labelled(eval_dir, size, p.mean, p.std, 1000, None, p.crop_pct, p.interpolation)
        fp32 = tmp / "model.fp32.onnx"
        export_onnx(m, fp32, size)
        with torch.no_grad():
            ref_t = m(torch.from_numpy(ev.images[:8])).numpy()
        ctx = TargetContext(spec.name, size, m, calib, ev.images[:8], ref_t, tmp, threads=1)
        ctx.files["onnxruntime:fp32"] = fp32
        ref = outputs_of("onnxruntime", fp32, "fp32", ev.images)
        base = ctx.int8_recipe()
        old = a.out / "weight_ranges.json"
        bits = [int(b) for b in a.weight_bits.split(",")]
        rows = [r for r in (json.loads(old.read_text())["rows"] if old.exists() else [])
                if r.get("weight_bits", 7 if r["recipe"].count("7-bit") else 8) not in bits]
        for ranges, b in [(r, b) for b in bits for r in ("minmax", "mse")]:
            ctx.recipe = dataclasses.replace(base, weight_ranges=ranges, reduce_range=b == 7)
            path = tmp / f"model.{ranges}.{b}.int8.onnx"
            print(f"{ranges}: quantizing", flush=True)
            qdq_file(ctx, "onnxruntime", path)
            res = compare_to_reference(ref, outputs_of("onnxruntime", path, "int8", ev.images), ev.labels)
            rows.append({"weight_ranges": ranges, "weight_bits": b, "recipe": ctx.recipe.describe(), **res})
            print(f"{ranges}: SQNR {res['sqnr_db']:.2f} dB, agreement {res['top1_agreement'] * 100:.1f}%, "
                  f"top-1 {res['top1']:.1f}", flush=True)
    out = {"model": spec.name, "calibration_images": len(calib), "eval_images": int(len(ev.labels)), "rows": rows}
    write_json(a.out / "weight_ranges.json", out)
    lines = [f"# QDQ weight ranges: MinMax vs MSE-chosen ({spec.name}, packaged ImageNet checkpoint)", "",
             f"onnxruntime QDQ int8 file (edgezoo's recipe; only the weight ranges differ), calibrated on "
             f"{len(calib)} images of imagenet-sample, measured on {len(ev.labels)} others against the fp32 ONNX. "
             "Weight bits 7 is forced here (reduce_range) to measure what the recipe uses on x86 CPUs without VNNI; "
             "the recipe text's 'this CPU' refers to those.", "",
             "| weight bits | weight ranges | recipe | top-1 | top-1 agreement | SQNR dB | top-1 change vs fp32 |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.get('weight_bits', 8)} | {r['weight_ranges']} | {r['recipe']} | {r['top1']:.1f} | {r['top1_agreement'] * 100:.1f}% | "
              f"{r['sqnr_db']:.2f} | {r['top1_change']['verdict']} |" for r in rows]
    (a.out / "weight_ranges.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
