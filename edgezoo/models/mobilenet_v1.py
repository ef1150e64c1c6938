"""MobileNet v1 (Howard et al. 2017), any width multiplier and resolution.

Paper Table 1 with its typo corrected: the last depthwise conv has stride 1 (only that gives the paper's
569M Mult-Adds at 224; stride 2 would give 533.8M).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch
from torch import nn

from edgezoo.models._init import torchvision_init
from edgezoo.models.layers import ConvBNAct, make_divisible
from edgezoo.models.registry import ModelSpec, PaperFigures, ReferenceFigures, register

STEM_CHANNELS = 32
# Paper Table 1, rows 2-14: (pointwise output channels, depthwise stride).
DW_PW_LAYERS = [
    (64, 1),
    (128, 2), (128, 1),
    (256, 2), (256, 1),
    (512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
    (1024, 2), (1024, 1),  # the paper prints s2 for the last dw: a typo
]
# timm's mobilenetv1_100 groups the 13 layers into stages of these lengths (its `blocks.i.j`).
_TIMM_STAGES = (1, 2, 2, 6, 2)

_ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6}


class MobileNetV1(nn.Module):
    def __init__(
        self,
        width_mult: float = 1.0,
        num_classes: int = 1000,
        activation: str = "relu6",
        dropout: float = 0.0,
    ):
        super().__init__()
        # The paper says ReLU; the released TF-slim and timm checkpoints are trained with ReLU6, so that is
        # the default here (activation="relu" gives the paper's text).
        act = _ACTIVATIONS[activation]
        # The multiplier applies to every layer, the first 32 and the last 1024 included (paper §3.3);
        # rounding to 8 as timm does changes nothing for 1.0/0.75/0.5/0.25.
        ch = lambda c: make_divisible(c * width_mult, 8)  # noqa: E731
        c_in = ch(STEM_CHANNELS)
        layers: list[nn.Module] = [ConvBNAct(3, c_in, 3, stride=2, activation=act)]
        for c_out, stride in DW_PW_LAYERS:
            c_out = ch(c_out)
            layers.append(nn.Sequential(
                ConvBNAct(c_in, c_in, 3, stride=stride, groups=c_in, activation=act),
                ConvBNAct(c_in, c_out, 1, activation=act),
            ))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_in, num_classes)
        self.num_features = c_in
        torchvision_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(self.dropout(x))


def remap_timm(state: Mapping[str, Any]) -> dict[str, Any]:
    """timm ``mobilenetv1_*`` keys -> ours (``blocks.i.j`` -> ``features.n``). Other keys pass through."""
    if "conv_stem.weight" not in state:
        return dict(state)
    starts = [1 + sum(_TIMM_STAGES[:i]) for i in range(len(_TIMM_STAGES))]
    parts = {"conv_dw": "0.0", "bn1": "0.1", "conv_pw": "1.0", "bn2": "1.1"}
    out = {}
    for k, v in state.items():
        if k.startswith("conv_stem."):
            k = "features.0.0." + k[len("conv_stem."):]
        elif k.startswith("bn1."):
            k = "features.0.1." + k[len("bn1."):]
        elif m := re.match(r"blocks\.(\d+)\.(\d+)\.(conv_dw|bn1|conv_pw|bn2)\.(.+)", k):
            i, j, part, rest = m.groups()
            k = f"features.{starts[int(i)] + int(j)}.{parts[part]}.{rest}"
        out[k] = v
    return out


def mobilenet_v1(**kwargs) -> MobileNetV1:
    return MobileNetV1(**kwargs)


# name, width, MACs and params (computed; params = timm), Howard et al. 2017 Table 6 as printed
# (Mult-Adds, params, top-1), aliases
_WIDTHS = [
    ("mobilenet_v1", 1.0, 568.74e6, 4_231_976, (569e6, 4.2e6, 70.6),
     ("mobilenetv1", "mobilenet_v1_x1_0", "mobilenetv1_100")),
    ("mobilenet_v1_x0_75", 0.75, 325.40e6, 2_585_560, (325e6, 2.6e6, 68.4), ("mobilenetv1_075",)),
    ("mobilenet_v1_x0_5", 0.5, 149.50e6, 1_331_592, (149e6, 1.3e6, 63.7), ("mobilenetv1_050",)),
    ("mobilenet_v1_x0_25", 0.25, 41.03e6, 470_072, (41e6, 0.5e6, 50.6), ("mobilenetv1_025",)),
]
for _name, _w, _macs, _params, (_pm, _pp, _top1), _aliases in _WIDTHS:
    register(ModelSpec(
        name=_name, family="mobilenet_v1", builder=mobilenet_v1, aliases=_aliases,
        kwargs={"width_mult": _w},
        reference=ReferenceFigures(params=_params, macs=_macs,
                                   source=f"timm mobilenetv1_{int(_w * 100):03d} topology (params exact)"),
        paper=PaperFigures(params=int(_pp), macs=_pm, top1=_top1, table="Howard et al. 2017, Table 6"),
        weights=f"timm mobilenetv1_{int(_w * 100):03d} state_dict (ReLU6, keys remapped)"
        if _w == 1.0 else "timm-style mobilenetv1 state_dict of the same width (keys remapped)",
        remap_state_dict=remap_timm,
    ))
