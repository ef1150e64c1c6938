"""Calibration inputs: a folder of real images with the model's own preprocessing, or a synthetic set.

No torch here: calibration arrays are numpy (N, C, H, W) float32, as onnxruntime takes them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from edgezoo.errors import InputError, MissingDependencyError
from edgezoo.imageprep import CROP_FRACTION, INTERPOLATION, UnsupportedImageError, open_image, prepare

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def list_images(folder: str | os.PathLike, what: str = "calibration folder",
                option: str = "--calib DIR") -> list[Path]:
    """Image files under ``folder`` (recursively, so class sub-folders work), sorted for determinism.

    ``what`` and ``option`` name the folder in the errors (the calibration and the distillation folders)."""
    root = Path(folder)
    if not root.exists():
        raise InputError(f"{what} {root} does not exist", f"pass {option} with images in it")
    if not root.is_dir():
        raise InputError(f"{what} {root} is not a folder", f"pass {option} with images in it")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise InputError(f"{what} {root} has no images",
                         f"put JPEG/PNG files in it (suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def preprocess_image(img, input_size: Sequence[int], mean: Sequence[float], std: Sequence[float],
                     crop_pct: float = CROP_FRACTION, interpolation: str = INTERPOLATION) -> np.ndarray:
    """PIL image -> (C, H, W) float32, exactly as `edgezoo serve` prepares it (edgezoo.imageprep)."""
    return prepare(img, input_size, mean, std, crop_pct, interpolation)


def sample_files(path: str | os.PathLike, count: int | None = None, seed: int = 0) -> list[Path]:
    """The images of ``path`` (list_images), or a fixed-seed sample of ``count`` of them, in name order."""
    files = list_images(path)
    if count is not None:
        if count < 1:
            raise InputError(f"calibration count must be at least 1, got {count}")
        if len(files) > count:
            idx = np.sort(np.random.default_rng(seed).choice(len(files), size=count, replace=False))
            files = [files[i] for i in idx]
    return files


def load_image_folder(path: str | os.PathLike, input_size: Sequence[int], mean: Sequence[float],
                      std: Sequence[float], count: int | None = None, seed: int = 0,
                      crop_pct: float = CROP_FRACTION, interpolation: str = INTERPOLATION) -> np.ndarray:
    """Up to ``count`` images of ``path`` (a fixed-seed sample when there are more: ``sample_files``),
    preprocessed, stacked, with the checkpoint preset's crop fraction and interpolation
    (``edgezoo.models.presets``)."""
    return load_images(sample_files(path, count, seed), input_size, mean, std, crop_pct, interpolation)


def load_images(files: Sequence[Path], input_size: Sequence[int], mean: Sequence[float], std: Sequence[float],
                crop_pct: float = CROP_FRACTION, interpolation: str = INTERPOLATION) -> np.ndarray:
    """``files`` preprocessed and stacked (N, C, H, W).

    Files that are not decodable images are an error naming the first one, not a silent skip: a calibration
    set that is half garbage gives a bad int8 model.
    """
    try:
        from PIL import UnidentifiedImageError
    except ImportError:
        raise MissingDependencyError("Pillow", "pip install pillow", "needed to read calibration images") from None
    out = np.empty((len(files), *input_size), dtype=np.float32)
    for i, f in enumerate(files):
        try:
            with open_image(f) as img:
                out[i] = preprocess_image(img, input_size, mean, std, crop_pct, interpolation)
        except UnsupportedImageError as e:
            raise InputError(f"cannot use calibration image {f}: {e.message}",
                             "remove it or use a folder of JPEG/PNG images") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise InputError(f"cannot read calibration image {f}: {type(e).__name__}: {e}",
                             "remove it or use a folder of JPEG/PNG images") from None
    return out


def synthetic_images(count: int, input_size: Sequence[int], seed: int = 0) -> np.ndarray:
    """Smooth random images, already normalised: blurry colour blobs with edges, not white noise.

    Noise calibrates activation ranges that real images never reach (and misses the ones they do), so this
    is only a stand-in: the pipeline warns that accuracy needs real images (--calib DIR).
    """
    rng = np.random.default_rng(seed)
    c, h, w = input_size
    out = np.empty((count, c, h, w), dtype=np.float32)
    for i in range(count):
        coarse = rng.standard_normal((c, max(2, h // 16), max(2, w // 16))).astype(np.float32)
        img = np.repeat(np.repeat(coarse, -(-h // coarse.shape[1]), axis=1), -(-w // coarse.shape[2]), axis=2)
        img = img[:, :h, :w] + 0.3 * rng.standard_normal((c, h, w)).astype(np.float32)
        out[i] = np.clip(img, -2.5, 2.5)
    return out
