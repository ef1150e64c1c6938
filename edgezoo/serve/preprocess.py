"""Request bodies -> input arrays: images through Pillow with the model's own preprocessing, tensors from
JSON or ``.npy``; and the checks that keep bad input away from the model.

Every problem raises ``RequestError`` with the HTTP status it deserves; nothing here touches the network.
"""

from __future__ import annotations

import io
import json
import re
import warnings
from typing import Any

import numpy as np

from edgezoo.imageprep import UnsupportedImageError, prepare
from edgezoo.runtimes.base import TensorInfo
from edgezoo.serve.model import ModelIO, Preprocessing, ServedModel

NPY_MAGIC = b"\x93NUMPY"
IMAGE_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}
IMAGE_FORMATS = ("JPEG", "PNG")  # what we promise; other formats Pillow knows are refused with 415


class RequestError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def __reduce__(self):  # raised in a parse process and re-raised here: keep status and headers
        return (RequestError, (self.status, self.message, self.headers))


def sniff(body: bytes) -> str | None:
    """'image', 'npy' or None, from the first bytes (for raw bodies sent without a useful Content-Type)."""
    if body.startswith(NPY_MAGIC):
        return "npy"
    if any(body.startswith(m) for m in IMAGE_MAGIC):
        return "image"
    return None


# ---------------------------------------------------------------------------------------------- images


class Cancelled(Exception):
    """The request behind a decode gave up (timeout, disconnect): stop spending CPU on it."""


class CancelToken:
    def __init__(self) -> None:
        self.cancelled = False

    def check(self) -> None:
        if self.cancelled:
            raise Cancelled()


class _CancellableBytes(io.BytesIO):
    """Pillow decodes a PNG or JPEG by reading its input in blocks (``ImageFile.SAFEBLOCK``, 64 KiB):
    checking the token on every read stops a cancelled decode at the next block."""

    def __init__(self, data: bytes, token: CancelToken | None):
        super().__init__(data)
        self._token = token

    def read(self, size: int = -1) -> bytes:
        if self._token is not None:
            self._token.check()
        return super().read(size)


def image_pixels(data: bytes) -> int:
    """Width x height from the image's header (no pixel decoded); 0 when it is not an image Pillow reads
    (the decode then gives the precise error)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                return int(img.width) * int(img.height)
    except Exception:  # anything wrong with the file is reported by decode_image
        return 0


def decode_image(data: bytes, pre: Preprocessing, max_pixels: int, cancel: CancelToken | None = None) -> np.ndarray:
    """JPEG/PNG bytes -> one (C, H, W) or (H, W, C) float32 sample, resized, centre-cropped and normalised.

    ``cancel``: checked on every block Pillow reads and between steps, so a timed-out decode stops."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise RequestError(400, "empty image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(_CancellableBytes(data, cancel), formats=None)
            if img.format not in IMAGE_FORMATS:
                raise RequestError(415, f"image format {img.format} is not served; send JPEG or PNG")
            # The header gives the size before any pixel is decoded: refuse huge images before decoding them.
            if img.width * img.height > max_pixels:
                raise RequestError(413, f"image is {img.width}x{img.height} pixels; the limit is {max_pixels:,}")
            c = pre.input_size[0]
            # No JPEG draft decoding: the pixels must be those calibration saw (the one image preparation).
            img.load()
            if cancel is not None:
                cancel.check()
    except (RequestError, Cancelled):
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        if isinstance(e, UnidentifiedImageError):
            raise RequestError(400, "cannot decode the image (not a JPEG or PNG, or corrupt)") from None
        raise RequestError(413, f"image too large: {e}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated or malformed data inside the file
        raise RequestError(400, f"cannot decode the image: {str(e)[:200]}") from None
    if c not in (1, 3):
        raise RequestError(422, f"model takes {c} channels; images are served for 1 or 3")
    if cancel is not None:
        cancel.check()
    try:
        return prepare(img, pre.input_size, pre.mean, pre.std, pre.crop_pct, pre.interpolation, pre.layout)
    except UnsupportedImageError as e:
        raise RequestError(415, str(e)) from None


# ---------------------------------------------------------------------------------------------- tensors


def parse_npy(body: bytes, max_elements: int = 1 << 28) -> np.ndarray:
    """A .npy body -> array, read from its header and the bytes that are really there: a header that
    declares more elements than the body holds (or than ``max_elements``) is refused before any allocation,
    and object arrays never (no pickle)."""
    from numpy.lib import format as npformat

    if not body.startswith(NPY_MAGIC):
        raise RequestError(400, "not a .npy file (no NUMPY header)")
    fast = _plain_npy_header(body)
    if fast is not None:
        (shape, fortran, dtype), start = fast, 10 + int.from_bytes(body[8:10], "little")
    else:
        fp = io.BytesIO(body)
        try:
            version = npformat.read_magic(fp)
            reader = {(1, 0): npformat.read_array_header_1_0, (2, 0): npformat.read_array_header_2_0}.get(version)
            if reader is None:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran, dtype = reader(fp)
        except (ValueError, OSError, EOFError, SyntaxError, TypeError) as e:
            raise RequestError(400, f"corrupt .npy header: {str(e)[:200]}") from None
        start = fp.tell()
    if dtype.hasobject:
        raise RequestError(422, "object arrays are not accepted; send a numeric .npy")
    count = 1
    for d in shape:
        count *= int(d)  # Python ints: a declared 1e13 does not overflow
    if count > max_elements:
        raise RequestError(413, f".npy declares {count:,} elements; the limit is {max_elements:,}")
    data = memoryview(body)[start:]
    if len(data) != count * dtype.itemsize:
        raise RequestError(400, f".npy header declares shape {list(shape)} of {dtype} ({count * dtype.itemsize:,} "
                                f"bytes) but the body holds {len(data):,}")
    arr = np.frombuffer(data, dtype=dtype, count=count)
    arr = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
    return arr


_PLAIN_HEADER = re.compile(rb"\{'descr': '([<>|][fiub][1248])', 'fortran_order': (False|True), "
                           rb"'shape': \(((?:\d{1,12}, )*\d{0,12},?)\), \} *\n")


def _plain_npy_header(body: bytes):
    """(shape, fortran, dtype) of a version 1.0 header exactly as ``np.save`` writes it for a numeric array,
    without numpy's ``ast.literal_eval`` (a Python compile per request); None for anything else (numpy reads
    those)."""
    if body[6:8] != b"\x01\x00" or len(body) < 10:
        return None
    end = 10 + int.from_bytes(body[8:10], "little")
    m = _PLAIN_HEADER.fullmatch(body[10:end])
    if m is None:
        return None
    shape = tuple(int(d) for d in m.group(3).replace(b" ", b"").split(b",") if d)
    return shape, m.group(2) == b"True", np.dtype(m.group(1).decode())


MAX_JSON_DEPTH = 32  # a tensor of rank 8 inside a KServe request is 12 deep
MAX_INT_DIGITS = 40  # int64 and uint64 have 20


def _json_depth(body: bytes) -> int:
    """Deepest nesting of [ and { (vectorised; brackets inside strings count too, which only errs safe)."""
    b = np.frombuffer(body, np.uint8)
    step = np.zeros(256, np.int8)
    step[[ord("["), ord("{")]] = 1
    step[[ord("]"), ord("}")]] = -1
    moves = step[b]
    nz = moves[moves != 0]
    return int(np.cumsum(nz, dtype=np.int64).max()) if nz.size else 0


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise RequestError(400, f"invalid JSON: an integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def load_json(body: bytes | memoryview, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads with the limits a public endpoint needs: nesting depth, integer length; RequestError(400)."""
    body = bytes(body)
    depth = _json_depth(body)
    if depth > max_depth:
        raise RequestError(400, f"invalid JSON: nested {depth} deep (at most {max_depth})")
    try:
        return json.loads(body, parse_int=_bounded_int)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError) as e:
        raise RequestError(400, f"invalid JSON: {str(e)[:200]}") from None


def parse_json_tensors(body: bytes, model: "ModelIO | ServedModel") -> dict[str, Any]:
    """``{"inputs": [...]}`` for one input, ``{"inputs": {"name": [...], ...}}`` for several (or one)."""
    doc = load_json(body)
    if not isinstance(doc, dict) or "inputs" not in doc:
        raise RequestError(400, 'JSON body must be an object with "inputs" (a nested list, or an object of them)')
    raw = doc["inputs"]
    if isinstance(raw, dict):
        return raw
    if len(model.inputs) != 1:
        names = ", ".join(t.name for t in model.inputs)
        raise RequestError(422, f"model has {len(model.inputs)} inputs ({names}); send an object of them")
    return {model.inputs[0].name: raw}


def json_to_array(value: Any, spec: TensorInfo) -> np.ndarray:
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


def check_and_cast(arr: np.ndarray, spec: TensorInfo, allow_nan: bool) -> tuple[np.ndarray, bool]:
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
    if want.kind == "f" and not allow_nan and not _all_finite(arr):
        raise RequestError(422, f"input '{spec.name}' contains NaN or infinity, which this model is not served "
                                "with (start the server with --allow-nan if the model handles them)")
    return np.ascontiguousarray(arr), added


def _all_finite(arr: np.ndarray) -> bool:
    """max and min propagate NaN and show infinity, without isfinite's temporary array of the input's size."""
    return arr.size == 0 or bool(np.isfinite(arr.max()) and np.isfinite(arr.min()))


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


INLINE_ANSWER_BYTES = 64 * 1024  # answers up to this are rendered on the event loop (cheaper than a thread hop)


def json_size_bound(arr: np.ndarray) -> int:
    """At most how many bytes ``arr`` takes as JSON numbers (a float's repr is at most 24 characters)."""
    per = 6 if arr.dtype.kind == "b" else 21 if arr.dtype.kind in "iu" else 25
    return arr.size * per + 2 * arr.ndim + 64


def check_answer_size(size: int, limit: int) -> None:
    if size > limit:
        raise RequestError(413, f"the answer would take up to {size:,} bytes; the limit is {limit:,} (send fewer "
                                "rows per request, or ask for binary outputs)")


def jsonable(arr: np.ndarray) -> Any:
    """Nested lists; NaN and infinity (not JSON) become null."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        obj = arr.astype(object)
        obj[~np.isfinite(arr)] = None
        return obj.tolist()
    return arr.tolist()
