"""ShuffleNet v2 (Ma et al. 2018), 0.5x/1.0x/1.5x/2.0x, in torchvision's topology so its checkpoints load.

torchvision's down-sampling unit differs slightly from the official megvii release (branch widths), so its
MACs are 40.5/144.9/295.8/583.3M where the paper (megvii topology) prints 41/146/299/591M; each spec
records both.
"""

from __future__ import annotations

import torch
from torch import nn

from edgezoo.models.layers import ChannelShuffle, ConvBNAct
from edgezoo.models.registry import ModelSpec, PaperFigures, ReferenceFigures, register

STAGE_REPEATS = (4, 8, 4)
# Paper Table 5: Conv1, Stage2, Stage3, Stage4, Conv5 output channels per scale.
STAGE_OUT_CHANNELS = {
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 244, 488, 976, 2048),
}


def _dw(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)


class InvertedResidual(nn.Module):
    """Basic unit (split, right branch 1x1-dw-1x1, concat, shuffle) or down-sampling unit (two branches)."""

    def __init__(self, inp: int, oup: int, stride: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError("stride must be 1 or 2")
        self.stride = stride
        bf = oup // 2
        if stride == 1 and inp != bf * 2:
            raise ValueError("a stride-1 unit needs in == out channels")
        if stride > 1:
            self.branch1 = nn.Sequential(
                _dw(inp, stride), nn.BatchNorm2d(inp),
                nn.Conv2d(inp, bf, 1, bias=False), nn.BatchNorm2d(bf), nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else bf, bf, 1, bias=False), nn.BatchNorm2d(bf), nn.ReLU(inplace=True),
            _dw(bf, stride), nn.BatchNorm2d(bf),
            nn.Conv2d(bf, bf, 1, bias=False), nn.BatchNorm2d(bf), nn.ReLU(inplace=True),
        )
        # A module (no parameters, so torchvision's state_dict keys are unchanged) that export passes can swap.
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return self.shuffle(out)


class ShuffleNetV2(nn.Module):
    def __init__(self, width_mult: float = 1.0, num_classes: int = 1000):
        super().__init__()
        if width_mult not in STAGE_OUT_CHANNELS:
            raise ValueError(f"ShuffleNet v2 width_mult must be one of {sorted(STAGE_OUT_CHANNELS)}")
        channels = STAGE_OUT_CHANNELS[width_mult]
        self.conv1 = ConvBNAct(3, channels[0], 3, stride=2, bias=False)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c_in = channels[0]
        for name, repeats, c_out in zip(("stage2", "stage3", "stage4"), STAGE_REPEATS, channels[1:4]):
            units = [InvertedResidual(c_in, c_out, 2)] + [InvertedResidual(c_out, c_out, 1)
                                                            for _ in range(repeats - 1)]
            setattr(self, name, nn.Sequential(*units))
            c_in = c_out
        self.conv5 = ConvBNAct(c_in, channels[-1], 1, bias=False)
        self.fc = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return self.fc(x.mean([2, 3]))


def shufflenet_v2(**kwargs) -> ShuffleNetV2:
    return ShuffleNetV2(**kwargs)


# scale, params and MACs (torchvision topology), printed: Table 5 weights (M), Table 8 MFLOPs and top-1
# (100 - error). The printed MFLOPs are those of the authors' (megvii) topology, whose down-sampling units
# are wider: 40.48 / 145.81 / 298.97 / 590.78M counted on it, vs torchvision's below.
_SCALES = [
    (0.5, 1_366_792, 40.48e6, 1.4, 41, 60.3),
    (1.0, 2_278_604, 144.91e6, 2.3, 146, 69.4),
    (1.5, 3_503_624, 295.76e6, 3.5, 299, 72.6),
    (2.0, 7_393_996, 583.25e6, 7.4, 591, 74.9),
]
for _w, _params, _macs, _paper_params, _paper_macs, _top1 in _SCALES:
    _tag = f"x{_w:.1f}".replace(".", "_")
    register(ModelSpec(
        name=f"shufflenet_v2_{_tag}", family="shufflenet_v2", builder=shufflenet_v2,
        kwargs={"width_mult": _w},
        aliases=(f"shufflenetv2_{_tag}",) + (("shufflenetv2", "shufflenet_v2") if _w == 1.0 else ()),
        reference=ReferenceFigures(params=_params, macs=_macs, source=f"torchvision shufflenet_v2_{_tag} (exact)"),
        paper=PaperFigures(params=int(_paper_params * 1e6), macs=_paper_macs * 1e6, top1=_top1,
                           table="Ma et al. 2018, Tables 5 and 8"),
        weights=f"torchvision.models.shufflenet_v2_{_tag} state_dict, keys as they are",
    ))
