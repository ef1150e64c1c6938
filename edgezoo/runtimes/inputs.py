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


# One grammar for every command's --input-size: S (a square side), H,W or C,H,W; "x" may stand for ",".
INPUT_SIZE_GRAMMAR = "S (square), H,W or C,H,W, e.g. 224, 160,128 or 3,224,224 (x works as well as a comma)"
MAX_SIDE = 4096  # a 4096x4096 float image is 200 MB per channel; mobile CNNs run at a few hundred pixels
MAX_CHANNELS = 64


def parse_input_size(value: str | int | Sequence[int] | None, option: str = "--input-size"
                     ) -> tuple[int, ...] | None:
    """The one parser of input sizes: "224" -> (224, 224); "160,128" or "160x128" -> (160, 128);
    "3,224,224" -> (3, 224, 224). An int is a square side; a sequence is taken as H,W or C,H,W.

    Returns (H, W) or (C, H, W); ``image_chw`` fills in a model's channels. Every side must lie in
    1..MAX_SIDE and channels in 1..MAX_CHANNELS; the error names the option and the grammar.
    """
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if isinstance(value, bool):
        raise InputError(f"{option} '{value}' is not a size", f"use {INPUT_SIZE_GRAMMAR}")
    if isinstance(value, int):
        parts = [value]
    elif isinstance(value, str):
        pieces = value.strip().lower().replace("x", ",").split(",")
        try:
            parts = [int(p) for p in pieces]
        except ValueError:
            raise InputError(f"{option} '{value}' is not a size", f"use {INPUT_SIZE_GRAMMAR}") from None
    else:
        try:
            parts = [int(v) for v in value]
        except (TypeError, ValueError):
            raise InputError(f"{option} '{value}' is not a size", f"use {INPUT_SIZE_GRAMMAR}") from None
        text = ",".join(map(str, parts))
    if len(parts) not in (1, 2, 3):
        raise InputError(f"{option} '{text}' has {len(parts)} numbers", f"use {INPUT_SIZE_GRAMMAR}")
    if len(parts) == 1:
        parts = parts * 2
    *channels, h, w = parts
    if any(not 1 <= side <= MAX_SIDE for side in (h, w)):
        raise InputError(f"{option} '{text}': height and width must lie in 1..{MAX_SIDE}",
                         f"use {INPUT_SIZE_GRAMMAR}")
    if channels and not 1 <= channels[0] <= MAX_CHANNELS:
        raise InputError(f"{option} '{text}': channels must lie in 1..{MAX_CHANNELS}", f"use {INPUT_SIZE_GRAMMAR}")
    return tuple(parts)


def image_chw(size: Sequence[int], channels: int, option: str = "--input-size") -> tuple[int, int, int]:
    """(C, H, W) from a parsed size and the model's channel count; C,H,W with other channels is refused."""
    if len(size) == 3:
        if size[0] != channels:
            raise InputError(f"{option} {','.join(map(str, size))}: the model takes {channels} channels, "
                             f"not {size[0]}", f"give H,W or {channels},{size[1]},{size[2]}")
        return tuple(size)  # type: ignore[return-value]
    return (channels, *size)  # type: ignore[return-value]


def input_size_option(default: str):
    """The --input-size option of every command: the same grammar and help text (typer imported lazily)."""
    import typer

    return typer.Option(None, "--input-size", help=f"Input size: {INPUT_SIZE_GRAMMAR}. Default: {default}.")


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
                         "pass --input-size H,W")
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
        check_feed_size(info, shape)
        try:
            feeds[info.name] = make_array(shape, info.dtype, mean, std, seed + k, info.layout)
        except MemoryError:
            raise InputError(f"not enough memory for a {_shape_text(shape)} input {info.name!r}",
                             "pass a smaller --input-size or --batch") from None
    return feeds


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def check_feed_size(info: TensorInfo, shape: Sequence[int]) -> None:
    """A file may declare any shape ([1, 2**40] is a valid 105-byte ONNX file): refuse an input that could
    not fit in half this machine's memory before numpy tries, instead of its _ArrayMemoryError."""
    import math
    import os

    need = math.prod(int(d) for d in shape) * np.dtype(info.dtype).itemsize
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > total // 2:
        raise InputError(f"input {info.name!r} of shape {_shape_text(shape)} would take {need / 2**30:,.1f} GiB, "
                         f"more than half of this machine's {total / 2**30:.0f} GiB",
                         "pass a smaller --input-size or --batch, or check the model's declared input shape")
