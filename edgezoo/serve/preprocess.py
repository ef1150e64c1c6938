"""Request bodies -> input arrays: images through Pillow with the model's own preprocessing, tensors from
JSON or ``.npy``; and the checks that keep bad input away from the model.

Every problem raises ``RequestError`` with the HTTP status it deserves; nothing here touches the network.
"""

from __future__ import annotations

import io
import json
import warnings
from typing import Any

import numpy as np

from edgezoo.imageprep import prepare
from edgezoo.serve.model import Preprocessing, ServedModel, TensorSpec

NPY_MAGIC = b"\x93NUMPY"
IMAGE_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}
IMAGE_FORMATS = ("JPEG", "PNG")  # what we promise; other formats Pillow knows are refused with 415


class RequestError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def sniff(body: bytes) -> str | None:
    """'image', 'npy' or None, from the first bytes (for raw bodies sent without a useful Content-Type)."""
    if body.startswith(NPY_MAGIC):
        return "npy"
    if any(body.startswith(m) for m in IMAGE_MAGIC):
        return "image"
    return None


# ---------------------------------------------------------------------------------------------- images


def decode_image(data: bytes, pre: Preprocessing, max_pixels: int) -> np.ndarray:
    """JPEG/PNG bytes -> one (C, H, W) or (H, W, C) float32 sample, resized, centre-cropped and normalised."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise RequestError(400, "empty image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=None)
            if img.format not in IMAGE_FORMATS:
                raise RequestError(415, f"image format {img.format} is not served; send JPEG or PNG")
            # The header gives the size before any pixel is decoded: refuse huge images before decoding them.
            if img.width * img.height > max_pixels:
                raise RequestError(413, f"image is {img.width}x{img.height} pixels; the limit is {max_pixels:,}")
            c = pre.input_size[0]
            if c in (1, 3):  # the one image preparation calibration also uses (no JPEG draft decoding)
                x = prepare(img, pre.input_size, pre.mean, pre.std, pre.crop_pct, pre.interpolation, pre.layout)
    except RequestError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        if isinstance(e, UnidentifiedImageError):
            raise RequestError(400, "cannot decode the image (not a JPEG or PNG, or corrupt)") from None
        raise RequestError(413, f"image too large: {e}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated or malformed data inside the file
        raise RequestError(400, f"cannot decode the image: {str(e)[:200]}") from None
    if c not in (1, 3):
        raise RequestError(422, f"model takes {c} channels; images are served for 1 or 3")
    return x


# ---------------------------------------------------------------------------------------------- tensors


def parse_npy(body: bytes) -> np.ndarray:
    if not body.startswith(NPY_MAGIC):
        raise RequestError(400, "not a .npy file (no NUMPY header)")
    try:
        # allow_pickle=False: an object array in a request must never run code
        arr = np.load(io.BytesIO(body), allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise RequestError(422, "object arrays are not accepted; send a numeric .npy") from None
        raise RequestError(400, f"corrupt .npy body: {str(e)[:200]}") from None
    except (OSError, EOFError) as e:
        raise RequestError(400, f"corrupt .npy body: {str(e)[:200]}") from None
    if not isinstance(arr, np.ndarray):
        raise RequestError(400, "the body is not one .npy array")
    return arr


def parse_json_tensors(body: bytes, model: ServedModel) -> dict[str, Any]:
    """``{"inputs": [...]}`` for one input, ``{"inputs": {"name": [...], ...}}`` for several (or one)."""
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(400, f"invalid JSON: {str(e)[:200]}") from None
    if not isinstance(doc, dict) or "inputs" not in doc:
        raise RequestError(400, 'JSON body must be an object with "inputs" (a nested list, or an object of them)')
    raw = doc["inputs"]
    if isinstance(raw, dict):
        return raw
    if len(model.inputs) != 1:
        names = ", ".join(t.name for t in model.inputs)
        raise RequestError(422, f"model has {len(model.inputs)} inputs ({names}); send an object of them")
    return {model.inputs[0].name: raw}


def json_to_array(value: Any, spec: TensorSpec) -> np.ndarray:
    """A nested JSON list -> an array of the input's dtype (ragged lists, strings and lossy casts refused)."""
    try:
        arr = np.asarray(value)
    except ValueError:  # ragged nesting
        raise RequestError(422, f"input '{spec.name}': ragged nested lists; every row must have the same length") \
            from None
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise RequestError(422, f"input '{spec.name}': values must be numbers")
    if arr.dtype.kind == "f" and spec.dtype.kind in "iub":
        if np.isfinite(arr).all() and np.array_equal(arr, np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise RequestError(422, f"input '{spec.name}' takes {spec.dtype} values; got fractions")
    return arr


def check_and_cast(arr: np.ndarray, spec: TensorSpec, allow_nan: bool) -> tuple[np.ndarray, bool]:
    """Check dtype and shape against the model input; returns (array with batch dim, whether one was added)."""
    want = spec.dtype
    if arr.dtype.kind not in "biuf":
        raise RequestError(422, f"input '{spec.name}' takes {want}; got {arr.dtype}")
    if arr.dtype != want:
        # float64 -> float32 and int64 -> int32 ('same_kind') are what JSON and numpy defaults produce; a float
        # into an integer input, or a negative into an unsigned one, would change the values: refuse those.
        if not np.can_cast(arr.dtype, want, casting="same_kind") and not (
                arr.dtype.kind in "iub" and want.kind == "f"):
            raise RequestError(422, f"input '{spec.name}' takes {want}; got {arr.dtype}")
        if want.kind in "iu" and arr.size:
            info = np.iinfo(want)
            if arr.min() < info.min or arr.max() > info.max:
                raise RequestError(422, f"input '{spec.name}': values out of range for {want}")
        with np.errstate(over="ignore"):
            cast = arr.astype(want)
        if want.kind == "f" and arr.dtype.kind == "f" and not np.isfinite(cast[np.isfinite(arr)]).all():
            raise RequestError(422, f"input '{spec.name}': values overflow {want}")
        arr = cast
    rank = len(spec.shape)
    added = False
    if arr.ndim == rank - 1:  # one sample without the batch dimension
        arr, added = arr[np.newaxis], True
    if arr.ndim != rank:
        raise RequestError(422, f"input '{spec.name}' has shape {_shape_str(spec.shape)}; got {list(arr.shape)}")
    for i, (got, need) in enumerate(zip(arr.shape, spec.shape)):
        if i > 0 and isinstance(need, int) and got != need:
            raise RequestError(422, f"input '{spec.name}' has shape {_shape_str(spec.shape)}; got {list(arr.shape)}")
    if arr.shape[0] == 0:
        raise RequestError(422, f"input '{spec.name}': empty batch")
    if want.kind == "f" and not allow_nan and not np.isfinite(arr).all():
        raise RequestError(422, f"input '{spec.name}' contains NaN or infinity, which this model is not served "
                                "with (start the server with --allow-nan if the model handles them)")
    return np.ascontiguousarray(arr), added


def _shape_str(shape) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + "]"


# ---------------------------------------------------------------------------------------------- outputs


def softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def top_k(logits: np.ndarray, k: int, labels: list[str] | None) -> list[dict[str, Any]]:
    """Top-k of one sample's class scores; ``score`` is the softmax probability, ``logit`` the raw value."""
    flat = logits.reshape(-1)
    if not np.isfinite(flat).all():
        raise RequestError(500, "the model produced NaN or infinity for this input")
    probs = softmax(flat)
    k = min(k, flat.size)
    # stable sort: equal scores come back in index order, so the same input always gives the same answer
    idx = np.argsort(-flat, kind="stable")[:k]
    return [{"index": int(i), "label": labels[i] if labels and i < len(labels) else str(int(i)),
             "score": float(probs[i]), "logit": float(flat[i])} for i in idx]


def jsonable(arr: np.ndarray) -> Any:
    """Nested lists; NaN and infinity (not JSON) become null."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        obj = arr.astype(object)
        obj[~np.isfinite(arr)] = None
        return obj.tolist()
    return arr.tolist()
