"""HarDNet (Chao et al. ICCV 2019): 39DS, 68DS, 68 and 85 (85 is from the authors' repository only).

Harmonic dense block: layer k (1-based, layer 0 = block input) reads layer k - 2^n for every 2^n dividing k,
concatenated in the order [k-1, k-2, k-4, ...]; it has growth * m^n channels, n the number of i >= 1 with
2^i dividing k, rounded to an even number as the reference does; the block outputs the odd layers and the
last one, in ascending order (not the input).

Module and attribute names are those of the authors' PyTorch release (PingoLH/Pytorch-HarDNet
``hardnet.py``: ``base.N``, ``layers.i``, ``conv``/``norm``/``relu``, ``layer1``/``layer2``, ``dwconv``), so
its checkpoints load with their keys as they are. The activation is ReLU6 as in that code (the paper says
ReLU); DS layers are 1x1 conv-BN-ReLU6 then depthwise 3x3-BN (no activation), pw before dw as the paper asks.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from edgezoo.models._init import torchvision_init
from edgezoo.models.registry import ModelSpec, PaperFigures, ReferenceFigures, register


class Stage(NamedTuple):
    layers: int  # HDB depth
    growth: int  # k
    transition: int  # t: channels of the 1x1 conv after the block
    downsample: bool  # max-pool 2x2 (DS: depthwise 3x3 stride 2) after the transition


class Arch(NamedTuple):
    stem: tuple[int, int]  # 3x3/2 conv, then a 3x3 (1x1 in DS models) conv
    m: float  # channel weighting factor
    stages: list[Stage]
    depthwise: bool  # DS model: DS layers in the blocks, depthwise stride-2 convs instead of max-pools
    dropout: float  # before the classifier
    dropout_before_last_transition: float = 0.0  # HarDNet-85 only (repository code)


# Paper Table 1 (68, 39DS; the 68DS is the 68 with DS layers) and the repository's hardnet.py (85).
ARCHS = {
    "hardnet68": Arch((32, 64), 1.7, [
        Stage(8, 14, 128, True),
        Stage(16, 16, 256, False),
        Stage(16, 20, 320, True),
        Stage(16, 40, 640, True),
        Stage(4, 160, 1024, False),
    ], depthwise=False, dropout=0.1),
    "hardnet68ds": Arch((32, 64), 1.7, [
        Stage(8, 14, 128, True),
        Stage(16, 16, 256, False),
        Stage(16, 20, 320, True),
        Stage(16, 40, 640, True),
        Stage(4, 160, 1024, False),
    ], depthwise=True, dropout=0.05),
    "hardnet39ds": Arch((24, 48), 1.6, [
        Stage(4, 16, 96, True),
        Stage(16, 20, 320, True),
        Stage(8, 64, 640, True),
        Stage(4, 160, 1024, False),
    ], depthwise=True, dropout=0.05),
    "hardnet85": Arch((48, 96), 1.7, [
        Stage(8, 24, 192, True),
        Stage(16, 24, 256, False),
        Stage(16, 28, 320, True),
        Stage(16, 36, 480, False),
        Stage(16, 48, 720, True),
        Stage(4, 256, 1280, False),
    ], depthwise=False, dropout=0.2, dropout_before_last_transition=0.1),
}


class ConvLayer(nn.Sequential):
    """conv k x k (no bias) -> BN -> ReLU6."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1):
        super().__init__()
        self.add_module("conv", nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False))
        self.add_module("norm", nn.BatchNorm2d(out_channels))
        self.add_module("relu", nn.ReLU6(inplace=True))


class DWConvLayer(nn.Sequential):
    """depthwise 3x3 (no bias) -> BN, no activation."""

    def __init__(self, channels: int, stride: int = 1):
        super().__init__()
        self.add_module("dwconv", nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False))
        self.add_module("norm", nn.BatchNorm2d(channels))


class CombConvLayer(nn.Sequential):
    """The DS layer: 1x1 ConvLayer then depthwise 3x3 (pw before dw)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.add_module("layer1", ConvLayer(in_channels, out_channels, kernel=1))
        self.add_module("layer2", DWConvLayer(out_channels))


def harmonic_links(k: int) -> list[int]:
    """Layers that layer k reads, in concatenation order: k-1, then k-2^n for each 2^n dividing k."""
    if k == 0:
        return []
    links, step = [], 1
    while step <= k and k % step == 0:
        links.append(k - step)
        step *= 2
    return links


def layer_channels(k: int, growth: int, m: float) -> int:
    """growth * m^n (n = number of i >= 1 with 2^i | k), rounded to even as ``int(int(x + 1) / 2) * 2``."""
    x = float(growth)
    step = 2
    while k % step == 0:
        x *= m  # multiplied step by step, as the reference does, so the float rounding is the same
        step *= 2
    return int(int(x + 1) / 2) * 2


class HarDBlock(nn.Module):
    def __init__(self, in_channels: int, growth: int, m: float, n_layers: int, depthwise: bool = False):
        super().__init__()
        widths = [in_channels] + [layer_channels(k, growth, m) for k in range(1, n_layers + 1)]
        self.links = [harmonic_links(k) for k in range(1, n_layers + 1)]
        self.widths = widths[1:]
        layer = CombConvLayer if depthwise else ConvLayer
        self.layers = nn.ModuleList(
            layer(sum(widths[j] for j in links), widths[k]) for k, links in enumerate(self.links, start=1)
        )
        # Output: odd layers and the last one (the block input is not kept).
        self.outputs = [k for k in range(1, n_layers + 1) if k % 2 == 1 or k == n_layers]
        self.out_channels = sum(widths[k] for k in self.outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for links, layer in zip(self.links, self.layers):
            inp = feats[links[0]] if len(links) == 1 else torch.cat([feats[j] for j in links], 1)
            feats.append(layer(inp))
        return torch.cat([feats[k] for k in self.outputs], 1)


class HarDNet(nn.Module):
    def __init__(self, arch: str = "hardnet68", num_classes: int = 1000, dropout: float | None = None):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"HarDNet arch must be one of {sorted(ARCHS)}, not {arch!r}")
        cfg = ARCHS[arch]
        c1, c2 = cfg.stem
        layers: list[nn.Module] = [
            ConvLayer(3, c1, 3, stride=2),
            ConvLayer(c1, c2, 1 if cfg.depthwise else 3),
            DWConvLayer(c2, stride=2) if cfg.depthwise else nn.MaxPool2d(3, 2, 1),
        ]
        ch = c2
        for i, st in enumerate(cfg.stages):
            block = HarDBlock(ch, st.growth, cfg.m, st.layers, depthwise=cfg.depthwise)
            layers.append(block)
            if cfg.dropout_before_last_transition and i == len(cfg.stages) - 1:
                layers.append(nn.Dropout(cfg.dropout_before_last_transition))
            layers.append(ConvLayer(block.out_channels, st.transition, 1))
            ch = st.transition
            if st.downsample:
                layers.append(DWConvLayer(ch, stride=2) if cfg.depthwise else nn.MaxPool2d(2, 2))
        layers.append(nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
            nn.Dropout(cfg.dropout if dropout is None else dropout),
            nn.Linear(ch, num_classes),
        ))
        # One Sequential named `base`, as in the reference (its keys are base.N...).
        self.base = nn.Sequential(*layers)
        self.num_features = ch
        torchvision_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x)


def hardnet(**kwargs) -> HarDNet:
    return HarDNet(**kwargs)


# name, params and MACs (computed; params = osmr/imgclsmob), printed params, MACs and top-1, aliases
_MODELS = [
    ("hardnet39ds", 3_488_228, 429.47e6, (3.5e6, 0.44e9, 72.1), ("hardnet39_ds", "hardnet_39ds")),
    ("hardnet68ds", 4_180_602, 775.3e6, (4.2e6, 0.79e9, 74.3), ("hardnet68_ds", "hardnet_68ds")),
    ("hardnet68", 17_565_348, 4_246e6, (17.6e6, 4.3e9, 76.2), ("hardnet", "hardnet_68")),
    ("hardnet85", 36_670_212, 9_074e6, (36.7e6, 9.1e9, 78.0), ("hardnet_85",)),
]
for _name, _params, _macs, (_pp, _pm, _top1), _aliases in _MODELS:
    register(ModelSpec(
        name=_name, family="hardnet", builder=hardnet, aliases=_aliases,
        kwargs={"arch": _name},
        reference=ReferenceFigures(params=_params, macs=_macs, source="PingoLH/Pytorch-HarDNet hardnet.py (exact)"),
        paper=PaperFigures(params=int(_pp), macs=_pm, top1=_top1,
                           table="Chao et al. 2019, Table 4" if _name != "hardnet85"
                           else "PingoLH/Pytorch-HarDNet README (not in the paper)"),
        weights=f"PingoLH/Pytorch-HarDNet {_name}-*.pth (torch.hub 'PingoLH/Pytorch-HarDNet'), keys as they are",
    ))
