"""The KServe v2 inference protocol (as Triton speaks it over HTTP), with Triton's binary-tensor extension.

Protocol: https://github.com/kserve/open-inference-protocol (``/v2/...`` REST), binary data:
https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md
A request body is a JSON header, optionally followed by raw tensor bytes: the header's length is in
``Inference-Header-Content-Length``, and each input that travels as bytes says how many in
``parameters.binary_data_size`` (in input order). Outputs come back as JSON ``data`` or, when asked
(``outputs[i].parameters.binary_data`` or ``parameters.binary_data_output``), as bytes after the header.
Only numeric tensors: the models served here take no strings (BYTES is refused with 400).

Parsing runs on a work thread (edgezoo/serve/work.py); everything here is plain functions of bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgezoo.runtimes.base import TensorInfo
from edgezoo.serve.model import ModelIO, ServedModel
from edgezoo.serve.preprocess import RequestError, check_answer_size, load_json

HEADER_LENGTH = "inference-header-content-length"
MAX_DIMS = 64  # numpy's limit (NPY_MAXDIMS in numpy 2)
MAX_ELEMENTS = 1 << 31  # values in one input: far beyond any body the server accepts

# KServe datatype names <-> numpy
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}
NUMPY_TO_KSERVE = {v: k for k, v in DATATYPES.items()}


def datatype(dtype: Any) -> str:
    return NUMPY_TO_KSERVE.get(np.dtype(dtype), "BYTES")


def kserve_shape(t: TensorInfo) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in t.shape]


def model_metadata(model: ServedModel) -> dict[str, Any]:
    return {
        "name": model.name, "versions": ["1"], "platform": f"edgezoo_{model.runtime}",
        "inputs": [{"name": t.name, "datatype": datatype(t.dtype), "shape": kserve_shape(t)} for t in model.inputs],
        "outputs": [{"name": t.name, "datatype": datatype(t.dtype), "shape": kserve_shape(t)}
                    for t in model.outputs],
    }


@dataclass
class InferRequest:
    id: str | None
    arrays: dict[str, np.ndarray]
    outputs: list[tuple[str, bool]] = field(default_factory=list)  # (name, as binary), in response order


def parse_infer(body: bytes, header_length: int | None, model: ModelIO) -> InferRequest:
    """The request body -> named arrays (as sent; dtype and shape are checked against the model later)."""
    if header_length is None:
        header, binary = body, memoryview(b"")
    else:
        if not 0 < header_length <= len(body):
            raise RequestError(400, f"Inference-Header-Content-Length {header_length} does not fit a body of "
                                    f"{len(body):,} bytes")
        header, binary = body[:header_length], memoryview(body)[header_length:]
    doc = load_json(header)
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise RequestError(400, 'the inference request must be an object with a non-empty "inputs" list')
    specs = {t.name: t for t in model.inputs}
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for item in doc["inputs"]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise RequestError(400, 'each input needs a "name", "shape" and "datatype"')
        name = item["name"]
        if name not in specs:
            raise RequestError(400, f"model '{model.name}' has no input named {name[:100]!r} "
                                    f"(inputs: {', '.join(specs)})")
        if name in arrays:
            raise RequestError(400, f"input '{name}' given twice")
        shape = item.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise RequestError(400, f"input '{name}': shape must be a list of non-negative integers")
        if len(shape) > MAX_DIMS:
            raise RequestError(400, f"input '{name}': {len(shape)} dimensions; at most {MAX_DIMS}")
        if any(d > MAX_ELEMENTS for d in shape):
            raise RequestError(400, f"input '{name}': a dimension of {max(shape):,}; at most {MAX_ELEMENTS:,}")
        dt = item.get("datatype")
        if dt not in DATATYPES:
            raise RequestError(400, f"input '{name}': datatype {str(dt)[:20]!r} is not served "
                                    f"(numeric tensors only: {', '.join(DATATYPES)})")
        want = datatype(specs[name].dtype)
        if dt != want:  # as Triton: the bytes of one type are never read as another
            raise RequestError(400, f"input '{name}': datatype {dt}, but the model takes {want}")
        dtype = DATATYPES[dt]
        count = 1
        for d in shape:
            count *= d
        if count > MAX_ELEMENTS:
            raise RequestError(400, f"input '{name}': shape {shape[:8]} holds {count:,} values; at most "
                                    f"{MAX_ELEMENTS:,}")
        params = item.get("parameters") or {}
        if not isinstance(params, dict):
            raise RequestError(400, f"input '{name}': parameters must be an object")
        size = params.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise RequestError(400, f"input '{name}': binary_data_size must be a non-negative integer")
            if "data" in item:
                raise RequestError(400, f"input '{name}' has both data and binary_data_size")
            if offset + size > len(binary):
                raise RequestError(400, f"input '{name}': binary_data_size {size:,} runs past the body's binary "
                                        f"part ({len(binary) - offset:,} bytes left)")
            if size != count * dtype.itemsize:
                raise RequestError(400, f"input '{name}': shape {shape} of {dt} needs {count * dtype.itemsize:,} "
                                        f"bytes; binary_data_size is {size:,}")
            arr = np.frombuffer(binary[offset:offset + size], dtype=dtype.newbyteorder("<")).reshape(shape)
            offset += size
        else:
            if "data" not in item:
                raise RequestError(400, f"input '{name}' has neither data nor binary_data_size")
            arr = _json_data(item["data"], dtype, name)
            if arr.size != count:
                raise RequestError(400, f"input '{name}': shape {shape} holds {count:,} values; data has {arr.size:,}")
            arr = arr.reshape(shape)
        arrays[name] = arr
    if offset != len(binary):
        raise RequestError(400, f"{len(binary) - offset:,} bytes after the last binary input")
    return InferRequest(doc.get("id") if isinstance(doc.get("id"), str) else None, arrays,
                        _requested_outputs(doc, model))


def _json_data(data: Any, dtype: np.dtype, name: str) -> np.ndarray:
    if not isinstance(data, list):
        raise RequestError(400, f"input '{name}': data must be a list")
    try:
        arr = np.asarray(data)
    except ValueError:
        raise RequestError(400, f"input '{name}': ragged data") from None
    if arr.size and (arr.dtype == object or arr.dtype.kind not in "biuf"):
        raise RequestError(400, f"input '{name}': data must be numbers")
    if dtype.kind == "b":
        if arr.size and arr.dtype.kind != "b":
            raise RequestError(400, f"input '{name}': BOOL data must be true/false")
        return arr.astype(np.bool_).reshape(-1)
    if dtype.kind in "iu" and arr.dtype.kind == "f":
        raise RequestError(400, f"input '{name}': {datatype(dtype)} data must be integers")
    if dtype.kind in "iu" and arr.size:
        info = np.iinfo(dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise RequestError(400, f"input '{name}': values out of range for {datatype(dtype)}")
    with np.errstate(over="ignore"):
        return arr.astype(dtype).reshape(-1)


def _requested_outputs(doc: dict, model: ModelIO) -> list[tuple[str, bool]]:
    """(name, as binary) for each requested output: each at most once (as Triton: a duplicate is a 400), so
    an answer is never larger than one copy of the model's outputs."""
    params = doc.get("parameters") or {}
    default_binary = bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
    names = [t.name for t in model.outputs]
    wanted = doc.get("outputs")
    if wanted is None:
        return [(n, default_binary) for n in names]
    if not isinstance(wanted, list):
        raise RequestError(400, '"outputs" must be a list')
    if len(wanted) > len(names):
        raise RequestError(400, f"{len(wanted):,} outputs requested; model '{model.name}' has {len(names)} "
                                f"({', '.join(names)})")
    out: list[tuple[str, bool]] = []
    seen: set[str] = set()
    for o in wanted:
        if not isinstance(o, dict) or o.get("name") not in names:
            got = o.get("name") if isinstance(o, dict) else o
            raise RequestError(400, f"model '{model.name}' has no output named {str(got)[:100]!r} "
                                    f"(outputs: {', '.join(names)})")
        if o["name"] in seen:
            raise RequestError(400, f"output '{o['name']}' requested twice")
        seen.add(o["name"])
        p = o.get("parameters") or {}
        if isinstance(p, dict) and p.get("classification"):
            raise RequestError(400, "the classification extension is not served; ask for the raw output")
        out.append((o["name"], bool(p.get("binary_data", default_binary)) if isinstance(p, dict) else default_binary))
    return out


def answer_size_bound(req: InferRequest, outputs: dict[str, np.ndarray]) -> int:
    """At most how many bytes the answer takes (binary outputs exactly, JSON ones by the longest number)."""
    from edgezoo.serve.preprocess import json_size_bound

    return 512 + sum(outputs[n].nbytes + 128 if binary else json_size_bound(outputs[n]) for n, binary in req.outputs)


def render_infer(model: ModelIO, req: InferRequest, outputs: list[np.ndarray],
                 max_bytes: int = 1 << 62) -> tuple[bytes, dict[str, str]]:
    """Response body and headers: JSON alone, or JSON header + binary outputs; 413 beyond ``max_bytes``."""
    by_name = {t.name: o for t, o in zip(model.outputs, outputs)}
    check_answer_size(answer_size_bound(req, by_name), max_bytes)
    entries, blobs = [], []
    for name, binary in req.outputs:
        arr = np.ascontiguousarray(by_name[name])
        entry: dict[str, Any] = {"name": name, "datatype": datatype(arr.dtype), "shape": list(arr.shape)}
        if binary:
            blob = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise RequestError(500, f"output '{name}' holds NaN or infinity, which JSON cannot carry; "
                                        "ask for it as binary data")
            entry["data"] = arr.reshape(-1).tolist()
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model.name, "model_version": "1", "outputs": entries}
    if req.id is not None:
        doc["id"] = req.id
    header = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {"content-type": "application/octet-stream",
                                      "inference-header-content-length": str(len(header))}


def header_length(raw: str | None) -> int | None:
    """``Inference-Header-Content-Length``: a plain decimal byte count (400 otherwise)."""
    if raw is None:
        return None
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 20:
        raise RequestError(400, "Inference-Header-Content-Length must be a number of bytes")
    return int(raw)
