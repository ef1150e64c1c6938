"""Real photos that ship inside packages, for calibration and agreement checks with no download.

Sources: scikit-image's ``skimage.data`` (photos bundled in its wheel), scikit-learn's
``load_sample_images`` (china.jpg, flower.jpg) and matplotlib's sample data (grace_hopper.jpg). They are
test-extra packages: production code never needs them, benchmarks and tests do. Few photos ship, so
``views`` makes several crops and flips of each; ``split`` keeps calibration and evaluation apart by photo,
never by crop, so no evaluation view was seen (even cropped) during calibration.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from edgezoo.errors import MissingDependencyError


@dataclass(frozen=True)
class Photo:
    name: str  # "<package>:<name>"
    image: object  # PIL.Image.Image, RGB


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()
    return load


def _sklearn(index: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_images

        return load_sample_images().images[index]
    return load


def _matplotlib(file: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import matplotlib.cbook
        from PIL import Image

        with Image.open(matplotlib.cbook.get_sample_data(file, asfileobj=False)) as img:
            return np.asarray(img.convert("RGB"))
    return load


# (name, package that ships it, loader). Natural photos only: skimage's microscopy, astronomy, text and
# synthetic images are left out (they are far from what an ImageNet classifier sees). Grey photos are
# replicated to three channels.
PHOTO_SOURCES: tuple[tuple[str, str, Callable[[], np.ndarray]], ...] = (
    ("astronaut", "scikit-image", _skimage("astronaut")),
    ("coffee", "scikit-image", _skimage("coffee")),
    ("chelsea", "scikit-image", _skimage("chelsea")),
    ("rocket", "scikit-image", _skimage("rocket")),
    ("camera", "scikit-image", _skimage("camera")),
    ("coins", "scikit-image", _skimage("coins")),
    ("moon", "scikit-image", _skimage("moon")),
    ("clock", "scikit-image", _skimage("clock")),
    ("grass", "scikit-image", _skimage("grass")),
    ("gravel", "scikit-image", _skimage("gravel")),
    ("brick", "scikit-image", _skimage("brick")),
    ("china", "scikit-learn", _sklearn(0)),
    ("flower", "scikit-learn", _sklearn(1)),
    ("grace_hopper", "matplotlib", _matplotlib("grace_hopper.jpg")),
)

_INSTALL = "pip install 'edgezoo[test]' (scikit-image, scikit-learn) and matplotlib"


def sample_photos() -> list[Photo]:
    """Every photo the installed packages ship, RGB, in PHOTO_SOURCES order; duplicates by content dropped."""
    from PIL import Image

    photos: list[Photo] = []
    seen: set[str] = set()
    missing: list[str] = []
    for name, package, load in PHOTO_SOURCES:
        try:
            arr = np.asarray(load())
        except ImportError:
            missing.append(package)
            continue
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        arr = np.ascontiguousarray(arr[:, :, :3].astype(np.uint8))
        digest = hashlib.sha256(arr.tobytes()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        photos.append(Photo(f"{package}:{name}", Image.fromarray(arr, "RGB")))
    if not photos:
        raise MissingDependencyError(", ".join(sorted(set(missing))), _INSTALL,
                                     "they ship the real photos used for calibration and checks")
    return photos


def split(photos: Sequence[Photo], every: int = 3) -> tuple[list[Photo], list[Photo]]:
    """(calibration, evaluation): every ``every``-th photo is held out for evaluation, the rest calibrate."""
    calib = [p for i, p in enumerate(photos) if i % every != every - 1]
    held = [p for i, p in enumerate(photos) if i % every == every - 1]
    return calib, held


def views(photos: Iterable[Photo], per_photo: int, seed: int = 0, min_scale: float = 0.35) -> list:
    """``per_photo`` PIL views of each photo: the whole photo first, then random crops, half of them mirrored.

    A crop keeps between ``min_scale`` and all of the shorter side, at a random place, so one photo gives
    several distinct inputs after the model's own resize and centre crop.
    """
    from PIL import ImageOps

    rng = np.random.default_rng(seed)
    out = []
    for photo in photos:
        img = photo.image
        out.append(img)
        for k in range(1, per_photo):
            side = min(img.width, img.height)
            s = int(side * rng.uniform(min_scale, 1.0))
            left = int(rng.integers(0, img.width - s + 1))
            top = int(rng.integers(0, img.height - s + 1))
            view = img.crop((left, top, left + s, top + s))
            out.append(ImageOps.mirror(view) if k % 2 else view)
    return out


def write_folder(images: Iterable, folder: str | Path, prefix: str = "photo") -> Path:
    """Write PIL images as PNG files (lossless, so the folder feeds ``--calib`` the same pixels); returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        img.save(folder / f"{prefix}_{i:03d}.png")
    return folder
