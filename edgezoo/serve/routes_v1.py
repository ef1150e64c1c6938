"""edgezoo's own routes: /health, /metrics, /v1/models, /v1/models/NAME and /v1/models/NAME/predict.

Module-level endpoints; each finds the server's state as ``request.app.state.edgezoo``. A route's ``name``
is the ``route`` label of its requests in /metrics.
"""

from __future__ import annotations

import functools
import io

import numpy as np
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edgezoo.serve import preprocess as pp
from edgezoo.serve.httpio import int_param, json_bytes, json_response, read_body
from edgezoo.serve.metrics import CONTENT_TYPE as PROMETHEUS_TYPE
from edgezoo.serve.model import ModelIO, ServedModel
from edgezoo.serve.preprocess import RequestError
from edgezoo.serve.state import SMALL_JSON, ServerState, deadline_for, state_of

NPY_TYPES = ("application/x-npy", "application/npy", "application/octet-stream")


async def health(request: Request) -> Response:
    state = state_of(request)
    if state.closing:
        return json_response({"status": "shutting down"}, 503)
    return json_response({"status": "ok", "models": sorted(state.models)})


async def metrics(request: Request) -> Response:
    return Response(state_of(request).metrics.render(), media_type=PROMETHEUS_TYPE)


async def list_models(request: Request) -> Response:
    return json_response({"models": [m.describe() for m in state_of(request).models.values()]})


async def model_info(request: Request) -> Response:
    return json_response(state_of(request).model(request).describe())


async def predict(request: Request) -> Response:
    state = state_of(request)
    model = state.model(request)
    top_k = int_param(request, "top_k", state.config.default_top_k, 1, 1000)
    body = await read_body(request, state.config.max_body_bytes, state.config.body_timeout_s)
    deadline = deadline_for(state)
    kind, feeds, added_batch = await state.prepared(model, _parse(state, request, body, model, deadline))
    outputs = await state.infer(model, feeds, deadline)
    if kind == "image":
        return _image_response(model, outputs, top_k)
    accept = request.headers.get("accept", "")
    if "application/x-npy" in accept and len(outputs) == 1:
        return Response(npy_bytes(outputs[0][0] if added_batch else outputs[0]), media_type="application/x-npy")
    args = (model.name, model.io, outputs, added_batch, state.config.max_answer_bytes)
    if sum(pp.json_size_bound(o) for o in outputs) <= pp.INLINE_ANSWER_BYTES:
        return Response(_tensor_json(*args), media_type="application/json")
    # a large answer is rendered on a work thread (tolist + dumps of megabytes would stall the event loop)
    return Response(await state.work_on(_tensor_json, *args, deadline=deadline, what="answer"),
                    media_type="application/json")


ROUTES = [
    Route("/health", health, methods=["GET"], name="health"),
    Route("/metrics", metrics, methods=["GET"], name="metrics"),
    Route("/v1/models", list_models, methods=["GET"], name="models"),
    Route("/v1/models/{name}", model_info, methods=["GET"], name="model"),
    Route("/v1/models/{name}/predict", predict, methods=["POST"], name="predict"),
]


# ---------------------------------------------------------------------------------------------- bodies


async def _parse(state: ServerState, request: Request, body: bytes, model: ServedModel, deadline: float):
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        blobs = await _form_files(state, request, body)
        if len(blobs) == 1 and pp.sniff(blobs[0]) == "npy":
            arr = await state.work_on(pp.parse_npy, blobs[0], deadline=deadline, what=".npy body")
            return "tensor", *state.tensor_feeds(model, {model.inputs[0].name: arr})
        return "image", *(await state.image_feeds(model, blobs, deadline))
    if ctype.startswith("image/"):
        return "image", *(await state.image_feeds(model, [body], deadline))
    if ctype == "application/json" or (not ctype and body.lstrip()[:1] == b"{"):
        arrays = await state.work_on(json_arrays, body, model.io, deadline=deadline, what="JSON body",
                                     in_process=len(body) > SMALL_JSON)
        return "tensor", *state.tensor_feeds(model, arrays)
    if ctype in NPY_TYPES or not ctype:
        kind = pp.sniff(body)
        if kind == "npy" or ctype in NPY_TYPES[:2]:
            if len(model.inputs) != 1:
                raise RequestError(422, "a .npy body feeds a one-input model; send JSON for several inputs")
            arr = await state.work_on(pp.parse_npy, body, deadline=deadline, what=".npy body")
            return "tensor", *state.tensor_feeds(model, {model.inputs[0].name: arr})
        if kind == "image":
            return "image", *(await state.image_feeds(model, [body], deadline))
    raise RequestError(415, f"unsupported content type '{ctype[:50] or 'none'}': send an image (image/jpeg, "
                            "image/png or multipart 'file'), JSON tensors (application/json) or a .npy "
                            "(application/x-npy)")


async def _form_files(state: ServerState, request: Request, body: bytes) -> list[bytes]:
    from starlette.datastructures import UploadFile

    request._body = body  # Starlette's stream() replays a body already read (ours, size-checked)
    try:
        form = await request.form(max_files=state.config.max_images, max_fields=32)
    except HTTPException as e:
        raise RequestError(400 if e.status_code < 500 else e.status_code, f"bad multipart body: {e.detail}") \
            from None
    except Exception as e:  # python-multipart's own parse errors
        raise RequestError(400, f"bad multipart body: {str(e)[:200]}") from None
    try:
        blobs = [await v.read() for _, v in form.multi_items() if isinstance(v, UploadFile)]
    finally:
        await form.close()
    if not blobs:
        raise RequestError(400, "multipart body has no file (send the image as field 'file')")
    return blobs


def json_arrays(body: bytes, model: ModelIO) -> dict[str, np.ndarray]:
    """/v1's JSON body -> arrays (on a work thread)."""
    raw = pp.parse_json_tensors(body, model)
    specs = {t.name: t for t in model.inputs}
    unknown = set(raw) - set(specs)
    if unknown:
        raise RequestError(422, f"model has no input named {sorted(unknown)[0][:100]!r} "
                                f"(inputs: {', '.join(specs)})")
    return {k: pp.json_to_array(v, specs[k]) for k, v in raw.items()}


# ---------------------------------------------------------------------------------------------- answers


def _image_response(model: ServedModel, outputs: list[np.ndarray], k: int) -> Response:
    scores = outputs[0]
    preds = [pp.top_k(scores[i], k, model.labels) for i in range(scores.shape[0])]
    return json_response({"model": model.name, "output": model.outputs[0].name, "predictions": preds})


@functools.lru_cache(maxsize=64)
def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def npy_bytes(arr: np.ndarray) -> bytes:
    """``np.save``'s bytes, with the header made once per dtype and shape (np.save formats it every time)."""
    arr = np.asarray(arr)
    if not arr.flags.c_contiguous:
        arr = arr.copy()  # C order (np.ascontiguousarray would also turn a 0-d array into 1-d)
    header = _npy_header(np.lib.format.dtype_to_descr(arr.dtype), arr.shape)
    return b"".join((header, arr.reshape(-1).view(np.uint8)))


def _tensor_json(name: str, io_: ModelIO, outputs: list[np.ndarray], added_batch: bool, limit: int) -> bytes:
    """The JSON answer (on a work thread: rendering a large output holds the GIL for a while)."""
    if added_batch:
        outputs = [o[0] for o in outputs]
    pp.check_answer_size(sum(pp.json_size_bound(o) for o in outputs), limit)
    return json_bytes({
        "model": name,
        "outputs": {t.name: {"shape": list(o.shape), "dtype": str(o.dtype), "data": pp.jsonable(o)}
                    for t, o in zip(io_.outputs, outputs)},
    })
