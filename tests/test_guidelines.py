"""ShuffleNet V2 guidelines G1-G4 on hand-built graphs whose figures can be worked out by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from onnx import helper

from edgezoo.profile.graph import profile_onnx
from edgezoo.profile.guidelines import check_g1, check_g2, check_g3, check_g4, check_guidelines, g1_lower_bound
from onnx_builders import const, make_model, value_info


def _model(nodes, x_shape, inits):
    return make_model(nodes, [value_info("x", x_shape)], [value_info(nodes[-1].output[0], None)], inits)


def _w(name, shape):
    return const(name, shape, 0.01)


def g1_stack(c1, c2, blocks=2, hw=28):
    """Table 1's benchmark: blocks of two 1x1 convs, c1 -> c2 -> c1."""
    nodes, inits, x = [], [], "x"
    for b in range(blocks):
        for k, (ci, co) in enumerate(((c1, c2), (c2, c1))):
            w = f"w{b}{k}"
            inits.append(_w(w, (co, ci, 1, 1)))
            nodes.append(helper.make_node("Conv", [x, w], [f"y{b}{k}"], name=f"/b{b}/conv{k}/Conv"))
            x = f"y{b}{k}"
    return _model(nodes, [1, c1, hw, hw], inits)


def test_g1_balanced_meets_bound_unbalanced_does_not():
    ok = check_g1(profile_onnx(g1_stack(32, 32)))
    assert ok.value == pytest.approx(0, abs=1e-3) and ok.severity == "low"
    bad = check_g1(profile_onnx(g1_stack(9, 108)))  # Table 1's 1:12 row (ARM column)
    hw, B = 28 * 28, 28 * 28 * 9 * 108
    mac = hw * (9 + 108) + 9 * 108
    assert bad.value == pytest.approx(mac / g1_lower_bound(hw, B) - 1, rel=1e-6)
    assert bad.value > 0.5 and bad.severity == "high"
    assert bad.layers[0]["ratio"] in ("1:12", "12:1") and len(bad.layers) == 4


def test_g2_extra_mac_of_group_conv():
    c, hw, g = 64, 14, 8
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="/gc/Conv", group=g)]
    p = profile_onnx(_model(nodes, [1, c, hw, hw], [_w("w", (c, c // g, 1, 1))]))
    f = check_g2(p)
    extra = hw * hw * c * (1 - 1 / g)  # B*(g-1)/c1 with B = hw*c1*c2/g
    B = hw * hw * c * c / g
    assert extra == pytest.approx(B * (g - 1) / c)
    assert f.layers[0]["extra_vs_g1"] == round(extra)
    assert f.value == pytest.approx(round(extra) / p.total("mem_access"))
    assert f.severity == "high"  # the extra is most of this one-layer model's memory access


def test_g2_ignores_depthwise_and_plain_convs():
    c = 16
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="/dw/Conv", group=c, pads=[1, 1, 1, 1])]
    p = profile_onnx(_model(nodes, [1, c, 8, 8], [_w("w", (c, 1, 3, 3))]))
    assert check_g2(p).severity == "ok"
    assert check_g2(profile_onnx(g1_stack(8, 8))).severity == "ok"


def fragments(n, parallel, c=32, hw=14):
    """Table 3's blocks: n 1x1 convs in series, or in parallel and concatenated, inside one block scope."""
    nodes, inits = [], []
    if parallel:
        outs = []
        for k in range(n):
            inits.append(_w(f"w{k}", (c // n, c, 1, 1)))
            nodes.append(helper.make_node("Conv", ["x", f"w{k}"], [f"p{k}"], name=f"/blk/blk.0/f{k}/Conv"))
            outs.append(f"p{k}")
        nodes.append(helper.make_node("Concat", outs, ["y"], name="/blk/blk.0/Concat", axis=1))
    else:
        x = "x"
        for k in range(n):
            inits.append(_w(f"w{k}", (c, c, 1, 1)))
            nodes.append(helper.make_node("Conv", [x, f"w{k}"], [f"s{k}"], name=f"/blk/blk.0/f{k}/Conv"))
            x = f"s{k}"
    return _model(nodes, [1, c, hw, hw], inits)


def test_g3_counts_parallel_branches():
    four = check_g3(profile_onnx(fragments(4, parallel=True)))
    assert four.layers[0]["parallel_branches"] == 4 and four.severity == "high"
    series = check_g3(profile_onnx(fragments(4, parallel=False)))
    assert series.layers[0]["parallel_branches"] == 1 and series.layers[0]["convs"] == 4
    assert series.severity == "low"
    two = check_g3(profile_onnx(fragments(2, parallel=True)))
    assert two.layers[0]["parallel_branches"] == 2 and two.severity == "medium"


def test_g3_series_halves_concatenated_are_one_branch():
    """GhostNet-style: the cheap conv reads the primary conv's output, then both are concatenated."""
    c = 16
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="/g/g.0/primary/Conv"),
             helper.make_node("Conv", ["a", "w2"], ["b"], name="/g/g.0/cheap/Conv", group=c, pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["a", "b"], ["y"], name="/g/g.0/Concat", axis=1)]
    f = check_g3(profile_onnx(_model(nodes, [1, c, 8, 8], [_w("w1", (c, c, 1, 1)), _w("w2", (c, 1, 3, 3))])))
    assert f.layers[0]["parallel_branches"] == 1


def test_g4_share_of_bytes_and_measured_time():
    c, hw = 16, 8
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="/b/Conv"),
             helper.make_node("Relu", ["a"], ["r"], name="/b/Relu"),
             helper.make_node("Add", ["r", "x"], ["y"], name="/b/Add")]
    p = profile_onnx(_model(nodes, [1, c, hw, hw], [_w("w", (c, c, 1, 1))]))
    e = c * hw * hw
    conv_bytes = 4 * (2 * e + c * c)
    ew_bytes = 4 * (2 * e) + 4 * (3 * e)
    add_bytes = 4 * (3 * e)
    f = check_g4(p)
    # the ReLU is fused into the conv (onnxruntime's rule): what runs is the conv and the Add
    assert f.value == pytest.approx(add_bytes / (add_bytes + conv_bytes))
    assert f"in the file {ew_bytes / (ew_bytes + conv_bytes):.1%} of bytes" in f.figure
    assert f.severity == "high"
    assert {d["op_type"] for d in f.layers} == {"Relu", "Add"}
    times = SimpleNamespace(by_type={"Conv": 3.0, "Add": 1.0}, total_ms=4.0, nodes=[])
    measured = check_g4(p, times)
    assert "measured 25.0% of time" in measured.figure
    assert measured.value == pytest.approx(0.25) and measured.severity == "medium"  # weighed by the time


def test_check_guidelines_returns_g1_to_g4_in_order():
    fs = check_guidelines(profile_onnx(g1_stack(16, 16)))
    assert [f.guideline for f in fs] == ["G1", "G2", "G3", "G4"]
    assert all(f.severity in ("ok", "low", "medium", "high") for f in fs)
    assert all(isinstance(f.to_dict()["figure"], str) for f in fs)


def test_paper_claim_mobilenet_v2_breaks_g1_shufflenet_v2_keeps_it():
    """ShuffleNet V2 section 3 criticises MobileNet V2's inverted bottleneck (1:6 widths) under G1 and builds
    its own unit with equal widths; the checker should agree on the zoo's exported models."""
    pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
    from edgezoo.export.onnx import to_onnx_proto
    from edgezoo.models.registry import get_spec

    def g1(name):
        spec = get_spec(name)
        proto, _ = to_onnx_proto(spec.build().eval(), spec.input_size, simplify=True)
        return check_g1(profile_onnx(proto))

    mn, sn = g1("mobilenet_v2_x0_35"), g1("shufflenet_v2_x0_5")
    assert mn.severity in ("medium", "high") and sn.severity == "low"
    assert mn.value > 0.2 and sn.value < 0.05
    assert math.isfinite(mn.value)


def conv_relu_stack(n=4, c=16, hw=16, names=True):
    nodes, inits, x = [], [], "x"
    for k in range(n):
        inits.append(_w(f"w{k}", (c, c, 3, 3)))
        nodes.append(helper.make_node("Conv", [x, f"w{k}"], [f"c{k}"], name=f"/s/s.{k}/Conv", pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{k}"], [f"r{k}"], name=f"/s/s.{k}/Relu"))
        x = f"r{k}"
    return _model(nodes, [1, c, hw, hw], inits)


def test_g4_conv_relu_stack_is_not_high_when_the_relus_are_fused():
    """onnxruntime folds each ReLU into its conv (0% of measured time): G4 must not call the stack high."""
    from edgezoo.profile.fusion import runtime_fusions, runtime_graph, static_fusions

    m = conv_relu_stack()
    p = profile_onnx(m)
    f = check_g4(p)
    assert f.severity == "low" and f.value == 0
    assert "4 more fused into convs" in f.figure
    # the static rule agrees with what onnxruntime's optimized graph runs
    rt = runtime_graph(m.SerializeToString())
    assert rt is not None
    assert set(runtime_fusions(p, rt)) == set(static_fusions(p)) == {f"/s/s.{k}/Relu" for k in range(4)}
    assert check_g4(p, fused=runtime_fusions(p, rt)).severity == "low"
    # a ReLU that reads a tensor someone else also reads cannot be fused: it still counts
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="c"), helper.make_node("Relu", ["a"], ["r"], name="r"),
             helper.make_node("Add", ["r", "a"], ["y"], name="add")]
    p2 = profile_onnx(_model(nodes, [1, 16, 16, 16], [_w("w", (16, 16, 1, 1))]))
    assert static_fusions(p2) == {}
    assert set(runtime_fusions(p2, runtime_graph(_model(nodes, [1, 16, 16, 16], [_w("w", (16, 16, 1, 1))])
                                                 .SerializeToString()))) <= {"add"}


def inception_block(flat: bool, c=32, hw=14):
    """GoogLeNet's Inception module: 1x1 | 1x1->3x3 | 1x1->5x5 | maxpool->1x1, concatenated."""
    nodes, inits = [], []

    def c_(x, cin, cout, k, tag):
        name = f"n{len(nodes)}" if flat else f"/inception3a/{tag}/Conv"
        inits.append(_w(f"w_{tag}", (cout, cin, k, k)))
        nodes.append(helper.make_node("Conv", [x, f"w_{tag}"], [f"o_{tag}"], name=name, pads=[k // 2] * 4))
        return f"o_{tag}"

    b1 = c_("x", c, 8, 1, "b1")
    b2 = c_(c_("x", c, 8, 1, "b2a"), 8, 8, 3, "b2b")
    b3 = c_(c_("x", c, 4, 1, "b3a"), 4, 8, 5, "b3b")
    nodes.append(helper.make_node("MaxPool", ["x"], ["mp"], name=f"n{len(nodes)}" if flat else "/inception3a/pool/MaxPool",
                                  kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    b4 = c_("mp", c, 8, 1, "b4")
    nodes.append(helper.make_node("Concat", [b1, b2, b3, b4], ["y"], name=f"n{len(nodes)}" if flat else
                                  "/inception3a/Concat", axis=1))
    return _model(nodes, [1, c, hw, hw], inits)


@pytest.mark.parametrize("flat", [False, True], ids=["scoped", "flat_names"])
def test_g3_inception_block_is_high_whatever_the_names(flat):
    f = check_g3(profile_onnx(inception_block(flat)))
    assert f.severity == "high"
    assert max(r["parallel_branches"] for r in f.layers) == 4
    assert "up to 4 parallel conv branches" in f.figure


def test_g3_residual_add_is_one_branch():
    """x + conv(conv(x)): the identity path holds no conv."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="a"), helper.make_node("Conv", ["a", "w"], ["b"], name="b"),
             helper.make_node("Add", ["b", "x"], ["y"], name="add")]
    f = check_g3(profile_onnx(_model(nodes, [1, 8, 8, 8], [_w("w", (8, 8, 1, 1))])))
    assert f.layers[0]["parallel_branches"] == 1 and f.severity == "low"


def _flatten_names(proto):
    for k, n in enumerate(proto.graph.node):
        n.name = f"node{k}"
    return proto


@pytest.mark.parametrize("arch", ["googlenet", "inception_v3"])
def test_g3_torchvision_inception_nets_are_high_even_with_flat_names(torchvision, arch):
    """The networks the paper had in mind for G3 (random weights: only the structure matters)."""
    import io

    import onnx
    import torch

    kw = {"aux_logits": False, "init_weights": False}
    model = getattr(torchvision.models, arch)(weights=None, **kw).eval()
    size = 299 if arch == "inception_v3" else 96
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(model, (torch.zeros(1, 3, size, size),), buf, dynamo=False, opset_version=17)
    proto = onnx.load_from_string(buf.getvalue())
    scoped = check_g3(profile_onnx(proto))
    flat = check_g3(profile_onnx(_flatten_names(proto)))
    assert scoped.severity == flat.severity == "high"
    assert max(r["parallel_branches"] for r in flat.layers) >= 4


def test_every_finding_has_advice_from_the_paper():
    fs = check_guidelines(profile_onnx(conv_relu_stack()))
    words = {"G1": "equal", "G2": "group", "G3": "fragmentation", "G4": "element-wise"}
    for f in fs:
        assert words[f.guideline] in f.advice and f.to_dict()["advice"] == f.advice
