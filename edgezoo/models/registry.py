"""The model registry: one ``ModelSpec`` per model, the single source of truth for every command.

A family module registers its builders with ``@register(...)``; ``create_model`` and ``list_models`` are the
public entry points (``edgezoo.create_model``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from edgezoo.errors import UnknownModelError
from edgezoo.models.presets import Preset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Modules that register models when imported, in the order `edgezoo list` shows them.
FAMILY_MODULES = (
    "squeezenet",
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3",
    "shufflenet_v1",
    "shufflenet_v2",
    "effnet",
    "efficientnet",
    "ghostnet",
    "hardnet",
)


@dataclass(frozen=True)
class ReferenceFigures:
    """What the model has, counted on the reference implementation it matches exactly (tests assert these).

    MACs are multiply-accumulates (the papers' "FLOPs"/"Mult-Adds") at the spec's input size.
    """

    params: int | None = None
    macs: float | None = None  # at the spec's input size
    source: str = ""  # the reference implementation counted


@dataclass(frozen=True)
class PaperFigures:
    """The paper's figures as printed (rounded as printed), with the table they are printed in.

    MACs in the papers' unit (multiply-adds; "FLOPs" in ShuffleNet/GhostNet), at the paper's input size;
    top-1 is ImageNet % (100 - the printed error where the table prints errors). ``None``: not printed.
    """

    params: int | None = None
    macs: float | None = None
    top1: float | None = None
    table: str = ""  # e.g. "Howard et al. 2019, Table 3"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    builder: Callable[..., Any]
    aliases: tuple[str, ...] = ()
    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    num_classes: int = 1000
    reference: ReferenceFigures = ReferenceFigures()
    paper: PaperFigures = PaperFigures()  # as printed; may differ from reference (rounding, counting, topology)
    weights: str = ""  # where compatible checkpoints come from, in words
    # Maps a foreign state_dict (torchvision/timm/authors') to this model's key names.
    remap_state_dict: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)  # fixed builder arguments of this entry
    labels: tuple[str, ...] | None = None
    # Checkpoint presets (preprocessing, class names), the default first; see edgezoo.models.presets.
    presets: tuple[Preset, ...] = ()

    def build(self, **kwargs: Any):
        return self.builder(**{**self.kwargs, **kwargs})


_REGISTRY: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}
_loaded = False


def register(spec: ModelSpec) -> ModelSpec:
    """Add a spec; names and aliases are case-insensitive and must be unique."""
    for key in (spec.name, *spec.aliases):
        key = key.lower()
        if key in _REGISTRY or key in _ALIASES:
            raise ValueError(f"model name or alias registered twice: {key}")
    _REGISTRY[spec.name.lower()] = spec
    for alias in spec.aliases:
        _ALIASES[alias.lower()] = spec.name.lower()
    return spec


def _load_families() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in FAMILY_MODULES:
        importlib.import_module(f"edgezoo.models.{module}")


def get_spec(name: str) -> ModelSpec:
    _load_families()
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    try:
        return _REGISTRY[key]
    except KeyError:
        raise UnknownModelError(name, [*_REGISTRY, *_ALIASES]) from None


def list_models(family: str | None = None) -> list[str]:
    """Canonical names, in registration order."""
    _load_families()
    return [s.name for s in _REGISTRY.values() if family is None or s.family == family]


def list_specs() -> list[ModelSpec]:
    _load_families()
    return list(_REGISTRY.values())


def create_model(name: str, weights: str | None = None, **kwargs: Any):
    """Build a registered model in eval mode; ``weights`` is a state_dict file (torchvision/timm keys work).

    Keyword arguments are the paper's knobs (``width_mult``, ``num_classes``, ...) and override the entry's.
    """
    spec = get_spec(name)
    model = spec.build(**kwargs)
    if weights is not None:
        from edgezoo.models.weights import load_weights

        load_weights(model, weights, spec)
    model.eval()
    return model
