"""The server under misuse (issue 22): refused bodies never read as the next request, pipelining, slow bodies
that cannot starve complete requests, KServe requests that must be 400s (not 500s), bounded answers, one-line
logs, and an image whose shape would make its preparation huge.
"""

from __future__ import annotations

import io
import json
import re
import socket
import time

import numpy as np
import pytest

pytest.importorskip("httpx", reason="httpx (edgezoo[test]) is not installed")
pytest.importorskip("starlette", reason="starlette (edgezoo[serve]) is not installed")

from PIL import Image  # noqa: E402

from test_serve import Server, models, npy  # noqa: E402,F401  (models: the fixture)
from edgezoo.serve.metrics import parse_prometheus  # noqa: E402

KEY = "k3y"
AUTH = f"Authorization: Bearer {KEY}\r\n".encode()


@pytest.fixture(scope="module")
def served(models, tmp_path_factory):
    s = Server([str(models["tiny"]), str(models["double"]), "--max-wait-ms", "1", "--header-timeout", "1.5",
                "--max-connections", "4", "--max-body-mb", "1", "--max-request-mpixels", "1"],
               env={"EDGEZOO_API_KEY": KEY}, log=tmp_path_factory.mktemp("rlog") / "server.log")
    try:
        yield s
    finally:
        s.stop()


def _connect(s, timeout: float = 20.0) -> socket.socket:
    host, port = s.url.split("://")[1].rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response (with Content-Length) from ``sock``; ``buf`` keeps what follows it."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response head: {bytes(buf[:200])!r}")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    n = int(headers.get("content-length", 0))
    while len(rest) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("connection closed mid-body")
        rest += chunk
    buf[:] = rest[n:]
    return status, headers, rest[:n]


def _post(path: str, body: bytes, ctype: str = "application/x-npy", auth: bool = True, extra: bytes = b"") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            .encode() + (AUTH if auth else b"") + extra + b"\r\n" + body)


GOOD = _post("/v1/models/double/predict", npy(np.arange(4, dtype=np.float32)[None]))


def _check_good(status, headers, body, scale: float = 1.0):
    assert status == 200, body[:300]
    assert json.loads(body)["outputs"]["y"]["data"] == [[0.0, 2.0 * scale, 4.0 * scale, 6.0 * scale]]


def _metrics(s) -> dict[str, float]:
    import httpx

    return parse_prometheus(httpx.get(s.url + "/metrics", headers={"authorization": f"Bearer {KEY}"},
                                      timeout=30).text)


# ---------------------------------------------------------------------------------------------- #5


@pytest.mark.parametrize("refused", ["unknown model", "no API key"])
def test_a_refused_requests_body_is_not_read_as_the_next_request(served, refused):
    big = npy(np.zeros((150_000,), np.float32))  # 600 kB, unread by the route that refuses it
    first = _post("/v1/models/nope/predict", big) if refused == "unknown model" else \
        _post("/v1/models/double/predict", big, auth=False)
    with _connect(served) as sock:
        sock.sendall(first)
        buf = bytearray()
        status, headers, _ = _read_response(sock, buf)
        assert status == (404 if refused == "unknown model" else 401)
        if headers.get("connection", "").lower() == "close":  # allowed: then the socket must really end
            return
        sock.sendall(GOOD)
        _check_good(*_read_response(sock, buf))


def test_pipelined_requests_are_each_answered(served):
    bodies = [npy(np.arange(4, dtype=np.float32)[None] * k) for k in (1, 2, 3)]
    with _connect(served) as sock:
        sock.sendall(b"".join(_post("/v1/models/double/predict", b) for b in bodies))
        buf = bytearray()
        for k in (1, 2, 3):
            _check_good(*_read_response(sock, buf), scale=k)


def test_a_refused_body_beyond_the_drain_limit_closes_the_connection_readably(served):
    """A body of unknown length (chunked) refused unread: the answer says Connection: close and arrives."""
    with _connect(served) as sock:
        head = b"POST /v1/models/nope/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + AUTH + b"\r\n"
        sock.sendall(head + b"10000\r\n" + b"\0" * 0x10000 + b"\r\n")
        status, headers, body = _read_response(sock, bytearray())
        assert status == 404 and headers.get("connection", "").lower() == "close"
        assert json.loads(body)["error"]


# ---------------------------------------------------------------------------------------------- #6


def test_slow_bodies_do_not_starve_complete_requests_and_are_cut(served):
    before = _metrics(served)
    slow = []
    for _ in range(12):  # three times --max-connections: each would hold a request slot while it trickles
        sk = _connect(served, timeout=10)
        sk.sendall(b"POST /v1/models/double/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-npy\r\n"
                   b"Content-Length: 100000\r\n" + AUTH + b"\r\n" + b"\x93")
        slow.append(sk)
    time.sleep(0.5)
    t0 = time.monotonic()
    try:
        with _connect(served) as sock:
            buf = bytearray()
            for _ in range(6):
                sock.sendall(GOOD)
                _check_good(*_read_response(sock, buf))
        open_ = list(slow)
        for _ in range(100):  # bounded: 10 s; one byte per socket every 0.1 s, far under the minimum rate
            for sk in list(open_):
                try:
                    sk.sendall(b"\0")
                    sk.settimeout(0.001)
                    if sk.recv(1000) == b"":
                        open_.remove(sk)
                except socket.timeout:
                    pass
                except OSError:
                    open_.remove(sk)
            if not open_:
                break
            time.sleep(0.1)
        assert not open_, f"{len(open_)} trickling bodies still open after {time.monotonic() - t0:.1f}s"
    finally:
        for sk in slow:
            sk.close()
    after = _metrics(served)
    key = 'edgezoo_request_errors_total{model="",reason="body_too_slow"}'
    assert after.get(key, 0) - before.get(key, 0) >= 12


# ---------------------------------------------------------------------------------------------- #2, #10, #11


def _infer(served, doc: dict, binary: bytes = b"", header_length: str | bytes | None = None):
    import httpx

    head = json.dumps(doc).encode()
    headers = {"authorization": f"Bearer {KEY}"}
    if binary or header_length is not None:
        headers["inference-header-content-length"] = header_length or str(len(head))
    return httpx.post(served.url + "/v2/models/double/infer", content=head + binary, headers=headers, timeout=30)


X = {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}


def test_kserve_outputs_are_bounded_by_the_models_outputs(served):
    r = _infer(served, {"inputs": [X], "outputs": [{"name": "y"}]})
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [2, 4, 6, 8]
    for outputs in ([{"name": "y"}] * 2, [{"name": "y"}] * 8000,
                    [{"name": "y", "parameters": {"binary_data": True}}] * 3):
        r = _infer(served, {"inputs": [X], "outputs": outputs})
        assert r.status_code == 400 and "output" in r.json()["error"], r.text[:300]


def test_kserve_hostile_shapes_and_header_lengths_are_400(served):
    cases = [
        {"inputs": [{**X, "shape": [1] * 65 + [4]}]},
        {"inputs": [{**X, "shape": [2 ** 70, 0], "data": []}]},
        {"inputs": [{"name": "x", "shape": [2 ** 70, 0], "datatype": "FP32",
                     "parameters": {"binary_data_size": 0}}]},
        {"inputs": [{**X, "shape": [2 ** 40, 2 ** 40]}]},
    ]
    for doc in cases:
        r = _infer(served, doc)
        assert r.status_code == 400, (doc["inputs"][0]["shape"][:3], r.status_code, r.text[:300])
    for raw in ("9" * 5000, "\u00b2", "12\u0663"):
        r = _infer(served, {"inputs": [X]}, header_length=raw.encode("utf-8"))
        assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"], r.text[:300]
    assert "Traceback" not in served.stderr(), served.stderr()[-3000:]


def test_kserve_datatype_must_match_the_input(served):
    raw = np.arange(4, dtype=np.float32).tobytes()
    for dt in ("INT32", "FP64", "UINT8"):
        n = {"INT32": 16, "FP64": 32, "UINT8": 4}[dt]
        doc = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": dt, "parameters": {"binary_data_size": n}}]}
        r = _infer(served, doc, (raw * 2)[:n])
        assert r.status_code == 400 and "FP32" in r.json()["error"], (dt, r.text[:300])


# ---------------------------------------------------------------------------------------------- #15


def test_a_client_hanging_up_mid_body_leaves_no_traceback(served):
    for _ in range(5):
        with _connect(served) as sock:
            sock.sendall(b"POST /v1/models/double/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-npy\r\n"
                         b"Content-Length: 5000\r\n" + AUTH + b"\r\n" + b"\x93NUMPY")
            time.sleep(0.05)
    with _connect(served) as sock:  # and the server answers on
        sock.sendall(GOOD)
        _check_good(*_read_response(sock, bytearray()))
    time.sleep(0.3)
    log = served.stderr()
    assert "Traceback" not in log and "Exception in ASGI" not in log, log[-3000:]


def test_server_errors_are_one_rate_limited_line(caplog):
    from edgezoo.serve.state import OneLineLog

    lines = OneLineLog(interval_s=60)
    with caplog.at_level("ERROR", logger="edgezoo.serve"):
        for i in range(100):
            lines.error(f"500 on POST /x: ValueError: {i}")
        lines.last -= 61  # a minute later
        lines.error("500 on POST /x: ValueError: last")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and all("\n" not in m for m in messages)
    assert "99 more" in messages[1]


# ---------------------------------------------------------------------------------------------- #1


def _peak_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))


def test_a_one_pixel_high_image_does_not_blow_up_memory(served):
    """1 x 60,000 pixels passes the pixel budget; scaling its short side to the crop must not make a
    60,000 x 37 x 3 intermediate per request (the preparation is bounded by what it produces)."""
    import httpx

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1, 60_000, 3), dtype=np.uint8)).save(buf, "PNG")
    before = _peak_rss_kb(served.proc.pid)
    with httpx.Client(base_url=served.url, timeout=60, headers={"authorization": f"Bearer {KEY}"}) as c:
        for _ in range(3):
            r = c.post("/v1/models/tiny/predict", content=buf.getvalue(), headers={"content-type": "image/png"})
            assert r.status_code == 200 and len(r.json()["predictions"][0]) == 5, r.text[:300]
    grown_mb = (_peak_rss_kb(served.proc.pid) - before) / 1024
    assert grown_mb < 100, f"peak RSS grew by {grown_mb:.0f} MB for a 1 x 60000 image"
