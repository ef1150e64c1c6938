"""GhostNet (Han et al. CVPR 2020), widths 0.5x / 1.0x / 1.3x, weight-compatible with timm ``ghostnet_*``.

Ghost module: a 1x1 primary conv makes ceil(out / ratio) channels, a cheap depthwise d x d conv makes the
rest, the two are concatenated and sliced to ``out`` (ratio s = 2, d = 3). G-bneck: ghost (expand, ReLU) ->
[depthwise k x k stride 2 + BN] -> [SE] -> ghost (project, no ReLU) + shortcut. The SE squeezes to
make_divisible(C / 4, 4) with ReLU and a hard-sigmoid gate (= ReLU6(x + 3) / 6); GhostNet has no h-swish.
The head conv 960 -> 1280 has a bias and no BN.

Every conv + BN pair is two adjacent children of an ``nn.Sequential`` (for the BN-folding pass), so timm's
attribute names (``conv_stem``/``bn1``, ``conv_dw``/``bn_dw``, ``blocks.i.j``) are mapped by ``remap_timm``.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, NamedTuple

import torch
from torch import nn

from edgezoo.models._init import torchvision_init
from edgezoo.models.layers import ChannelSlice, ConvBNAct, SqueezeExcitation, make_divisible
from edgezoo.models.registry import ModelSpec, PaperFigures, ReferenceFigures, register


class Row(NamedTuple):
    """One G-bneck row of the paper's Table 7."""

    kernel: int  # dw kernel: not in the paper's table, from the official code
    expanded: int
    out_channels: int
    se: bool
    stride: int


STEM_CHANNELS = 16
# Paper Table 7 (kernels from the official code / timm `_create_ghostnet`, whose rows are identical).
TABLE7 = [
    Row(3, 16, 16, False, 1),
    Row(3, 48, 24, False, 2),
    Row(3, 72, 24, False, 1),
    Row(5, 72, 40, True, 2),
    Row(5, 120, 40, True, 1),
    Row(3, 240, 80, False, 2),
    Row(3, 200, 80, False, 1),
    Row(3, 184, 80, False, 1),
    Row(3, 184, 80, False, 1),
    Row(3, 480, 112, True, 1),
    Row(3, 672, 112, True, 1),
    Row(5, 672, 160, True, 2),
    Row(5, 960, 160, False, 1),
    Row(5, 960, 160, True, 1),
    Row(5, 960, 160, False, 1),
    Row(5, 960, 160, True, 1),
]
LAST_CONV_CHANNELS = 960  # the 1x1 conv after the last G-bneck (scaled with the width)
HEAD_CHANNELS = 1280  # the 1x1 conv after pooling (not scaled)
# The official code and timm group the 16 rows into stages of these lengths (`blocks.i.j`), plus a last
# stage holding the 960 conv.
_TIMM_STAGES = (1, 1, 1, 1, 1, 1, 5, 1, 4)


class GhostModule(nn.Module):
    """primary 1x1 conv (ceil(out/ratio) ch) + cheap dw conv (the rest); concat, slice to ``out``."""

    def __init__(self, in_channels: int, out_channels: int, relu: bool = True, ratio: int = 2, dw_size: int = 3):
        super().__init__()
        self.out_channels = out_channels
        init = math.ceil(out_channels / ratio)
        act = nn.ReLU if relu else None
        self.primary_conv = ConvBNAct(in_channels, init, 1, activation=act)
        self.cheap_operation = ConvBNAct(init, init * (ratio - 1), dw_size, groups=init, activation=act)
        self.slice = ChannelSlice(out_channels, init * ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        return self.slice(torch.cat([x1, self.cheap_operation(x1)], dim=1))


class GhostBottleneck(nn.Module):
    def __init__(self, in_channels: int, expanded: int, out_channels: int, kernel: int, stride: int, se: bool):
        super().__init__()
        self.ghost1 = GhostModule(in_channels, expanded, relu=True)
        # The depthwise conv exists only in stride-2 blocks (paper Fig. 2; BN, no ReLU).
        self.dw = (ConvBNAct(expanded, expanded, kernel, stride=stride, groups=expanded, activation=None)
                   if stride > 1 else None)
        self.se = SqueezeExcitation(expanded, make_divisible(expanded * 0.25, 4)) if se else None
        self.ghost2 = GhostModule(expanded, out_channels, relu=False)
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, in_channels, kernel, stride, (kernel - 1) // 2, groups=in_channels,
                          bias=False),
                nn.BatchNorm2d(in_channels),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ghost1(x)
        if self.dw is not None:
            y = self.dw(y)
        if self.se is not None:
            y = self.se(y)
        return self.ghost2(y) + self.shortcut(x)


class GhostNet(nn.Module):
    def __init__(self, width_mult: float = 1.0, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        # All widths but the 1280 head go through make_divisible(c * width, 4) (official code, timm).
        ch = lambda c: make_divisible(c * width_mult, 4)  # noqa: E731
        c_in = ch(STEM_CHANNELS)
        layers: list[nn.Module] = [ConvBNAct(3, c_in, 3, stride=2)]
        for row in TABLE7:
            c_out = ch(row.out_channels)
            layers.append(GhostBottleneck(c_in, ch(row.expanded), c_out, row.kernel, row.stride, row.se))
            c_in = c_out
        layers.append(ConvBNAct(c_in, ch(LAST_CONV_CHANNELS), 1))
        self.features = nn.Sequential(*layers)
        self.num_features = ch(LAST_CONV_CHANNELS)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(self.num_features, HEAD_CHANNELS, 1, bias=True)  # bias, no BN (paper)
        self.act = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)
        torchvision_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv_head(self.avgpool(self.features(x))))
        return self.classifier(self.dropout(torch.flatten(x, 1)))


_BLOCK_PARTS = {"conv_dw": "dw.0", "bn_dw": "dw.1", "se.conv_reduce": "se.fc1", "se.conv_expand": "se.fc2"}


def remap_timm(state: Mapping[str, Any]) -> dict[str, Any]:
    """timm ``ghostnet_*`` (= the official huawei-noah release) keys -> ours. Other keys pass through."""
    if "conv_stem.weight" not in state:
        return dict(state)
    starts = [1 + sum(_TIMM_STAGES[:i]) for i in range(len(_TIMM_STAGES) + 1)]
    last = starts[-1]  # index of the 960 conv in our `features`
    out = {}
    for k, v in state.items():
        if "total_ops" in k or "total_params" in k:  # counters left by thop in the official checkpoint
            continue
        if "bn." in k and ".ghost" in k:  # older official checkpoints (timm's checkpoint_filter_fn does this)
            k = k.replace("bn.", "bn1.")
        if k.startswith("conv_stem."):
            k = "features.0.0." + k[len("conv_stem."):]
        elif k.startswith("bn1."):
            k = "features.0.1." + k[len("bn1."):]
        elif m := re.match(r"blocks\.(\d+)\.(\d+)\.(.+)", k):
            i, j, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            if i == len(_TIMM_STAGES):  # the 960 conv, timm's ConvBnAct(conv, bn1)
                rest = rest.replace("conv.", "0.", 1).replace("bn1.", "1.", 1)
                k = f"features.{last}.{rest}"
            else:
                for theirs, ours in _BLOCK_PARTS.items():
                    if rest.startswith(theirs + "."):
                        rest = ours + rest[len(theirs):]
                        break
                k = f"features.{starts[i] + j}.{rest}"
        out[k] = v
    return out


def ghostnet(**kwargs) -> GhostNet:
    return GhostNet(**kwargs)


# name, width, params and MACs (computed; = timm), paper FLOPs (M), params (M), top-1, aliases
_WIDTHS = [
    ("ghostnet_x0_5", 0.5, 2_587_292, 42.33e6, 42, 2.6, 66.2, ("ghostnet_050",)),
    ("ghostnet_x1_0", 1.0, 5_182_508, 141.15e6, 141, 5.2, 73.9, ("ghostnet", "ghostnet_100")),
    ("ghostnet_x1_3", 1.3, 7_358_820, 227.00e6, 226, 7.3, 75.7, ("ghostnet_130",)),
]
for _name, _w, _params, _macs, _pmacs, _pparams, _top1, _aliases in _WIDTHS:
    register(ModelSpec(
        name=_name, family="ghostnet", builder=ghostnet, aliases=_aliases,
        kwargs={"width_mult": _w},
        reference=ReferenceFigures(params=_params, macs=_macs, source=f"timm {_aliases[-1]} (exact)"),
        paper=PaperFigures(params=int(_pparams * 1e6), macs=_pmacs * 1e6, top1=_top1, table="Han et al. 2020, Table 8"),
        weights=(f"timm {_aliases[-1]} or official huawei-noah GhostNet state_dict (keys remapped)"
                 if _w == 1.0 else f"timm {_aliases[-1]} state_dict (keys remapped; timm has no trained weights)"),
        remap_state_dict=remap_timm,
    ))
