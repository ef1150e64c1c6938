"""The metadata edgezoo embeds in every ONNX file it writes (``metadata_props``), read without PyTorch.

A device with only onnxruntime learns from the file itself what it needs to feed it: input size, mean/std,
labels, precision. Keys are prefixed ``edgezoo.``; values are JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

PREFIX = "edgezoo."


@dataclass
class ModelMetadata:
    model: str = ""
    input_size: tuple[int, int, int] | None = None  # (C, H, W)
    mean: tuple[float, ...] | None = None  # of 0..1 pixel values, per channel
    std: tuple[float, ...] | None = None
    num_classes: int | None = None
    labels: list[str] | None = None
    # How images are prepared for this checkpoint (edgezoo.imageprep; edgezoo.models.presets). Files written
    # before these fields existed lack them: readers fall back to 0.875 / bilinear.
    crop_pct: float | None = None  # the centre crop is this fraction of the resized image's shorter side
    interpolation: str | None = None  # bilinear | bicubic | nearest
    preset: str | None = None  # the checkpoint preset's name, e.g. "tf_in1k"
    weights: str | None = None  # where the weights come from, in words
    precision: str = "fp32"  # fp32 | fp16 | int8
    passes: list[str] = field(default_factory=list)
    version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_props(self) -> dict[str, str]:
        d = asdict(self)
        extra = d.pop("extra")
        props = {PREFIX + k: json.dumps(v) for k, v in d.items() if v is not None}
        props.update({PREFIX + k: json.dumps(v) for k, v in extra.items()})
        return props

    @classmethod
    def from_props(cls, props: dict[str, str]) -> "ModelMetadata":
        known = set(cls.__dataclass_fields__) - {"extra"}
        kw: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, raw in props.items():
            if not key.startswith(PREFIX):
                continue
            k = key[len(PREFIX):]
            try:
                v = json.loads(raw)
            except (json.JSONDecodeError, TypeError):
                v = raw
            if k not in known:
                extra[k] = v
            elif _VALID[k](v):
                kw[k] = tuple(v) if k in ("input_size", "mean", "std") else v
            else:  # a foreign or hostile file: ignore the value rather than crash on it later
                extra.setdefault("invalid", []).append(k)
        return cls(**kw, extra=extra)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


def _strings(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


_VALID = {
    "model": lambda v: isinstance(v, str),
    "input_size": lambda v: isinstance(v, list) and len(v) == 3
    and all(isinstance(x, int) and not isinstance(x, bool) and 0 < x <= 65536 for x in v),
    "mean": lambda v: isinstance(v, list) and 1 <= len(v) <= 4 and all(_number(x) for x in v),
    "std": lambda v: isinstance(v, list) and 1 <= len(v) <= 4 and all(_number(x) and x > 0 for x in v),
    "num_classes": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
    "labels": _strings,
    "crop_pct": lambda v: _number(v) and 0 < v <= 1,
    "interpolation": lambda v: v in ("bilinear", "bicubic", "nearest"),
    "preset": lambda v: isinstance(v, str),
    "weights": lambda v: isinstance(v, str),
    "precision": lambda v: isinstance(v, str),
    "passes": _strings,
    "version": lambda v: isinstance(v, str),
}


def set_metadata(model_proto, meta: ModelMetadata) -> None:
    """Replace edgezoo's keys in an ``onnx.ModelProto``'s metadata_props, keeping anyone else's."""
    keep = [(p.key, p.value) for p in model_proto.metadata_props if not p.key.startswith(PREFIX)]
    del model_proto.metadata_props[:]
    for k, v in keep + sorted(meta.to_props().items()):
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = k, v


def get_metadata(model_proto) -> ModelMetadata:
    return ModelMetadata.from_props({p.key: p.value for p in model_proto.metadata_props})


def read_metadata(path: str | os.PathLike) -> ModelMetadata:
    """Metadata of an ONNX file, read through its onnxruntime Runner (which also proves the file loads there)."""
    from edgezoo.runtimes.onnxruntime import OrtRunner

    with OrtRunner(path, graph_optimization="disable") as runner:
        return ModelMetadata.from_props(runner.metadata())
