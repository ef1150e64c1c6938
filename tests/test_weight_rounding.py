"""MSE-chosen weight ranges (edgezoo.export.weight_rounding)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgezoo.export.weight_rounding import clip_weights, mse_clip


def _error(w, c, qmax):
    s = c / qmax
    return float(((np.clip(np.round(w / s), -qmax, qmax) * s - w) ** 2).sum())


def test_a_heavy_tail_is_clipped_and_the_error_drops():
    rng = np.random.default_rng(0)
    w = np.stack([rng.laplace(0, 0.1, 5000), rng.uniform(-0.3, 0.3, 5000)]).astype(np.float32)
    c = mse_clip(w, 15)  # a coarse grid: the tail of channel 0 costs every other weight resolution
    top = np.abs(w[0]).max()
    assert c[0] < 0.9 * top and _error(w[0], c[0], 15) < 0.9 * _error(w[0], top, 15)
    assert c[1] <= np.abs(w[1]).max() + 1e-6
    assert _error(w[1], c[1], 15) <= _error(w[1], np.abs(w[1]).max(), 15) + 1e-12  # never worse than MinMax


def test_clip_weights_clips_conv_weights_per_output_channel_and_skips():
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.1, (4, 3, 3, 3)).astype(np.float32)
    w[2] = rng.laplace(0, 0.1, (3, 3, 3)) * 3
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="c1"),
                           helper.make_node("Conv", ["y", "w2"], ["z"], name="c2")], "g",
                          [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(rng.normal(0, 0.1, (2, 4, 1, 1)).astype(np.float32), "w2")])
    m = helper.make_model(g)
    w2 = numpy_helper.to_array(m.graph.initializer[1]).copy()
    assert clip_weights(m, 7, skip={"c2"}) == 1
    out = numpy_helper.to_array(m.graph.initializer[0])
    assert np.abs(out[2]).max() < np.abs(w[2]).max()  # the heavy-tailed channel was clipped
    assert np.array_equal(out[[0, 1, 3]] != 0, w[[0, 1, 3]] != 0)
    assert np.array_equal(numpy_helper.to_array(m.graph.initializer[1]), w2)  # skipped: untouched
