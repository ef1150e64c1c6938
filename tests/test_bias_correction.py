"""Bias correction of weight quantization (edgezoo.export.bias_correction) and its quantize_int8 switch."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx (edgezoo[export]) is not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytest.importorskip("onnxruntime.quantization", reason="onnxruntime's quantization tools are not installed")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgezoo.export.bias_correction import correct_biases  # noqa: E402
from edgezoo.export.quantize import quantize_int8  # noqa: E402


def _toy(path, with_bias: bool = True, seed: int = 0):
    """Conv 3x3 (8 -> 16) then a depthwise 3x3: one large weight per tensor makes the per-tensor int8 step
    coarse, so rounding the other weights shifts the outputs' mean (what bias correction removes)."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.05, (16, 8, 3, 3)).astype(np.float32) + 0.004
    w1[0, 0, 1, 1] = 3.0
    w2 = rng.normal(0, 0.05, (16, 1, 3, 3)).astype(np.float32) + 0.004
    w2[3, 0, 0, 0] = 2.0
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]
    conv1_in = ["input", "w1"]
    if with_bias:
        inits.append(numpy_helper.from_array(rng.normal(0, 0.1, 16).astype(np.float32), "b1"))
        conv1_in.append("b1")
    nodes = [helper.make_node("Conv", conv1_in, ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["logits"], name="conv2", pads=[1, 1, 1, 1], group=16)]
    graph = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                           ["batch", 8, 12, 12])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 16, 12, 12])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return model


def _data(n, seed):
    # positive inputs with a mean far from zero: a weight error then shifts the output mean
    return np.abs(np.random.default_rng(seed).normal(1.0, 0.5, (n, 8, 12, 12))).astype(np.float32)


def _run(path, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the QDQ arithmetic as written
    so.log_severity_level = 3
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return s.run(None, {"input": x})[0]


def _mean_error(ref, test):
    """Mean over channels of |per-channel mean of (test - ref)|: the systematic part of the error."""
    return float(np.mean(np.abs((test - ref).mean(axis=(0, 2, 3)))))


@pytest.mark.parametrize("per_channel", [False, True])
def test_bias_correction_reduces_the_mean_output_error(tmp_path, per_channel):
    fp32 = tmp_path / "toy.onnx"
    _toy(fp32)
    calib, held = _data(24, 1), _data(16, 2)
    ref = _run(fp32, held)
    plain = tmp_path / "plain.onnx"
    corrected = tmp_path / "corrected.onnx"
    r0 = quantize_int8(fp32, plain, calib, per_channel=per_channel)
    r1 = quantize_int8(fp32, corrected, calib, per_channel=per_channel, bias_correction=True)
    assert r0["bias_correction"] is None  # off unless asked
    assert r1["bias_correction"]["convs"] == 2
    assert len(r1["bias_correction"]["changes"]) == 2
    e0, e1 = _mean_error(ref, _run(plain, held)), _mean_error(ref, _run(corrected, held))
    assert e0 > 0
    assert e1 < 0.5 * e0, (e0, e1)


def test_correct_biases_leaves_the_weights_and_adds_a_missing_bias(tmp_path):
    fp32 = tmp_path / "toy.onnx"
    model = _toy(fp32, with_bias=False)
    q = tmp_path / "q.onnx"
    quantize_int8(fp32, q, _data(16, 1), per_channel=False)
    fixed, report = correct_biases(model, onnx.load(str(q)), _data(16, 1))
    assert report["convs"] == 2
    before = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    after = {i.name: numpy_helper.to_array(i) for i in fixed.graph.initializer}
    np.testing.assert_array_equal(before["w1"], after["w1"])  # weights untouched; only biases move
    conv1 = next(n for n in fixed.graph.node if n.name == "conv1")
    assert len(conv1.input) == 3 and conv1.input[2] in after  # conv1 had no bias: it has one now
    assert np.any(after[conv1.input[2]] != 0)
    assert len(model.graph.node[0].input) == 2  # the caller's model is not modified
    onnx.checker.check_model(fixed)
    assert len(fixed.graph.output) == 1  # the probes stay out of the corrected model


def test_bias_correction_rejects_bad_calibration(tmp_path):
    from edgezoo.errors import InputError

    fp32 = tmp_path / "toy.onnx"
    model = _toy(fp32)
    q = tmp_path / "q.onnx"
    quantize_int8(fp32, q, _data(4, 1))
    with pytest.raises(InputError):
        correct_biases(model, onnx.load(str(q)), np.zeros((8, 12, 12), np.float32))


def test_weight_type_uint8_and_reduce_range_are_recorded(tmp_path):
    fp32 = tmp_path / "toy.onnx"
    _toy(fp32)
    out = tmp_path / "q.onnx"
    r = quantize_int8(fp32, out, _data(8, 1), weight_type="uint8", reduce_range=True)
    assert r["weights"] == "uint8" and r["reduce_range"] is True
    q = onnx.load(str(out))
    w = next(i for i in q.graph.initializer if i.name.startswith("w1") and i.data_type == TensorProto.UINT8)
    vals = numpy_helper.to_array(w)
    assert vals.max() - vals.min() <= 128  # 7-bit range
    from edgezoo.errors import InputError

    with pytest.raises(InputError):
        quantize_int8(fp32, tmp_path / "bad.onnx", _data(8, 1), weight_type="int4")
    assert not (tmp_path / "bad.onnx").exists()


def test_a_bias_two_convs_share_is_corrected_per_conv(tmp_path):
    """onnxsim merges equal initializers, e.g. the zero biases of a freshly initialised model: correcting the
    shared tensor in place would give every conv the last conv's shift (MobileNetV3-Small's int8 fell to -68 dB)."""
    m = _toy(tmp_path / "toy.onnx")
    zero = numpy_helper.from_array(np.zeros(16, np.float32), "zero_bias")
    m.graph.initializer.append(zero)
    for n in m.graph.node:
        if n.op_type == "Conv":
            del n.input[2:]
            n.input.append("zero_bias")
    onnx.save(m, tmp_path / "shared.onnx")
    x = _data(16, 1)
    quantize_int8(tmp_path / "shared.onnx", tmp_path / "q.onnx", x, per_channel=False)
    fixed, report = correct_biases(m, onnx.load(tmp_path / "q.onnx"), x)
    assert report["convs"] == 2
    init = {i.name: numpy_helper.to_array(i) for i in fixed.graph.initializer}
    b1, b2 = (init[n.input[2]] for n in fixed.graph.node if n.op_type == "Conv")
    assert not np.allclose(b1, b2)  # each conv got its own shift
    onnx.save(fixed, tmp_path / "fixed.onnx")
    quantize_int8(tmp_path / "fixed.onnx", tmp_path / "qc.onnx", x, per_channel=False)
    ref = _run(tmp_path / "shared.onnx", x)
    assert _mean_error(ref, _run(tmp_path / "qc.onnx", x)) < _mean_error(ref, _run(tmp_path / "q.onnx", x))
