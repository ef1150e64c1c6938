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
- a request body, like a head, must keep arriving: after ``body_grace_s`` from the end of the head, at least
  ``body_min_rate`` bytes a second on average (as Apache's mod_reqtimeout ``MinRate``); time the server
  itself stopped reading (flow control while the app is busy, a pending ``100 Continue``) does not count.
  A slower body's socket is closed;
- where a request ends and the next head begins is the parser's to say (``on_message_complete``), not the
  answer's: a request answered before its body was read (404, 401) leaves the rest of the body to be skipped
  by the parser, never counted as the next request's head, and pipelined requests work;
- a connection closed while a request's body is still arriving (an answer with ``Connection: close``, such
  as a 413 or a refused body of unknown length) is half-closed and the rest of the body read and dropped for
  a short grace, so that the kernel does not answer the unread bytes with a reset that destroys the answer;
- a body with a Content-Length within ``max_body_bytes`` is gathered as the parser hands it over and given to
  the app whole, once, when it is complete (uvicorn appends each piece to a bytearray and copies it again on
  every ``receive``; a 600 kB tensor was copied three times before the app saw it). Other bodies (chunked, or
  over the limit, which the app refuses at once) take uvicorn's own path, with its flow control;
- open sockets beyond ``max_sockets`` are closed at once (requests in flight are limited in the app, where
  a 503 is a real answer to a real request).
Every refusal is counted in the server's /metrics (``edgezoo_request_errors_total{model=""}``).
"""

from __future__ import annotations

import contextlib
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_END = b"\r\n\r\n"


class _GracefulClose:
    """The transport as uvicorn sees it: ``close()`` while a body is still arriving lingers (see above)."""

    def __init__(self, transport, protocol: "GuardedHttpToolsProtocol"):
        self._transport = transport
        self._protocol = protocol

    def __getattr__(self, name: str):
        return getattr(self._transport, name)

    def close(self) -> None:
        self._protocol._close_gracefully()

    def is_closing(self) -> bool:
        return self._protocol._discarding or self._transport.is_closing()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout_s: float = 10.0
    max_header_bytes: int = 32 * 1024
    max_sockets: int = 4096
    body_grace_s: float = 10.0
    body_min_rate: float = 1024.0
    max_body_bytes: int = 16 * 1024 * 1024
    linger_s: float = 2.0
    metrics: Any = None  # ServerMetrics, set by ``guarded_protocol``

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self._raw = transport
        self._head_bytes = 0
        self._head_tail = b""
        self._in_head = True  # waiting for a request head (the first one, or the next on keep-alive)
        self._in_body = False  # the head is parsed, the body is still arriving
        self._head_timer = None
        self._body_timer = None
        self._body_parts: list[bytes] | None = None  # the body gathered whole (see above), or None
        self._discarding = False
        super().connection_made(_GracefulClose(transport, self))
        if len(self.connections) > self.max_sockets:
            self._count("too_many_sockets")
            transport.close()
            return
        self._arm_head_timer()

    def connection_lost(self, exc) -> None:
        self._disarm_head_timer()
        self._disarm_body_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarding:  # after a 431 or a close mid-body: read and drop what the client still sends
            return
        if self._in_head and not self._raw.is_closing():
            if self._head_timer is None:  # first byte of a keep-alive request: its head is timed from now
                self._arm_head_timer()
            room = self.max_header_bytes - self._head_bytes
            window = self._head_tail + data[: max(room, 0) + len(HEAD_END)]
            if len(data) > room and HEAD_END not in window:
                self._refuse_431()
                return
            self._head_bytes += len(data)
            self._head_tail = (self._head_tail + data)[-3:]
        elif self._in_body:
            self._body_bytes += len(data)
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_timer()
        length, chunked = 0, False
        for k, v in self.headers:
            if k == b"content-length":
                length = int(v) if v.isdigit() and len(v) <= 20 else 0
            elif k == b"transfer-encoding":
                chunked = True
        self._body_parts = [] if length and not chunked and length <= self.max_body_bytes else None
        if length or chunked:
            self._in_body = True
            self._body_bytes = 0
            self._body_credit = 0.0  # seconds the server itself was not reading
            self._body_start = self.loop.time()
            self._arm_body_timer(1.0)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._body_parts is None:
            return super().on_body(body)
        if not self.cycle.response_complete:  # answered already (404, 401): the rest is skipped
            self._body_parts.append(body)

    def on_message_complete(self) -> None:
        # the request (head and body) is over: the next bytes on this connection are the next request's head,
        # whether or not its answer has been sent
        parts, self._body_parts = self._body_parts, None
        if parts and not self.cycle.response_complete:
            # bytes, not bytearray: uvicorn's receive() hands over bytes(body), which for bytes is no copy
            self.cycle.body = parts[0] if len(parts) == 1 else b"".join(parts)
        self._in_body = False
        self._disarm_body_timer()
        self._in_head = True
        self._head_bytes = 0
        self._head_tail = b""
        super().on_message_complete()

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
        if self._in_head and not self._raw.is_closing():
            # a client that sent part of a head gets nothing (it is not reading); the socket is closed
            self._count("header_timeout")
            self._raw.close()

    def _arm_body_timer(self, delay: float) -> None:
        self._disarm_body_timer()
        self._body_timer = self.loop.call_later(delay, self._check_body_rate, delay)

    def _disarm_body_timer(self) -> None:
        timer = getattr(self, "_body_timer", None)
        if timer is not None:
            timer.cancel()
            self._body_timer = None

    def _check_body_rate(self, since_last: float) -> None:
        self._body_timer = None
        if not self._in_body or self._raw.is_closing():
            return
        cycle = self.cycle
        if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
            self._body_credit += since_last  # the wait is the server's, not the client's
        allowed = self._body_start + self._body_credit + self.body_grace_s + self._body_bytes / self.body_min_rate
        if self.loop.time() >= allowed:
            self._count("body_too_slow")
            self._in_body = False
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True  # the app's receive() answers http.disconnect
                cycle.message_event.set()
            self._raw.close()
            return
        self._arm_body_timer(1.0)

    def _close_gracefully(self) -> None:
        if not self._in_body or self._discarding:
            if not self._discarding:
                self._raw.close()
            return
        # closing with the client's body unread makes the kernel send a reset, which can destroy the answer
        # before the client reads it: half-close, drop what still arrives, close when the client does
        self._discarding = True
        self._disarm_body_timer()
        if self._raw.can_write_eof():
            self._raw.write_eof()
        with contextlib.suppress(Exception):
            self._raw.resume_reading()  # flow control may have paused it: read (and drop) so the client can finish
        self.loop.call_later(self.linger_s, self._close_now)

    def _refuse_431(self) -> None:
        self._count("header_too_large")
        self._disarm_head_timer()
        msg = f"request header fields over {self.max_header_bytes:,} bytes"
        body = ('{"error":"%s","status":431}' % msg).encode()
        self._raw.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                        b"content-type: application/json\r\n"
                        b"content-length: " + str(len(body)).encode() + b"\r\n"
                        b"connection: close\r\n\r\n" + body)
        # Closing now, with the rest of the client's header unread, makes the kernel answer with a reset that
        # can destroy the 431 before the client reads it. Half-close instead, drop what still arrives, and
        # close when the client does or after a short grace.
        self._discarding = True
        self._in_head = False
        if self._raw.can_write_eof():
            self._raw.write_eof()
        self.loop.call_later(self.linger_s, self._close_now)

    def eof_received(self):
        if self._discarding:
            self._close_now()
            return False
        return super().eof_received()

    def _close_now(self) -> None:
        if not self._raw.is_closing():
            self._raw.close()

    def _count(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.errors.inc("", reason)


def guarded_protocol(header_timeout_s: float, max_header_bytes: int, max_sockets: int, metrics: Any,
                     body_grace_s: float = 10.0, body_min_rate: float = 1024.0,
                     max_body_bytes: int = 16 * 1024 * 1024):
    """A protocol class with these limits, for ``uvicorn.Config(http=...)``."""
    return type("EdgezooHttpProtocol", (GuardedHttpToolsProtocol,), {
        "header_timeout_s": header_timeout_s, "max_header_bytes": max_header_bytes,
        "max_sockets": max_sockets, "metrics": metrics, "body_grace_s": body_grace_s,
        "body_min_rate": body_min_rate, "max_body_bytes": max_body_bytes,
    })
