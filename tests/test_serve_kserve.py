"""`edgezoo serve` speaks KServe v2 as Triton does: tritonclient.http, unchanged, against the real server
(JSON and binary tensors, batched, concurrent requests micro-batched, errors as {"error": ...}); and the
hostile inputs of a public port: slow and huge headers, deep JSON, huge integers, a lying .npy header, pixel
budgets, all answered 4xx (or the socket closed) and counted in /metrics, while good requests stay correct.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] (edgezoo[test]) is not installed")
from tritonclient.utils import InferenceServerException  # noqa: E402

from test_serve import SIZE, Server, image_bytes, models, npy  # noqa: E402,F401  (models: the fixture)
from edgezoo.serve.metrics import parse_prometheus  # noqa: E402


@pytest.fixture(scope="module")
def served(models, tmp_path_factory):
    s = Server([str(models["tiny"]), str(models["double"]), "--max-batch", "8", "--max-wait-ms", "100",
                "--header-timeout", "1.5", "--max-header-kb", "8", "--max-request-mpixels", "1"],
               log=tmp_path_factory.mktemp("klog") / "server.log")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def session(models):
    import onnxruntime as ort

    return ort.InferenceSession(str(models["tiny"]), providers=["CPUExecutionProvider"])


def hostport(s) -> str:
    return s.url.split("://")[1]


def scrape(s) -> dict:
    import httpx

    return parse_prometheus(httpx.get(s.url + "/metrics", timeout=30).text)


# ---------------------------------------------------------------------------------------------- protocol


def test_tritonclient_health_metadata_and_infer(served, session):
    c = httpclient.InferenceServerClient(hostport(served))
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("tiny") and not c.is_model_ready("nope")
    meta = c.get_model_metadata("tiny")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, *SIZE]}]
    assert meta["outputs"][0]["name"] == "logits" and meta["outputs"][0]["shape"] == [-1, 10]
    x = np.random.default_rng(0).standard_normal((3, *SIZE)).astype(np.float32)
    want = session.run(None, {"input": x})[0]
    for binary_in in (False, True):
        for binary_out in (False, True):
            inp = httpclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary_in)
            out = httpclient.InferRequestedOutput("logits", binary_data=binary_out)
            r = c.infer("tiny", [inp], outputs=[out], request_id="r1")
            got = r.as_numpy("logits")
            assert got.shape == (3, 10) and got.dtype == np.float32
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
            assert r.get_response()["id"] == "r1"
    # version 1 is the only version
    inp = httpclient.InferInput("x", [2, 4], "FP32")
    inp.set_data_from_numpy(np.arange(8, dtype=np.float32).reshape(2, 4))
    r = c.infer("double", [inp], model_version="1")
    np.testing.assert_array_equal(r.as_numpy("y"), np.arange(8, dtype=np.float32).reshape(2, 4) * 2)
    c.close()


def test_tritonclient_concurrent_requests_are_micro_batched(served, session):
    before = scrape(served)
    xs = np.random.default_rng(1).standard_normal((8, 1, *SIZE)).astype(np.float32)
    barrier = threading.Barrier(8)

    def one(i):
        c = httpclient.InferenceServerClient(hostport(served))
        inp = httpclient.InferInput("input", [1, *SIZE], "FP32")
        inp.set_data_from_numpy(xs[i], binary_data=True)
        barrier.wait()
        try:
            return c.infer("tiny", [inp]).as_numpy("logits")
        finally:
            c.close()

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, range(8)))
    after = scrape(served)
    runs = after['edgezoo_batch_size_count{model="tiny"}'] - before.get('edgezoo_batch_size_count{model="tiny"}', 0)
    assert runs < 8, "concurrent KServe requests should share runs"
    for i in range(8):
        np.testing.assert_allclose(got[i], session.run(None, {"input": xs[i]})[0], rtol=0, atol=1e-5)


def test_kserve_errors_are_error_objects(served):
    import httpx

    c = httpclient.InferenceServerClient(hostport(served))
    inp = httpclient.InferInput("input", [1, 3, 8, 8], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(InferenceServerException, match="shape"):
        c.infer("tiny", [inp])
    with pytest.raises(InferenceServerException, match="no model named"):
        c.infer("nope", [inp])
    c.close()
    u = served.url + "/v2/models/double/infer"
    cases = [
        ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]}, None),
        ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}]}, None),
        ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                      "parameters": {"binary_data_size": 99}}]}, b""),
        ({"inputs": [{"name": "x", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}, None),
    ]
    for doc, binary in cases:
        head = json.dumps(doc).encode()
        headers = {"inference-header-content-length": str(len(head))} if binary is not None else {}
        r = httpx.post(u, content=head + (binary or b""), headers=headers, timeout=30)
        assert 400 <= r.status_code < 500 and isinstance(r.json()["error"], str), (doc, r.text)


# ---------------------------------------------------------------------------------------------- hostile


def _raw(s, data: bytes, read_timeout: float = 10.0) -> tuple[bytes, float]:
    """Send raw bytes; return what came back before the server closed (or the timeout), and when it closed."""
    host, port = hostport(s).rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=read_timeout)
    t0 = time.monotonic()
    got = b""
    try:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):  # the server stopped reading: read its answer
            pass
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    finally:
        sock.close()
    return got, time.monotonic() - t0


def test_slow_headers_are_cut_off_and_good_requests_still_answered(served):
    import httpx

    host, port = hostport(served).rsplit(":", 1)
    slow = []
    for _ in range(20):  # more sockets than there are threads: none of them may crowd out real requests
        sk = socket.create_connection((host, int(port)), timeout=10)
        sk.sendall(b"POST /v1/models/double/predict HTTP/1.1\r\nHost: x\r\nX-a: ")
        slow.append(sk)
    t0 = time.monotonic()
    with httpx.Client(base_url=served.url, timeout=30) as c:
        for _ in range(5):
            r = c.post("/v1/models/double/predict", json={"inputs": [[1, 2, 3, 4]]})
            assert r.status_code == 200 and r.json()["outputs"]["y"]["data"] == [[2, 4, 6, 8]]
    closed_after = []
    for sk in slow:
        for _ in range(40):  # bounded: one trickled byte every 0.1 s, 4 s at most
            try:
                sk.sendall(b"a")
                sk.settimeout(0.1)
                if sk.recv(10) == b"":
                    break
            except socket.timeout:
                continue
            except OSError:
                break
        closed_after.append(time.monotonic() - t0)
        sk.close()
    assert max(closed_after) < 4.0, f"slow sockets still open after {max(closed_after):.1f}s (header timeout 1.5s)"
    assert scrape(served)['edgezoo_request_errors_total{model="",reason="header_timeout"}'] >= 20


def test_huge_header_gets_431_and_connection_close(served):
    """8 MB of header: answered 431 once 8 kB (--max-header-kb) have come, readable by the client."""
    got, _ = _raw(served, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 << 20) + b"\r\n\r\n")
    head = got.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 431") and b"connection: close" in head
    assert json.loads(got.split(b"\r\n\r\n", 1)[1])["error"]
    assert scrape(served)['edgezoo_request_errors_total{model="",reason="header_too_large"}'] >= 1


def _npy_claiming(shape: tuple) -> bytes:
    head = "{'descr': '<f4', 'fortran_order': False, 'shape': %r, }" % (shape,)
    head = head + " " * (63 - (len(head) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head.encode() + b"\x00" * 64


HOSTILE = [
    ("deep json", {"content": b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                   "headers": {"content-type": "application/json"}}, 400),
    ("5000-digit integer", {"content": b'{"inputs": [[' + b"9" * 5000 + b', 1, 2, 3]]}',
                            "headers": {"content-type": "application/json"}}, 400),
    ("npy declaring 1e13 elements", {"content": _npy_claiming((10 ** 13,)),
                                     "headers": {"content-type": "application/x-npy"}}, 413),
    ("npy declaring more than it holds", {"content": _npy_claiming((1, 4000)),
                                          "headers": {"content-type": "application/x-npy"}}, 400),
]


def test_hostile_bodies_get_4xx_keep_alive_and_are_counted(served):
    import httpx

    before = scrape(served)
    with httpx.Client(base_url=served.url, timeout=30) as c:
        for what, kwargs, status in HOSTILE:
            r = c.post("/v1/models/double/predict", **kwargs)
            assert r.status_code == status, f"{what}: {r.status_code} {r.text[:300]}"
            assert r.json()["error"], what
            assert r.headers.get("connection", "").lower() != "close", what  # body was read: keep-alive holds
            # the same connection goes on answering correctly
            r = c.post("/v1/models/double/predict", json={"inputs": [[1, 2, 3, 4]]})
            assert r.status_code == 200 and r.json()["outputs"]["y"]["data"] == [[2, 4, 6, 8]]
        # per-request pixel budget: 2 x 800x800 = 1.28 Mpx > --max-request-mpixels 1, refused before decoding
        big = image_bytes("PNG", size=(800, 800))
        r = c.post("/v1/models/tiny/predict", files=[("file", ("a.png", big, "image/png")),
                                                     ("file", ("b.png", big, "image/png"))])
        assert r.status_code == 413 and "pixels" in r.json()["error"]
    after = scrape(served)
    key = 'edgezoo_request_errors_total{model="double",reason="bad_request"}'
    assert after[key] - before.get(key, 0) == 3
    key = 'edgezoo_request_errors_total{model="double",reason="too_large"}'
    assert after[key] - before.get(key, 0) == 1


def test_unknown_routes_and_methods_are_counted(served):
    import httpx

    before = scrape(served)
    assert httpx.get(served.url + "/nope", timeout=30).status_code == 404
    assert httpx.get(served.url + "/v1/models/tiny/predict", timeout=30).status_code == 405
    after = scrape(served)
    for reason in ("not_found", "method_not_allowed"):
        key = f'edgezoo_request_errors_total{{model="",reason="{reason}"}}'
        k2 = f'edgezoo_request_errors_total{{model="tiny",reason="{reason}"}}'
        assert after.get(key, 0) + after.get(k2, 0) > before.get(key, 0) + before.get(k2, 0), reason


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_bad_ports_are_refused(models, port):
    from conftest import run_edgezoo

    r = run_edgezoo("serve", str(models["double"]), "--port", port, block_torch=True, timeout=120)
    assert r.returncode != 0 and "65535" in r.stderr and "Traceback" not in r.stderr


def test_serve_runs_the_file_on_another_runtime(models):
    """`edgezoo serve --runtime openvino`: the model is loaded through the Runner interface (OpenVINO here),
    keeps the file's metadata, and answers like onnxruntime."""
    pytest.importorskip("openvino", reason="openvino (edgezoo[openvino]) is not installed")
    import onnxruntime as ort

    from edgezoo.serve.model import load_model

    m = load_model(models["tiny"], runtime="openvino")
    assert m.runtime == "openvino" and m.preprocessing is not None and m.labels[0] == "class_0"
    x = np.random.default_rng(2).standard_normal((2, *SIZE)).astype(np.float32)
    want = ort.InferenceSession(str(models["tiny"]), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(m.run({"input": x})[0], want, rtol=1e-4, atol=1e-4)
