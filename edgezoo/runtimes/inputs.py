"""Synthetic inputs for a runner: shapes from the model itself, its edgezoo metadata, or the user.

An image input (rank 4, NCHW, or NHWC where the runner says the file has it so) gets random pixels normalised with the model's own mean/std when its metadata
has them, so values have the scale the model was built for. No torch here.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgezoo.errors import InputError
from edgezoo.onnx_meta import ModelMetadata
from edgezoo.runtimes.base import Runner, TensorInfo


def parse_input_size(value: str | int | Sequence[int] | None) -> tuple[int, ...] | None:
    """"224" -> (224, 224); "160x128" -> (160, 128); "3x224x224" -> (3, 224, 224); ints pass through."""
    if value is None:
        return None
    if isinstance(value, int):
        parts = [value, value]
    elif isinstance(value, str):
        try:
            parts = [int(p) for p in value.lower().replace(",", "x").split("x") if p.strip()]
        except ValueError:
            raise InputError(f"input size '{value}' is not a number or HxW, e.g. 224 or 160x128") from None
        if len(parts) == 1:
            parts = parts * 2
    else:
        parts = [int(v) for v in value]
    if len(parts) not in (2, 3) or any(p < 1 for p in parts):
        raise InputError(f"input size '{value}' must be one or two (or C,H,W three) positive numbers")
    return tuple(parts)


def resolve_shape(info: TensorInfo, batch: int, input_size: Sequence[int] | None = None,
                  metadata: ModelMetadata | None = None) -> tuple[int, ...]:
    """The concrete shape to feed ``info``; InputError when the model cannot take what was asked for."""
    if batch < 1:
        raise InputError(f"batch must be at least 1, got {batch}")
    shape = list(info.shape)
    if not shape:
        return ()
    if isinstance(shape[0], int) and shape[0] != batch:
        raise InputError(f"input '{info.name}' has a fixed batch of {shape[0]}; cannot run batch {batch}")
    shape[0] = batch
    want = None
    source = ""
    if input_size is not None:
        want, source = tuple(input_size), "the requested input size"
    elif metadata is not None and metadata.input_size:
        want, source = tuple(metadata.input_size), "the model's metadata"
    if want is not None and len(shape) == 4:
        # the axes of C, H and W in this input's layout
        axes = (3, 1, 2) if info.layout == "NHWC" else (1, 2, 3)
        chw = want if len(want) == 3 else (shape[axes[0]], *want)
        for axis, v in zip(axes, chw):
            fixed = shape[axis]
            if v is None:
                continue
            if isinstance(fixed, int) and fixed != v:
                raise InputError(
                    f"{info.describe()} cannot take {'x'.join(map(str, chw[1:]))} with {chw[0]} channels from "
                    f"{source}", f"this model's input is fixed at {'x'.join(str(d) for d in info.shape[1:])}"
                    + (" (NHWC)" if info.layout == "NHWC" else ""))
            shape[axis] = v
    if any(not isinstance(d, int) for d in shape):
        raise InputError(f"input {info.describe()} has dynamic dimensions and no size was given",
                         "pass --input-size HxW")
    return tuple(int(d) for d in shape)


def make_array(shape: Sequence[int], dtype: np.dtype, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, seed: int = 0, layout: str | None = None) -> np.ndarray:
    """Random values of ``shape``: normalised pixels for an image with mean/std, else standard normal.

    The pixels are drawn in NCHW and transposed for an NHWC input, so the same seed gives the same image
    in either layout."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        nhwc = layout == "NHWC" and len(shape) == 4
        nchw = (shape[0], shape[3], shape[1], shape[2]) if nhwc else tuple(shape)
        if len(shape) == 4 and mean is not None and std is not None and len(mean) == nchw[1] == len(std):
            pixels = rng.random(nchw, dtype=np.float32)
            m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
            s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
            x = (pixels - m) / s
            return np.ascontiguousarray(x.transpose(0, 2, 3, 1) if nhwc else x).astype(dtype)
        if nhwc:
            return np.ascontiguousarray(rng.standard_normal(nchw, dtype=np.float32).transpose(0, 2, 3, 1)).astype(dtype)
        return rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, 0), min(info.max, 255), size=shape, endpoint=True).astype(dtype)


def feeds_for(runner: Runner, batch: int = 1, input_size: Sequence[int] | None = None, seed: int = 0
              ) -> dict[str, np.ndarray]:
    """One synthetic batch for every input of an active runner."""
    meta = runner.model_metadata()
    mean = meta.mean if meta else None
    std = meta.std if meta else None
    feeds = {}
    for k, info in enumerate(runner.inputs):
        shape = resolve_shape(info, batch, input_size, meta)
        feeds[info.name] = make_array(shape, info.dtype, mean, std, seed + k, info.layout)
    return feeds
