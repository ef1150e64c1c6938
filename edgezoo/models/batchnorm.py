"""BatchNorm running statistics re-estimated on given images (torch only).

Used where a model's BN statistics no longer describe what it sees: after the lite rewrites change the
activations (``edgezoo.export.distill``), and for random-init models whose activations would otherwise drift
towards tiny or denormal values through the depth (``random_images``: benchmarks, ``edgezoo bench`` on a
registry name without weights).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn


def random_images(input_size: Sequence[int], count: int = 64, seed: int = 0) -> torch.Tensor:
    """``count`` standard-normal images (count, C, H, W) from a seeded generator."""
    return torch.randn(count, *input_size, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def recalibrate_bn(model: nn.Module, images: torch.Tensor | Iterable[torch.Tensor], batch_size: int = 32) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on ``images`` (cumulative average), in place.

    ``images``: a tensor (N, C, H, W), run in batches of ``batch_size``, or an iterable of batches. Batches of
    one image are skipped (BN cannot take statistics from one image of 1x1 maps). Returns the model in eval
    mode; each BN's momentum is restored.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return model.eval()
    batches = (images[i:i + batch_size] for i in range(0, len(images), batch_size)) \
        if isinstance(images, torch.Tensor) else images
    saved = [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
        m.train()
    try:
        for batch in batches:
            if len(batch) > 1:
                model(batch)
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        model.eval()
    return model
