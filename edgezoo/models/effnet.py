"""EffNet (Freeman, Roese-Koerner, Kummert; ICIP 2018, arXiv 1801.06434): the block and the 32x32 network.

Block (the paper): 1x1 conv to a bottleneck of half the block's output channels (bottleneck factor 2) ->
depthwise 1x3 -> 2x1 max-pool, stride 2 along the height ("separable pooling") -> depthwise 3x1 -> a conv
that is 2 wide along the width with stride 2 there, producing the output channels. Leaky ReLU activations,
no grouped convs. The network: three blocks 32 -> 64 -> 128 -> 256 on a 32x32 input (the first layer is a
block too), then Flatten -> Linear.

Where the paper is silent we follow the public reference implementations (arthurdouillard/keras-effnet and
andrijdavid/EffNet), except where noted:
* [ref] leaky-ReLU slope 0.3 (Keras' default, both references); no conv biases; a BN after every conv.
* [ref] the block's 1x1 conv reads the previous block's output (3 channels for the first block).
* [ref, andrijdavid] last conv kernel (1, 2), stride (1, 2), no padding: kernel and stride on the same axis,
  mirroring the (2, 1) pool. keras-effnet uses kernel (2, 1) with stride (1, 2) and 'same' padding; both
  give the same counts (151,146 params, 5.64M MACs for 10 classes).
* [ours] conv -> BN -> activation. Both references put the activation *before* BN (a Keras habit); we
  keep every conv directly followed by its BN so the export passes can fold it (``act_before_bn=True``
  gives the references' order).
* [ours] the classifier is sized from ``input_size`` (Flatten needs it): 256 x (H/8) x (W/8) features.
* [UNVERIFIED] the paper's depth multiplier of 2 for the first spatial layer (seen only in a translation,
  used by no reference implementation) is not applied.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from edgezoo.models._init import torchvision_init
from edgezoo.models.registry import ModelSpec, PaperFigures, ReferenceFigures, register

# The paper's network: output channels of each block; the bottleneck is half of it (factor 2).
BLOCKS = (64, 128, 256)
BOTTLENECK_FACTOR = 2
LEAKY_SLOPE = 0.3
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _conv_bn_act(conv: nn.Conv2d, act_before_bn: bool) -> nn.Sequential:
    bn = nn.BatchNorm2d(conv.out_channels)
    act = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
    return nn.Sequential(conv, act, bn) if act_before_bn else nn.Sequential(conv, bn, act)


class EffNetBlock(nn.Sequential):
    """Halves height and width; ``in -> out`` channels through a bottleneck of ``out / 2``."""

    def __init__(self, in_channels: int, out_channels: int, act_before_bn: bool = False):
        mid = out_channels // BOTTLENECK_FACTOR
        super().__init__(
            _conv_bn_act(nn.Conv2d(in_channels, mid, 1, bias=False), act_before_bn),
            _conv_bn_act(nn.Conv2d(mid, mid, (1, 3), padding=(0, 1), groups=mid, bias=False), act_before_bn),
            nn.MaxPool2d((2, 1), (2, 1)),
            _conv_bn_act(nn.Conv2d(mid, mid, (3, 1), padding=(1, 0), groups=mid, bias=False), act_before_bn),
            _conv_bn_act(nn.Conv2d(mid, out_channels, (1, 2), stride=(1, 2), bias=False), act_before_bn),
        )


class EffNet(nn.Module):
    def __init__(self, num_classes: int = 10, input_size: int | Sequence[int] = 32,
                 blocks: Sequence[int] = BLOCKS, act_before_bn: bool = False, in_channels: int = 3):
        super().__init__()
        h, w = _height_width(input_size)
        down = 2 ** len(blocks)
        if h % down or w % down:
            raise ValueError(f"EffNet with {len(blocks)} blocks needs height and width divisible by {down}, "
                             f"not {h}x{w}")
        layers, c = [], in_channels
        for c_out in blocks:
            layers.append(EffNetBlock(c, c_out, act_before_bn))
            c = c_out
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(c * (h // down) * (w // down), num_classes)
        self.input_size = (h, w)
        torchvision_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


def _height_width(size: int | Sequence[int]) -> tuple[int, int]:
    """32, (32, 32) or (3, 32, 32) -> (32, 32)."""
    if isinstance(size, int):
        return size, size
    size = tuple(size)
    if len(size) in (2, 3):
        return int(size[-2]), int(size[-1])
    raise ValueError(f"input_size must be an int, (H, W) or (C, H, W), not {size!r}")


def effnet(**kwargs) -> EffNet:
    return EffNet(**kwargs)


register(ModelSpec(
    name="effnet", family="effnet", builder=effnet, aliases=("effnet_cifar10", "effnet_32"),
    input_size=(3, 32, 32), mean=CIFAR10_MEAN, std=CIFAR10_STD, num_classes=10, labels=CIFAR10_LABELS,
    reference=ReferenceFigures(params=151_146, macs=5.64e6,
                               source="arthurdouillard/keras-effnet and andrijdavid/EffNet (CIFAR-10 network)"),
    # the paper's result tables are printed as images; no figure of this network is recorded here
    paper=PaperFigures(table="Freeman et al. 2018 (figures not recorded: tables are images)"),
    weights="no public trained checkpoint (train your own; num_classes and input_size are builder arguments)",
))
