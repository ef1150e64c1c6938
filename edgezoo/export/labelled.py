"""Labelled images for accuracy (``edgezoo export --eval DIR``): three folder layouts, detected and named.

- ``imagefolder``: one subfolder per class (torchvision's ImageFolder); a folder's name is matched to the
  model's class names (case, ``_`` and ``-`` ignored), to a class index, or, for ImageNet models, to a synset id
  (``n01440764``).
- ``labels.csv``: a flat folder with a ``labels.csv`` of ``file,label`` rows (a header row is optional); a label
  is a class name or an index.
- ``synset names``: ImageNet file names that start with their synset id (``n01440764_tench.JPEG``), mapped to
  class indices through the 1000 ImageNet-1k synsets in their standard (sorted) order.

``index_labelled`` reads the labels without decoding an image (every labelling problem is one line before
any slow work); ``load_labelled`` decodes the images through the one image preparation (edgezoo.imageprep,
as calibration does). An image that cannot be decoded is named, skipped and counted, not fatal: one bad file
in a validation set should not cost the whole export, and the report says how many images the figures are on.
No torch.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from edgezoo.errors import InputError

LAYOUTS = ("imagefolder", "labels.csv", "synset names")
SYNSET = re.compile(r"^(n\d{8})(?=[_.\-]|$)")
_HINT = ("use one subfolder per class, a labels.csv of file,label rows, or ImageNet file names that start with "
         "their synset id (n01440764_tench.JPEG)")


@lru_cache(maxsize=1)
def imagenet_synsets() -> tuple[str, ...]:
    """The 1000 ImageNet-1k synset ids in the standard class order (sorted; n01440764 = 0, tench).

    Copied into the package from timm's ``timm/data/_info/imagenet_synsets.txt`` (the same list torchvision's
    ImageNet dataset sorts from the devkit), so nothing is fetched at run time.
    """
    text = resources.files("edgezoo.models").joinpath("imagenet_synsets.txt").read_text(encoding="utf-8")
    ids = tuple(line.strip() for line in text.splitlines() if line.strip())
    assert len(ids) == 1000 and list(ids) == sorted(ids), len(ids)
    return ids


@dataclass
class LabelledIndex:
    """The labels of a folder, before decoding: ``files[i]`` has class ``labels[i]``."""

    root: Path
    layout: str  # one of LAYOUTS
    files: list[Path]
    labels: np.ndarray  # int64 class indices
    classes_seen: int = 0

    def describe(self) -> str:
        return f"{len(self.files)} labelled images in {self.root} ({self.layout} layout, {self.classes_seen} classes)"


@dataclass
class LabelledSet:
    """Decoded labelled images: ``images`` (N, C, H, W) float32 and their ``labels``; ``skipped``: the files
    that could not be decoded, each with the reason."""

    index: LabelledIndex
    images: np.ndarray
    labels: np.ndarray
    files: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    # outputs of the files already run on these images (edgezoo.export.accuracy.outputs_on), so the budget and
    # the accuracy steps run each file once
    outputs: dict = field(default_factory=dict, repr=False)

    def describe(self) -> str:
        text = (f"{len(self.labels)} labelled images from {self.index.root} ({self.index.layout} layout, "
                f"{self.index.classes_seen} classes)")
        if self.skipped:
            text += f"; {len(self.skipped)} skipped (cannot be decoded)"
        return text

    def to_dict(self) -> dict:
        return {"root": str(self.index.root), "layout": self.index.layout, "images": int(len(self.labels)),
                "classes": self.index.classes_seen,
                "skipped": [{"file": str(p), "reason": why} for p, why in self.skipped]}


def normalise(name: str) -> str:
    """A class name as folder names and CSV cells write it: case, ``_``, ``-`` and extra spaces ignored."""
    return " ".join(re.sub(r"[_\-]+", " ", name).lower().split())


class ClassMatcher:
    """Class label text (a name, an index or an ImageNet synset id) -> class index, or an InputError."""

    def __init__(self, num_classes: int, class_names: Sequence[str] | None):
        self.num_classes = num_classes
        self.by_name: dict[str, list[int]] = {}
        for i, n in enumerate(class_names or ()):
            self.by_name.setdefault(normalise(n), []).append(i)
        self.synsets = {s: i for i, s in enumerate(imagenet_synsets())} if num_classes == 1000 else {}

    def lookup(self, text: str, where: str) -> int:
        key = text.strip()
        if key.isdigit():
            i = int(key)
            if i < self.num_classes:
                return i
            raise InputError(f"{where}: class index {i} is out of range for a model with {self.num_classes} "
                             "classes", f"use 0..{self.num_classes - 1} or a class name")
        if key in self.synsets:
            return self.synsets[key]
        found = self.by_name.get(normalise(key))
        if found is None:
            what = (f"none of the model's {len(self.by_name)} class names" if self.by_name
                    else "no class (the model has no class names)")
            raise InputError(f"{where}: '{key}' matches {what} and is not a class index 0..{self.num_classes - 1}",
                             "rename it to a class name or index of the model" + (
                                 ", or to its ImageNet synset id" if self.synsets else ""))
        if len(found) > 1:
            raise InputError(f"{where}: '{key}' names {len(found)} classes ({', '.join(map(str, found))})",
                             "use the class index" + (" or the synset id" if self.synsets else "") + " instead")
        return found[0]


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    from edgezoo.export.calibration import IMAGE_SUFFIXES

    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def detect_layout(root: Path) -> str:
    """Which of LAYOUTS ``root`` is; InputError naming the three when it is none."""
    if not root.is_dir():
        raise InputError(f"--eval {root} is not a folder" if root.exists() else f"--eval {root} does not exist",
                         "give a folder of labelled images")
    if (root / "labels.csv").is_file():
        return "labels.csv"
    flat = _images_in(root, recursive=False)
    subdirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if flat and all(SYNSET.match(p.name) for p in flat):
        return "synset names"
    if subdirs and not flat:
        return "imagefolder"
    if flat:
        raise InputError(f"--eval {root}: cannot tell the images' labels ({len(flat)} images, no labels.csv, "
                         f"and '{flat[0].name}' does not start with an ImageNet synset id)", _HINT)
    raise InputError(f"--eval {root} has no images", _HINT)


def index_labelled(root: str | os.PathLike, num_classes: int, class_names: Sequence[str] | None) -> LabelledIndex:
    """The files of ``root`` and their class indices, in one of the three layouts (detected)."""
    root = Path(root)
    layout = detect_layout(root)
    match = ClassMatcher(num_classes, class_names)
    files: list[Path] = []
    labels: list[int] = []
    if layout == "imagefolder":
        for d in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
            images = _images_in(d, recursive=True)
            if not images:
                continue  # an empty class folder holds nothing to label
            k = match.lookup(d.name, f"--eval {root}: class folder '{d.name}'")
            files += images
            labels += [k] * len(images)
    elif layout == "labels.csv":
        files, labels = _read_csv(root, match)
    else:
        if not match.synsets:
            raise InputError(f"--eval {root}: the file names carry ImageNet synset ids, but the model has "
                             f"{num_classes} classes, not ImageNet's 1000", _HINT)
        for p in _images_in(root, recursive=False):
            wnid = SYNSET.match(p.name).group(1)
            if wnid not in match.synsets:
                raise InputError(f"--eval {root}: '{p.name}' starts with {wnid}, which is not an ImageNet-1k synset",
                                 "rename or remove it")
            files.append(p)
            labels.append(match.synsets[wnid])
    if not files:
        raise InputError(f"--eval {root} has no labelled images", _HINT)
    arr = np.asarray(labels, dtype=np.int64)
    return LabelledIndex(root, layout, files, arr, int(len(np.unique(arr))))


def _read_csv(root: Path, match: ClassMatcher) -> tuple[list[Path], list[int]]:
    path = root / "labels.csv"
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"cannot read {path}: {e}", "write it as UTF-8 text, one file,label row per image") from None
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["file", "label"]:
        rows = rows[1:]
    files, labels = [], []
    resolved = root.resolve()
    for n, row in enumerate(rows, start=1):
        where = f"{path} row {n}"
        if len(row) < 2:
            raise InputError(f"{where}: expected 'file,label', got {','.join(row)!r}")
        f = (root / row[0].strip())
        if resolved not in f.resolve().parents:
            raise InputError(f"{where}: '{row[0]}' lies outside {root}", "name files relative to the folder")
        if not f.is_file():
            raise InputError(f"{where}: '{row[0]}' does not exist in {root}")
        files.append(f)
        labels.append(match.lookup(row[1], where))
    return files, labels


def load_labelled(root: str | os.PathLike, input_size: Sequence[int], mean: Sequence[float], std: Sequence[float],
                  num_classes: int, class_names: Sequence[str] | None, crop_pct: float = 0.875,
                  interpolation: str = "bilinear", limit: int | None = None, seed: int = 0) -> LabelledSet:
    """Index ``root`` (``index_labelled``) and decode its images as calibration does; ``limit``: a fixed-seed
    sample of at most that many. Undecodable images are skipped and listed in ``skipped``."""
    from PIL import UnidentifiedImageError

    from edgezoo.export.calibration import preprocess_image
    from edgezoo.imageprep import UnsupportedImageError, open_image

    index = index_labelled(root, num_classes, class_names)
    order = np.arange(len(index.files))
    if limit is not None and len(order) > limit:
        order = np.sort(np.random.default_rng(seed).choice(len(order), size=limit, replace=False))
    images = np.empty((len(order), *input_size), dtype=np.float32)
    kept: list[int] = []
    skipped: list[tuple[Path, str]] = []
    for i in order:
        f = index.files[i]
        try:
            with open_image(f) as img:
                images[len(kept)] = preprocess_image(img, input_size, mean, std, crop_pct, interpolation)
            kept.append(int(i))
        except UnsupportedImageError as e:
            skipped.append((f, e.message))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            skipped.append((f, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]))
    if not kept:
        raise InputError(f"--eval {index.root}: none of its {len(order)} images could be decoded "
                         f"(first: {skipped[0][0]}: {skipped[0][1]})", "use JPEG/PNG files")
    return LabelledSet(index, images[:len(kept)], index.labels[kept], [index.files[i] for i in kept], skipped)
