"""Image -> model input, the one way edgezoo does it (int8 calibration, distillation images and the server).

Calibrating on pixels prepared differently from those the server feeds would skew int8 scales, so both use
this. No torch; Pillow and numpy only.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# The usual ImageNet evaluation transform: resize so the crop is 87.5% of the image, then centre-crop.
CROP_FRACTION = 0.875


def orient_and_convert(img, channels: int):
    """Apply the EXIF orientation (phone photos) and convert to RGB, or L for 1-channel models."""
    from PIL import ImageOps

    return ImageOps.exif_transpose(img).convert("L" if channels == 1 else "RGB")


def resize_crop_normalise(img, input_size: Sequence[int], mean: Sequence[float], std: Sequence[float],
                          crop_pct: float = CROP_FRACTION, layout: str = "NCHW") -> np.ndarray:
    """An oriented, converted PIL image -> (C, H, W) (or (H, W, C)) float32, normalised with mean/std of 0..1.

    Scales so the (H, W) crop is ``crop_pct`` of the image along its tighter side, then centre-crops.
    """
    from PIL import Image

    c, h, w = input_size
    scale = max(h / img.height, w / img.width) / crop_pct
    rw, rh = max(w, round(img.width * scale)), max(h, round(img.height * scale))
    img = img.resize((rw, rh), Image.BILINEAR)
    left, top = (rw - w) // 2, (rh - h) // 2
    img = img.crop((left, top, left + w, top + h))
    x = np.asarray(img, dtype=np.float32).reshape(h, w, c) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x if layout == "NHWC" else x.transpose(2, 0, 1))
