"""SqueezeNet 1.0 and 1.1 (Iandola et al. 2016; v1.1 from forresti/SqueezeNet).

Topology and module indices follow torchvision's ``squeezenet.py`` so its checkpoints load as they are:
conv1 without padding, max-pools with ``ceil_mode=True`` (the paper's sizes imply a 227 input; at 224
this gives 818.9M MACs for 1.0).
"""

from __future__ import annotations

import torch
from torch import nn

from edgezoo.models.registry import ModelSpec, PaperFigures, ReferenceFigures, register

# (squeeze, expand1x1, expand3x3) per fire module; "M" = MaxPool 3x3/2. Paper Table 1 / v1.1 README.
_FIRES = {
    "1_0": [(16, 64, 64), (16, 64, 64), (32, 128, 128), "M", (32, 128, 128), (48, 192, 192),
            (48, 192, 192), (64, 256, 256), "M", (64, 256, 256)],
    "1_1": [(16, 64, 64), (16, 64, 64), "M", (32, 128, 128), (32, 128, 128), "M", (48, 192, 192),
            (48, 192, 192), (64, 256, 256), (64, 256, 256)],
}
_STEM = {"1_0": (96, 7), "1_1": (64, 3)}  # conv1 filters, kernel


class Fire(nn.Module):
    def __init__(self, inplanes: int, squeeze: int, expand1x1: int, expand3x3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze, 1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )


class SqueezeNet(nn.Module):
    def __init__(self, version: str = "1_0", num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        if version not in _FIRES:
            raise ValueError(f"SqueezeNet version must be one of {sorted(_FIRES)}, not {version!r}")
        filters, k = _STEM[version]
        layers: list[nn.Module] = [
            nn.Conv2d(3, filters, k, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
        ]
        channels = filters
        for fire in _FIRES[version]:
            if fire == "M":
                layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
            else:
                layers.append(Fire(channels, *fire))
                channels = fire[1] + fire[2]
        self.features = nn.Sequential(*layers)
        self.num_classes = num_classes
        final_conv = nn.Conv2d(channels, num_classes, 1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), final_conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1)
        )
        for m in self.modules():  # torchvision's init
            if isinstance(m, nn.Conv2d):
                if m is final_conv:
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


def squeezenet1_0(**kwargs) -> SqueezeNet:
    return SqueezeNet("1_0", **kwargs)


def squeezenet1_1(**kwargs) -> SqueezeNet:
    return SqueezeNet("1_1", **kwargs)


_TV = "torchvision.models.{} state_dict (IMAGENET1K_V1), keys as they are"

register(ModelSpec(
    name="squeezenet1_0", family="squeezenet", builder=squeezenet1_0,
    aliases=("squeezenet", "squeezenet1.0", "squeezenet_1_0", "squeezenet10"),
    reference=ReferenceFigures(params=1_248_424, macs=818.9e6, source="torchvision squeezenet1_0 (exact)"),
    # Table 1 sums to 1,248,424 parameters; the paper prints no MACs (at its 227 input this net has 832.7M)
    paper=PaperFigures(params=1_248_424, top1=57.5, table="Iandola et al. 2016, Tables 1 and 2"),
    weights=_TV.format("squeezenet1_0"),
))
register(ModelSpec(
    name="squeezenet1_1", family="squeezenet", builder=squeezenet1_1,
    aliases=("squeezenet1.1", "squeezenet_1_1", "squeezenet11"),
    reference=ReferenceFigures(params=1_235_496, macs=349.2e6, source="torchvision squeezenet1_1 (exact)"),
    # no paper: the forresti/SqueezeNet v1.1 README prints no figures ("2.4x less computation"); the top-1 is
    # torchvision's IMAGENET1K_V1 acc@1
    paper=PaperFigures(top1=58.178, table="torchvision squeezenet1_1 IMAGENET1K_V1 (no paper)"),
    weights=_TV.format("squeezenet1_1"),
))
