"""The HTTP routes (Starlette): edgezoo's /v1 and the KServe v2 protocol; API key, limits and timeouts.

``create_app(models, config)`` returns an ASGI app; ``edgezoo.serve.server`` runs it on uvicorn with the
header guard (edgezoo/serve/guard.py). Each inference request is answered exactly once: the batcher
resolves its future, or a limit answers it first (413/408/503/504) and the batcher skips it. Every answer,
whatever the route, is counted in /metrics by ``Accounting``; every error body is ``{"error": ...}``.
Parsing and decoding run on work threads (edgezoo/serve/work.py), never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edgezoo.serve import kserve
from edgezoo.serve import preprocess as pp
from edgezoo.serve.work import WorkPool
from edgezoo.serve.batching import BatchConfig, Batcher, QueueFull, RunFailed, ShuttingDown
from edgezoo.serve.metrics import CONTENT_TYPE as PROMETHEUS_TYPE
from edgezoo.serve.metrics import ServerMetrics
from edgezoo.serve.model import ModelIO, ServedModel
from edgezoo.serve.preprocess import RequestError

API_KEY_ENV = "EDGEZOO_API_KEY"
NPY_TYPES = ("application/x-npy", "application/npy", "application/octet-stream")
SMALL_JSON = 64 * 1024  # JSON bodies up to this are parsed on a work thread; larger in the parse process


@dataclass
class ServeConfig:
    batch: BatchConfig = field(default_factory=BatchConfig)
    max_body_bytes: int = 16 * 1024 * 1024
    request_timeout_s: float = 30.0  # from body received to answer: queue + run
    body_timeout_s: float = 30.0  # to receive the body (a client trickling bytes holds a connection)
    decode_timeout_s: float = 5.0  # one image's decode and resize
    max_image_pixels: int = 40_000_000  # one image, read from its header before decoding (decompression bombs)
    max_request_pixels: int = 64_000_000  # all images of one request
    max_server_pixels: int = 160_000_000  # images being decoded or waiting to be, across the server (503)
    max_images: int = 64  # images in one multipart request
    header_timeout_s: float = 10.0  # to receive a request's head (guard.py)
    max_header_bytes: int = 32 * 1024  # request line + headers (431 beyond)
    keep_alive_s: float = 15.0  # idle keep-alive connections are closed after this
    max_in_flight: int = 256  # requests being answered at once (503 beyond)
    default_top_k: int = 5
    allow_nan: bool = False
    api_key: str | None = None
    decode_threads: int = 2


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    return Response(body, status, headers=headers, media_type="application/json")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message, "status": status}, status, headers)


class ApiKeyMiddleware:
    """Every route but the health checks needs the key, as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""

    def __init__(self, app, key: str):
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in ("/health", "/v2/health/live", "/v2/health/ready"):
            return await self.app(scope, receive, send)
        given = b""
        for k, v in scope["headers"]:
            if k == b"x-api-key":
                given = v.strip()
            elif k == b"authorization" and v[:7].lower() == b"bearer ":
                given = v[7:].strip()
        if not hmac.compare_digest(given, self.key):  # constant time: the key cannot be guessed byte by byte
            resp = error_response(401, "missing or wrong API key (send 'Authorization: Bearer KEY')",
                                  {"WWW-Authenticate": "Bearer"})
            return await resp(scope, receive, send)
        return await self.app(scope, receive, send)


def _route_of(path: str, models: dict) -> tuple[str, str]:
    """(model label, route label) for /metrics; a name that is not served is labelled "" (bounded series)."""
    parts = path.strip("/").split("/")
    if parts[:1] == ["v1"] and len(parts) >= 3 and parts[1] == "models":
        name = parts[2] if parts[2] in models else ""
        return name, "predict" if parts[3:] == ["predict"] else "model"
    if parts[:1] == ["v2"] and len(parts) >= 3 and parts[1] == "models":
        name = parts[2] if parts[2] in models else ""
        tail = parts[3:]
        if tail[:1] == ["versions"]:
            tail = tail[2:]
        return name, {(): "v2_metadata", ("ready",): "v2_ready", ("infer",): "v2_infer"}.get(tuple(tail), "other")
    known = {"health": "health", "metrics": "metrics", "v1/models": "models", "v2": "v2_server",
             "v2/health/live": "v2_health", "v2/health/ready": "v2_health"}
    return "", known.get("/".join(parts), "other")


class Accounting:
    """Outermost layer: counts every answer by model, route and status (errors also by reason), times the
    inference routes, and caps requests in flight (503: idle sockets never count, only requests)."""

    TIMED = ("predict", "v2_infer")

    def __init__(self, app, state: "ServerState"):
        self.app = app
        self.state = state
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        model, route = _route_of(scope["path"], self.state.models)
        t0 = time.perf_counter()
        status = 500
        started = False

        async def counting_send(message):
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            if self.in_flight >= self.state.config.max_in_flight and route not in ("health", "v2_health"):
                resp = error_response(503, f"server busy: {self.in_flight} requests in flight",
                                      {"Retry-After": "1", "Connection": "close"})
                return await resp(scope, receive, counting_send)
            self.in_flight += 1
            try:
                await self.app(scope, receive, counting_send)
            finally:
                self.in_flight -= 1
        finally:
            m = self.state.metrics
            m.requests.inc(model, route, str(status))
            if status >= 400:
                m.errors.inc(model, _reason(status))
            if route in self.TIMED and model:
                m.latency.observe(time.perf_counter() - t0, model)


class ServerState:
    def __init__(self, models: list[ServedModel], config: ServeConfig):
        self.config = config
        self.models = {m.name: m for m in models}
        self.metrics = ServerMetrics(lambda: {n: self.queue_depth(n) for n in self.batchers},
                                     lambda: self.work.depth)
        self.batchers = {m.name: Batcher(m, config.batch, self.metrics) for m in models}
        self.work = WorkPool(config.decode_threads, config.max_server_pixels)
        self.preparing = dict.fromkeys(self.models, 0)  # requests parsing or decoding, by model
        self.closing = False

    def queue_depth(self, name: str) -> int:
        """Requests of this model between their body and their answer (preparing, or waiting for a run)."""
        return self.batchers[name].depth + self.preparing[name]

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.work.start_processes)
        for b in self.batchers.values():
            await b.start()

    async def stop(self) -> None:
        """Answer every queued request, then stop (uvicorn calls this after in-flight HTTP requests finished)."""
        self.closing = True
        for b in self.batchers.values():
            await b.stop()
        self.work.shutdown()


def create_app(models: list[ServedModel], config: ServeConfig | None = None):
    config = config or ServeConfig()
    state = ServerState(models, config)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    async def health(request: Request) -> Response:
        if state.closing:
            return json_response({"status": "shutting down"}, 503)
        return json_response({"status": "ok", "models": sorted(state.models)})

    async def list_models(request: Request) -> Response:
        return json_response({"models": [m.describe() for m in state.models.values()]})

    async def model_info(request: Request) -> Response:
        return json_response(_model(request).describe())

    async def metrics(request: Request) -> Response:
        return Response(state.metrics.render(), media_type=PROMETHEUS_TYPE)

    def _model(request: Request) -> ServedModel:
        name = request.path_params["name"]
        m = state.models.get(name)
        if m is None:
            known = ", ".join(sorted(state.models)) or "none"
            raise RequestError(404, f"no model named '{name[:100]}' (served: {known})")
        version = request.path_params.get("version")
        if version is not None and version != "1":
            raise RequestError(404, f"model '{name}' has only version 1; got version '{version[:20]}'")
        return m

    # ------------------------------------------------------------------------------------------- /v1

    async def predict(request: Request) -> Response:
        model = _model(request)
        top_k = _int_param(request, "top_k", config.default_top_k, 1, 1000)
        body = await _read_body(request, config)
        deadline = time.monotonic() + config.request_timeout_s
        kind, feeds, added_batch = await _prepared(model, deadline, _parse(request, body, model, deadline))
        outputs = await _infer(model, feeds, deadline)
        if kind == "image":
            return _image_response(model, outputs, top_k)
        return _tensor_response(request, model, outputs, added_batch)

    async def _prepared(model: ServedModel, deadline: float, parsing):
        """Admission (queue full: 503 before any work) and accounting of a request's preparation."""
        if state.queue_depth(model.name) >= config.batch.max_queue:
            parsing.close()
            raise RequestError(503, "server busy: queue full", {"Retry-After": "1"})
        state.preparing[model.name] += 1
        try:
            return await parsing
        finally:
            state.preparing[model.name] -= 1

    async def _work(fn, *args, deadline: float, what: str, cancellable: bool = False, in_process: bool = False):
        return await state.work.run(fn, *args, run_timeout_s=config.decode_timeout_s, deadline=deadline,
                                    what=what, cancellable=cancellable, in_process=in_process)

    async def _infer(model: ServedModel, feeds: dict[str, np.ndarray], deadline: float) -> list[np.ndarray]:
        rows = next(iter(feeds.values())).shape[0]
        if any(v.shape[0] != rows for v in feeds.values()):
            raise RequestError(422, "inputs disagree on the batch size")
        if model.fixed_batch is not None and rows != model.fixed_batch:
            raise RequestError(422, f"model '{model.name}' takes batches of exactly {model.fixed_batch}; "
                                    f"got {rows}")
        try:
            future = state.batchers[model.name].submit(feeds, rows)
        except QueueFull:
            raise RequestError(503, "server busy: queue full", {"Retry-After": "1"}) from None
        except ShuttingDown:
            raise RequestError(503, "server is shutting down", {"Retry-After": "1", "Connection": "close"}) \
                from None
        try:
            # wait_for cancels the future on timeout; the batcher then skips the request
            return await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise RequestError(504, f"no answer within {config.request_timeout_s:g}s (server overloaded?)") \
                from None
        except RunFailed as e:
            raise RequestError(500, str(e)) from None

    async def _parse(request: Request, body: bytes, model: ServedModel, deadline: float):
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            blobs = await _form_files(request, body)
            if len(blobs) == 1 and pp.sniff(blobs[0]) == "npy":
                arr = await _work(pp.parse_npy, blobs[0], deadline=deadline, what=".npy body")
                return "tensor", *_tensor_feeds(model, {model.inputs[0].name: arr})
            return "image", *(await _image_feeds(model, blobs, deadline))
        if ctype.startswith("image/"):
            return "image", *(await _image_feeds(model, [body], deadline))
        if ctype == "application/json" or (not ctype and body.lstrip()[:1] == b"{"):
            arrays = await _work(_json_arrays, body, model.io, deadline=deadline, what="JSON body",
                                 in_process=len(body) > SMALL_JSON)
            return "tensor", *_tensor_feeds(model, arrays)
        if ctype in NPY_TYPES or not ctype:
            kind = pp.sniff(body)
            if kind == "npy" or ctype in NPY_TYPES[:2]:
                if len(model.inputs) != 1:
                    raise RequestError(422, "a .npy body feeds a one-input model; send JSON for several inputs")
                arr = await _work(pp.parse_npy, body, deadline=deadline, what=".npy body")
                return "tensor", *_tensor_feeds(model, {model.inputs[0].name: arr})
            if kind == "image":
                return "image", *(await _image_feeds(model, [body], deadline))
        raise RequestError(415, f"unsupported content type '{ctype[:50] or 'none'}': send an image (image/jpeg, "
                                "image/png or multipart 'file'), JSON tensors (application/json) or a .npy "
                                "(application/x-npy)")

    def _tensor_feeds(model: ServedModel, arrays: dict[str, np.ndarray]):
        missing = [t.name for t in model.inputs if t.name not in arrays]
        if missing:
            raise RequestError(422, f"missing input '{missing[0]}'")
        feeds, added = {}, set()
        for t in model.inputs:
            feeds[t.name], was_added = pp.check_and_cast(arrays[t.name], t, config.allow_nan)
            added.add(was_added)
        if len(added) > 1:
            raise RequestError(422, "give every input a batch dimension, or none")
        return feeds, added.pop()

    async def _image_feeds(model: ServedModel, blobs: list[bytes], deadline: float):
        pre = model.preprocessing
        if pre is None:
            raise RequestError(422, f"model '{model.name}' has no image preprocessing (its file carries no input "
                                    "size/mean/std): send a tensor, or start the server with --input-size, "
                                    "--mean and --std")
        if len(blobs) > config.max_images:
            raise RequestError(413, f"{len(blobs)} images in one request; the limit is {config.max_images}")
        # Sizes from the headers (no pixel decoded) bound the work before any of it is done.
        sizes = [pp.image_pixels(b) for b in blobs]
        for n in sizes:
            if n > config.max_image_pixels:
                raise RequestError(413, f"an image of {n:,} pixels; the limit is {config.max_image_pixels:,}")
        total = sum(sizes)
        if total > config.max_request_pixels:
            raise RequestError(413, f"{len(blobs)} images of {total:,} pixels in all; the limit per request is "
                                    f"{config.max_request_pixels:,}")
        state.work.reserve_pixels(total)
        try:
            samples = []
            for blob in blobs:
                samples.append(await _work(pp.decode_image, blob, pre, config.max_image_pixels, deadline=deadline,
                                           what="image", cancellable=True))
        finally:
            state.work.release_pixels(total)
        x = np.stack(samples).astype(model.inputs[0].dtype, copy=False)
        return {model.inputs[0].name: x}, False

    async def _form_files(request: Request, body: bytes) -> list[bytes]:
        from starlette.datastructures import UploadFile

        request._body = body  # Starlette's stream() replays a body already read (ours, size-checked)
        try:
            form = await request.form(max_files=config.max_images, max_fields=32)
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

    def _image_response(model: ServedModel, outputs: list[np.ndarray], k: int) -> Response:
        scores = outputs[0]
        preds = [pp.top_k(scores[i], k, model.labels) for i in range(scores.shape[0])]
        return json_response({"model": model.name, "output": model.outputs[0].name, "predictions": preds})

    def _tensor_response(request: Request, model: ServedModel, outputs: list[np.ndarray],
                         added_batch: bool) -> Response:
        if added_batch:
            outputs = [o[0] for o in outputs]
        accept = request.headers.get("accept", "")
        if "application/x-npy" in accept and len(outputs) == 1:
            buf = io.BytesIO()
            np.save(buf, outputs[0], allow_pickle=False)
            return Response(buf.getvalue(), media_type="application/x-npy")
        return json_response({
            "model": model.name,
            "outputs": {t.name: {"shape": list(o.shape), "dtype": str(o.dtype), "data": pp.jsonable(o)}
                        for t, o in zip(model.outputs, outputs)},
        })

    # ------------------------------------------------------------------------------------------- /v2

    async def v2_server(request: Request) -> Response:
        from edgezoo import __version__

        return json_response({"name": "edgezoo", "version": __version__,
                              "extensions": ["binary_tensor_data"]})

    async def v2_live(request: Request) -> Response:
        return json_response({"live": True})

    async def v2_ready(request: Request) -> Response:
        if state.closing:
            return error_response(503, "server is shutting down")
        return json_response({"ready": True})

    async def v2_model(request: Request) -> Response:
        return json_response(kserve.model_metadata(_model(request)))

    async def v2_model_ready(request: Request) -> Response:
        m = _model(request)
        if state.closing:
            return error_response(503, "server is shutting down")
        return json_response({"name": m.name, "ready": True})

    async def v2_infer(request: Request) -> Response:
        model = _model(request)
        raw = request.headers.get(kserve.HEADER_LENGTH)
        header_length = None
        if raw is not None:
            if not raw.strip().isdigit():
                raise RequestError(400, "Inference-Header-Content-Length must be a number of bytes")
            header_length = int(raw)
        body = await _read_body(request, config)
        deadline = time.monotonic() + config.request_timeout_s

        async def parse():
            json_size = header_length if header_length is not None else len(body)
            req = await _work(kserve.parse_infer, body, header_length, model.io, deadline=deadline,
                              what="inference request", in_process=json_size > SMALL_JSON)
            feeds, added = _tensor_feeds(model, req.arrays)
            if added:
                raise RequestError(400, "KServe shapes include the batch dimension: give every input its full "
                                        "shape")
            return req, feeds

        req, feeds = await _prepared(model, deadline, parse())
        outputs = await _infer(model, feeds, deadline)
        content, headers = kserve.render_infer(model, req, outputs)
        ctype = headers.pop("content-type")
        return Response(content, 200, headers=headers, media_type=ctype)

    # ------------------------------------------------------------------------------------------- errors

    async def request_error(request: Request, exc: RequestError) -> Response:
        return error_response(exc.status, exc.message, exc.headers)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    async def server_error(request: Request, exc: Exception) -> Response:
        return error_response(500, f"internal error: {type(exc).__name__}", {"Connection": "close"})

    v = "/v2/models/{name}"
    vv = "/v2/models/{name}/versions/{version}"
    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{name}", model_info, methods=["GET"]),
            Route("/v1/models/{name}/predict", predict, methods=["POST"]),
            Route("/v2", v2_server, methods=["GET"]),
            Route("/v2/health/live", v2_live, methods=["GET"]),
            Route("/v2/health/ready", v2_ready, methods=["GET"]),
            *(r for base in (v, vv) for r in (
                Route(base, v2_model, methods=["GET"]),
                Route(base + "/ready", v2_model_ready, methods=["GET"]),
                Route(base + "/infer", v2_infer, methods=["POST"]),
            )),
        ],
        lifespan=lifespan,
        exception_handlers={RequestError: request_error, HTTPException: http_error, Exception: server_error},
    )
    app.state.edgezoo = state
    if config.api_key:
        app.add_middleware(ApiKeyMiddleware, key=config.api_key)
    app.add_middleware(Accounting, state=state)
    return app


def _json_arrays(body: bytes, model: "ModelIO") -> dict[str, np.ndarray]:
    """/v1's JSON body -> arrays (on a work thread)."""
    raw = pp.parse_json_tensors(body, model)
    specs = {t.name: t for t in model.inputs}
    unknown = set(raw) - set(specs)
    if unknown:
        raise RequestError(422, f"model has no input named {sorted(unknown)[0][:100]!r} "
                                f"(inputs: {', '.join(specs)})")
    return {k: pp.json_to_array(v, specs[k]) for k, v in raw.items()}


async def _read_body(request: Request, config: ServeConfig) -> bytes:
    limit = config.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise RequestError(400, "invalid Content-Length")
        if int(declared) > limit:
            raise RequestError(413, f"body of {int(declared):,} bytes; the limit is {limit:,}",
                               {"Connection": "close"})
    chunks: list[bytes] = []
    size = 0

    async def receive_all() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:  # chunked bodies have no Content-Length: count as they come
                raise RequestError(413, f"body over the limit of {limit:,} bytes", {"Connection": "close"})
            chunks.append(chunk)

    try:
        await asyncio.wait_for(receive_all(), config.body_timeout_s)
    except asyncio.TimeoutError:
        raise RequestError(408, f"body not received within {config.body_timeout_s:g}s",
                           {"Connection": "close"}) from None
    body = b"".join(chunks)
    if not body:
        raise RequestError(400, "empty body: send an image or a tensor")
    return body


def _int_param(request: Request, key: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(key)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise RequestError(400, f"{key} must be an integer; got {raw[:50]!r}") from None
    if not lo <= v <= hi:
        raise RequestError(400, f"{key} must be between {lo} and {hi}; got {v}")
    return v


def _reason(status: int) -> str:
    return {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
            408: "body_timeout", 413: "too_large", 415: "unsupported_media_type", 422: "invalid_input",
            431: "header_too_large", 500: "server_error", 503: "busy", 504: "timeout"}.get(status, str(status))
