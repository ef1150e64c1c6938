"""MobileNet v3 large and small (Howard et al. 2019, arXiv v5 tables), width multipliers.

Layout and rounding are torchvision's ``mobilenetv3.py`` so its checkpoints load as they are: BN eps 1e-3,
momentum 0.01; SE squeeze = make_divisible(exp // 4, 8) with a Hardsigmoid gate (= ReLU6(x + 3) / 6).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from edgezoo.models._init import torchvision_init
from edgezoo.models.layers import ConvBNAct, SqueezeExcitation, make_divisible
from edgezoo.models.registry import ModelSpec, PaperFigures, ReferenceFigures, register


class Block(NamedTuple):
    """One row of the paper's Table 1/2."""

    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    se: bool
    act: str  # "RE" (ReLU) or "HS" (h-swish)
    stride: int


# arXiv v5 Table 1 (Large): in, k, exp, out, SE, NL, s
LARGE = [
    Block(16, 3, 16, 16, False, "RE", 1),
    Block(16, 3, 64, 24, False, "RE", 2),
    Block(24, 3, 72, 24, False, "RE", 1),
    Block(24, 5, 72, 40, True, "RE", 2),
    Block(40, 5, 120, 40, True, "RE", 1),
    Block(40, 5, 120, 40, True, "RE", 1),
    Block(40, 3, 240, 80, False, "HS", 2),
    Block(80, 3, 200, 80, False, "HS", 1),
    Block(80, 3, 184, 80, False, "HS", 1),
    Block(80, 3, 184, 80, False, "HS", 1),
    Block(80, 3, 480, 112, True, "HS", 1),
    Block(112, 3, 672, 112, True, "HS", 1),
    Block(112, 5, 672, 160, True, "HS", 2),
    Block(160, 5, 960, 160, True, "HS", 1),
    Block(160, 5, 960, 160, True, "HS", 1),
]
LARGE_LAST_CHANNEL = 1280

# arXiv v5 Table 2 (Small). The paper marks SE on the final 576 conv; torchvision and TF-slim have none
# there, and 2.5M params only fits without it.
SMALL = [
    Block(16, 3, 16, 16, True, "RE", 2),
    Block(16, 3, 72, 24, False, "RE", 2),
    Block(24, 3, 88, 24, False, "RE", 1),
    Block(24, 5, 96, 40, True, "HS", 2),
    Block(40, 5, 240, 40, True, "HS", 1),
    Block(40, 5, 240, 40, True, "HS", 1),
    Block(40, 5, 120, 48, True, "HS", 1),
    Block(48, 5, 144, 48, True, "HS", 1),
    Block(48, 5, 288, 96, True, "HS", 2),
    Block(96, 5, 576, 96, True, "HS", 1),
    Block(96, 5, 576, 96, True, "HS", 1),
]
SMALL_LAST_CHANNEL = 1024

STEM_CHANNELS = 16
_BN = {"bn_eps": 0.001, "bn_momentum": 0.01}
_ACT = {"RE": nn.ReLU, "HS": nn.Hardswish}


class InvertedResidual(nn.Module):
    """[1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project (no activation); residual iff s=1, in=out."""

    def __init__(self, cnf: Block):
        super().__init__()
        act = _ACT[cnf.act]
        self.use_res_connect = cnf.stride == 1 and cnf.in_channels == cnf.out_channels
        layers: list[nn.Module] = []
        if cnf.expanded != cnf.in_channels:
            layers.append(ConvBNAct(cnf.in_channels, cnf.expanded, 1, activation=act, **_BN))
        layers.append(ConvBNAct(cnf.expanded, cnf.expanded, cnf.kernel, stride=cnf.stride,
                                groups=cnf.expanded, activation=act, **_BN))
        if cnf.se:
            layers.append(SqueezeExcitation(cnf.expanded, make_divisible(cnf.expanded // 4, 8)))
        layers.append(ConvBNAct(cnf.expanded, cnf.out_channels, 1, activation=None, **_BN))
        self.block = nn.Sequential(*layers)
        self.out_channels = cnf.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return y + x if self.use_res_connect else y


def scale_table(table: list[Block], width_mult: float) -> list[Block]:
    """Width multiplier as torchvision applies it: in, exp and out channels via make_divisible(c * w, 8)."""
    ch = lambda c: make_divisible(c * width_mult, 8)  # noqa: E731
    return [b._replace(in_channels=ch(b.in_channels), expanded=ch(b.expanded), out_channels=ch(b.out_channels))
            for b in table]


class MobileNetV3(nn.Module):
    def __init__(self, table: list[Block], last_channel: int, width_mult: float = 1.0,
                 num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        blocks = scale_table(table, width_mult)
        last_channel = make_divisible(last_channel * width_mult, 8)
        layers: list[nn.Module] = [
            ConvBNAct(3, blocks[0].in_channels, 3, stride=2, activation=nn.Hardswish, **_BN)
        ]
        layers += [InvertedResidual(b) for b in blocks]
        last_in = blocks[-1].out_channels
        layers.append(ConvBNAct(last_in, 6 * last_in, 1, activation=nn.Hardswish, **_BN))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        # The paper's two 1x1 "NBN" convs after pooling, as Linear layers (same weights, same function).
        self.classifier = nn.Sequential(
            nn.Linear(6 * last_in, last_channel),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=dropout, inplace=True),
            nn.Linear(last_channel, num_classes),
        )
        torchvision_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


def mobilenet_v3_large(width_mult: float = 1.0, **kwargs) -> MobileNetV3:
    return MobileNetV3(LARGE, LARGE_LAST_CHANNEL, width_mult=width_mult, **kwargs)


def mobilenet_v3_small(width_mult: float = 1.0, **kwargs) -> MobileNetV3:
    return MobileNetV3(SMALL, SMALL_LAST_CHANNEL, width_mult=width_mult, **kwargs)


# timm's names (mobilenetv2_100, mobilenetv3_large_100, ...) are not aliases: timm's layout differs and
# its state_dicts do not load here.
register(ModelSpec(
    name="mobilenet_v3_large", family="mobilenet_v3", builder=mobilenet_v3_large,
    aliases=("mobilenetv3", "mobilenetv3_large", "mobilenet_v3", "mobilenet_v3_large_x1_0"),
    reference=ReferenceFigures(params=5_483_032, macs=216.6e6, source="torchvision mobilenet_v3_large (exact)"),
    paper=PaperFigures(params=5_400_000, macs=219e6, top1=75.2, table="Howard et al. 2019 (arXiv v5), Table 3"),
    weights="torchvision.models.mobilenet_v3_large state_dict, keys as they are",
))
register(ModelSpec(
    name="mobilenet_v3_small", family="mobilenet_v3", builder=mobilenet_v3_small,
    aliases=("mobilenetv3_small", "mobilenet_v3_small_x1_0"),
    reference=ReferenceFigures(params=2_542_856, macs=56.5e6, source="torchvision mobilenet_v3_small (exact)"),
    paper=PaperFigures(params=2_500_000, macs=56e6, top1=67.4, table="Howard et al. 2019 (arXiv v5), Table 3"),
    weights="torchvision.models.mobilenet_v3_small state_dict, keys as they are",
))
