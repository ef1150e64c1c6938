"""HarDNet: the harmonic links, block widths and outputs, DS layers, and the authors' key names."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
from torch import nn  # noqa: E402

import edgezoo  # noqa: E402
from edgezoo.models import hardnet as hardnet_mod  # noqa: E402
from edgezoo.testing import randomize_bn  # noqa: E402

# Index of the classifier Sequential in the reference's `base` list (PingoLH/Pytorch-HarDNet): 3 stem modules,
# then per block [block, (Dropout for 85's last), transition, (down-sample)].
HARDNET_HEAD = {"hardnet39ds": 14, "hardnet68ds": 16, "hardnet68": 16, "hardnet85": 19}


@pytest.mark.parametrize("name, head", HARDNET_HEAD.items())
def test_head_is_where_the_authors_have_it(name, head):
    with torch.device("meta"):  # key names and shapes only
        model = edgezoo.create_model(name)
    assert tuple(model.state_dict()[f"base.{head}.3.weight"].shape) == (1000, model.num_features)


def _reference_links(k: int) -> list[int]:
    """The rule as the paper states it: k - 2^n for every n with 2^n dividing k, in the order n = 0, 1, ..."""
    return [k - 2 ** n for n in range(k.bit_length()) if k % 2 ** n == 0 and k - 2 ** n >= 0]


def test_hardnet_links():
    assert hardnet_mod.harmonic_links(8) == [7, 6, 4, 0]
    assert hardnet_mod.harmonic_links(16) == [15, 14, 12, 8, 0]
    assert hardnet_mod.harmonic_links(6) == [5, 4]
    for k in range(1, 65):
        assert hardnet_mod.harmonic_links(k) == _reference_links(k), k


def test_hardnet_block_widths_and_output():
    block = randomize_bn(hardnet_mod.HarDBlock(64, growth=14, m=1.7, n_layers=8)).eval()
    assert block.widths == [14, 24, 14, 40, 14, 24, 14, 68]
    assert block.out_channels == 124  # layers 1, 3, 5, 7 and the last (8): 14 * 4 + 68
    # layer 8 reads layers 7, 6, 4 and the input: 14 + 24 + 40 + 64 channels
    assert block.layers[7].conv.in_channels == 14 + 24 + 40 + 64
    assert isinstance(block.layers[0].relu, nn.ReLU6)
    with torch.no_grad():
        y = block(torch.randn(2, 64, 8, 8))
    assert y.shape == (2, 124, 8, 8)
    # output = concat of layer outputs 1, 3, 5, 7, 8 (ascending): the last 68 channels are layer 8's
    feats = [torch.randn(2, 64, 8, 8)]
    with torch.no_grad():
        for links, layer in zip(block.links, block.layers):
            feats.append(layer(torch.cat([feats[j] for j in links], 1)))
        assert torch.equal(block(feats[0]), torch.cat([feats[k] for k in (1, 3, 5, 7, 8)], 1))


@pytest.mark.parametrize("arch, outs", [
    ("hardnet68", [124, 262, 328, 654, 782]),
    ("hardnet39ds", [72, 292, 518, 730]),
    ("hardnet85", [214, 392, 458, 588, 784, 1252]),
])
def test_hardnet_block_outputs(arch, outs):
    cfg = hardnet_mod.ARCHS[arch]
    got, ch = [], cfg.stem[1]
    with torch.device("meta"):  # shapes only, no memory
        for st in cfg.stages:
            got.append(hardnet_mod.HarDBlock(ch, st.growth, cfg.m, st.layers, cfg.depthwise).out_channels)
            ch = st.transition
    assert got == outs


def test_hardnet_ds_layer_is_pointwise_then_depthwise():
    with torch.device("meta"):
        m = hardnet_mod.HarDNet("hardnet39ds")
    layer = m.base[3].layers[0]
    assert list(layer.state_dict()) == [
        "layer1.conv.weight", "layer1.norm.weight", "layer1.norm.bias", "layer1.norm.running_mean",
        "layer1.norm.running_var", "layer1.norm.num_batches_tracked", "layer2.dwconv.weight", "layer2.norm.weight",
        "layer2.norm.bias", "layer2.norm.running_mean", "layer2.norm.running_var", "layer2.norm.num_batches_tracked"]
    assert layer.layer1.conv.kernel_size == (1, 1) and layer.layer2.dwconv.groups == layer.layer2.dwconv.in_channels
    assert isinstance(m.base[2], hardnet_mod.DWConvLayer)  # DS models down-sample with a stride-2 dw conv
    assert m.base[1].conv.kernel_size == (1, 1)  # and their second stem conv is 1x1
