"""The int8 recipe every export target shares, on top of its activation forms (edgezoo.export.int8_forms).

Three measures, each measured on EfficientNet-Lite0 with its ImageNet weights (benchmarks/results/targets.md):

- **A float head.** The stem conv and the convs right after it (at most ``HEAD_CONVS``, as long as only
  activation ops lie between them) stay in float. They see the raw image at the highest resolution, with few
  channels: a 3x3 depthwise kernel has 9 weights for its per-channel scale, so their quantization error is the
  largest in the model and every later layer carries it. The head starts only at a small RGB stem
  (int8_forms.small_stem_convs: 3x3 at most, <= 32 outputs, feeding convs), the stems measured to cost nothing
  in float; a big stem (SqueezeNet 1.0's 7x7) or one feeding a pool (ShuffleNet) keeps the model int8, and
  the head is at most a quarter of the model's convs.
- **Bias correction** of every quantized conv (Nagel et al. 2019, section 4.2): the mean output shift its
  quantized weights cause, measured on the calibration images, is taken out of its bias.
- **7-bit weights where the CPU's int8 products saturate.** x86 CPUs without VNNI multiply u8 x s8 with
  VPMADDUBSW, whose 16-bit pair sums saturate with full-range int8 weights (onnxruntime's quantization
  documentation; OpenVINO's NNCF calls its fix ``overflow_fix``). With 7-bit weights they cannot. XNNPACK
  (ExecuTorch, LiteRT) widens to 16 bits first and does not need it. ``saturating_int8_cpu`` reads this CPU's
  flags: the file is verified here, so it is quantized for the CPU it is verified on.

The head is counted on the fp32 ONNX graph (``float_head``) and applied as the same number of first convs
in execution order in PyTorch (``first_convs``), so every target keeps the same layers in float.
"""

from __future__ import annotations

import copy
import platform
from dataclasses import dataclass, field

import numpy as np

HEAD_CONVS = 3
HEAD_SHARE = 4  # the head is at most a quarter of the model's convs
_BETWEEN_HEAD_CONVS = {"Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Add", "Mul", "Div",
                       "BatchNormalization", "Identity"}


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def saturating_int8_cpu(flags: set[str] | None = None) -> bool:
    """Whether this CPU's u8 x s8 dot products go through saturating 16-bit sums (x86 without VNNI/AMX)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False  # Arm's SDOT/SMMLA accumulate in 32 bits
    flags = cpu_flags() if flags is None else flags
    if not flags:
        return False  # unknown: assume a modern CPU
    return not ({"avx512_vnni", "avx_vnni", "amx_int8"} & flags)


@dataclass
class Int8Recipe:
    head_convs: int  # the first N convs in execution order stay float
    head_nodes: list[str] = field(default_factory=list)  # their names in the fp32 ONNX graph
    bias_correction: bool = True
    reduce_range: bool = False  # 7-bit weights (onnxruntime, OpenVINO)
    # more layers kept in float by the accuracy budget (edgezoo.export.budget): ONNX node names; QDQ files only
    float_nodes: list[str] = field(default_factory=list)
    # QDQ weight ranges: "minmax" (each channel's largest weight) or "mse" (edgezoo.export.weight_rounding)
    weight_ranges: str = "minmax"

    def describe(self) -> str:
        parts = [f"first {self.head_convs} convs in float" if self.head_convs else "no float head"]
        if self.float_nodes:
            parts.append(f"{len(self.float_nodes)} more layers in float for the accuracy budget")
        parts.append("bias correction" if self.bias_correction else "no bias correction")
        parts.append("7-bit weights (this CPU's int8 products saturate: x86 without VNNI)" if self.reduce_range
                     else "8-bit weights")
        if self.weight_ranges != "minmax":
            parts.append(f"{self.weight_ranges.upper()}-chosen per-channel weight ranges")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return {"head_convs": self.head_convs, "head_nodes": list(self.head_nodes),
                "bias_correction": self.bias_correction, "reduce_range": self.reduce_range,
                "float_nodes": list(self.float_nodes), "weight_ranges": self.weight_ranges,
                "described": self.describe()}


def float_head(graph, limit: int = HEAD_CONVS) -> list[str]:
    """Names of the head convs of an ONNX graph: a small RGB stem and the convs after it (see the module)."""
    from edgezoo.export.int8_forms import small_stem_convs

    stems = small_stem_convs(graph)
    # a head is for deep models: in a shallow one it would leave most of the convs float and defeat int8
    limit = min(limit, sum(1 for n in graph.node if n.op_type == "Conv") // HEAD_SHARE)
    if len(stems) != 1 or limit <= 0:
        return []
    head: list[str] = []
    started = False
    for n in graph.node:  # ONNX nodes are in topological order: the order the model runs them
        if n.name == stems[0]:
            started = True
        if not started:
            continue
        if n.op_type == "Conv":
            head.append(n.name)
            if len(head) == limit:
                break
        elif n.op_type not in _BETWEEN_HEAD_CONVS:
            break
    return head


def float_nodes(graph, recipe: "Int8Recipe", forms=None) -> tuple[list[str], list[str]]:
    """What runs in float in an int8 file of the ONNX ``graph``, the one reader of it: the layers the
    activation ``forms`` leave float (edgezoo.export.int8_forms), the recipe's float head and the layers the
    accuracy budget keeps float. Returns (every such node, in that order without repeats; the head)."""
    head = float_head(graph, recipe.head_convs)
    out: list[str] = []
    for name in (forms.float_layers(graph) if forms is not None else []) + head + list(recipe.float_nodes):
        if name not in out:
            out.append(name)
    return out, head


def recipe_for(fp32_onnx, head: bool = True, bias_correction: bool = True,
               reduce_range: bool | None = None) -> Int8Recipe:
    import onnx

    graph = onnx.load(str(fp32_onnx), load_external_data=False).graph
    nodes = float_head(graph) if head else []
    return Int8Recipe(len(nodes), nodes, bias_correction,
                      saturating_int8_cpu() if reduce_range is None else reduce_range)


def first_convs(model, example: np.ndarray, n: int) -> list[str]:
    """Module names of the first ``n`` Conv2d modules ``model`` runs on ``example``."""
    import torch
    from torch import nn

    order: list[str] = []
    names = {m: k for k, m in model.named_modules()}
    hooks = [m.register_forward_pre_hook(lambda mod, args: order.append(names[mod]))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(torch.from_numpy(np.ascontiguousarray(example[:1], dtype=np.float32)))
    finally:
        for h in hooks:
            h.remove()
    out: list[str] = []
    for k in order:
        if k not in out:
            out.append(k)
    return out[:n]


def _fake_quant_weight(w, per_channel: bool, qmax: int):
    """Symmetric int8 weights as the XNNPACK quantizers make them ([-qmax, qmax], scale = max|w| / qmax)."""
    import torch

    dims = tuple(range(1, w.ndim))
    amax = w.abs().amax(dim=dims, keepdim=True) if per_channel else w.abs().max()
    scale = torch.clamp(amax / qmax, min=1e-12)
    return torch.clamp(torch.round(w / scale), -qmax, qmax) * scale


def correct_biases_torch(model, calibration: np.ndarray, skip: set[str] = frozenset(), per_channel: bool = True,
                         qmax: int = 127, batch: int = 8):
    """A copy of ``model`` whose Conv2d/Linear biases absorb the mean output shift of their int8 weights.

    The PyTorch twin of edgezoo.export.bias_correction (which reads the weights from a QDQ file): here the
    weights are quantized as the PT2E XNNPACK quantizers do (symmetric, per-channel, [-127, 127]). The shift is
    E[layer(x, Wq - W)] over the calibration images, each layer's input x taken from the fp32 model.
    Returns (model, number of corrected layers).
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    model = copy.deepcopy(model).eval()
    layers = {k: m for k, m in model.named_modules()
              if isinstance(m, (nn.Conv2d, nn.Linear)) and k not in skip}
    sums: dict[str, torch.Tensor] = {}
    count = [0]

    def hook(name):
        def run(mod, args):
            x = args[0]
            dw = _fake_quant_weight(mod.weight, per_channel, qmax) - mod.weight
            if isinstance(mod, nn.Conv2d):
                y = F.conv2d(x, dw, None, mod.stride, mod.padding, mod.dilation, mod.groups)
                shift = y.double().mean(dim=(2, 3)).sum(dim=0)
            else:
                y = F.linear(x, dw)
                shift = y.double().reshape(-1, y.shape[-1]).mean(dim=0) * x.shape[0]
            sums[name] = sums.get(name, 0) + shift
        return run

    hooks = [m.register_forward_pre_hook(hook(k)) for k, m in layers.items()]
    try:
        with torch.no_grad():
            for i in range(0, len(calibration), batch):
                chunk = torch.from_numpy(np.ascontiguousarray(calibration[i:i + batch], dtype=np.float32))
                model(chunk)
                count[0] += len(chunk)
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        for k, m in layers.items():
            if k not in sums:
                continue
            shift = (sums[k] / count[0]).to(m.weight.dtype)
            if m.bias is None:
                m.bias = nn.Parameter(-shift)
            else:
                m.bias -= shift
    return model, len(sums)


def clip_as_relu6(model):
    """A copy of ``model`` whose ClipAct(0, 6) modules (passes.rewrite_activations' ONNX form of ReLU6) are
    nn.ReLU6 again, for the PT2E targets: torch.export writes ReLU6 as hardtanh, which the XNNPACK quantizers
    annotate fused with the conv before it (targets._pt2e.fused_clamp_quantizer), while a clamp keeps an
    observer on the conv's pre-clip output. Measured on EfficientNet-Lite0 with its ImageNet weights (64
    calibration images, 250 held-out ImageNet images): ExecuTorch int8 22.7 dB SQNR with clamp, 25.8 dB with
    ReLU6. LiteRT's quantizer went the other way (26.0 -> 25.5 dB), so only the ExecuTorch target takes it.
    Exact: both compute min(max(x, 0), 6)."""
    from torch import nn

    from edgezoo.export.passes import ClipAct

    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, ClipAct) and child.lo == 0.0 and child.hi == 6.0:
                parent._modules[name] = nn.ReLU6()
    return model
