"""The ASGI app (Starlette): edgezoo's /v1 routes and the KServe v2 protocol, with the API key, accounting
and the answers every error gets.

``create_app(models, config)`` assembles the module-level routes of ``routes_v1`` and ``routes_kserve`` around
one ``ServerState`` (``app.state.edgezoo``); ``edgezoo.serve.server`` runs it on uvicorn with the connection
guard (edgezoo/serve/guard.py). Each inference request is answered exactly once: the batcher resolves its
future, or a limit answers it first (413/408/503/504) and the batcher skips it. Every answer, whatever the
route, is counted in /metrics by ``Accounting``, labelled by the route the router matched; every error body
is ``{"error": ...}``. Parsing and decoding run on work threads (edgezoo/serve/work.py), never on the event loop.
"""

from __future__ import annotations

import contextlib
import hmac
import time

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from edgezoo.serve import routes_kserve, routes_v1
from edgezoo.serve.httpio import error_response, reason
from edgezoo.serve.model import ServedModel
from edgezoo.serve.preprocess import RequestError
from edgezoo.serve.state import ServeConfig, ServerState

__all__ = ["API_KEY_ENV", "ServeConfig", "ServerState", "create_app"]

API_KEY_ENV = "EDGEZOO_API_KEY"
HEALTH_PATHS = ("/health", "/v2/health/live", "/v2/health/ready")


class ApiKeyMiddleware:
    """Every route but the health checks needs the key, as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""

    def __init__(self, app, key: str):
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in HEALTH_PATHS:
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


class Accounting:
    """Outermost layer: counts every answer by model, route and status (errors also by reason), times the
    inference routes, caps requests in flight (503), and keeps a refused request's unread body from being
    read as the next request.

    A request takes an in-flight slot once its body has arrived (at once when it has none): clients still
    sending, however slowly, never hold a slot that a complete request could use (the guard cuts bodies that
    arrive too slowly). A request answered before its body was read (404, 401, 413) leaves the rest for
    uvicorn's parser to skip when it is at most ``max_body_bytes``; beyond that, or of unknown length, the
    answer says ``Connection: close``.
    """

    TIMED = ("predict", "v2_infer")

    def __init__(self, app, state: ServerState):
        self.app = app
        self.state = state
        self.in_flight = 0
        self.errors = state.error_log

    def _admit(self) -> bool:
        if self.in_flight >= self.state.config.max_in_flight:
            return False
        self.in_flight += 1
        return True

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = 500
        started = False
        admitted = False
        declared, chunked = 0, False
        for k, v in scope["headers"]:
            if k == b"content-length":
                declared = int(v) if v.isdigit() and len(v) <= 20 else 0
            elif k == b"transfer-encoding":
                chunked = True
        expects_body = chunked or declared > 0
        received, body_done = 0, not expects_body

        async def counted_receive():
            nonlocal received, body_done, admitted
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if not message.get("more_body", False) and not body_done:
                    body_done = True
                    if not self._admit():
                        raise RequestError(503, f"server busy: {self.in_flight} requests in flight",
                                           {"Retry-After": "1"})
                    admitted = True
            return message

        async def counting_send(message):
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                if not body_done and (chunked or declared - received > self.state.config.max_body_bytes):
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            if not expects_body:
                if scope["path"] not in HEALTH_PATHS and not self._admit():
                    resp = error_response(503, f"server busy: {self.in_flight} requests in flight",
                                          {"Retry-After": "1"})
                    return await resp(scope, receive, counting_send)
                admitted = scope["path"] not in HEALTH_PATHS
            await self.app(scope, counted_receive, counting_send)
        except Exception as e:  # Starlette re-raises after its 500 answer; one line here, never a traceback
            first = (str(e).strip().splitlines() or [""])[0][:200]
            self.errors.error(f"500 on {scope.get('method')} {scope['path'][:100]}: {type(e).__name__}"
                              f"{': ' + first if first else ''}")
            if not started:
                resp = error_response(500, f"internal error: {type(e).__name__}", {"Connection": "close"})
                await resp(scope, receive, counting_send)
        finally:
            if admitted:
                self.in_flight -= 1
            route = scope.get("route")
            label = getattr(route, "name", None) or "other"
            name = (scope.get("path_params") or {}).get("name")
            model = name if name in self.state.models else ""
            m = self.state.metrics
            m.requests.inc(model, label, str(status))
            if status >= 400:
                m.errors.inc(model, reason(status))
            if label in self.TIMED and model:
                m.latency.observe(time.perf_counter() - t0, model)


async def request_error(request: Request, exc: RequestError) -> Response:
    if exc.status >= 500 and exc.status != 503:  # the model failed, or its answer cannot be sent: one line
        request.app.state.edgezoo.error_log.error(f"{exc.status} on {request.method} {request.url.path[:100]}: {exc.message[:200]}")
    return error_response(exc.status, exc.message, exc.headers)


async def http_error(request: Request, exc: HTTPException) -> Response:
    return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


async def server_error(request: Request, exc: Exception) -> Response:
    return error_response(500, f"internal error: {type(exc).__name__}", {"Connection": "close"})


def create_app(models: list[ServedModel], config: ServeConfig | None = None):
    state = ServerState(models, config or ServeConfig())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    app = Starlette(
        routes=[*routes_v1.ROUTES, *routes_kserve.ROUTES],
        lifespan=lifespan,
        exception_handlers={RequestError: request_error, HTTPException: http_error, Exception: server_error},
    )
    app.state.edgezoo = state
    if state.config.api_key:
        app.add_middleware(ApiKeyMiddleware, key=state.config.api_key)
    app.add_middleware(Accounting, state=state)
    return app
