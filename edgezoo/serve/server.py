"""Run the app on uvicorn: bind the socket ourselves (clear errors, ``--port 0`` reports the port it got),
and let uvicorn's graceful shutdown answer in-flight requests on SIGINT/SIGTERM before the batchers drain.
"""

from __future__ import annotations

import socket
import sys
from typing import Callable

from edgezoo.errors import InputError, MissingDependencyError
from edgezoo.serve.app import ServeConfig, create_app
from edgezoo.serve.model import ServedModel


def bind_socket(host: str, port: int) -> socket.socket:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InputError(f"port must be 0..65535 (0 picks a free one); got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise InputError(f"cannot resolve host '{host}': {e.strerror}") from None
    family, socktype, proto, _, addr = infos[0]
    # proto must be IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY on accepted sockets only then, and without
    # it Nagle's algorithm holds each response's body behind its headers for a delayed ACK (~40 ms).
    sock = socket.socket(family, socktype, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror}",
                         "choose another --port (0 picks a free one)") from None
    # Listen now: a client that connects before uvicorn has started waits in the backlog, not refused.
    sock.listen(2048)
    return sock


def run_server(models: list[ServedModel], config: ServeConfig, host: str = "127.0.0.1", port: int = 8000,
               log_level: str = "warning", graceful_timeout_s: float = 30.0, max_connections: int = 256,
               announce: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; then stop accepting, finish in-flight requests, drain the queues."""
    try:
        import httptools  # noqa: F401  (the guarded protocol is uvicorn's httptools one)
        import uvicorn
    except ImportError as e:
        raise MissingDependencyError(e.name or "uvicorn", "pip install 'edgezoo[serve]'",
                                     "edgezoo serve needs it") from None
    from edgezoo.serve.guard import guarded_protocol

    config.max_in_flight = max_connections
    app = create_app(models, config)
    protocol = guarded_protocol(config.header_timeout_s, config.max_header_bytes,
                                max(4 * max_connections, 1024), app.state.edgezoo.metrics,
                                body_grace_s=config.body_grace_s, body_min_rate=config.body_min_rate,
                                max_body_bytes=config.max_body_bytes)
    sock = bind_socket(host, port)  # last before the try that closes it
    uconfig = uvicorn.Config(
        app, log_level=log_level, access_log=False, lifespan="on",
        timeout_graceful_shutdown=graceful_timeout_s,
        # header timeout, 431 and a socket cap (edgezoo/serve/guard.py); requests in flight beyond
        # max_connections get 503 from the app, so idle or slow sockets cannot crowd out real requests
        http=protocol,
        timeout_keep_alive=config.keep_alive_s,
    )
    server = uvicorn.Server(uconfig)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    url = f"http://{shown}:{bound_port}"
    (announce or _print)(url)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def _print(url: str) -> None:
    print(f"edgezoo serve: listening on {url} (Ctrl+C stops, answering requests in flight)", flush=True)
    sys.stdout.flush()
