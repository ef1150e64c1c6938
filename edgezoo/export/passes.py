"""Model-to-model passes that prepare a network for export and quantization.

Every pass has the shape ``fn(model, ...) -> PassResult``: it deep-copies its input (the caller's model is
never touched), returns the new module and human-readable lines saying what it changed. ``check_pass``
measures how far a pass moved the outputs, so each step of the pipeline is verified numerically.

The function-preserving passes here:

- ``fold_batchnorm``: Conv{1,2,3}d / ConvTranspose / Linear followed by BatchNorm in an ``nn.Sequential``
  (the zoo's convention) becomes one layer with rescaled weights and a bias. Grouped and depthwise convs,
  with or without a bias, are handled per output channel (tests/test_export_passes.py checks each kind).
- ``rewrite_activations``: ReLU6 as Clip (or ReLU, which changes the function above 6); h-swish and
  h-sigmoid as single ops or decomposed into Add/Mul/Clip that every int8 runtime quantizes.
- ``fold_hardsigmoid_gates``: hardsigmoid(W x + b) == clip((W/6) x + (b + 3)/6, 0, 1), so an SE gate's
  h-sigmoid folds into the conv before it and leaves a Clip that int8 folds into the conv's output range
  (the one implementation: the lite path's "gate" rewrite uses it too).
- ``rewrite_channel_shuffle``: the shuffle as Reshape(-1, g, C/g, H*W) -> Transpose -> Reshape(-1, C, H, W)
  with constant shapes: dynamic batch, no Shape/Gather chain, TensorRT parses it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
from torch import nn

from edgezoo.models import layers as zoo_layers


@dataclass
class PassResult:
    name: str
    model: nn.Module
    changes: list[str] = field(default_factory=list)
    # True when the pass keeps the function exactly (up to float rounding); lite passes set False.
    exact: bool = True

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def _copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).eval()


# ----------------------------------------------------------------------------------------------- BN folding

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
             nn.Linear)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@torch.no_grad()
def fold_bn_into(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """A new layer computing bn(layer(x)) in eval mode.

    y = gamma * (W x + b - mean) / sqrt(var + eps) + beta: scale each OUTPUT channel's weights by
    s = gamma / sqrt(var + eps) and set bias = (b - mean) * s + beta. Output channels sit on weight axis 0
    for Conv/Linear whatever the groups; for ConvTranspose the weight is (in, out/groups, k...) so the output
    channel of group g, column j is g * out/groups + j.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    fused = copy.deepcopy(layer)
    w = fused.weight
    out_ch = bn.num_features
    scale = (bn.weight if bn.affine else torch.ones(out_ch)) / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias if bn.affine else torch.zeros(out_ch)
    bias = fused.bias if fused.bias is not None else torch.zeros(out_ch, dtype=w.dtype)
    if isinstance(fused, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        g = fused.groups
        shape = w.shape  # (in, out/g, k...)
        wg = w.reshape(g, shape[0] // g, shape[1], *shape[2:])
        s = scale.reshape(g, 1, shape[1], *([1] * (len(shape) - 2)))
        new_w = (wg * s).reshape(shape)
    else:
        new_w = w * scale.reshape(-1, *([1] * (w.dim() - 1)))
    fused.weight = nn.Parameter(new_w.detach().clone())
    fused.bias = nn.Parameter(((bias - bn.running_mean) * scale + shift).detach().clone())
    return fused


def fold_batchnorm(model: nn.Module) -> PassResult:
    """Fold every (conv/linear, BatchNorm) pair of adjacent ``nn.Sequential`` children; BN becomes Identity."""
    model = _copy(model)
    changes: list[str] = []
    for seq_name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            layer, bn = seq._modules[a], seq._modules[b]
            if isinstance(layer, _FOLDABLE) and isinstance(bn, _BN) and _bn_matches(layer, bn):
                seq._modules[a] = fold_bn_into(layer, bn)
                seq._modules[b] = nn.Identity()
                where = f"{seq_name}.{a}" if seq_name else a
                kind = type(layer).__name__
                groups = getattr(layer, "groups", 1)
                tag = "depthwise " if groups > 1 and groups == getattr(layer, "in_channels", 0) else (
                    f"groups={groups} " if groups > 1 else "")
                changes.append(f"{where}: {tag}{kind} + {type(bn).__name__} folded")
    return PassResult("fold_batchnorm", model, changes)


def _bn_matches(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> bool:
    out = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    return out == bn.num_features and bn.track_running_stats and bn.running_mean is not None


# ----------------------------------------------------------------------------------------- activations

class ClipAct(nn.Module):
    """clamp(x, lo, hi): exports as one ONNX Clip, which int8 runtimes fold into the previous conv's range."""

    def __init__(self, lo: float, hi: float):
        super().__init__()
        self.lo, self.hi = float(lo), float(hi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, self.lo, self.hi)

    def extra_repr(self) -> str:
        return f"{self.lo:g}, {self.hi:g}"


class HardSigmoidDecomposed(nn.Module):
    """clip(x / 6 + 0.5, 0, 1) as Mul, Add, Clip: ops every int8 runtime has."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x * (1.0 / 6.0) + 0.5, 0.0, 1.0)


class HardSwishMulHardSigmoid(nn.Module):
    """x * hardsigmoid(x): HardSigmoid + Mul."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * nn.functional.hardsigmoid(x)


class HardSwishMulRelu6(nn.Module):
    """x * relu6(x + 3) / 6 as Add, Clip, Mul, Mul: every op quantizable (onnxruntime, TensorRT, TFLite)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (torch.clamp(x + 3.0, 0.0, 6.0) * (1.0 / 6.0))


Relu6Form = Literal["keep", "clip", "relu"]
HardSwishForm = Literal["keep", "mul_hardsigmoid", "mul_relu6"]
HardSigmoidForm = Literal["keep", "clip"]


def rewrite_activations(model: nn.Module, relu6: Relu6Form = "clip", hardswish: HardSwishForm = "keep",
                        hardsigmoid: HardSigmoidForm = "keep") -> PassResult:
    """Swap activation modules for the chosen export forms.

    ``relu6="relu"`` is exact only where inputs stay below 6 (the check says by how much it moved);
    every other form is exact up to float rounding.
    """
    makers: dict[type, Callable[[], nn.Module]] = {}
    if relu6 == "clip":
        makers[nn.ReLU6] = lambda: ClipAct(0.0, 6.0)
    elif relu6 == "relu":
        makers[nn.ReLU6] = nn.ReLU
    if hardswish == "mul_hardsigmoid":
        makers[nn.Hardswish] = HardSwishMulHardSigmoid
    elif hardswish == "mul_relu6":
        makers[nn.Hardswish] = HardSwishMulRelu6
    if hardsigmoid == "clip":
        makers[nn.Hardsigmoid] = HardSigmoidDecomposed
    model = _copy(model)
    counts: dict[str, int] = {}
    for parent in list(model.modules()):
        for child_name, child in list(parent._modules.items()):
            make = makers.get(type(child))
            if make is not None:
                new = make()
                parent._modules[child_name] = new
                key = f"{type(child).__name__} -> {type(new).__name__}"
                counts[key] = counts.get(key, 0) + 1
    changes = [f"{n} x {k}" for k, n in counts.items()]
    exact = relu6 != "relu"
    return PassResult("rewrite_activations", model, changes, exact=exact)


# Activation classes treated as h-swish / h-sigmoid: PyTorch's, and same-named ones from other code (timm).
_HSWISH_NAMES = {"hardswish", "hswish", "hardswishme", "hardswishjit"}
_HSIGMOID_NAMES = {"hardsigmoid", "hsigmoid", "hardsigmoidme", "hardsigmoidjit"}


def is_hswish(m: nn.Module) -> bool:
    return isinstance(m, nn.Hardswish) or type(m).__name__.lower() in _HSWISH_NAMES


def is_hsigmoid(m: nn.Module) -> bool:
    return isinstance(m, nn.Hardsigmoid) or type(m).__name__.lower() in _HSIGMOID_NAMES


def se_candidates(model: nn.Module) -> list[str]:
    """Modules whose direct children hold a 1x1 "reduce" conv C -> r and a 1x1 "expand" conv r -> C (r <= C):
    squeeze-excitation blocks found by structure, whatever the family calls them."""
    names = []
    for name, m in model.named_modules():
        if not name:
            continue
        convs = [c for c in m.children() if isinstance(c, nn.Conv2d) and c.kernel_size == (1, 1) and c.groups == 1]
        if len(convs) < 2:
            continue
        if any(a.out_channels == b.in_channels and a.in_channels == b.out_channels and a.in_channels >= a.out_channels
               for a in convs for b in convs if a is not b):
            names.append(name)
    return names


@torch.no_grad()
def _fold_into(layer: nn.Module) -> None:
    """W, b -> W / 6, (b + 3) / 6 in place: hardsigmoid(W x + b) == clip(W/6 x + (b + 3)/6, 0, 1)."""
    layer.weight.mul_(1.0 / 6.0)
    b = layer.bias if layer.bias is not None else torch.zeros(layer.weight.shape[0])
    layer.bias = nn.Parameter((b.detach() + 3.0) / 6.0)


def _conv_before(parent: nn.Module, child: str) -> nn.Conv2d | None:
    """The last 1x1 conv registered before ``child`` in ``parent`` (the order SE blocks are written in)."""
    last = None
    for n, c in parent.named_children():
        if n == child:
            return last
        if isinstance(c, nn.Conv2d) and c.kernel_size == (1, 1):
            last = c
    return None


@torch.no_grad()
def _fold_checked(parent: nn.Module, child: str, conv: nn.Conv2d, check_input: torch.Tensor | None) -> bool:
    """Fold the gate ``parent.child`` into ``conv`` if ``parent``'s output stays the same on a random input;
    undo and say False otherwise (the conv did not feed the gate, or the block cannot be run alone)."""
    gate = getattr(parent, child)
    channels = next((c.in_channels for c in parent.children() if isinstance(c, nn.Conv2d)
                     and c.kernel_size == (1, 1) and c.in_channels == conv.out_channels), None)
    if channels is None:
        return False
    x = check_input if check_input is not None else torch.randn(
        4, channels, 7, 7, generator=torch.Generator().manual_seed(0))
    try:
        before = parent(x)
    except Exception:  # the block does not take such an input: the fold is unverifiable, take the exact form
        return False
    saved_w, saved_b = conv.weight.detach().clone(), None if conv.bias is None else conv.bias.detach().clone()
    _fold_into(conv)
    setattr(parent, child, ClipAct(0.0, 1.0))
    after = parent(x)
    if (after - before).abs().max() <= 1e-5 * (before.abs().max() + 1.0):
        return True
    conv.weight.copy_(saved_w)
    conv.bias = None if saved_b is None else nn.Parameter(saved_b)
    setattr(parent, child, gate)
    return False


@torch.no_grad()
def fold_hardsigmoid_gates(model: nn.Module, check_input: torch.Tensor | None = None) -> PassResult:
    """h-sigmoid -> Clip(0, 1), with its x / 6 + 1/2 folded into the layer that feeds it; exact up to rounding.

    The layer is found by structure: the Conv/Linear just before the h-sigmoid in an ``nn.Sequential``, or the
    expand conv of a squeeze-excitation block (``se_candidates``: the zoo's ``SqueezeExcitation``, timm's and
    any look-alike), whose fold is checked numerically on the block. The int8 graph then has a conv whose
    output range is [0, 1]: the Clip disappears into it and no float HardSigmoid remains. An h-sigmoid with no
    such layer becomes ``HardSigmoidDecomposed`` (Mul, Add, Clip), also exact.
    """
    model = _copy(model)
    changes: list[str] = []
    se_names = set(se_candidates(model))
    uses: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):  # a layer used twice cannot take a fold
        uses[id(m)] = uses.get(id(m), 0) + 1
    for name, m in list(model.named_modules()):
        if not name or not is_hsigmoid(m):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if isinstance(parent, nn.Sequential):
            keys = list(parent._modules)
            k = keys.index(child)
            prev = parent._modules[keys[k - 1]] if k else None
            if isinstance(prev, (nn.Conv2d, nn.Linear)) and uses.get(id(prev), 0) == 1:
                _fold_into(prev)
                setattr(parent, child, ClipAct(0.0, 1.0))
                changes.append(f"{name}: h-sigmoid -> Clip(0, 1), x/6 + 1/2 folded into {keys[k - 1]}")
                continue
        conv = _conv_before(parent, child) if parent_name in se_names else None
        if conv is not None and uses.get(id(conv), 0) == 1 and _fold_checked(parent, child, conv, check_input):
            changes.append(f"{name}: SE gate h-sigmoid -> Clip(0, 1), x/6 + 1/2 folded into the conv before it")
        else:
            setattr(parent, child, HardSigmoidDecomposed())
            changes.append(f"{name}: h-sigmoid -> clamp(x/6 + 1/2, 0, 1) (Mul, Add, Clip)")
    return PassResult("fold_hardsigmoid_gates", model, changes)


class HardSwishTimes6(nn.Module):
    """6 * h-swish(x) = x * relu6(x + 3): Add, Clip, Mul. The 1/6 moves into the next linear layer's weights
    (``defer_hardswish_scale``), saving one int8 elementwise pass per h-swish."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.clamp(x + 3.0, 0.0, 6.0)


_LINEAR = (nn.Conv2d, nn.Linear)


def _first_linear(m: nn.Module) -> nn.Module | None:
    if isinstance(m, _LINEAR):
        return m
    if isinstance(m, nn.Sequential) and len(m) and isinstance(m[0], _LINEAR):
        return m[0]
    return None


@torch.no_grad()
def defer_hardswish_scale(model: nn.Module) -> PassResult:
    """h-swish(x) = (x * relu6(x + 3)) / 6, with the / 6 folded into the weights of the layer that consumes it.

    Applies where, inside an ``nn.Sequential``, an h-swish (alone or ending a conv-BN-act block) is followed
    only by Dropout/Identity and the zoo's ``SqueezeExcitation`` blocks (linear in their input's scale: the
    pool and fc1 see 6x, so fc1's weights take the 1/6; the gate multiplies 6x) and then a conv or linear
    layer, whose weights take the 1/6. Exact up to float rounding; h-swish outputs that feed anything else
    (a residual add, a pooling in ``forward``) are left alone.
    """
    model = _copy(model)
    changes: list[str] = []
    for seq_name, seq in list(model.named_modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        keys = list(seq._modules)
        for i, key in enumerate(keys):
            child = seq._modules[key]
            if isinstance(child, nn.Hardswish):
                holder, act_key = seq, key
            elif isinstance(child, nn.Sequential) and len(child) and isinstance(child[-1], nn.Hardswish):
                holder, act_key = child, list(child._modules)[-1]
            else:
                continue
            ses, j = [], i + 1
            while j < len(keys) and isinstance(seq._modules[keys[j]], (nn.Dropout, nn.Identity,
                                                                          zoo_layers.SqueezeExcitation)):
                if isinstance(seq._modules[keys[j]], zoo_layers.SqueezeExcitation):
                    ses.append(seq._modules[keys[j]])
                j += 1
            target = _first_linear(seq._modules[keys[j]]) if j < len(keys) else None
            if target is None or any(not isinstance(se.fc1, _LINEAR) for se in ses):
                continue
            holder._modules[act_key] = HardSwishTimes6()
            for se in ses:
                se.fc1.weight.mul_(1.0 / 6.0)
            target.weight.mul_(1.0 / 6.0)
            where = f"{seq_name}.{key}" if seq_name else key
            changes.append(f"{where}: h-swish as x * relu6(x + 3), / 6 folded into {seq_name}.{keys[j]}"
                           + (f" (through {len(ses)} SE)" if ses else ""))
    return PassResult("defer_hardswish_scale", model, changes)


def drop_noop_slices(model: nn.Module) -> PassResult:
    """Drop every ``ChannelSlice`` that keeps all of its input's channels (GhostNet's ``cat(...)[:, :out]``
    whenever ``out`` is even): it saves a copy and, in fp32 onnxruntime, the NCHWc reorders around it."""
    model = _copy(model)
    changes: list[str] = []
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent._modules.items()):
            if isinstance(child, zoo_layers.ChannelSlice) and child.keep >= child.in_channels:
                parent._modules[child_name] = nn.Identity()
                where = f"{parent_name}.{child_name}" if parent_name else child_name
                changes.append(f"{where}: no-op channel slice [:{child.keep}] dropped")
    return PassResult("drop_noop_slices", model, changes)


# ------------------------------------------------------------------------------------- channel shuffle

def static_channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """The paper's shuffle with the batch as -1 and C, H, W as constants when exporting.

    Tracing ``x.shape`` records Shape -> Gather -> Concat chains that can freeze the batch in the exported
    graph and that TensorRT's parser handles poorly around grouped convs; Python ints here become constant
    shapes (tests/test_export_passes.py checks the exported Reshapes).
    A 4-D view (-1, g, C/g, H*W) is enough: TensorRT and every runtime handle it.
    """
    c, h, w = (int(d) for d in x.shape[1:])
    x = x.reshape(-1, groups, c // groups, h * w).transpose(1, 2)
    return x.reshape(-1, c, h, w)


class StaticChannelShuffle(zoo_layers.ChannelShuffle):
    """The same permutation, exported with constant shapes (see static_channel_shuffle)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return static_channel_shuffle(x, self.groups)


def rewrite_channel_shuffle(model: nn.Module) -> PassResult:
    """Swap every ``ChannelShuffle`` module for ``StaticChannelShuffle`` (the same permutation, constant shapes).

    The families shuffle through the module (never the bare function), so this swap reaches every shuffle.
    """
    model = _copy(model)
    changes: list[str] = []
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent._modules.items()):
            if isinstance(child, zoo_layers.ChannelShuffle) and not isinstance(child, StaticChannelShuffle):
                parent._modules[child_name] = StaticChannelShuffle(child.groups)
                where = f"{parent_name}.{child_name}" if parent_name else child_name
                changes.append(f"{where}: ChannelShuffle(groups={child.groups}) -> constant-shape Reshape")
    return PassResult("rewrite_channel_shuffle", model, changes)


# ------------------------------------------------------------------------------------------- checking

@dataclass
class PassCheck:
    name: str
    max_abs_diff: float
    max_abs_ref: float
    tolerance: float | None
    exact: bool
    outputs: list = field(default_factory=list, repr=False)  # after(x), for the next pass's check

    @property
    def ok(self) -> bool:
        return self.tolerance is None or self.max_abs_diff <= self.tolerance

    def to_dict(self) -> dict:
        return {"pass": self.name, "max_abs_diff": self.max_abs_diff, "max_abs_ref": self.max_abs_ref,
                "tolerance": self.tolerance, "exact": self.exact, "ok": self.ok}


@torch.no_grad()
def check_pass(before: nn.Module, result: PassResult, input_size: tuple[int, int, int], batch: int = 2,
               seed: int = 0, tolerance: float | None = None, before_outputs: list | None = None) -> PassCheck:
    """Max |before(x) - after(x)| over every output on a fixed random batch (eval mode); tolerance None for
    inexact passes. ``before_outputs``: before(x) already computed on this batch (the previous check's
    after(x), when passes run in a chain); ``PassCheck.outputs`` keeps after(x) for the next check."""
    from edgezoo.sources import output_list

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *input_size, generator=g)
    refs = before_outputs if before_outputs is not None else output_list(before.eval()(x))
    outs = refs if result.model is before else output_list(result.model.eval()(x))  # unchanged: nothing to run
    if len(outs) != len(refs):
        raise RuntimeError(f"pass {result.name} changed the number of outputs ({len(refs)} -> {len(outs)})")
    diff = max(float((o - r).abs().max()) for o, r in zip(outs, refs))
    scale = max(float(r.abs().max()) for r in refs)
    if tolerance is None and result.exact:
        tolerance = 1e-4 * max(1.0, scale)
    return PassCheck(result.name, diff, scale, tolerance if result.exact else None, result.exact, outs)
