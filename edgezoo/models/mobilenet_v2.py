"""MobileNet v2 (Sandler et al. 2018), width multipliers; torchvision's layout, so its checkpoints load."""

from __future__ import annotations

import torch
from torch import nn

from edgezoo.models._init import torchvision_init
from edgezoo.models.layers import ConvBNAct, make_divisible
from edgezoo.models.registry import ModelSpec, PaperFigures, ReferenceFigures, register

# Paper Table 2: expansion t, output channels c, repeats n, first stride s.
INVERTED_RESIDUAL_SETTING = [
    # t,  c,   n, s
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> linear 1x1 project; residual when shapes allow."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: float):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(inp, hidden, 1, activation=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride=stride, groups=hidden, activation=nn.ReLU6),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, width_mult: float = 1.0, num_classes: int = 1000, dropout: float = 0.2,
                 round_nearest: int = 8):
        super().__init__()
        c_in = make_divisible(STEM_CHANNELS * width_mult, round_nearest)
        # Paper §5: for multipliers < 1 the last conv keeps its 1280 channels.
        self.last_channel = make_divisible(LAST_CHANNELS * max(1.0, width_mult), round_nearest)
        features: list[nn.Module] = [ConvBNAct(3, c_in, 3, stride=2, activation=nn.ReLU6)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            c_out = make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(InvertedResidual(c_in, c_out, s if i == 0 else 1, t))
                c_in = c_out
        features.append(ConvBNAct(c_in, self.last_channel, 1, activation=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        torchvision_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2(**kwargs) -> MobileNetV2:
    return MobileNetV2(**kwargs)


# timm's names (mobilenetv2_100, mobilenetv3_large_100, ...) are not aliases: timm's layout differs and
# its state_dicts do not load here.
register(ModelSpec(
    name="mobilenet_v2", family="mobilenet_v2", builder=mobilenet_v2,
    aliases=("mobilenetv2", "mobilenet_v2_x1_0"),
    reference=ReferenceFigures(params=3_504_872, macs=300.77e6, source="torchvision mobilenet_v2 (exact)"),
    paper=PaperFigures(params=3_400_000, macs=300e6, top1=72.0, table="Sandler et al. 2018, Table 4"),
    weights="torchvision.models.mobilenet_v2 state_dict, keys as they are",
))
register(ModelSpec(
    name="mobilenet_v2_x1_4", family="mobilenet_v2", builder=mobilenet_v2, kwargs={"width_mult": 1.4},
    aliases=("mobilenet_v2_140",),
    reference=ReferenceFigures(params=6_108_776, macs=582.20e6,
                               source="torchvision MobileNetV2(width_mult=1.4), = timm mobilenetv2_140"),
    # printed 6.9M params; the TF-slim release of this model has 6.06M
    paper=PaperFigures(params=6_900_000, macs=585e6, top1=74.7, table="Sandler et al. 2018, Table 4"),
    weights="torchvision-layout MobileNetV2(width_mult=1.4) state_dict",
))
register(ModelSpec(
    name="mobilenet_v2_x0_35", family="mobilenet_v2", builder=mobilenet_v2, kwargs={"width_mult": 0.35},
    aliases=("mobilenet_v2_035",),
    reference=ReferenceFigures(params=1_677_128, macs=59.29e6, source="torchvision MobileNetV2(width_mult=0.35)"),
    paper=PaperFigures(params=1_600_000, macs=59.2e6, top1=60.8,
                       table="Howard et al. 2019 (MobileNetV3, arXiv v5), Table 3"),
    weights="torchvision-layout MobileNetV2(width_mult=0.35) state_dict",
))
