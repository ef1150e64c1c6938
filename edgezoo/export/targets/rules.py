"""Capability preflight: what a target's int8 flow leaves in float or cannot fuse, read off the model's modules.

Each rule is checked against the converted file in tests/test_targets_edge.py (the op it names really stays
outside the int8 kernels), so these lines are facts about the installed converters, not guesses.
"""

from __future__ import annotations

from torch import nn

# Modules whose op the XNNPACK quantizer (ExecuTorch, and litert-torch's PT2E quantizer built on the same
# annotators) does not annotate: the op runs in float and the int8 program splits around it.
XNNPACK_FLOAT = {nn.Sigmoid: "sigmoid", nn.SiLU: "silu (x * sigmoid)", nn.GELU: "gelu", nn.Softmax: "softmax"}


def _count(model: nn.Module, types) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in model.modules():
        for t, label in types.items():
            if type(m) is t:
                out[label] = out.get(label, 0) + 1
    return out


def _hswish_count(model: nn.Module) -> int:
    return sum(1 for m in model.modules() if isinstance(m, nn.Hardswish))


def xnnpack_findings(model: nn.Module, target: str) -> list[str]:
    lines = [f"{n} x {label} kept in float (the XNNPACK quantizer has no int8 form for it)"
             for label, n in _count(model, XNNPACK_FLOAT).items()]
    if _hswish_count(model):
        lines.append(f"{_hswish_count(model)} x h-swish rewritten as x * relu6(x + 3) / 6 for int8 (the quantizer "
                     "leaves a HardSwish op in float, splitting the XNNPACK program at each one)")
    return lines


def onnxruntime_findings(model: nn.Module) -> list[str]:
    lines = []
    if _hswish_count(model):
        lines.append(f"{_hswish_count(model)} x h-swish decomposed into Add/Clip/Mul (onnxruntime has no int8 "
                     "HardSwish kernel)")
    lines += [f"{n} x {label} kept in float between DQ and Q" for label, n in
              _count(model, {nn.Sigmoid: "Sigmoid", nn.SiLU: "SiLU", nn.GELU: "Gelu"}).items()]
    return lines


def openvino_findings(model: nn.Module) -> list[str]:
    return [f"{n} x {label} kept in float (OpenVINO's int8 CPU plugin fuses it as a float post-op)"
            for label, n in _count(model, {nn.Sigmoid: "sigmoid", nn.SiLU: "swish"}).items()]
