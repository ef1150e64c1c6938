"""Shared by the accuracy benchmarks: scikit-learn's digits as a small real labelled image set.

The 1,797 8x8 digits (16 grey levels) are upscaled bilinearly to SIZE x SIZE RGB, split 60/40 into a training
and a held-out set (stratified, fixed seed), and fed through each model's own preprocessing (mean/std).
The zoo models accept inputs this small (global pooling before the classifier); 32 px keeps CPU training at
seconds per model on this shared 2-core machine, at the price of 1x1 final feature maps.

Calibration and distillation images are written as PNG files, so the benchmarks go through the same
``--calib DIR`` / ``load_image_folder`` path users take.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SIZE = 48
SEED = 0
CACHE = Path(os.environ.get("EDGEZOO_BENCH_CACHE", "/tmp/edgezoo-bench-cache"))


def load_split(size: int = SIZE, test_fraction: float = 0.4, seed: int = SEED) -> dict[str, np.ndarray]:
    """uint8 images (N, size, size, 3) and int64 labels, train and held-out test."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1).permute(0, 2, 3, 1).numpy()
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(u8, y, test_size=test_fraction, stratify=y, random_state=seed)
    return {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}


def to_input(u8: np.ndarray, mean, std) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW normalised like the model's spec (what load_image_folder does)."""
    x = u8.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    return ((x - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]).astype(np.float32)


def write_png_folder(u8: np.ndarray, folder: Path) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(u8):
        Image.fromarray(img).save(folder / f"digit_{i:05d}.png")
    return folder


def random_shift(x: torch.Tensor, g: torch.Generator, frac: int = 8) -> torch.Tensor:
    n, _, h, w = x.shape
    p = max(1, h // frac)
    padded = F.pad(x, (p, p, p, p), mode="replicate")
    offs = torch.randint(0, 2 * p + 1, (n, 2), generator=g).tolist()
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offs)])


# SqueezeNet has no BatchNorm and a ReLU on its logits: at 2e-3 its final ReLU dies and it predicts one class.
LR = {"squeezenet": 5e-4}


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, steps: int = 300, batch_size: int = 48,
          lr: float = 2e-3, seed: int = SEED) -> nn.Module:
    """Brief supervised training from scratch (AdamW, one-cycle, random shifts); returns the model in eval mode."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (batch_size,), generator=g)
        loss = F.cross_entropy(model(random_shift(xt[idx], g)), yt[idx], label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    # Re-estimate BN statistics on the training images: with MobileNetV3's BN momentum of 0.01, a few hundred
    # steps leave the running averages far from the trained weights' statistics.
    from edgezoo.models.batchnorm import recalibrate_bn

    return recalibrate_bn(model, xt[:512], batch_size=64).eval()


def size_for(spec) -> int:
    """SIZE, or the model's own input size when that is smaller (EFFNet's classifier is built for 32x32)."""
    return min(SIZE, spec.input_size[-1])


def trained_model(name: str, data: dict, steps: int = 300, seed: int = SEED) -> tuple[nn.Module, Path, float]:
    """A zoo model trained on the digits (cached on disk); returns (model, state_dict path, seconds trained)."""
    from edgezoo.models.registry import create_model, get_spec

    spec = get_spec(name)
    size = data["x_train"].shape[1]
    key = hashlib.sha256(f"{spec.name}|{size}|{steps}|{seed}|{len(data['x_train'])}|b48".encode()).hexdigest()[:12]
    path = CACHE / f"{spec.name}-{key}.pt"
    model = create_model(spec.name, num_classes=10)
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval(), path, 0.0
    t0 = time.perf_counter()
    train(model, to_input(data["x_train"], spec.mean, spec.std), data["y_train"], steps=steps, seed=seed,
          lr=LR.get(spec.family, 2e-3))
    seconds = time.perf_counter() - t0
    CACHE.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
    return model, path, seconds


@torch.no_grad()
def top1_torch(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    pred = torch.cat([model(torch.from_numpy(x[i:i + 256])).argmax(1) for i in range(0, len(x), 256)])
    return 100.0 * float((pred.numpy() == y).mean())


def top1_onnx(path: str | Path, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    pred = np.concatenate([sess.run(None, {name: x[i:i + 256]})[0].argmax(1) for i in range(0, len(x), 256)])
    return 100.0 * float((pred == y).mean())


def machine() -> dict:
    from edgezoo.profile.latency import describe_machine

    info = describe_machine()
    return {**info, "cores": info["cpus"], "load_average_at_start": os.getloadavg()[0], "torch": torch.__version__,
            "note": "shared 2-core machine: other jobs ran beside this benchmark"}
