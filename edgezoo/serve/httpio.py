"""HTTP plumbing the routes share: JSON and error responses, reading a body within the limits, query integers.

Every error body is ``{"error": ..., "status": ...}``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from edgezoo.serve.preprocess import RequestError
from edgezoo.serve.work import within

CLIENT_GONE = 499  # nginx's code for "the client closed the connection before the answer" (never sent)


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json_bytes(obj), status, headers=headers, media_type="application/json")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message, "status": status}, status, headers)


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The whole body, at most ``limit`` bytes (413 beyond, from Content-Length before reading when it is
    given), within ``timeout_s`` (408). A client that hangs up mid-body raises RequestError(499)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.strip().isascii() and declared.strip().isdigit()) or len(declared) > 20:
            raise RequestError(400, "invalid Content-Length", {"Connection": "close"})
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
        await within(receive_all(), timeout_s)
    except asyncio.TimeoutError:
        raise RequestError(408, f"body not received within {timeout_s:g}s", {"Connection": "close"}) from None
    except ClientDisconnect:
        raise RequestError(CLIENT_GONE, "the client hung up before its body was complete") from None
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not body:
        raise RequestError(400, "empty body: send an image or a tensor")
    return body


def int_param(request: Request, key: str, default: int, lo: int, hi: int) -> int:
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


def reason(status: int) -> str:
    """The ``reason`` label of edgezoo_request_errors_total."""
    return {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
            408: "body_timeout", 413: "too_large", 415: "unsupported_media_type", 422: "invalid_input",
            431: "header_too_large", CLIENT_GONE: "client_gone", 500: "server_error", 503: "busy",
            504: "timeout"}.get(status, str(status))
