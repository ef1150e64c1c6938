"""EFFNet: the block (separable 1x3/3x1 dw, pooling, strided 1x2 conv), the head, other input sizes."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
from torch import nn  # noqa: E402

import edgezoo  # noqa: E402
from edgezoo.models import effnet as effnet_mod  # noqa: E402
from edgezoo.models.counting import count_params  # noqa: E402


def test_effnet_block_and_head():
    m = edgezoo.create_model("effnet")
    block = m.features[0]
    convs = [mod for mod in block.modules() if isinstance(mod, nn.Conv2d)]
    assert [(c.kernel_size, c.stride, c.groups) for c in convs] == [
        ((1, 1), (1, 1), 1), ((1, 3), (1, 1), 32), ((3, 1), (1, 1), 32), ((1, 2), (1, 2), 1)]
    assert [c.out_channels for c in convs] == [32, 32, 32, 64]  # bottleneck factor 2
    assert isinstance(block[2], nn.MaxPool2d) and block[2].kernel_size == (2, 1) and block[2].stride == (2, 1)
    for seq in (block[0], block[1], block[3], block[4]):  # conv, BN, leaky ReLU 0.3
        assert isinstance(seq[1], nn.BatchNorm2d) and seq[2].negative_slope == 0.3
    assert m.classifier.in_features == 256 * 4 * 4
    big = edgezoo.create_model("effnet", input_size=(3, 64, 48), num_classes=43)
    with torch.no_grad():
        assert big(torch.randn(2, 3, 64, 48)).shape == (2, 43)
    ref_order = edgezoo.create_model("effnet", act_before_bn=True)
    assert isinstance(ref_order.features[0][0][1], nn.LeakyReLU)  # the references' order, same counts
    assert count_params(ref_order) == 151_146
    with pytest.raises(ValueError, match="divisible by 8"):
        effnet_mod.EffNet(input_size=20)
