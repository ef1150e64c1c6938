"""The server's queue and batcher in-process, with a model whose runs the test holds and releases.

Holding a run makes the full queue (503), the timeout (504) and the drain on shutdown deterministic: no
assertion here depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from onnx import TensorProto, helper, save

httpx = pytest.importorskip("httpx", reason="httpx (edgezoo[test]) is not installed")
pytest.importorskip("starlette", reason="starlette (edgezoo[serve]) is not installed")

from edgezoo.serve.app import ServeConfig, create_app  # noqa: E402
from edgezoo.serve.batching import BatchConfig, Batcher, RunFailed, ShuttingDown  # noqa: E402
from edgezoo.serve.model import load_model  # noqa: E402


def _double_model(path, batch="n", reshape_to_one=False):
    """y = 2x over (batch, 4); with reshape_to_one the batch dimension is free in name only."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])
    inits = [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])]
    nodes = [helper.make_node("Mul", ["x", "two"], ["y" if not reshape_to_one else "m"])]
    if reshape_to_one:
        inits.append(helper.make_tensor("one_by_four", TensorProto.INT64, [2], [1, 4]))
        nodes.append(helper.make_node("Reshape", ["m", "one_by_four"], ["y"]))
    graph = helper.make_graph(nodes, "double", [x], [y], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    save(proto, path)
    return path


class Gate:
    """Wraps a model's run: each run announces itself and waits until the test releases it."""

    def __init__(self, model, fail_above: float | None = None):
        self.inner = model.run
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_above = fail_above
        model.run = self.run

    def run(self, feeds):
        self.entered.set()
        self.release.wait(60)
        if self.fail_above is not None and any((v > self.fail_above).any() for v in feeds.values()):
            raise RuntimeError("value out of the model's range")
        return self.inner(feeds)


async def _wait_until(cond, what: str, steps: int = 2000):
    for _ in range(steps):  # bounded: 2000 x 5 ms at most
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting until {what}")


def _post(client, x, model="double"):
    import io

    buf = io.BytesIO()
    np.save(buf, np.asarray(x, np.float32))
    return client.post(f"/v1/models/{model}/predict", content=buf.getvalue(),
                       headers={"content-type": "application/x-npy"})


def _run_app(models, config, scenario):
    """Start the app's batchers, run ``scenario(client, state)``, always stop them (answering the queue)."""
    app = create_app(models, config)
    state = app.state.edgezoo

    async def main():
        await state.start()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
                return await scenario(client, state)
        finally:
            for m in models:  # a held run would keep stop() waiting
                gate = getattr(m.run, "__self__", None)
                if isinstance(gate, Gate):
                    gate.release.set()
            await state.stop()

    return asyncio.run(main())


def test_full_queue_answers_503_and_accepted_requests_still_succeed(tmp_path):
    model = load_model(_double_model(tmp_path / "double.onnx"))
    gate = Gate(model)
    config = ServeConfig(batch=BatchConfig(max_batch=1, max_queue=2, enabled=False))

    async def scenario(client, state):
        running = asyncio.create_task(_post(client, [[1, 1, 1, 1]]))
        await _wait_until(gate.entered.is_set, "the first run started")
        queued = [asyncio.create_task(_post(client, [[i, i, i, i]])) for i in (2, 3)]
        await _wait_until(lambda: state.batchers["double"].depth == 2, "two requests queued")
        refused = await _post(client, [[9, 9, 9, 9]])
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        gate.release.set()
        answers = await asyncio.gather(running, *queued)
        assert [r.status_code for r in answers] == [200, 200, 200]
        assert [r.json()["outputs"]["y"]["data"] for r in answers] == [[[2.0 * i] * 4] for i in (1, 2, 3)]
        m = state.metrics
        assert m.requests.get("double", "predict", "503") == 1 and m.errors.get("double", "busy") == 1

    _run_app([model], config, scenario)


def test_timed_out_requests_get_504_once_and_are_skipped(tmp_path):
    model = load_model(_double_model(tmp_path / "double.onnx"))
    gate = Gate(model)
    config = ServeConfig(batch=BatchConfig(max_batch=1, enabled=False), request_timeout_s=0.2)

    async def scenario(client, state):
        running = asyncio.create_task(_post(client, [[1, 1, 1, 1]]))
        await _wait_until(gate.entered.is_set, "the first run started")
        waiting = await _post(client, [[2, 2, 2, 2]])  # queued behind a held run: times out
        assert waiting.status_code == 504
        assert (await running).status_code == 504  # the held run itself also ran out of time
        gate.release.set()
        r = await _post(client, [[3, 3, 3, 3]])
        assert r.status_code == 200 and r.json()["outputs"]["y"]["data"] == [[6.0] * 4]
        # the timed-out queued request never reached onnxruntime: two runs (the held one and the last)
        await _wait_until(lambda: state.metrics.batch_size.count("double") == 2, "two runs recorded")
        assert state.batchers["double"].depth == 0

    _run_app([model], config, scenario)


def test_one_failing_request_does_not_fail_its_batch(tmp_path):
    model = load_model(_double_model(tmp_path / "double.onnx"))
    gate = Gate(model, fail_above=1e6)
    gate.release.set()

    async def main():
        batcher = Batcher(model, BatchConfig(max_batch=3, max_wait_ms=10_000))  # runs once 3 rows are in
        await batcher.start()
        try:
            xs = [np.full((1, 4), v, np.float32) for v in (1.0, 1e9, 3.0)]
            futures = [batcher.submit({"x": x}, 1) for x in xs]  # one tick: all three join one run
            return await asyncio.gather(*futures, return_exceptions=True)
        finally:
            await batcher.stop()

    good1, bad, good2 = asyncio.run(main())
    assert isinstance(bad, RunFailed) and "out of the model's range" in str(bad)
    np.testing.assert_array_equal(good1[0], np.full((1, 4), 2.0, np.float32))
    np.testing.assert_array_equal(good2[0], np.full((1, 4), 6.0, np.float32))


def test_shutdown_answers_everything_queued(tmp_path):
    model = load_model(_double_model(tmp_path / "double.onnx"))

    async def main():
        batcher = Batcher(model, BatchConfig(max_batch=64, max_wait_ms=60_000))
        await batcher.start()
        futures = [batcher.submit({"x": np.full((1, 4), i, np.float32)}, 1) for i in range(5)]
        await batcher.stop()  # does not wait a minute for companions: closing runs what is queued
        with pytest.raises(ShuttingDown):
            batcher.submit({"x": np.ones((1, 4), np.float32)}, 1)
        return [f.result() for f in futures]

    results = asyncio.run(main())
    assert [r[0].tolist() for r in results] == [[[2.0 * i] * 4] for i in range(5)]


def test_fixed_batch_and_fake_dynamic_models_run_one_by_one(tmp_path):
    fixed = load_model(_double_model(tmp_path / "fixed.onnx", batch=1), name="fixed")
    fake = load_model(_double_model(tmp_path / "fake.onnx", reshape_to_one=True), name="fake")
    assert fixed.fixed_batch == 1 and fake.fixed_batch is None and not fake.batchable
    assert any("one by one" in n for n in fake.notes)
    config = ServeConfig(batch=BatchConfig(max_batch=8, max_wait_ms=50))

    async def scenario(client, state):
        for name in ("fixed", "fake"):
            answers = await asyncio.gather(*[_post(client, [[i] * 4], model=name) for i in range(4)])
            assert [r.json()["outputs"]["y"]["data"] for r in answers] == [[[2.0 * i] * 4] for i in range(4)]
            assert state.metrics.batch_size.count(name) == 4  # four runs of one row each
        r = await _post(client, [[1] * 4, [2] * 4], model="fixed")
        assert r.status_code == 422 and "exactly 1" in r.json()["error"]
        listed = {m["name"]: m for m in (await client.get("/v1/models")).json()["models"]}
        assert listed["fixed"]["batching"] == "one by one" and listed["fake"]["batching"] == "one by one"

    _run_app([fixed, fake], config, scenario)
