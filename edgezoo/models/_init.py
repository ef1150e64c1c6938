"""Weight initialisation shared by the families that follow torchvision's scheme."""

from __future__ import annotations

from torch import nn


def torchvision_init(model: nn.Module) -> None:
    """Conv: kaiming-normal (fan_out); BN: ones/zeros; Linear: normal(0, 0.01); biases zero."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
