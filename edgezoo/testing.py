"""Helpers for tests and benchmarks: random-init models whose outputs are not vanishingly small.

torchvision's init leaves BatchNorm at identity and the classifier at N(0, 0.01), so a fresh model's logits
are ~1e-3 and a 1e-5 parity check would prove little. ``randomize_bn`` gives every BatchNorm random affine
parameters and running statistics, so differences between implementations show up at full scale.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def randomize_bn(model: nn.Module, seed: int = 0, linear: bool = True) -> nn.Module:
    """Random BatchNorm affine parameters and running stats; with ``linear``, Linear weights ~ N(0, 1/fan_in)
    instead of the N(0, 0.01) init, so that logits are O(1)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if linear and isinstance(m, nn.Linear):
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features ** 0.5)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            if m.affine:
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
            if m.track_running_stats:
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
    return model
