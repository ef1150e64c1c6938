"""`edgezoo serve` as a real server: a subprocess on a loopback port where importing torch fails.

Health, model list, an image prediction equal to onnxruntime called directly, tensors (JSON and .npy),
metrics, batching, every bad input answered with its 4xx while good requests beside them stay correct,
the body limit, the API key and graceful shutdown.
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx", reason="httpx (edgezoo[test]) is not installed")
pytest.importorskip("starlette", reason="starlette (edgezoo[serve]) is not installed")
pytest.importorskip("uvicorn", reason="uvicorn (edgezoo[serve]) is not installed")

from PIL import Image  # noqa: E402

from conftest import ROOT  # noqa: E402
from edgezoo.serve.metrics import parse_prometheus  # noqa: E402

LABELS = [f"class_{i}" for i in range(10)]
SIZE = (3, 32, 32)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A small conv net exported by edgezoo (metadata with labels), and a bare ONNX graph without metadata."""
    torch = pytest.importorskip("torch", reason="PyTorch is needed to make the test model")

    from edgezoo.export.onnx import export_onnx
    from edgezoo.onnx_meta import ModelMetadata

    d = tmp_path_factory.mktemp("serve_models")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10))
    meta = ModelMetadata(model="tiny", input_size=SIZE, mean=MEAN, std=STD, num_classes=10, labels=LABELS)
    export_onnx(net, d / "tiny.onnx", SIZE, metadata=meta)

    from onnx_builders import doubler

    doubler(d / "double.onnx")
    return {"tiny": d / "tiny.onnx", "double": d / "double.onnx"}


class Server:
    """`python -m edgezoo serve ...` with torch blocked, on a port it picks itself (--port 0)."""

    def __init__(self, args: list[str], env: dict | None = None, log: Path | None = None):
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "no_torch"), str(ROOT),
                                                  full_env.get("PYTHONPATH", "")])
        self.log = open(log, "w+") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-m", "edgezoo", "serve", *args, "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=self.log, env=full_env, text=True)
        self.url = self._wait_for_url(timeout=90)

    def _wait_for_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    break
                seen.append(line)
                if "listening on " in line:
                    return line.split("listening on ")[1].split()[0]
            elif self.proc.poll() is not None:
                break
        self.stop()
        raise AssertionError(f"server did not start: {''.join(seen)}{self.stderr()}")

    def stderr(self) -> str:
        if self.log is subprocess.DEVNULL:
            return ""
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    # a long wait for companions makes the batching test's concurrent requests land in one run
    s = Server([str(models["tiny"]), str(models["double"]), "--max-batch", "8", "--max-wait-ms", "150"],
               log=tmp_path_factory.mktemp("log") / "server.log")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def session(models):
    import onnxruntime as ort

    return ort.InferenceSession(str(models["tiny"]), providers=["CPUExecutionProvider"])


def npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def image_bytes(fmt: str = "PNG", size=(64, 48), seed: int = 0) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt)
    return buf.getvalue()


def reference_preprocess(data: bytes) -> np.ndarray:
    """What the server promises, written out independently: scale so a 32x32 crop is 87.5% of the image's
    tighter side (bilinear), centre-crop, /255, (x - mean) / std, CHW."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    scale = max(32 / img.height, 32 / img.width) / 0.875
    w, h = round(img.width * scale), round(img.height * scale)
    img = img.resize((w, h), Image.BILINEAR)
    left, top = (w - 32) // 2, (h - 32) // 2
    x = np.asarray(img.crop((left, top, left + 32, top + 32)), dtype=np.float32) / 255.0
    x = (x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def metrics(client) -> dict[str, float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return parse_prometheus(r.text)


# ---------------------------------------------------------------------------------------------- happy path


def test_health_and_models(client):
    assert client.get("/health").json() == {"status": "ok", "models": ["double", "tiny"]}
    listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    tiny = listed["tiny"]
    assert tiny["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["batch", 3, 32, 32]}]
    assert tiny["outputs"][0]["shape"] == ["batch", 10]
    assert tiny["precision"] == "fp32" and tiny["labels"] == LABELS and tiny["batching"] == "dynamic"
    assert tiny["preprocessing"]["input_size"] == [3, 32, 32] and tiny["preprocessing"]["mean"] == list(MEAN)
    assert listed["double"]["preprocessing"] is None and listed["double"]["labels"] is None


def test_image_prediction_matches_onnxruntime(client, session):
    data = image_bytes("PNG", size=(64, 48))
    expected = session.run(None, {"input": reference_preprocess(data)})[0][0]
    for kwargs in ({"content": data, "headers": {"content-type": "image/png"}},
                   {"files": {"file": ("cat.png", data, "image/png")}}):
        r = client.post("/v1/models/tiny/predict", params={"top_k": 3}, **kwargs)
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert len(preds) == 1 and len(preds[0]) == 3
        order = np.argsort(-expected, kind="stable")[:3]
        assert [p["index"] for p in preds[0]] == order.tolist()
        assert [p["label"] for p in preds[0]] == [LABELS[i] for i in order]
        np.testing.assert_allclose([p["logit"] for p in preds[0]], expected[order], rtol=0, atol=1e-5)
        probs = np.exp(expected - expected.max()) / np.exp(expected - expected.max()).sum()
        np.testing.assert_allclose([p["score"] for p in preds[0]], probs[order], rtol=1e-5)
    # a JPEG goes through the same path (Pillow decodes it; compared against the same decode)
    jpeg = image_bytes("JPEG", size=(40, 40), seed=1)
    r = client.post("/v1/models/tiny/predict", content=jpeg, headers={"content-type": "image/jpeg"})
    assert r.status_code == 200
    want = session.run(None, {"input": reference_preprocess(jpeg)})[0][0]
    assert r.json()["predictions"][0][0]["index"] == int(np.argmax(want))


def test_tensor_predictions_json_and_npy(client, session):
    x = np.random.default_rng(3).standard_normal((2, *SIZE)).astype(np.float32)
    want = session.run(None, {"input": x})[0]
    r = client.post("/v1/models/tiny/predict", json={"inputs": x.tolist()})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"]["logits"]
    assert out["shape"] == [2, 10] and out["dtype"] == "float32"
    np.testing.assert_allclose(np.array(out["data"], np.float32), want, rtol=0, atol=1e-6)
    # .npy in, .npy out; one sample without a batch dimension comes back without one
    r = client.post("/v1/models/tiny/predict", content=npy(x[0]),
                    headers={"content-type": "application/x-npy", "accept": "application/x-npy"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-npy"
    got = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert got.shape == (10,)
    np.testing.assert_allclose(got, want[0], rtol=0, atol=1e-6)
    # a model with no metadata: raw tensors in and out
    r = client.post("/v1/models/double/predict", json={"inputs": [[1, 2, 3, 4]]})
    assert r.status_code == 200 and r.json()["outputs"]["y"]["data"] == [[2.0, 4.0, 6.0, 8.0]]


def test_concurrent_requests_are_batched_with_identical_answers(client, session):
    before = metrics(client)
    rows = before.get('edgezoo_batch_size_count{model="tiny"}', 0)
    xs = np.random.default_rng(4).standard_normal((8, 1, *SIZE)).astype(np.float32)
    barrier = threading.Barrier(8)

    def send(i):
        barrier.wait()
        return client.post("/v1/models/tiny/predict", content=npy(xs[i]),
                           headers={"content-type": "application/x-npy"})

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8)))
    after = metrics(client)
    assert all(r.status_code == 200 for r in answers)
    runs = after['edgezoo_batch_size_count{model="tiny"}'] - rows
    summed = after['edgezoo_batch_size_sum{model="tiny"}'] - before.get('edgezoo_batch_size_sum{model="tiny"}', 0)
    assert summed == 8
    assert runs < 8, "eight concurrent requests should share onnxruntime runs"
    for i, r in enumerate(answers):
        alone = session.run(None, {"input": xs[i]})[0]
        np.testing.assert_allclose(np.array(r.json()["outputs"]["logits"]["data"], np.float32), alone,
                                   rtol=0, atol=1e-6)


def test_metrics_count_requests_errors_and_latency(client):
    before = metrics(client)
    client.post("/v1/models/double/predict", json={"inputs": [[1, 2, 3, 4]]})
    client.post("/v1/models/double/predict", content=b"hello", headers={"content-type": "text/plain"})
    m = metrics(client)
    key = 'edgezoo_requests_total{model="double",route="predict",code="200"}'
    assert m[key] == before.get(key, 0) + 1
    err = 'edgezoo_request_errors_total{model="double",reason="unsupported_media_type"}'
    assert m[err] == before.get(err, 0) + 1
    assert m['edgezoo_request_duration_seconds_count{model="double"}'] >= 2
    assert 'edgezoo_queue_depth{model="tiny"}' in m


# ---------------------------------------------------------------------------------------------- bad input


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge image (a decompression bomb's first bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


BAD_REQUESTS = [
    # (description, model, request kwargs, status)
    ("text body", "tiny", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415),
    ("corrupt jpeg", "tiny", {"content": b"\xff\xd8\xff" + b"\x00" * 200, "headers": {"content-type": "image/jpeg"}},
     400),
    ("truncated png", "tiny", {"content": image_bytes("PNG")[:60], "headers": {"content-type": "image/png"}}, 400),
    ("gif", "tiny", {"content": image_bytes("GIF"), "headers": {"content-type": "image/gif"}}, 415),
    ("bomb", "tiny", {"content": _png_header_only(30000, 30000), "headers": {"content-type": "image/png"}}, 413),
    ("image, no metadata", "double", {"content": image_bytes("PNG"), "headers": {"content-type": "image/png"}}, 422),
    ("bad json", "tiny", {"content": b'{"inputs": [1,', "headers": {"content-type": "application/json"}}, 400),
    ("json without inputs", "tiny", {"json": {"data": [1]}}, 400),
    ("wrong shape", "tiny", {"json": {"inputs": [[1.0, 2.0]]}}, 422),
    ("ragged", "double", {"json": {"inputs": [[1, 2, 3, 4], [1]]}}, 422),
    ("strings", "double", {"json": {"inputs": [["a", "b", "c", "d"]]}}, 422),
    ("nan", "double", {"content": npy(np.array([[1, np.nan, 3, 4]], np.float32)),
                       "headers": {"content-type": "application/x-npy"}}, 422),
    ("complex dtype", "double", {"content": npy(np.ones((1, 4), np.complex64)),
                                 "headers": {"content-type": "application/x-npy"}}, 422),
    ("corrupt npy", "double", {"content": b"\x93NUMPY\x01\x00garbage", "headers": {"content-type": "application/x-npy"}},
     400),
    ("empty body", "double", {"content": b"", "headers": {"content-type": "application/x-npy"}}, 400),
    ("multipart, no file", "tiny", {"files": {"note": (None, b"x")}}, 400),
    ("unknown model", "nope", {"json": {"inputs": [[1, 2, 3, 4]]}}, 404),
    ("bad top_k", "tiny", {"content": image_bytes("PNG"), "headers": {"content-type": "image/png"},
                           "params": {"top_k": "0"}}, 400),
]


def test_bad_inputs_get_their_status_while_good_requests_stay_correct(client, session):
    x = np.random.default_rng(5).standard_normal((1, *SIZE)).astype(np.float32)
    want = session.run(None, {"input": x})[0]
    stop = threading.Event()
    good: list[tuple[int, np.ndarray | None]] = []

    def good_stream():
        with httpx.Client(base_url=client.base_url, timeout=60) as c:
            for _ in range(200):  # bounded: stops by itself even if the main thread never sets `stop`
                if stop.is_set():
                    break
                r = c.post("/v1/models/tiny/predict", content=npy(x), headers={"content-type": "application/x-npy"})
                data = np.array(r.json()["outputs"]["logits"]["data"], np.float32) if r.status_code == 200 else None
                good.append((r.status_code, data))

    t = threading.Thread(target=good_stream)
    t.start()
    try:
        for what, model, kwargs, status in BAD_REQUESTS:
            r = client.post(f"/v1/models/{model}/predict", **kwargs)
            assert r.status_code == status, f"{what}: {r.status_code} {r.text}"
            assert r.json()["error"], what
    finally:
        stop.set()
        t.join(120)
    assert good, "the good stream sent nothing"
    for code, data in good:
        assert code == 200
        np.testing.assert_allclose(data, want, rtol=0, atol=1e-6)
    assert client.get("/health").json()["status"] == "ok"


# ---------------------------------------------------------------------------------------------- limits, key, shutdown


def test_body_limit_api_key_and_graceful_shutdown(models, tmp_path):
    key = "s3cret-key"
    s = Server([str(models["double"]), "--max-body-mb", "0.01", "--max-wait-ms", "1500", "--max-batch", "64"],
               env={"EDGEZOO_API_KEY": key}, log=tmp_path / "server.log")
    try:
        auth = {"authorization": f"Bearer {key}"}
        with httpx.Client(base_url=s.url, timeout=60) as c:
            assert c.get("/health").status_code == 200  # open: load balancers probe it
            assert c.get("/v1/models").status_code == 401
            assert c.get("/metrics", headers={"authorization": "Bearer wrong"}).status_code == 401
            assert c.post("/v1/models/double/predict", json={"inputs": [[1, 2, 3, 4]]}).status_code == 401
            assert c.get("/v1/models", headers={"x-api-key": key}).status_code == 200
            big = np.zeros((1000, 4), np.float32)  # 16 kB > 0.01 MB
            r = c.post("/v1/models/double/predict", content=npy(big),
                       headers={**auth, "content-type": "application/x-npy"})
            assert r.status_code == 413

            # Graceful shutdown: four requests wait in the batcher (1.5 s for companions); SIGTERM arrives
            # while they are queued; each still gets its answer, and the process exits cleanly.
            xs = [np.full((1, 4), i, np.float32) for i in range(4)]
            with ThreadPoolExecutor(4) as pool:
                futures = [pool.submit(_post_npy, s.url, x, auth) for x in xs]
                for _ in range(600):  # bounded poll until all four are queued
                    depth = parse_prometheus(c.get("/metrics", headers=auth).text).get(
                        'edgezoo_queue_depth{model="double"}', 0)
                    if depth == 4 or all(f.done() for f in futures):
                        break
                    time.sleep(0.01)
                assert depth == 4, "requests did not reach the queue"
                s.proc.send_signal(signal.SIGTERM)
                answers = [f.result(timeout=60) for f in futures]
        for i, (code, body) in enumerate(answers):
            assert code == 200, body
            assert json.loads(body)["outputs"]["y"]["data"] == [[2.0 * i] * 4]
        # uvicorn re-raises the SIGTERM it caught once shutdown is complete (the Unix convention), so the
        # exit status is "terminated by SIGTERM", and nothing went wrong on the way
        assert s.proc.wait(60) in (0, -signal.SIGTERM)
        assert "Traceback" not in s.stderr() and "ERROR" not in s.stderr(), s.stderr()
    finally:
        s.stop()


def _post_npy(url: str, x: np.ndarray, headers: dict) -> tuple[int, str]:
    with httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/v1/models/double/predict", content=npy(x),
                   headers={**headers, "content-type": "application/x-npy"})
        return r.status_code, r.text


def test_startup_errors_are_one_line(tmp_path, models):
    from conftest import run_edgezoo

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    r = run_edgezoo("serve", str(bad), "--port", "0", block_torch=True, timeout=120)
    assert r.returncode != 0 and "cannot load" in r.stderr and "Traceback" not in r.stderr
    r = run_edgezoo("serve", str(tmp_path / "missing.onnx"), block_torch=True, timeout=120)
    assert r.returncode != 0 and "not found" in r.stderr and "Traceback" not in r.stderr


def test_listening_socket_is_tcp_so_responses_are_not_delayed():
    """asyncio sets TCP_NODELAY on accepted sockets only when the listener's proto is IPPROTO_TCP; with
    proto 0 Nagle's algorithm held every response ~40 ms behind a delayed ACK."""
    import socket

    from edgezoo.serve.server import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
