"""Checkpoint presets: what a checkpoint needs to be fed as it was trained, in the manner of torchvision's
``Weights`` records (``torchvision/models/_api.py``) and timm's pretrained cfgs.

A ``Preset`` travels from the registry into the ONNX metadata (``edgezoo.onnx_meta``), and from there into
calibration and ``edgezoo serve``, which both prepare images with ``edgezoo.imageprep`` from it. No torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
DEFAULT_CROP = 0.875  # the usual ImageNet evaluation: resize 256, centre-crop 224


@dataclass(frozen=True)
class Preset:
    """How one checkpoint's images were prepared: resize so the crop is ``crop_pct`` of the image's shorter
    side, centre-crop to the input size, scale to 0..1, normalise with mean/std."""

    name: str  # e.g. "tf_in1k"
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float = DEFAULT_CROP
    interpolation: str = "bilinear"
    num_classes: int = 1000
    labels: tuple[str, ...] | None = None
    source: str = ""  # where the checkpoint comes from, in words
    key: str | None = None  # a state_dict key that only this checkpoint layout has (to tell presets apart)

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, not {self.interpolation!r}")
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], not {self.crop_pct}")


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in the standard index order (0 "tench", 1 "goldfish", ...).

    The file is the list torchvision's model weights carry (``torchvision.models._meta._IMAGENET_CATEGORIES``),
    copied into the package so nothing is imported or fetched at run time.
    """
    text = resources.files("edgezoo.models").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line for line in text.splitlines() if line)
    assert len(names) == 1000, len(names)
    return names


def default_preset(spec: Any) -> Preset:
    """A spec's first preset, or one made from its mean/std (ImageNet class names for 1000-class models)."""
    if getattr(spec, "presets", ()):
        return spec.presets[0]
    labels = spec.labels
    if labels is None and spec.num_classes == 1000:
        labels = imagenet_classes()
    return Preset(name="default", mean=tuple(spec.mean), std=tuple(spec.std), num_classes=spec.num_classes,
                  labels=labels, source=spec.weights)


def preset_for_keys(spec: Any, keys: Iterable[str]) -> Preset:
    """The preset of a checkpoint with these state_dict keys: the first whose ``key`` it has, else the first
    preset without a ``key`` (the spec's default layout), else the default."""
    keys = set(keys)
    presets = list(getattr(spec, "presets", ()))
    for p in presets:
        if p.key is not None and p.key in keys:
            return p
    for p in presets:
        if p.key is None:
            return p
    return default_preset(spec)


def with_classes(preset: Preset, num_classes: int) -> Preset:
    """A preset for a model with another head: class names only when the count still matches."""
    if num_classes == preset.num_classes:
        return preset
    return replace(preset, num_classes=num_classes, labels=None)
