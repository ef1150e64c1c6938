"""The KServe v2 routes (as Triton serves them over HTTP): /v2, /v2/health/live|ready, /v2/models/NAME[/versions/V]
with /ready and /infer. The protocol itself (parsing, rendering) is edgezoo/serve/kserve.py.

Module-level endpoints; each finds the server's state as ``request.app.state.edgezoo``. A route's ``name``
is the ``route`` label of its requests in /metrics.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edgezoo.serve import kserve
from edgezoo.serve.httpio import error_response, json_response, read_body
from edgezoo.serve.preprocess import INLINE_ANSWER_BYTES, RequestError
from edgezoo.serve.state import SMALL_JSON, deadline_for, state_of


async def server_metadata(request: Request) -> Response:
    from edgezoo import __version__

    return json_response({"name": "edgezoo", "version": __version__, "extensions": ["binary_tensor_data"]})


async def live(request: Request) -> Response:
    return json_response({"live": True})


async def ready(request: Request) -> Response:
    if state_of(request).closing:
        return error_response(503, "server is shutting down")
    return json_response({"ready": True})


async def model_metadata(request: Request) -> Response:
    return json_response(kserve.model_metadata(state_of(request).model(request)))


async def model_ready(request: Request) -> Response:
    state = state_of(request)
    m = state.model(request)
    if state.closing:
        return error_response(503, "server is shutting down")
    return json_response({"name": m.name, "ready": True})


async def infer(request: Request) -> Response:
    state = state_of(request)
    model = state.model(request)
    header_length = kserve.header_length(request.headers.get(kserve.HEADER_LENGTH))
    body = await read_body(request, state.config.max_body_bytes, state.config.body_timeout_s)
    deadline = deadline_for(state)

    async def parse():
        json_size = header_length if header_length is not None else len(body)
        # on a work thread even when small: parsing on the event loop measured slower under load (c=16), the
        # batcher's completions waiting behind it
        req = await state.work_on(kserve.parse_infer, body, header_length, model.io, deadline=deadline,
                                  what="inference request", in_process=json_size > SMALL_JSON)
        feeds, added = state.tensor_feeds(model, req.arrays)
        if added:
            raise RequestError(400, "KServe shapes include the batch dimension: give every input its full shape")
        return req, feeds

    req, feeds = await state.prepared(model, parse())
    outputs = await state.infer(model, feeds, deadline)
    args = (model.io, req, outputs, state.config.max_answer_bytes)
    if kserve.answer_size_bound(req, dict(zip((t.name for t in model.outputs), outputs))) <= INLINE_ANSWER_BYTES:
        content, headers = kserve.render_infer(*args)
    else:  # rendering megabytes holds the GIL: on a work thread, so /health and small answers keep flowing
        content, headers = await state.work_on(kserve.render_infer, *args, deadline=deadline, what="answer")
    ctype = headers.pop("content-type")
    return Response(content, 200, headers=headers, media_type=ctype)


_M = "/v2/models/{name}"
_MV = "/v2/models/{name}/versions/{version}"
ROUTES = [
    Route("/v2", server_metadata, methods=["GET"], name="v2_server"),
    Route("/v2/health/live", live, methods=["GET"], name="v2_health"),
    Route("/v2/health/ready", ready, methods=["GET"], name="v2_health"),
    *(r for base in (_M, _MV) for r in (
        Route(base, model_metadata, methods=["GET"], name="v2_metadata"),
        Route(base + "/ready", model_ready, methods=["GET"], name="v2_ready"),
        Route(base + "/infer", infer, methods=["POST"], name="v2_infer"),
    )),
]
