"""The HTTP routes (Starlette): health, model list, predict, metrics; API-key check; limits and timeouts.

``create_app(models, config)`` returns an ASGI app; ``edgezoo.serve.server`` runs it on uvicorn. Each
predict request is answered exactly once: the batcher resolves its future, or a limit answers it first
(413/408/503/504) and the batcher skips it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edgezoo.serve import preprocess as pp
from edgezoo.serve.batching import BatchConfig, Batcher, QueueFull, RunFailed, ShuttingDown
from edgezoo.serve.metrics import CONTENT_TYPE as PROMETHEUS_TYPE
from edgezoo.serve.metrics import ServerMetrics
from edgezoo.serve.model import ServedModel
from edgezoo.serve.preprocess import RequestError

API_KEY_ENV = "EDGEZOO_API_KEY"
NPY_TYPES = ("application/x-npy", "application/npy", "application/octet-stream")


@dataclass
class ServeConfig:
    batch: BatchConfig = field(default_factory=BatchConfig)
    max_body_bytes: int = 16 * 1024 * 1024
    request_timeout_s: float = 30.0  # from body received to answer: queue + run
    body_timeout_s: float = 30.0  # to receive the body (a client trickling bytes holds a connection)
    decode_timeout_s: float = 5.0  # one image's decode and resize
    max_image_pixels: int = 40_000_000  # refused from the header, before decoding (decompression bombs)
    max_images: int = 64  # images in one multipart request
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
    """Every route but /health needs the key, as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""

    def __init__(self, app, key: str):
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] == "/health":
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


class ServerState:
    def __init__(self, models: list[ServedModel], config: ServeConfig):
        self.config = config
        self.models = {m.name: m for m in models}
        self.metrics = ServerMetrics(lambda: {n: b.depth for n, b in self.batchers.items()})
        self.batchers = {m.name: Batcher(m, config.batch, self.metrics) for m in models}
        self.decode_pool = ThreadPoolExecutor(max(1, config.decode_threads), thread_name_prefix="decode")
        self.closing = False

    async def start(self) -> None:
        for b in self.batchers.values():
            await b.start()

    async def stop(self) -> None:
        """Answer every queued request, then stop (uvicorn calls this after in-flight HTTP requests finished)."""
        self.closing = True
        for b in self.batchers.values():
            await b.stop()
        self.decode_pool.shutdown(wait=True)


def create_app(models: list[ServedModel], config: ServeConfig | None = None) -> Starlette:
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
        state.metrics.requests.inc("", "models", "200")
        return json_response({"models": [m.describe() for m in state.models.values()]})

    async def model_info(request: Request) -> Response:
        m = state.models.get(request.path_params["name"])
        if m is None:
            return _unknown_model(request.path_params["name"])
        return json_response(m.describe())

    async def metrics(request: Request) -> Response:
        return Response(state.metrics.render(), media_type=PROMETHEUS_TYPE)

    def _unknown_model(name: str) -> Response:
        known = ", ".join(sorted(state.models)) or "none"
        return error_response(404, f"no model named '{name}' (served: {known})")

    async def predict(request: Request) -> Response:
        t0 = time.perf_counter()
        name = request.path_params["name"]
        model = state.models.get(name)
        if model is None:
            state.metrics.requests.inc("", "predict", "404")
            return _unknown_model(name)
        try:
            resp = await _predict(request, model)
        except RequestError as e:
            resp = error_response(e.status, e.message, e.headers)
        status = resp.status_code
        state.metrics.requests.inc(name, "predict", str(status))
        if status >= 400:
            state.metrics.errors.inc(name, _reason(status))
        state.metrics.latency.observe(time.perf_counter() - t0, name)
        return resp

    async def _predict(request: Request, model: ServedModel) -> Response:
        top_k = _int_param(request, "top_k", config.default_top_k, 1, 1000)
        body = await _read_body(request, config)
        batcher = state.batchers[model.name]
        if batcher.depth >= config.batch.max_queue:  # refuse before spending time on decoding
            raise RequestError(503, "server busy: queue full", {"Retry-After": "1"})
        kind, feeds, added_batch = await _parse(request, body, model)
        rows = next(iter(feeds.values())).shape[0]
        if any(v.shape[0] != rows for v in feeds.values()):
            raise RequestError(422, "inputs disagree on the batch size")
        if model.fixed_batch is not None and rows != model.fixed_batch:
            raise RequestError(422, f"model '{model.name}' takes batches of exactly {model.fixed_batch}; "
                                    f"got {rows}")
        try:
            future = batcher.submit(feeds, rows)
        except QueueFull:
            raise RequestError(503, "server busy: queue full", {"Retry-After": "1"}) from None
        except ShuttingDown:
            raise RequestError(503, "server is shutting down", {"Retry-After": "1", "Connection": "close"}) \
                from None
        try:
            # wait_for cancels the future on timeout; the batcher then skips the request
            outputs = await asyncio.wait_for(future, config.request_timeout_s)
        except asyncio.TimeoutError:
            raise RequestError(504, f"no answer within {config.request_timeout_s:g}s (server overloaded?)") \
                from None
        except RunFailed as e:
            raise RequestError(500, str(e)) from None
        if kind == "image":
            return _image_response(model, outputs, top_k)
        return _tensor_response(request, model, outputs, added_batch)

    async def _parse(request: Request, body: bytes, model: ServedModel):
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            blobs = await _form_files(request, body)
            if len(blobs) == 1 and pp.sniff(blobs[0]) == "npy":
                return "tensor", *_tensor_feeds(model, {model.inputs[0].name: pp.parse_npy(blobs[0])})
            return "image", *(await _image_feeds(model, blobs))
        if ctype.startswith("image/"):
            return "image", *(await _image_feeds(model, [body]))
        if ctype == "application/json" or (not ctype and body.lstrip()[:1] == b"{"):
            raw = pp.parse_json_tensors(body, model)
            specs = {t.name: t for t in model.inputs}
            unknown = set(raw) - set(specs)
            if unknown:
                raise RequestError(422, f"model has no input named {sorted(unknown)[0]!r} "
                                        f"(inputs: {', '.join(specs)})")
            return "tensor", *_tensor_feeds(model, {k: pp.json_to_array(v, specs[k]) for k, v in raw.items()})
        if ctype in NPY_TYPES or not ctype:
            kind = pp.sniff(body)
            if kind == "npy" or ctype in NPY_TYPES[:2]:
                if len(model.inputs) != 1:
                    raise RequestError(422, "a .npy body feeds a one-input model; send JSON for several inputs")
                return "tensor", *_tensor_feeds(model, {model.inputs[0].name: pp.parse_npy(body)})
            if kind == "image":
                return "image", *(await _image_feeds(model, [body]))
        raise RequestError(415, f"unsupported content type '{ctype or 'none'}': send an image (image/jpeg, "
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

    async def _image_feeds(model: ServedModel, blobs: list[bytes]):
        pre = model.preprocessing
        if pre is None:
            raise RequestError(422, f"model '{model.name}' has no image preprocessing (its file carries no input "
                                    "size/mean/std): send a tensor, or start the server with --input-size, "
                                    "--mean and --std")
        if len(blobs) > config.max_images:
            raise RequestError(413, f"{len(blobs)} images in one request; the limit is {config.max_images}")
        loop = asyncio.get_running_loop()
        samples = []
        for blob in blobs:
            job = loop.run_in_executor(state.decode_pool, pp.decode_image, blob, pre, config.max_image_pixels)
            try:
                samples.append(await asyncio.wait_for(job, config.decode_timeout_s))
            except asyncio.TimeoutError:
                raise RequestError(400, f"image took longer than {config.decode_timeout_s:g}s to decode") from None
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

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    async def server_error(request: Request, exc: Exception) -> Response:
        return error_response(500, f"internal error: {type(exc).__name__}")

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{name}", model_info, methods=["GET"]),
            Route("/v1/models/{name}/predict", predict, methods=["POST"]),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.edgezoo = state
    if config.api_key:
        app.add_middleware(ApiKeyMiddleware, key=config.api_key)
    return app


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
    return {400: "bad_request", 401: "unauthorized", 404: "unknown_model", 408: "body_timeout",
            413: "too_large", 415: "unsupported_media_type", 422: "invalid_input", 500: "model_error",
            503: "busy", 504: "timeout"}.get(status, str(status))
