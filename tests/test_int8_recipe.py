"""The int8 recipe every target shares (edgezoo.export.int8_recipe): which convs stay float, PyTorch bias
correction, and the CPU check that decides 7-bit weights."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx (edgezoo[export]) is not installed")
torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from torch import nn  # noqa: E402

from edgezoo.export import int8_recipe as R  # noqa: E402


def _graph(stem_kernel=3, after_stem="Relu", extra_convs=12):
    """input -> stem conv -> ``after_stem`` -> dw conv -> Relu -> pw conv -> Add -> ``extra_convs`` 1x1 convs."""
    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def conv(name, x, cin, cout, k=1, group=1):
        w = rng.normal(0, 0.1, (cout, cin // group, k, k)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, name + "_w"))
        nodes.append(helper.make_node("Conv", [x, name + "_w"], [name], name=name, group=group, pads=[k // 2] * 4))
        return name

    x = conv("stem", "input", 3, 16, stem_kernel)
    nodes.append(helper.make_node(after_stem, [x], ["a0"], name="a0", **({"kernel_shape": [1, 1]}
                                                                         if after_stem == "MaxPool" else {})))
    x = conv("dw", "a0", 16, 16, 3, group=16)
    nodes.append(helper.make_node("Relu", [x], ["a1"], name="a1"))
    x = conv("pw", "a1", 16, 16)
    nodes.append(helper.make_node("Add", [x, "a0"], ["res"], name="res"))
    x = "res"
    for i in range(extra_convs):
        x = conv(f"c{i}", x, 16, 16)
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 16, 16, 16])], inits)
    return g


def test_float_head_is_the_stem_and_the_convs_right_after_it():
    assert R.float_head(_graph()) == ["stem", "dw", "pw"]
    assert R.float_head(_graph(), limit=2) == ["stem", "dw"]


def test_no_float_head_after_a_big_stem_a_pooled_stem_or_in_a_shallow_model():
    assert R.float_head(_graph(stem_kernel=7)) == []  # SqueezeNet 1.0's kind of stem holds real MACs
    assert R.float_head(_graph(after_stem="MaxPool")) == []  # ShuffleNet's stem feeds a pool
    # 3 convs in all: a head of a quarter of them is none
    assert R.float_head(_graph(extra_convs=0)) == []
    assert R.float_head(_graph(extra_convs=5)) == ["stem", "dw"]  # 8 convs: a head of 2


@pytest.mark.parametrize("flags, machine, saturates", [
    ({"avx2", "fma"}, "x86_64", True),  # AVX2 only: VPMADDUBSW's 16-bit sums
    ({"avx2", "avx512_vnni"}, "x86_64", False),
    ({"avx2", "avx_vnni"}, "x86_64", False),
    ({"avx2", "amx_int8"}, "x86_64", False),
    ({"asimd"}, "aarch64", False),  # Arm dot products accumulate in 32 bits
    (set(), "x86_64", False),  # flags unknown: no 7-bit weights by guess
])
def test_saturating_cpu_from_flags(monkeypatch, flags, machine, saturates):
    monkeypatch.setattr(R.platform, "machine", lambda: machine)
    assert R.saturating_int8_cpu(flags) is saturates


def test_first_convs_follow_execution_order_not_definition_order():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.late = nn.Conv2d(8, 8, 1)  # defined first, runs second
            self.early = nn.Conv2d(3, 8, 3, padding=1)
            self.last = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return self.last(self.late(self.early(x)))

    x = np.zeros((1, 3, 8, 8), np.float32)
    assert R.first_convs(Net(), x, 2) == ["early", "late"]


def test_torch_bias_correction_removes_the_mean_shift_of_int8_weights():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=16)).eval()
    with torch.no_grad():  # one large weight per tensor: a coarse per-tensor step, so rounding shifts the mean
        net[0].weight.add_(0.004)
        net[0].weight[0, 0, 1, 1] = 3.0
        net[2].weight.add_(0.004)
        net[2].weight[3, 0, 0, 0] = 2.0
    x = np.abs(np.random.default_rng(0).normal(1.0, 0.5, (16, 8, 12, 12))).astype(np.float32)

    def with_int8_weights(m):
        m = __import__("copy").deepcopy(m)
        with torch.no_grad():
            for layer in m:
                if isinstance(layer, nn.Conv2d):
                    layer.weight.copy_(R._fake_quant_weight(layer.weight, False, 127))
        return m

    def mean_error(m):
        with torch.no_grad():
            ref, test = net(torch.from_numpy(x)), m(torch.from_numpy(x))
        return float((test - ref).mean(dim=(0, 2, 3)).abs().mean())

    corrected, n = R.correct_biases_torch(net, x, per_channel=False)
    assert n == 2
    before, after = mean_error(with_int8_weights(net)), mean_error(with_int8_weights(corrected))
    assert after < 0.5 * before, (before, after)
    skipped, n = R.correct_biases_torch(net, x, skip={"0"}, per_channel=False)
    assert n == 1 and torch.equal(skipped[0].bias, net[0].bias)


def test_recipe_describes_itself(tmp_path):
    g = _graph()
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, tmp_path / "m.onnx")
    r = R.recipe_for(tmp_path / "m.onnx", reduce_range=True)
    assert (r.head_convs, r.head_nodes, r.bias_correction, r.reduce_range) == (3, ["stem", "dw", "pw"], True, True)
    assert "7-bit" in r.describe() and "first 3 convs in float" in r.describe()
    assert R.recipe_for(tmp_path / "m.onnx", head=False, reduce_range=False).describe().startswith("no float head")


def test_clip_as_relu6_gives_the_pt2e_targets_relu6_back():
    import torch
    from torch import nn

    from edgezoo.export.int8_recipe import clip_as_relu6
    from edgezoo.export.passes import ClipAct

    m = nn.Sequential(nn.Conv2d(3, 4, 3), ClipAct(0.0, 6.0), nn.Conv2d(4, 4, 1), ClipAct(-1.0, 1.0))
    out = clip_as_relu6(m)
    assert isinstance(out[1], nn.ReLU6) and isinstance(out[3], ClipAct) and isinstance(m[1], ClipAct)
    x = torch.randn(2, 3, 8, 8) * 10
    assert torch.equal(out(x), m(x))


def test_float_nodes_is_the_one_answer_to_what_runs_in_float():
    """The activation forms' float layers, then the head, then the budget's layers, each once."""
    from edgezoo.export.int8_forms import Int8Forms

    recipe = R.Int8Recipe(head_convs=2, float_nodes=("pw", "late"))
    forms = Int8Forms("test", "keep", "", float_stem=True)
    every, head = R.float_nodes(_graph(), recipe, forms)
    assert head == ["stem", "dw"] and every == ["stem", "dw", "pw", "late"]
    assert R.float_nodes(_graph(), recipe) == (["stem", "dw", "pw", "late"], ["stem", "dw"])
