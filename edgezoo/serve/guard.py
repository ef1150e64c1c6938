"""What uvicorn does not do for a server on an open port: a header read timeout and a header size limit.

Measured on uvicorn 0.54 (both of its HTTP/1.1 parsers):
- no header timeout: a socket that sends a valid request line and then one header byte every half second is
  never closed (``timeout_keep_alive`` is armed only after a response, and any byte cancels it), and a socket
  that connects and sends nothing is never closed either;
- httptools buffers request headers without limit (an 8 MB header is answered 200); h11 stops at
  ``h11_max_incomplete_event_size`` but answers 400 and resets the connection, not 431.
- ``limit_concurrency`` counts open sockets, so 300 idle sockets make every real request a 503.

So the server runs uvicorn with this protocol, its httptools one plus three small additions, in the one
place that sees the bytes before they are parsed:
- each connection, and each request on it, must deliver its complete request head within
  ``header_timeout_s`` from its first byte (from the connection's start for the first request); otherwise
  the socket is closed. Idle keep-alive sockets are closed after ``timeout_keep_alive`` as before;
- a request head over ``max_header_bytes`` is answered ``431 Request Header Fields Too Large`` with
  ``Connection: close``, before the parser has buffered it;
- open sockets beyond ``max_sockets`` are closed at once (requests in flight are limited in the app, where
  a 503 is a real answer to a real request).
Every refusal is counted in the server's /metrics (``edgezoo_request_errors_total{model=""}``).
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_END = b"\r\n\r\n"


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout_s: float = 10.0
    max_header_bytes: int = 32 * 1024
    max_sockets: int = 4096
    metrics: Any = None  # ServerMetrics, set by ``guarded_protocol``

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        self._head_tail = b""
        self._in_head = True  # waiting for a request head (the first one, or the next on keep-alive)
        self._head_timer = None
        self._discarding = False
        if len(self.connections) > self.max_sockets:
            self._count("too_many_sockets")
            transport.close()
            return
        self._arm_head_timer()

    def connection_lost(self, exc) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarding:  # after a 431: read and drop what the client still sends (see _refuse_431)
            return
        if self._in_head and not self.transport.is_closing():
            if self._head_timer is None:  # first byte of a keep-alive request: its head is timed from now
                self._arm_head_timer()
            room = self.max_header_bytes - self._head_bytes
            window = self._head_tail + data[: max(room, 0) + len(HEAD_END)]
            if len(data) > room and HEAD_END not in window:
                self._refuse_431()
                return
            self._head_bytes += len(data)
            self._head_tail = (self._head_tail + data)[-3:]
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # the next bytes on this connection are the next request's head
        self._in_head = True
        self._head_bytes = 0
        self._head_tail = b""
        super().on_response_complete()

    # ------------------------------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        self._count("bad_http")
        super().send_400_response(msg)

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            # a client that sent part of a head gets nothing (it is not reading); the socket is closed
            self._count("header_timeout")
            self.transport.close()

    def _refuse_431(self) -> None:
        self._count("header_too_large")
        self._disarm_head_timer()
        msg = f"request header fields over {self.max_header_bytes:,} bytes"
        body = ('{"error":"%s","status":431}' % msg).encode()
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                             b"content-type: application/json\r\n"
                             b"content-length: " + str(len(body)).encode() + b"\r\n"
                             b"connection: close\r\n\r\n" + body)
        # Closing now, with the rest of the client's header unread, makes the kernel answer with a reset that
        # can destroy the 431 before the client reads it. Half-close instead, drop what still arrives, and
        # close when the client does or after a short grace.
        self._discarding = True
        self._in_head = False
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(2.0, self._close_now)

    def eof_received(self):
        if self._discarding:
            self._close_now()
            return False
        return super().eof_received()

    def _close_now(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def _count(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.errors.inc("", reason)


def guarded_protocol(header_timeout_s: float, max_header_bytes: int, max_sockets: int, metrics: Any):
    """A protocol class with these limits, for ``uvicorn.Config(http=...)``."""
    return type("EdgezooHttpProtocol", (GuardedHttpToolsProtocol,), {
        "header_timeout_s": header_timeout_s, "max_header_bytes": max_header_bytes,
        "max_sockets": max_sockets, "metrics": metrics,
    })
