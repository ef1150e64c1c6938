"""Each export pass: outputs before and after agree, the input model is untouched, the report says what changed."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
from torch import nn  # noqa: E402

from edgezoo.export import passes as P  # noqa: E402
from edgezoo.models.layers import ChannelShuffle, SqueezeExcitation, channel_shuffle  # noqa: E402
from edgezoo.models.registry import create_model  # noqa: E402
from edgezoo.testing import randomize_bn  # noqa: E402


def _max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a.eval()(x) - b.eval()(x)).abs().max())


@pytest.mark.parametrize("groups,bias", [(1, False), (1, True), (4, True), (8, False), (8, True)])
def test_fold_batchnorm_conv_grouped_depthwise(groups, bias):
    torch.manual_seed(groups)
    m = randomize_bn(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=groups, bias=bias), nn.BatchNorm2d(8),
                                   nn.ReLU()), seed=groups)
    if bias:
        nn.init.normal_(m[0].bias)
    r = P.fold_batchnorm(m)
    assert isinstance(r.model[1], nn.Identity) and isinstance(m[1], nn.BatchNorm2d)  # input untouched
    assert len(r.changes) == 1 and ("depthwise" in r.changes[0]) == (groups == 8)
    x = torch.randn(3, 8, 10, 10)
    assert _max_diff(m, r.model, x) <= 1e-5


def test_fold_batchnorm_linear_and_conv_transpose_with_groups():
    torch.manual_seed(0)
    lin = randomize_bn(nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5)), seed=1)
    tr = randomize_bn(nn.Sequential(nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2), nn.BatchNorm2d(6)), seed=2)
    for m, x in ((lin, torch.randn(4, 6)), (tr, torch.randn(2, 4, 5, 5))):
        r = P.fold_batchnorm(m)
        assert len(r.changes) == 1
        assert _max_diff(m, r.model, x) <= 1e-5


def test_fold_batchnorm_leaves_non_adjacent_pairs():
    m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.BatchNorm2d(4))
    r = P.fold_batchnorm(m)
    assert r.changes == [] and isinstance(r.model[2], nn.BatchNorm2d)


@pytest.mark.parametrize("kw,replaced", [
    ({"relu6": "clip"}, P.ClipAct),
    ({"hardswish": "mul_hardsigmoid"}, P.HardSwishMulHardSigmoid),
    ({"hardswish": "mul_relu6"}, P.HardSwishMulRelu6),
    ({"hardsigmoid": "clip"}, P.HardSigmoidDecomposed),
])
def test_rewrite_activations_exact_forms(kw, replaced):
    m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU6(), nn.Conv2d(4, 4, 1), nn.Hardswish(), nn.Hardsigmoid())
    r = P.rewrite_activations(m, **{"relu6": "keep", **kw})
    assert any(isinstance(c, replaced) for c in r.model) and r.exact
    x = torch.linspace(-8, 8, 3 * 7 * 7 * 2).reshape(2, 3, 7, 7) * 3
    assert _max_diff(m, r.model, x) <= 1e-6


def test_relu6_as_relu_is_reported_inexact():
    m = nn.Sequential(nn.ReLU6())
    r = P.rewrite_activations(m, relu6="relu")
    assert not r.exact
    check = P.check_pass(m, r, (1, 4, 4))
    assert check.tolerance is None and check.ok  # inexact passes are reported, not failed
    assert isinstance(r.model[0], nn.ReLU)
    x = torch.tensor([-1.0, 3.0, 9.0])
    assert _max_diff(m, r.model, x) == 3.0  # it differs above 6


def test_fold_hardsigmoid_gates_in_se():
    torch.manual_seed(0)
    se = SqueezeExcitation(16, 8)
    nn.init.normal_(se.fc2.weight, std=2.0)
    r = P.fold_hardsigmoid_gates(nn.Sequential(se))
    assert isinstance(r.model[0].scale_activation, P.ClipAct) and isinstance(se.scale_activation, nn.Hardsigmoid)
    assert len(r.changes) == 1
    x = torch.randn(2, 16, 5, 5) * 3
    assert _max_diff(nn.Sequential(se), r.model, x) <= 1e-5


def test_static_channel_shuffle_matches_paper_shuffle():
    x = torch.randn(3, 12, 4, 5)
    assert torch.equal(P.static_channel_shuffle(x, 3), channel_shuffle(x, 3))
    m = nn.Sequential(nn.Conv2d(12, 12, 1), ChannelShuffle(3))
    r = P.rewrite_channel_shuffle(m)
    assert isinstance(r.model[1], P.StaticChannelShuffle) and len(r.changes) == 1
    assert _max_diff(m, r.model, x) == 0.0


def test_shufflenet_v2_exports_constant_shuffle_with_dynamic_batch(tmp_path):
    import onnx
    import onnxruntime as ort

    from edgezoo.export.onnx import export_onnx

    m = randomize_bn(create_model("shufflenet_v2_x0_5"))
    r = P.rewrite_channel_shuffle(P.fold_batchnorm(m).model)
    assert len(r.changes) == 16 and all("ChannelShuffle(groups=2)" in c for c in r.changes)  # one per unit
    assert all(isinstance(u.shuffle, P.StaticChannelShuffle) for s in ("stage2", "stage3", "stage4")
               for u in getattr(r.model, s))
    path = tmp_path / "s.onnx"
    # without onnxsim: the traced graph itself must have no Shape -> Gather chain (unrewritten: 77 of each)
    res = export_onnx(r.model, path, (3, 64, 64), simplify=False)
    assert all(c.ok for c in res.checks)
    g = onnx.load(str(path)).graph
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    consts.update({n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in g.node
                   if n.op_type == "Constant" and n.attribute[0].name == "value"})
    reshapes = [n for n in g.node if n.op_type == "Reshape"]
    # every shuffle Reshape takes a constant shape with a -1 batch (chunk() elsewhere still reads Shape)
    assert len(reshapes) == 32 and all(n.input[1] in consts and consts[n.input[1]][0] == -1 for n in reshapes)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((5, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    assert np.max(np.abs(sess.run(None, {"input": x})[0] - ref)) <= 1e-4


def test_mobilenet_v3_int8_passes_chain_is_exact():
    m = randomize_bn(create_model("mobilenet_v3_small"))
    cur = m
    for fn, kw in ((P.fold_batchnorm, {}), (P.fold_hardsigmoid_gates, {}), (P.defer_hardswish_scale, {}),
                   (P.rewrite_activations, {"hardswish": "mul_relu6"})):
        r = fn(cur, **kw)
        assert r.changes
        check = P.check_pass(cur, r, (3, 64, 64))
        assert check.ok and check.max_abs_diff <= 1e-4
        cur = r.model
    x = torch.randn(2, 3, 64, 64)
    assert _max_diff(m, cur, x) <= 1e-4


def test_defer_hardswish_scale_through_se_and_not_into_residuals():
    torch.manual_seed(0)
    se = SqueezeExcitation(8, 4)
    block = nn.Sequential(nn.Sequential(nn.Conv2d(4, 8, 1), nn.Identity(), nn.Hardswish()), se,
                          nn.Sequential(nn.Conv2d(8, 4, 1)))
    tail = nn.Sequential(nn.Conv2d(4, 4, 1), nn.Hardswish())  # feeds nothing linear: left alone
    m = nn.Sequential(block, tail)
    r = P.defer_hardswish_scale(m)
    assert len(r.changes) == 1 and "through 1 SE" in r.changes[0]
    assert isinstance(r.model[0][0][2], P.HardSwishTimes6) and isinstance(r.model[1][1], nn.Hardswish)
    assert isinstance(m[0][0][2], nn.Hardswish)  # input untouched
    x = torch.randn(2, 4, 6, 6) * 4
    assert _max_diff(m, r.model, x) <= 1e-5


def test_drop_noop_slices_in_ghostnet():
    m = randomize_bn(create_model("ghostnet_x0_5"))
    r = P.drop_noop_slices(m)
    assert r.changes and all("slice" in c for c in r.changes)
    assert type(m.features[1].ghost1.slice).__name__ == "ChannelSlice"  # input untouched
    assert isinstance(r.model.features[1].ghost1.slice, nn.Identity)


def test_drop_noop_slices_is_structural_and_keeps_real_slices():
    from edgezoo.models.layers import ChannelSlice

    m = nn.Sequential(nn.Conv2d(3, 8, 1), ChannelSlice(8, 8), nn.Conv2d(8, 6, 1), ChannelSlice(5, 6))
    r = P.drop_noop_slices(m)
    assert isinstance(r.model[1], nn.Identity) and isinstance(r.model[3], ChannelSlice) and len(r.changes) == 1
    x = torch.randn(2, 3, 4, 4)
    assert _max_diff(m, r.model, x) == 0.0
    x = torch.randn(2, 3, 64, 64)
    assert _max_diff(m, r.model, x) == 0.0
