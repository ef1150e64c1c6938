"""Image -> model input, the one way edgezoo does it (int8 calibration, distillation images and the server).

Calibrating on pixels prepared differently from those the server feeds would skew int8 scales, so both use
this, with the checkpoint's preset (``edgezoo.models.presets``: crop fraction, interpolation, mean/std), read
back from the ONNX metadata. The whole image is decoded (no JPEG draft-mode shrinking, which changes the
pixels). No torch; Pillow and numpy only.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Sequence

import numpy as np

from edgezoo.errors import InputError

# The usual ImageNet evaluation transform: resize so the crop is 87.5% of the image, then centre-crop.
CROP_FRACTION = 0.875
INTERPOLATION = "bilinear"
MAX_RESIZE_FACTOR = 16  # the resized image may hold at most this many times the crop's pixels
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


class UnsupportedImageError(InputError, ValueError):
    """An image edgezoo will not turn into model input (too many pixels, a pixel format it cannot map)."""


def max_pixels() -> int:
    """Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, about 89 million pixels)."""
    from PIL import Image

    return int(Image.MAX_IMAGE_PIXELS or 0) or 2 ** 62


def open_image(path: str | os.PathLike):
    """Open an image file and decode it fully, refusing one larger than :func:`max_pixels` in one line.

    A PNG of a few kilobytes can hold 30000x30000 pixels (900 million); Pillow's own refusal is a warning or
    a ``DecompressionBombError`` traceback, which this turns into ``UnsupportedImageError``.
    """
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
            if img.width * img.height > max_pixels():
                img.close()
                raise _too_large(path, f"{img.width}x{img.height} = {img.width * img.height:,} pixels")
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            # Pillow refuses at open past twice its limit; its message holds the pixel count
            found = re.search(r"\((\d+) pixels\)", str(e))
            raise _too_large(path, f"{int(found.group(1)):,} pixels" if found else "too many pixels") from None
    return img


def _too_large(path, what: str) -> UnsupportedImageError:
    return UnsupportedImageError(f"image {os.fspath(path)} is {what}, more than the {max_pixels():,} edgezoo "
                                 "decodes (a decompression bomb?)", "resize it first")


def _eight_bit(img):
    """16-bit greyscale (``I;16``, or ``I`` holding 0..65535 as Pillow reads 16-bit PNGs) -> 8-bit ``L`` by
    scaling (Pillow's own ``convert`` clips every value above 255 to white). Float images are refused."""
    from PIL import Image

    if img.mode in _SIXTEEN_BIT or img.mode == "I":
        arr = np.asarray(img).astype(np.int64)
        if img.mode == "I" and arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise UnsupportedImageError(f"32-bit integer image with values {arr.min()}..{arr.max()}: not an "
                                        "8- or 16-bit image", "convert it to 8-bit RGB first")
        return Image.fromarray(np.round(arr / 257.0).astype(np.uint8), mode="L")
    if img.mode == "F":
        raise UnsupportedImageError("floating-point images are not supported", "convert it to 8-bit RGB first")
    return img


def orient_and_convert(img, channels: int):
    """Apply the EXIF orientation (phone photos) and convert to RGB, or L for 1-channel models.

    16-bit greyscale is scaled to 8 bits, not clipped.
    """
    from PIL import ImageOps

    return _eight_bit(ImageOps.exif_transpose(img)).convert("L" if channels == 1 else "RGB")


def _resample(name: str):
    from PIL import Image

    table = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
    try:
        return table[name]
    except KeyError:
        raise InputError(f"unknown interpolation {name!r}", f"use one of {', '.join(table)}") from None


# Resizing the whole image before the centre crop costs (aspect ratio) x the crop: 1.3-4x for photos, but a
# 1 x 100000 PNG of 467 bytes would become 256 x 25,600,000 pixels (19.7 GB). Past this many times the
# crop's pixels the resize computes only the crop (Pillow's ``box``), so the work is bounded by the output.
# Below it the whole-image resize stays: it is what every earlier calibration and server used, and the
# boxed resize, mathematically the same crop, rounds about 0.1% of pixels 1 level differently.
MAX_RESIZE_FACTOR = 16


def resize_crop_normalise(img, input_size: Sequence[int], mean: Sequence[float], std: Sequence[float],
                          crop_pct: float = CROP_FRACTION, layout: str = "NCHW",
                          interpolation: str = INTERPOLATION) -> np.ndarray:
    """An oriented, converted PIL image -> (C, H, W) (or (H, W, C)) float32, normalised with mean/std of 0..1.

    Scales so the (H, W) crop is ``crop_pct`` of the image along its tighter side (``interpolation``: the
    checkpoint's), then centre-crops. Memory and time are bounded by the crop, whatever the image's shape.
    """
    c, h, w = input_size
    scale = max(h / img.height, w / img.width) / crop_pct
    rw, rh = max(w, round(img.width * scale)), max(h, round(img.height * scale))
    left, top = (rw - w) // 2, (rh - h) // 2
    if rw * rh <= MAX_RESIZE_FACTOR * h * w:
        img = img.resize((rw, rh), _resample(interpolation)).crop((left, top, left + w, top + h))
    else:  # the same crop of the same scaled image, without scaling the rest of it
        sx, sy = img.width / rw, img.height / rh
        img = img.resize((w, h), _resample(interpolation), box=(left * sx, top * sy, (left + w) * sx, (top + h) * sy))
    x = np.asarray(img, dtype=np.float32).reshape(h, w, c) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x if layout == "NHWC" else x.transpose(2, 0, 1))


def prepare(img, input_size: Sequence[int], mean: Sequence[float], std: Sequence[float],
            crop_pct: float = CROP_FRACTION, interpolation: str = INTERPOLATION, layout: str = "NCHW") -> np.ndarray:
    """A decoded PIL image -> model input: orient, convert (16-bit scaled), resize, centre-crop, normalise."""
    return resize_crop_normalise(orient_and_convert(img, input_size[0]), input_size, mean, std, crop_pct, layout,
                                 interpolation)
