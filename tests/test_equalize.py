"""Cross-layer equalization (edgezoo.export.equalize) keeps fp32 outputs and evens out channel ranges."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx (edgezoo[export]) is not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgezoo.export.equalize import channel_range_spread, equalize  # noqa: E402


def _model(second_act: str = "Relu", seed: int = 0) -> onnx.ModelProto:
    """conv (8 -> 16) -> Relu -> depthwise conv -> act -> conv (16 -> 4), channel ranges spread 100x."""
    rng = np.random.default_rng(seed)
    spread = np.logspace(-1, 1, 16).astype(np.float32)
    w1 = rng.normal(0, 0.1, (16, 8, 3, 3)).astype(np.float32) * spread[:, None, None, None]
    w2 = rng.normal(0, 0.3, (16, 1, 3, 3)).astype(np.float32) / spread[:, None, None, None]
    w3 = rng.normal(0, 0.2, (4, 16, 1, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (w1, "w1"), (rng.normal(0, 0.1, 16).astype(np.float32), "b1"), (w2, "w2"),
        (rng.normal(0, 0.1, 16).astype(np.float32), "b2"), (w3, "w3"), (np.float32(0), "zero"),
        (np.float32(6), "six")]]
    act2 = (helper.make_node("Relu", ["c2"], ["a2"], name="act2") if second_act == "Relu" else
            helper.make_node("Clip", ["c2", "zero", "six"], ["a2"], name="act2"))
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["a1"], name="act1"),
             helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], name="dw", pads=[1, 1, 1, 1], group=16),
             act2,
             helper.make_node("Conv", ["a2", "w3"], ["logits"], name="conv3")]
    graph = helper.make_graph(nodes, "cle", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                           ["batch", 8, 10, 10])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4, 10, 10])],
                              inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _run(model, x):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"input": x})[0]


def test_cle_keeps_fp32_outputs_and_equalizes_ranges():
    model = _model("Relu")
    x = np.random.default_rng(1).normal(0, 1, (4, 8, 10, 10)).astype(np.float32)
    eq, report = equalize(model)
    assert report["pairs"] == 2  # conv1 -> dw through Relu, dw -> conv3 through Relu
    assert len(report["changes"]) == 2
    ref, out = _run(model, x), _run(eq, x)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))
    assert channel_range_spread(eq, "conv1") < 0.2 * channel_range_spread(model, "conv1")
    assert channel_range_spread(model, "conv1") > 50  # the toy really is unbalanced
    onnx.checker.check_model(eq)
    # the caller's model is untouched
    w1 = next(i for i in model.graph.initializer if i.name == "w1")
    assert channel_range_spread(model, "conv1") == pytest.approx(
        float(np.abs(numpy_helper.to_array(w1)).reshape(16, -1).max(1).max()
              / np.abs(numpy_helper.to_array(w1)).reshape(16, -1).max(1).min()))


def test_cle_skips_relu6_boundaries_and_keeps_outputs():
    model = _model("Clip")
    x = np.random.default_rng(2).normal(0, 1, (2, 8, 10, 10)).astype(np.float32)
    eq, report = equalize(model)
    assert report["pairs"] == 1  # only conv1 -> dw (Relu); dw -> conv3 goes through Clip(0, 6)
    assert report["skipped_pairs"]["relu6_or_clip"] == 1
    ref, out = _run(model, x), _run(eq, x)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))
