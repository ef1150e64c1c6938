"""Blocks shared by the zoo's families.

Module layouts follow torchvision's where torchvision has the block (``Conv2dNormActivation`` is an
``nn.Sequential`` of conv, norm, activation), so that state_dict keys line up with its checkpoints.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to the nearest multiple of ``divisor``, never dropping more than 10%.

    The rule of the TF/torchvision MobileNet code (``_make_divisible``): every width-multiplied channel count
    in MobileNet v2/v3 and GhostNet goes through it.
    """
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNAct(nn.Sequential):
    """Conv2d -> BatchNorm2d -> activation (each optional but the conv); 'same' padding by default.

    Children are named ``0``, ``1``, ``2`` as in torchvision's ``Conv2dNormActivation``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | None = None,
        groups: int = 1,
        norm: bool = True,
        activation: Callable[..., nn.Module] | None = nn.ReLU,
        bias: bool | None = None,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        inplace: bool = True,
    ):
        if padding is None:
            k = kernel_size if isinstance(kernel_size, tuple) else (kernel_size, kernel_size)
            padding = (k[0] // 2, k[1] // 2)
        if bias is None:
            bias = not norm
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias)
        ]
        if norm:
            layers.append(nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum))
        if activation is not None:
            layers.append(_make_activation(activation, inplace))
        super().__init__(*layers)
        self.out_channels = out_channels


def _make_activation(activation: Callable[..., nn.Module], inplace: bool) -> nn.Module:
    try:
        return activation(inplace=inplace)
    except TypeError:  # activations without an inplace flag (nn.Identity, custom ones)
        return activation()


class SqueezeExcitation(nn.Module):
    """avgpool -> 1x1 conv (C -> squeeze) -> act -> 1x1 conv (squeeze -> C) -> gate -> scale.

    Attribute names (``fc1``, ``fc2``) are torchvision's ``ops.SqueezeExcitation``.
    MobileNetV3 uses ReLU + Hardsigmoid with squeeze = make_divisible(C/4, 8);
    GhostNet uses ReLU + Hardsigmoid with squeeze = make_divisible(C/4, 4).
    """

    def __init__(
        self,
        channels: int,
        squeeze_channels: int,
        activation: Callable[..., nn.Module] = nn.ReLU,
        scale_activation: Callable[..., nn.Module] = nn.Hardsigmoid,
    ):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        s = self.avgpool(x)
        s = self.activation(self.fc1(s))
        return self.scale_activation(self.fc2(s))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(x) * x


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """The paper's shuffle (ShuffleNet v1 §3.1): reshape to (g, C/g), transpose, flatten.

    For C=12, g=3 output channel i takes input channel [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11][i].
    The batch size is read from the tensor, never fixed, so exports keep a dynamic batch.
    """
    b, c, h, w = x.shape
    x = x.reshape(b, groups, c // groups, h, w).transpose(1, 2)
    return x.reshape(b, c, h, w)


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class ChannelSlice(nn.Module):
    """x[:, :keep] of an input with ``in_channels`` channels; a module (no parameters, no state_dict keys) so
    that ``export.passes.drop_noop_slices`` can drop it where it keeps every channel."""

    def __init__(self, keep: int, in_channels: int):
        super().__init__()
        self.keep, self.in_channels = keep, in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, : self.keep]

    def extra_repr(self) -> str:
        return f"keep={self.keep}, in_channels={self.in_channels}"
