"""Roofline: bounds from given peaks, fusion of activations, joining runtime op times, the PNG, measured peaks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from onnx import helper

from edgezoo.profile.graph import profile_onnx
from edgezoo.profile.roofline import MachinePeaks, analyze, measure_peaks, plot_roofline
from onnx_builders import const, make_model, value_info

PEAKS = MachinePeaks(peak_gflops=100.0, bandwidth_gbs=10.0, source="given")  # ridge at 10 FLOPs/byte


def conv_relu_add(c=64, hw=28):
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="/b/conv/Conv"),
             helper.make_node("Relu", ["a"], ["r"], name="/b/act/Relu"),
             helper.make_node("Add", ["r", "x"], ["y"], name="/b/Add")]
    return make_model(nodes, [value_info("x", [1, c, hw, hw])], [value_info("y", None)], [const("w", (c, c, 1, 1))])


def test_bounds_from_given_peaks():
    c, hw = 64, 28
    p = profile_onnx(conv_relu_add(c, hw))
    r = analyze(p, PEAKS)
    conv, relu, add = r.layers
    flops = 2 * hw * hw * c * c
    nbytes = 4 * (2 * hw * hw * c + c * c)
    assert conv.compute_ms == pytest.approx(flops / 100e9 * 1e3)
    assert conv.memory_ms == pytest.approx(nbytes / 10e9 * 1e3)
    assert conv.intensity == pytest.approx(flops / nbytes)
    assert conv.bound == ("compute" if flops / nbytes >= PEAKS.ridge else "memory")
    assert relu.fused_into == conv.name and relu.bound_ms == 0  # the runtime fuses the ReLU into the conv
    assert add.bound == "memory" and add.memory_ms == pytest.approx(4 * 3 * hw * hw * c / 10e9 * 1e3)
    assert r.lower_bound_ms == pytest.approx(conv.bound_ms + add.bound_ms)
    unfused = analyze(p, PEAKS, assume_fusion=False)
    assert unfused.lower_bound_ms > r.lower_bound_ms


def test_measured_times_join_by_runtime_names():
    p = profile_onnx(conv_relu_add())
    # onnxruntime names an NCHWc conv after its (fused activation's) output tensor, plus '_nchwc'
    times = SimpleNamespace(total_ms=1.0, nodes=[
        {"name": "r_nchwc", "op_type": "Conv", "time_ms": 0.6},
        {"name": "/b/Add", "op_type": "Add", "time_ms": 0.3},
        {"name": "ReorderOutput_token_3", "op_type": "ReorderOutput", "time_ms": 0.1},
    ])
    r = analyze(p, PEAKS, times)
    by = {l.name: l for l in r.layers}
    assert by["/b/conv/Conv"].measured_ms == pytest.approx(0.6)
    assert by["/b/Add"].measured_ms == pytest.approx(0.3)
    assert r.unattributed_ms == {"ReorderOutput": pytest.approx(0.1)}
    rows = {row["op_type"]: row for row in r.by_op_type()}
    assert rows["Conv"]["achieved_fraction"] == pytest.approx(by["/b/conv/Conv"].bound_ms / 0.6, rel=1e-3)
    d = r.to_dict()
    assert d["achieved_fraction"] == pytest.approx(r.lower_bound_ms / 1.0, rel=1e-3)


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed")
    p = profile_onnx(conv_relu_add())
    out = tmp_path / "roof.png"
    plot_roofline(analyze(p, PEAKS), out, "test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_measure_peaks_gives_positive_figures():
    pk = measure_peaks(threads=1, int8=False, n=128, copy_mib=8, budget_s=0.05)
    assert pk.peak_gflops > 0 and pk.bandwidth_gbs > 0 and pk.peak_int8_gops is None
    assert "measured" in pk.source and pk.ridge == pytest.approx(pk.peak_gflops / pk.bandwidth_gbs)
