"""Parameter and MAC counts of a PyTorch model, and a per-stage summary for `edgezoo info`.

MACs are the papers' unit: conv ``Cout*Hout*Wout*(Cin/groups)*kh*kw`` plus linear ``in*out``; BN,
activations, pooling, SE gating multiplies, residual adds and biases are not counted. (The ONNX profiler in
``edgezoo.profile`` counts from the exported graph and reports element-wise work separately.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _layer_macs(module: nn.Module, out: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return out.numel() // out.shape[0] * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return out.numel() // out.shape[0] * module.in_features
    return 0


@dataclass
class StageSummary:
    name: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


# Top-level Sequentials that hold the whole trunk: torchvision's "features", HarDNet's "base" (authors' names).
_TRUNKS = ("features", "base")


def _stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Top-level children, with a trunk Sequential (``features``, ``base``) opened up."""
    stages = []
    for name, child in model.named_children():
        if name in _TRUNKS and isinstance(child, nn.Sequential):
            stages += [(f"{name}.{n}", c) for n, c in child.named_children()]
        else:
            stages.append((name, child))
    return stages


@torch.no_grad()
def profile_model(model: nn.Module, input_size: tuple[int, int, int]) -> tuple[int, list[StageSummary]]:
    """Total MACs for one image and a per-stage summary (stages in the order they ran)."""
    macs: dict[nn.Module, int] = {}
    hooks = [
        m.register_forward_hook(lambda mod, _inp, out: macs.__setitem__(mod, macs.get(mod, 0) + _layer_macs(mod, out)))
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    shapes: dict[str, tuple[int, ...]] = {}
    order: list[str] = []
    stage_list = _stages(model)

    def record(name):
        def hook(_mod, _inp, out):
            if isinstance(out, torch.Tensor):
                shapes[name] = tuple(out.shape[1:])
            if name not in order:
                order.append(name)
        return hook

    hooks += [child.register_forward_hook(record(name)) for name, child in stage_list]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, *input_size))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    by_name = dict(stage_list)
    stages = []
    for name in order:
        child = by_name[name]
        stages.append(StageSummary(
            name=name,
            output_shape=shapes.get(name, ()),
            params=count_params(child),
            macs=sum(v for m, v in macs.items() if any(m is s for s in child.modules())),
        ))
    return sum(macs.values()), stages


def count_macs(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)) -> int:
    return profile_model(model, input_size)[0]
