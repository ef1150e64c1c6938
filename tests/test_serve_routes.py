"""Served names come from the file's metadata (a bundle's fp32 and int8 files apart); the routes are module-level
endpoints, and /metrics labels each request by the route the router matched."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest

httpx = pytest.importorskip("httpx", reason="httpx (edgezoo[test]) is not installed")
pytest.importorskip("starlette", reason="starlette (edgezoo[serve]) is not installed")


from edgezoo.onnx_meta import ModelMetadata, set_metadata  # noqa: E402
from edgezoo.serve import routes_kserve, routes_v1  # noqa: E402
from edgezoo.serve.app import ServeConfig, create_app  # noqa: E402
from edgezoo.serve.model import load_model  # noqa: E402
from onnx_builders import doubler  # noqa: E402


def _double(path, meta: ModelMetadata | None = None):
    return doubler(path, meta)


def test_served_names_come_from_the_metadata_and_keep_precisions_apart(tmp_path):
    fp32 = _double(tmp_path / "model.onnx", ModelMetadata(model="efficientnet_lite0"))
    int8 = _double(tmp_path / "model.int8.onnx", ModelMetadata(model="efficientnet_lite0", precision="int8"))
    fp16 = _double(tmp_path / "model.fp16.onnx", ModelMetadata(model="efficientnet_lite0", precision="fp16"))
    bare = _double(tmp_path / "my double.onnx")
    names = [load_model(p, check_batching=False).name for p in (fp32, int8, fp16, bare)]
    assert names == ["efficientnet_lite0", "efficientnet_lite0.int8", "efficientnet_lite0.fp16", "my-double"]
    assert load_model(int8, name="chosen", check_batching=False).name == "chosen"


def test_routes_are_module_level_and_metrics_use_the_matched_route(tmp_path):
    assert {r.name for r in routes_v1.ROUTES} >= {"health", "predict"}
    assert {r.name for r in routes_kserve.ROUTES} >= {"v2_infer", "v2_metadata"}
    model = load_model(_double(tmp_path / "double.onnx"), check_batching=False)
    app = create_app([model], ServeConfig())
    state = app.state.edgezoo
    buf = io.BytesIO()
    np.save(buf, np.ones((1, 4), np.float32))

    async def main():
        await state.start()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                r = await c.post("/v1/models/double/predict", content=buf.getvalue(),
                                 headers={"content-type": "application/x-npy"})
                assert r.status_code == 200 and r.json()["outputs"]["y"]["data"] == [[2.0] * 4]
                doc = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
                r = await c.post("/v2/models/double/versions/1/infer", json=doc)
                assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [2, 4, 6, 8]
                assert (await c.get("/v2/models/double/versions/1")).status_code == 200
                # a path that looks like a model route but is none, and a name that is not served
                assert (await c.get("/v1/models/double/predict/extra")).status_code == 404
                assert (await c.post("/v2/models/nope/infer", json=doc)).status_code == 404
        finally:
            await state.stop()

    asyncio.run(main())
    requests = state.metrics.requests
    assert requests.get("double", "predict", "200") == 1
    assert requests.get("double", "v2_infer", "200") == 1
    assert requests.get("double", "v2_metadata", "200") == 1
    assert requests.get("", "other", "404") == 1
    assert requests.get("", "v2_infer", "404") == 1  # a name that is not served is never a label


def test_an_unexpected_error_is_a_500_and_one_log_line(tmp_path, caplog):
    """Issue 22 #15: Starlette re-raises after its 500 for the server to log a traceback; edgezoo logs one line."""
    model = load_model(_double(tmp_path / "double.onnx"), check_batching=False)

    def broken():
        raise RuntimeError("describe failed\nsecond line")

    model.describe = broken
    app = create_app([model], ServeConfig())

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return [await c.get("/v1/models/double") for _ in range(3)]

    with caplog.at_level("ERROR"):
        answers = asyncio.run(main())
    assert [r.status_code for r in answers] == [500] * 3
    assert answers[0].json()["error"] == "internal error: RuntimeError"
    records = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(records) == 1 and records[0].exc_info is None  # the next two fall within the same second
    assert "RuntimeError: describe failed" in records[0].getMessage() and "\n" not in records[0].getMessage()
