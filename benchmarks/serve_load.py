"""Load test for `edgezoo serve` on loopback, beside onnxruntime called directly on the same file.

    python benchmarks/serve_load.py [--model mobilenet_v3_small | --onnx model.int8.onnx] [--seconds 6]
                                    [--soak 10000] [--pin auto|off]

What it does (every loop is bounded in requests and in time, and only 127.0.0.1 is contacted):
1. exports the registry model (random init; speed does not depend on the weights) with its metadata;
2. onnxruntime directly: images/s at batch 1, 4, 8, 16 (default session options, and the server's);
3. `edgezoo serve` in a subprocess, batching on, then off: a keep-alive HTTP/1.1 load generator at
   concurrency 1, 4, 16, 64 posts one (1, 3, H, W) float32 .npy per request and takes .npy back;
   throughput, p50/p99 latency, errors, server RSS before/after, rows per onnxruntime run (from /metrics);
4. a soak of 10,000 requests at concurrency 16 with batching, RSS sampled every 1,000;
5. `wrk` (a load generator in C, with a Lua script posting the same .npy) at concurrency 16 with batching, in
   rounds paired with onnxruntime directly at the batch size the server ran (skipped, and said, without wrk);
6. the 300-socket slow-header flood (a header byte per second on each), then the 300-socket slow-body flood
   (complete heads, a body byte per second), each beside a stream of good requests: every good answer checked
   against onnxruntime, and when the server closed each flood socket;
7. hostile inputs (deep JSON, a 5000-digit integer, a .npy header declaring 1e13 elements, an 8 MB header,
   64 6000x6000 PNGs in one upload, a 16 MB JSON body) beside a stream of good requests.
Writes benchmarks/results/serve_load.json and serve_load.md.

Pinning (``--pin auto``, where the machine has 2 or more cores): the server, and onnxruntime when it is
called directly, run on every core but the last (``taskset``/``sched_setaffinity``, with as many onnxruntime
threads as cores); wrk and this script's own load generator run on the last core, so the client's CPU time is
not taken from the server and the ratio compares like with like. The server's resident memory is sampled every
0.25 s for as long as it runs (``rss_mb`` in the results: first, last, max, and the series).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
HOST = "127.0.0.1"


# ---------------------------------------------------------------------------------------------- model + direct


def export_model(name: str, folder: Path) -> Path:
    from edgezoo.export.onnx import export_onnx
    from edgezoo.models.registry import create_model, get_spec
    from edgezoo.onnx_meta import ModelMetadata

    spec = get_spec(name)
    path = folder / f"{spec.name}.onnx"
    meta = ModelMetadata(model=spec.name, input_size=spec.input_size, mean=spec.mean, std=spec.std,
                         num_classes=spec.num_classes)
    export_onnx(create_model(spec.name), path, spec.input_size, metadata=meta)
    return path


class Pinning:
    """Which cores the server (and onnxruntime called directly) and the load generators run on."""

    server: list[int] | None = None
    client: list[int] | None = None

    @classmethod
    def choose(cls, mode: str) -> None:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if mode == "auto" and len(cpus) >= 2:
            cls.server, cls.client = cpus[:-1], cpus[-1:]

    @classmethod
    def threads(cls) -> int | None:
        return len(cls.server) if cls.server else None

    @classmethod
    def describe(cls) -> str:
        if not cls.server:
            return "not pinned: server, onnxruntime and load generators share every core"
        return (f"server and onnxruntime directly on cores {cls.server} ({len(cls.server)} onnxruntime threads), "
                f"wrk and the Python load generator on core {cls.client}")


@contextlib.contextmanager
def pinned(cpus: list[int] | None):
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def direct_throughput(path: Path, batches: list[int], seconds: float, server_options: bool) -> dict[int, float]:
    """Images/s of session.run at each batch: median of 5 timed slices after a warm-up (on the server's cores)."""
    with pinned(Pinning.server):
        return _direct_throughput(path, batches, seconds, server_options)


def _direct_throughput(path: Path, batches: list[int], seconds: float, server_options: bool) -> dict[int, float]:
    import onnxruntime as ort

    from edgezoo.serve.model import session_options

    opts = session_options() if server_options else ort.SessionOptions()
    if Pinning.threads():
        opts.intra_op_num_threads = Pinning.threads()
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name, shape = sess.get_inputs()[0].name, sess.get_inputs()[0].shape
    out = {}
    for b in batches:
        x = np.random.default_rng(0).standard_normal((b, *shape[1:]), dtype=np.float32)
        sess.run(None, {name: x})
        rates = []
        for _ in range(5):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds / 5 or n == 0:
                sess.run(None, {name: x})
                n += b
            rates.append(n / (time.perf_counter() - t0))
        out[b] = statistics.median(rates)
    return out


# ---------------------------------------------------------------------------------------------- server


class ServerProcess:
    def __init__(self, model: Path, extra: list[str]):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        threads = ["--threads", str(Pinning.threads())] if Pinning.threads() else []
        cpus = Pinning.server
        self.proc = subprocess.Popen([sys.executable, "-m", "edgezoo", "serve", str(model), "--port", "0", *threads,
                                      *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                                     preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if select.select([self.proc.stdout], [], [], 0.5)[0]:
                line = self.proc.stdout.readline()
                if "listening on " in line:
                    self.port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
                    self.name = json.loads(asyncio.run(http_get(self.port, "/health")))["models"][0]
                    self.rss = RssSampler(self.proc.pid)
                    self.rss.start()
                    return
                if not line:
                    break
        self.stop()
        raise RuntimeError("server did not start")

    def rss_mb(self) -> float:
        return read_rss_mb(self.proc.pid)

    def stop(self) -> None:
        if getattr(self, "rss", None) is not None:
            self.rss.stop()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def read_rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class RssSampler(threading.Thread):
    """The server's resident memory every ``every_s`` while it runs: (seconds since start, MB)."""

    def __init__(self, pid: int, every_s: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, float]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self._stop_event.wait(self.every_s):
            mb = read_rss_mb(self.pid)
            if mb == mb:  # not NaN: the process is there
                self.samples.append((round(time.monotonic() - t0, 2), round(mb, 1)))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)

    def summary(self) -> dict:
        mbs = [mb for _, mb in self.samples]
        if not mbs:
            return {}
        step = max(1, len(self.samples) // 400)  # at most ~400 points in the results
        return {"first": mbs[0], "last": mbs[-1], "max": max(mbs), "min": min(mbs), "samples": len(mbs),
                "every_s": self.every_s, "series": self.samples[::step]}


async def http_get(port: int, path: str) -> str:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data.split(b"\r\n\r\n", 1)[1].decode()


def batch_stats(port: int, model: str) -> tuple[float, float]:
    from edgezoo.serve.metrics import parse_prometheus

    m = parse_prometheus(asyncio.run(http_get(port, "/metrics")))
    return m.get(f'edgezoo_batch_size_sum{{model="{model}"}}', 0.0), m.get(f'edgezoo_batch_size_count{{model="{model}"}}', 0.0)


# ---------------------------------------------------------------------------------------------- load generator


async def _read_response(reader) -> tuple[int, bool, bytes]:
    """One HTTP/1.1 response off a keep-alive stream: (status code, whether the server closes, body)."""
    status = await reader.readline()
    length, close = 0, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        if k.lower() == "content-length":
            length = int(v)
        elif k.lower() == "connection" and v.strip().lower() == "close":
            close = True
    body = await reader.readexactly(length)
    return (int(status.split()[1]) if status else 0), close, body


async def _one_connection(port: int, request: bytes, state: dict, latencies: list, codes: dict) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while state["sent"] < state["max_requests"] and time.monotonic() < state["deadline"]:
            state["sent"] += 1
            t0 = time.perf_counter()
            writer.write(request)
            await writer.drain()
            code, close, _ = await _read_response(reader)
            latencies.append(time.perf_counter() - t0)
            codes[code] = codes.get(code, 0) + 1
            if close or code == 0:  # code 0: the server closed before a status line
                writer.close()
                reader, writer = await asyncio.open_connection(HOST, port)
    except (ConnectionError, asyncio.IncompleteReadError):
        codes[-1] = codes.get(-1, 0) + 1
    finally:
        writer.close()


async def _load(port: int, request: bytes, concurrency: int, max_requests: int, max_seconds: float) -> dict:
    state = {"sent": 0, "max_requests": max_requests, "deadline": time.monotonic() + max_seconds}
    latencies: list[float] = []
    codes: dict[int, int] = {}
    t0 = time.perf_counter()
    await asyncio.gather(*[_one_connection(port, request, state, latencies, codes) for _ in range(concurrency)])
    wall = time.perf_counter() - t0
    ok = codes.get(200, 0)
    lat = np.array(latencies) * 1000
    return {"requests": len(latencies), "ok": ok, "errors": sum(v for k, v in codes.items() if k != 200),
            "codes": {str(k): v for k, v in sorted(codes.items())}, "seconds": wall,
            "throughput": ok / wall, "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None}


def make_request(model: str, x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    body = buf.getvalue()
    head = (f"POST /v1/models/{model}/predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/x-npy\r\n"
            f"Accept: application/x-npy\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def run_level(server: ServerProcess, name: str, request: bytes, concurrency: int, seconds: float,
              max_requests: int) -> dict:
    asyncio.run(_load(server.port, request, concurrency, max(concurrency * 4, 20), 2.0))  # warm-up
    rows0, runs0 = batch_stats(server.port, name)
    res = asyncio.run(_load(server.port, request, concurrency, max_requests, seconds))
    rows1, runs1 = batch_stats(server.port, name)
    res["mean_batch"] = (rows1 - rows0) / (runs1 - runs0) if runs1 > runs0 else None
    res["concurrency"] = concurrency
    return res


# ---------------------------------------------------------------------------------------------- wrk

WRK_LUA = r"""
wrk.method = "POST"
local f = assert(io.open(os.getenv("EDGEZOO_NPY"), "rb"))
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "application/x-npy"
wrk.headers["Accept"] = "application/x-npy"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("EDGEZOO %d %d %d %d %d %d %d %f %f\n", summary.requests, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(port: int, name: str, x: np.ndarray, concurrency: int, seconds: float, folder: Path) -> dict | None:
    import shutil

    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    body = folder / "x.npy"
    np.save(body, x, allow_pickle=False)
    script = folder / "npy.lua"
    script.write_text(WRK_LUA)
    # -t1: one client thread (the client's CPU is taken from the server's 2 cores); a fixed duration
    pin = ["taskset", "-c", ",".join(map(str, Pinning.client))] if Pinning.client and shutil.which("taskset") else []
    cmd = [*pin, wrk, "-t1", f"-c{concurrency}", f"-d{max(1, int(seconds))}s", "--latency", "-s", str(script),
           f"http://{HOST}:{port}/v1/models/{name}/predict"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60,
                         env={**os.environ, "EDGEZOO_NPY": str(body)}).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("EDGEZOO "))
    req, dur_us, c_err, r_err, w_err, s_err, t_err, p50, p99 = line.split()[1:]
    errors = sum(int(v) for v in (c_err, r_err, w_err, s_err, t_err))
    return {"requests": int(req), "seconds": int(dur_us) / 1e6, "throughput": (int(req) - errors) / (int(dur_us) / 1e6),
            "errors": errors, "p50_ms": float(p50) / 1000, "p99_ms": float(p99) / 1000, "concurrency": concurrency}


def run_wrk_paired(server: ServerProcess, name: str, path: Path, x: np.ndarray, args, folder: Path) -> dict | None:
    rounds = []
    for _ in range(args.paired_rounds):
        rows0, runs0 = batch_stats(server.port, name)
        r = run_wrk(server.port, name, x, 16, args.seconds, folder)
        if r is None:
            return None
        rows1, runs1 = batch_stats(server.port, name)
        r["mean_batch"] = (rows1 - rows0) / (runs1 - runs0) if runs1 > runs0 else None
        b = max(1, round(r["mean_batch"] or 1))
        d = direct_throughput(path, sorted({b, args.max_batch}), 3.0, server_options=True)
        rounds.append({"server": r, "direct_batch": b, "direct": d, "ratio": r["throughput"] / d[b],
                       "ratio_max_batch": r["throughput"] / d[args.max_batch]})
    return {"rounds": rounds, "ratio_median": statistics.median(x["ratio"] for x in rounds),
            "ratio_max_batch_median": statistics.median(x["ratio_max_batch"] for x in rounds)}


# ---------------------------------------------------------------------------------------------- attacks


async def _good_stream(port: int, request: bytes, want: np.ndarray, stop: asyncio.Event, out: dict,
                       max_requests: int = 5000) -> None:
    """Sequential keep-alive requests until ``stop`` (or max_requests): status and answer of each checked."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        for _ in range(max_requests):
            if stop.is_set():
                break
            t0 = time.perf_counter()
            writer.write(request)
            await writer.drain()
            code, close, body = await _read_response(reader)
            out["latency_ms"].append((time.perf_counter() - t0) * 1000)
            out["codes"][code] = out["codes"].get(code, 0) + 1
            if code == 200:
                got = np.load(io.BytesIO(body), allow_pickle=False)
                out["correct" if np.allclose(got, want, rtol=0, atol=1e-4) else "wrong"] += 1
            if close or code == 0:  # code 0: the server closed before a status line
                writer.close()
                reader, writer = await asyncio.open_connection(HOST, port)
    except (ConnectionError, asyncio.IncompleteReadError) as e:
        out["codes"][type(e).__name__] = out["codes"].get(type(e).__name__, 0) + 1
    finally:
        writer.close()


def _new_stream_result() -> dict:
    return {"codes": {}, "correct": 0, "wrong": 0, "latency_ms": []}


def _summarise_stream(out: dict) -> dict:
    lat = np.array(out.pop("latency_ms")) if out["latency_ms"] else np.array([np.nan])
    out["codes"] = {str(k): v for k, v in out["codes"].items()}
    out["p50_ms"], out["max_ms"] = float(np.nanmedian(lat)), float(np.nanmax(lat))
    out["requests"] = sum(out["codes"].values())
    return out


async def _slow_socket(port: int, closed_after: list, max_seconds: float, name: str | None = None) -> None:
    """A head trickled a byte a second; with ``name``, a complete head for that model's predict route and then
    its body (declared 100 kB) trickled a byte a second."""
    t0 = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        closed_after.append(("refused", 0.0))
        return
    if name is None:
        head = f"POST /v1/models/x/predict HTTP/1.1\r\nHost: {HOST}\r\nX-Slow: ".encode()
    else:
        writer.write(f"POST /v1/models/{name}/predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: "
                     f"application/x-npy\r\nContent-Length: 100000\r\n\r\n".encode())
        head = b""
    i = 0
    try:
        while time.monotonic() - t0 < max_seconds:  # bounded: gives up after max_seconds
            writer.write(head[i:i + 1] if i < len(head) else b"a")
            i += 1
            await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(100), 1.0)
                if data == b"":
                    closed_after.append(("closed", time.monotonic() - t0))
                    return
            except asyncio.TimeoutError:
                pass
        closed_after.append(("still open", time.monotonic() - t0))
    except (ConnectionError, OSError):
        closed_after.append(("closed", time.monotonic() - t0))
    finally:
        writer.close()


def run_flood(port: int, request: bytes, want: np.ndarray, sockets: int = 300, max_seconds: float = 25.0,
              body_of: str | None = None) -> dict:
    """``sockets`` slow clients beside 2 connections of good requests: slow heads, or (``body_of`` a model
    name) complete heads with slow bodies."""
    async def go():
        stop = asyncio.Event()
        good = _new_stream_result()
        closed: list = []
        stream = asyncio.ensure_future(asyncio.gather(*[_good_stream(port, request, want, stop, good)
                                                        for _ in range(2)]))
        await asyncio.gather(*[_slow_socket(port, closed, max_seconds, body_of) for _ in range(sockets)])
        stop.set()
        await stream
        return good, closed

    good, closed = asyncio.run(go())
    times = [t for how, t in closed if how == "closed"]
    return {"sockets": sockets, "good": _summarise_stream(good),
            "closed_by_server": len(times), "still_open": sum(1 for how, _ in closed if how == "still open"),
            "refused": sum(1 for how, _ in closed if how == "refused"),
            "closed_after_s_max": max(times) if times else None,
            "closed_after_s_median": statistics.median(times) if times else None}


def _hostile_requests(name: str) -> list[tuple[str, bytes]]:
    from PIL import Image

    def post(ctype: str, body: bytes, extra: str = "") -> bytes:
        return (f"POST /v1/models/{name}/predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: {ctype}\r\n{extra}"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    head = "{'descr': '<f4', 'fortran_order': False, 'shape': (10000000000000,), }"
    head += " " * (63 - (len(head) + 10) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head.encode() + b"\x00" * 64
    buf = io.BytesIO()
    Image.new("RGB", (6000, 6000)).save(buf, "PNG")
    png = buf.getvalue()
    boundary = "edgezooboundary"
    parts = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{i}.png\"\r\n"
                     f"Content-Type: image/png\r\n\r\n".encode() + png + b"\r\n" for i in range(64))
    parts += f"--{boundary}--\r\n".encode()
    big_json = b'{"inputs": [' + b",".join([b"0.5"] * 4_000_000) + b"]}"
    return [
        ("deep JSON (100,000 levels)", post("application/json", b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")),
        ("5000-digit integer", post("application/json", b'{"inputs": [' + b"9" * 5000 + b"]}")),
        (".npy header declaring 1e13 elements", post("application/x-npy", npy)),
        ("8 MB header", f"GET /health HTTP/1.1\r\nHost: {HOST}\r\nX-Big: ".encode() + b"a" * (8 << 20) + b"\r\n\r\n"),
        (f"64 6000x6000 PNGs ({len(parts) / 1e6:.1f} MB)", post(f"multipart/form-data; boundary={boundary}", parts)),
        (f"{len(big_json) / 1e6:.0f} MB JSON body", post("application/json", big_json)),
    ]


async def _one_raw(port: int, data: bytes, timeout: float = 60) -> tuple[str, float, bool]:
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(data)
        try:
            await asyncio.wait_for(writer.drain(), timeout)
        except ConnectionError:
            pass
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        return status, time.perf_counter() - t0, b"connection: close" in head.lower()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError) as e:
        return f"no answer ({type(e).__name__})", time.perf_counter() - t0, True
    finally:
        writer.close()


def run_hostile(port: int, name: str, request: bytes, want: np.ndarray) -> dict:
    cases = _hostile_requests(name)

    async def go():
        stop = asyncio.Event()
        good = _new_stream_result()
        stream = asyncio.ensure_future(asyncio.gather(*[_good_stream(port, request, want, stop, good)
                                                        for _ in range(2)]))
        answers = []
        for what, data in cases:
            status, seconds, close = await _one_raw(port, data)
            answers.append({"input": what, "status": status, "seconds": seconds, "connection_close": close})
        stop.set()
        await stream
        return good, answers

    good, answers = asyncio.run(go())
    return {"good": _summarise_stream(good), "answers": answers}


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenet_v3_small", help="registry model to export (random weights)")
    ap.add_argument("--onnx", type=Path, default=None, help="serve this file instead (e.g. a bundle's model.int8.onnx)")
    ap.add_argument("--pin", choices=("auto", "off"), default="auto",
                    help="server on every core but the last, load generators on the last (auto: where >= 2 cores)")
    ap.add_argument("--seconds", type=float, default=6.0, help="per concurrency level (upper bound)")
    ap.add_argument("--requests", type=int, default=3000, help="per concurrency level (upper bound)")
    ap.add_argument("--levels", default="1,4,16,64")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=None, help="server's --max-wait-ms (default: its own)")
    ap.add_argument("--soak", type=int, default=10_000, help="requests in the memory soak (0: skip)")
    ap.add_argument("--modes", default="batching,no_batching")
    ap.add_argument("--paired-rounds", type=int, default=3,
                    help="rounds of (server at c=16, then onnxruntime directly) for the goal ratio")
    ap.add_argument("--out", type=Path, default=RESULTS / "serve_load")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    started = time.time()
    uptime_start = _uptime()

    Pinning.choose(args.pin)
    print(Pinning.describe(), flush=True)

    with tempfile.TemporaryDirectory(prefix="edgezoo-serve-bench-") as tmp:
        if args.onnx is not None:
            path = args.onnx.resolve()
        else:
            print(f"exporting {args.model} ...", flush=True)
            path = export_model(args.model, Path(tmp))
        if Pinning.client:  # from here on this process is a load generator: it keeps off the server's cores
            os.sched_setaffinity(0, Pinning.client)
        batches = sorted({1, 4, 8, args.max_batch})
        direct = {"default_options": direct_throughput(path, batches, 4.0, server_options=False),
                  "server_options": direct_throughput(path, batches, 4.0, server_options=True)}
        print(f"direct onnxruntime images/s: {json.dumps(direct)}", flush=True)
        import onnxruntime as ort

        shape = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
        x = np.random.default_rng(0).standard_normal((1, *shape[1:]), dtype=np.float32)

        sweeps = {}
        soak = paired = wrk = flood = body_flood = hostile = None
        wait = ["--max-wait-ms", str(args.max_wait_ms)] if args.max_wait_ms is not None else []
        for mode, extra in (("batching", ["--max-batch", str(args.max_batch), *wait]),
                            ("no_batching", ["--no-batching"])):
            if mode not in args.modes.split(","):
                continue
            server = ServerProcess(path, extra + ["--max-queue", "1024"])
            memory: dict = {}
            name = server.name  # as the server names it (from the file's metadata)
            request = make_request(name, x)
            try:
                rss_before = server.rss_mb()
                rows = []
                for c in levels:
                    r = run_level(server, name, request, c, args.seconds, args.requests)
                    rows.append(r)
                    print(f"{mode:12s} c={c:<3d} {r['throughput']:7.1f} req/s  p50 {r['p50_ms']:7.1f} ms  "
                          f"p99 {r['p99_ms']:7.1f} ms  errors {r['errors']}  mean batch {r['mean_batch']}",
                          flush=True)
                sweeps[mode] = {"rss_mb_before": rss_before, "rss_mb_after": server.rss_mb(), "levels": rows}
                memory = sweeps[mode]
                if mode == "batching" and args.paired_rounds:
                    paired = run_paired(server, name, path, request, args)
                    print(f"paired c=16: ratios vs direct at the run's batch {paired['ratios_same_batch']}, "
                          f"vs batch {args.max_batch} {paired['ratios_max_batch']}", flush=True)
                if mode == "batching" and args.soak:
                    soak = run_soak(server, request, args.soak)
                    print(f"soak: {soak['requests']} requests, errors {soak['errors']}, RSS "
                          f"{soak['rss_mb'][0]:.1f} -> {soak['rss_mb'][-1]:.1f} MB", flush=True)
                if mode == "batching":
                    wrk = run_wrk_paired(server, name, path, x, args, Path(tmp))
                    print(f"wrk c=16: {json.dumps(wrk and [r['ratio'] for r in wrk['rounds']])}", flush=True)
                    want = direct_output(path, x)
                    flood = run_flood(server.port, request, want)
                    print(f"flood: {json.dumps(flood)}", flush=True)
                    body_flood = run_flood(server.port, request, want, body_of=name)
                    print(f"body flood: {json.dumps(body_flood)}", flush=True)
                    hostile = run_hostile(server.port, name, request, want)
                    print(f"hostile: {json.dumps(hostile)}", flush=True)
            finally:
                server.stop()
                memory["rss_mb"] = server.rss.summary()
        # direct again after the server runs: on a shared machine, the baseline is the median of both
        direct_after = direct_throughput(path, [args.max_batch], 4.0, server_options=False)[args.max_batch]

    baseline_batch = args.max_batch
    before = max(direct["default_options"][baseline_batch], direct["server_options"][baseline_batch])
    baseline = statistics.median([before, direct_after])
    best = max(max(v.values()) for v in direct.values())
    result = {
        "model": str(args.onnx) if args.onnx else args.model, "served_as": name, "pinning": Pinning.describe(),
        "input_shape": list(x.shape), "max_batch": args.max_batch,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "onnxruntime": ort.__version__},
        "machine_description": _describe_machine(),
        "note": "the machine may be shared with other jobs: see the load averages at start and end",
        "direct_images_per_s": direct, "direct_after_images_per_s": {baseline_batch: direct_after},
        "baseline_images_per_s": baseline, "direct_best_images_per_s": best,
        "sweeps": sweeps, "paired_c16": paired, "soak": soak, "wrk_c16": wrk, "flood": flood, "body_flood": body_flood,
        "hostile": hostile,
        "uptime_start": uptime_start, "uptime_end": _uptime(), "wall_s": time.time() - started,
    }
    c16 = next((r for r in sweeps.get("batching", {}).get("levels", []) if r["concurrency"] == 16), None)
    if c16:
        result["goals"] = {
            "throughput_ratio_c16": (statistics.median(paired["ratios_same_batch"]) if paired
                                     else c16["throughput"] / baseline),
            "throughput_ratio_c16_vs_max_batch": (statistics.median(paired["ratios_max_batch"]) if paired
                                                  else None),
            "p99_over_p50_c16": c16["p99_ms"] / c16["p50_ms"],
            "errors_all": sum(r["errors"] for s in sweeps.values() for r in s["levels"]) + (soak or {}).get("errors", 0),
            "soak_rss_growth_mb": (soak["rss_mb"][-1] - soak["rss_mb"][0]) if soak else None,
            "wrk_ratio_c16": wrk["ratio_median"] if wrk else None,
            "wrk_p99_over_p50_c16": (statistics.median(r["server"]["p99_ms"] / r["server"]["p50_ms"]
                                                       for r in wrk["rounds"]) if wrk else None),
            "wrk_errors": sum(r["server"]["errors"] for r in wrk["rounds"]) if wrk else None,
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from edgezoo.fileio import atomic_write_text, write_json

    write_json(args.out.with_suffix(".json"), result)
    atomic_write_text(args.out.with_suffix(".md"), render_markdown(result))
    print(f"wrote {args.out.with_suffix('.json')} and .md ({result['wall_s']:.0f} s)")


def _describe_machine():
    try:
        from edgezoo.profile.latency import describe_machine

        return describe_machine()
    except Exception as e:  # the description is context, not the measurement
        return f"unavailable: {e}"


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def direct_output(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def run_paired(server: ServerProcess, name: str, path: Path, request: bytes, args) -> dict:
    """Server at concurrency 16, then onnxruntime directly while the server idles, `rounds` times; the ratio
    of each pair, so that the other jobs on a shared machine weigh on both sides alike."""
    same, at_max, rows = [], [], []
    for _ in range(args.paired_rounds):
        r = run_level(server, name, request, 16, args.seconds, args.requests)
        b = max(1, round(r["mean_batch"] or 1))
        d = direct_throughput(path, sorted({b, args.max_batch}), 3.0, server_options=True)
        same.append(r["throughput"] / d[b])
        at_max.append(r["throughput"] / d[args.max_batch])
        rows.append({"server": r, "direct_batch": b, "direct": d})
    return {"ratios_same_batch": same, "ratios_max_batch": at_max, "rounds": rows}


def run_soak(server: ServerProcess, request: bytes, total: int, every: int = 1000) -> dict:
    rss = [server.rss_mb()]
    errors = done = 0
    lat: list[float] = []
    t0 = time.perf_counter()
    while done < total:
        r = asyncio.run(_load(server.port, request, 16, min(every, total - done), 600))
        done += r["requests"]
        errors += r["errors"]
        lat.append(r["p50_ms"])
        rss.append(server.rss_mb())
        if r["requests"] == 0:
            break
    return {"requests": done, "errors": errors, "rss_mb": rss, "seconds": time.perf_counter() - t0,
            "throughput": done / (time.perf_counter() - t0)}


def render_markdown(r: dict) -> str:
    lines = [f"# `edgezoo serve` under load: {r['model']}", "",
             f"Machine: {r['machine']['platform']}, {r['machine']['cpus']} CPUs, onnxruntime "
             f"{r['machine']['onnxruntime']}, Python {r['machine']['python']}. {r['note']}.", "",
             f"Served as `{r.get('served_as')}`; {r.get('pinning')}.", "",
             f"Each request: one {r['input_shape']} float32 tensor as .npy, .npy back, over keep-alive HTTP/1.1 "
             "on 127.0.0.1. Produced by `python benchmarks/serve_load.py`.", "",
             "## onnxruntime called directly (images/s)", "", "| batch | default options | server options |",
             "|---:|---:|---:|"]
    for b in r["direct_images_per_s"]["default_options"]:
        lines.append(f"| {b} | {r['direct_images_per_s']['default_options'][b]:.1f} | "
                     f"{r['direct_images_per_s']['server_options'][b]:.1f} |")
    lines += ["", f"Baseline for the ratio: batch {r['max_batch']}, {r['baseline_images_per_s']:.1f} images/s "
                  "(median of the best before and the run after the server tests).", ""]
    for mode, s in r["sweeps"].items():
        lines += [f"## server, {mode.replace('_', ' ')}", "",
                  "| concurrency | req/s | x direct | p50 ms | p99 ms | p99/p50 | mean rows/run | errors |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in s["levels"]:
            mb = f"{row['mean_batch']:.1f}" if row["mean_batch"] else "-"
            lines.append(f"| {row['concurrency']} | {row['throughput']:.1f} | "
                         f"{row['throughput'] / r['baseline_images_per_s']:.2f} | {row['p50_ms']:.1f} | "
                         f"{row['p99_ms']:.1f} | {row['p99_ms'] / row['p50_ms']:.2f} | {mb} | {row['errors']} |")
        lines += ["", f"Server RSS {s['rss_mb_before']:.1f} MB before, {s['rss_mb_after']:.1f} MB after."]
        mem = s.get("rss_mb") or {}
        if mem:
            lines.append(f"Sampled every {mem['every_s']} s while the server ran ({mem['samples']} samples): first "
                         f"{mem['first']:.1f} MB, max {mem['max']:.1f} MB, last {mem['last']:.1f} MB.")
        lines.append("")
    if r.get("paired_c16"):
        p = r["paired_c16"]
        lines += ["## paired rounds at concurrency 16 (server, then onnxruntime directly)", "",
                  "| round | server req/s | mean rows/run | direct img/s at that batch | ratio | "
                  f"direct at batch {r['max_batch']} | ratio |", "|---:|---:|---:|---:|---:|---:|---:|"]
        for i, row in enumerate(p["rounds"]):
            lines.append(f"| {i + 1} | {row['server']['throughput']:.1f} | {row['server']['mean_batch']:.1f} | "
                         f"{row['direct'][row['direct_batch']]:.1f} (batch {row['direct_batch']}) | "
                         f"{p['ratios_same_batch'][i]:.2f} | {row['direct'][r['max_batch']]:.1f} | "
                         f"{p['ratios_max_batch'][i]:.2f} |")
        lines.append("")
    if r.get("soak"):
        s = r["soak"]
        lines += ["## memory soak", "",
                  f"{s['requests']:,} requests at concurrency 16 with batching, {s['errors']} errors, "
                  f"{s['throughput']:.1f} req/s. RSS every 1,000 requests (MB): "
                  + ", ".join(f"{v:.1f}" for v in s["rss_mb"]), ""]
    if r.get("wrk_c16"):
        w = r["wrk_c16"]
        lines += ["## wrk (C load generator, Lua script posting the .npy) at concurrency 16, batching, paired with "
                  "onnxruntime directly", "",
                  "| round | server req/s | p50 ms | p99 ms | p99/p50 | errors | mean rows/run | direct img/s at that "
                  f"batch | ratio | direct at batch {r['max_batch']} | ratio |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for i, row in enumerate(w["rounds"]):
            sv = row["server"]
            lines.append(f"| {i + 1} | {sv['throughput']:.1f} | {sv['p50_ms']:.1f} | {sv['p99_ms']:.1f} | "
                         f"{sv['p99_ms'] / sv['p50_ms']:.2f} | {sv['errors']} | {sv['mean_batch'] or 0:.1f} | "
                         f"{row['direct'][row['direct_batch']]:.1f} (batch {row['direct_batch']}) | {row['ratio']:.2f} | "
                         f"{row['direct'][r['max_batch']]:.1f} | {row['ratio_max_batch']:.2f} |")
        lines.append("")
    for key, title, what in (("flood", "slow-header flood", "a request head one byte a second (header timeout "
                              "10 s)"),
                             ("body_flood", "slow-body flood", "a complete head, then its 100 kB body one byte a "
                              "second (bodies must keep to 1 kB/s after the header timeout)")):
        if not r.get(key):
            continue
        f = r[key]
        g = f["good"]
        lines += [f"## {title}", "",
                  f"{f['sockets']} sockets each sending {what}, beside 2 connections of good requests:", "",
                  f"- flood sockets closed by the server: {f['closed_by_server']} of {f['sockets']} (still open when "
                  f"the client gave up: {f['still_open']}, refused: {f['refused']}); closed after "
                  f"{f['closed_after_s_median'] or float('nan'):.1f} s (median), "
                  f"{f['closed_after_s_max'] or float('nan'):.1f} s (max)",
                  f"- good requests: {g['requests']}, status codes {g['codes']}, correct {g['correct']}, wrong "
                  f"{g['wrong']}; p50 {g['p50_ms']:.1f} ms, max {g['max_ms']:.1f} ms", ""]
    if r.get("hostile"):
        h = r["hostile"]
        g = h["good"]
        lines += ["## hostile inputs beside good requests", "", "| input | answer | seconds | Connection: close |",
                  "|---|---|---:|---|"]
        for a in h["answers"]:
            lines.append(f"| {a['input']} | {a['status']} | {a['seconds']:.2f} | {'yes' if a['connection_close'] else 'no'} |")
        lines += ["", f"Good requests meanwhile: {g['requests']}, status codes {g['codes']}, correct {g['correct']}, "
                      f"wrong {g['wrong']}; p50 {g['p50_ms']:.1f} ms, max {g['max_ms']:.1f} ms.", ""]
    lines += [f"Load at start: `{r.get('uptime_start')}`; at end: `{r.get('uptime_end')}`.", ""]
    if r.get("goals"):
        g = r["goals"]
        if g.get("wrk_ratio_c16") is not None:
            lines += ["## goals (wrk)", "",
                      f"- wrk, concurrency 16, batching / onnxruntime directly at the batch the server ran (median of "
                      f"paired rounds): **{g['wrk_ratio_c16']:.2f}x** (goal >= 0.95x)",
                      f"- wrk p99 / p50: **{g['wrk_p99_over_p50_c16']:.2f}** (goal <= 1.5); errors **{g['wrk_errors']}**", ""]
        lines += ["## goals (Python load generator)", "",
                  "- throughput at concurrency 16 with batching / onnxruntime directly at the batch size the "
                  f"server ran (median of paired rounds): **{g['throughput_ratio_c16']:.2f}x** (goal >= 0.95x); "
                  f"against batch {r['max_batch']}: {g['throughput_ratio_c16_vs_max_batch'] or float('nan'):.2f}x",
                  f"- p99 / p50 at concurrency 16: **{g['p99_over_p50_c16']:.2f}** (goal <= 1.5)",
                  f"- errors over every run: **{g['errors_all']}** (goal 0)",
                  f"- RSS growth over the soak: **{g['soak_rss_growth_mb']:.1f} MB** (goal: flat)"
                  if g["soak_rss_growth_mb"] is not None else "- soak skipped", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
