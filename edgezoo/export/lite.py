"""The "lite" rewrites: function-changing passes that make MobileNetV3 / GhostNet-style models quantize fast.

onnxruntime's int8 conv kernels fold ReLU / ReLU6 / Clip into the conv's output range, but not h-swish, and
the squeeze-excitation (SE) blocks add a pool, two tiny convs and a full-size element-wise multiply per
block (benchmarks/results/int8_speed.md profiles where the int8 time goes). So the lite path

- replaces h-swish by ReLU (or ReLU6)                                     ``hswish_to_relu``
- turns h-sigmoid gates into Clip(0, 1) with the +3 and /6 folded into the conv before it (exact)
                                                                          ``passes.fold_hardsigmoid_gates``
- replaces each SE block by its average gate on real images, folded into the conv that consumes
  the block's output (zero run-time cost)                                 ``remove_se``

and then recovers the accuracy by distillation from the original model (``edgezoo.export.distill``).
SE blocks and gates are found by structure and behaviour (a module with 1x1 reduce/expand convs whose output
is a per-channel scaling of its input), never by model name, so any family with them is covered.

Every pass is ``fn(model, ...) -> PassResult``: the input is never mutated.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import nn

from edgezoo.errors import EdgezooError, InputError
from edgezoo.export.passes import PassResult, fold_hardsigmoid_gates
from edgezoo.export.passes import is_hsigmoid as _is_hsigmoid
from edgezoo.export.passes import is_hswish as _is_hswish
from edgezoo.export.passes import se_candidates as _se_candidates

if TYPE_CHECKING:
    from edgezoo.export.options import ExportOptions

DEFAULT_REWRITES = ("relu", "se")
DEFAULT_DISTILL_STEPS = 300  # batch 32: ~10k image presentations, enough to recover a few points of top-1
DEFAULT_TIME_BUDGET_S = 20 * 60  # when --distill-steps is not given  # what apply_lite does unless options.lite_rewrites says otherwise
MAX_DISTILL_IMAGES = 2000


# --------------------------------------------------------------------------------------------- detection

@torch.no_grad()
def measure_se_gates(model: nn.Module, images: torch.Tensor, names: Sequence[str] | None = None,
                     batch_size: int = 32) -> dict[str, torch.Tensor]:
    """Run ``images`` through ``model`` and return, for each SE block, its mean per-channel gate.

    A candidate counts as an SE block only if its output is a per-channel scaling of its input on every image
    (out = s[n, c] * x): a structural look-alike that does something else is left alone.
    """
    names = list(names) if names is not None else _se_candidates(model)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    rejected: set[str] = set()
    hooks = []

    def hook(name):
        def fn(_m, inputs, out):
            if name in rejected:
                return
            x = inputs[0] if inputs else None
            if not (isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor) and x.dim() == 4
                    and out.shape == x.shape):
                rejected.add(name)
                return
            x, out = x.double(), out.double()
            s = (out * x).sum((2, 3)) / (x * x).sum((2, 3)).clamp_min(1e-30)  # least-squares per-channel scale
            resid = (out - s[..., None, None] * x).abs().max()
            if resid > 1e-5 * (out.abs().max() + 1e-12):
                rejected.add(name)
                return
            sums[name] = sums.get(name, 0) + s.sum(0)
            counts[name] = counts.get(name, 0) + s.shape[0]
        return fn

    modules = dict(model.named_modules())
    for n in names:
        hooks.append(modules[n].register_forward_hook(hook(n)))
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(images), batch_size):
            model(images[i:i + batch_size])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {n: (sums[n] / counts[n]).float() for n in names if n in sums and n not in rejected}


def lite_rewrites_available(model: nn.Module) -> dict[str, int]:
    """How many h-swish activations, h-sigmoid gates and SE-shaped blocks the model has (by structure)."""
    mods = list(model.modules())
    return {
        "hswish": sum(_is_hswish(m) for m in mods),
        "hsigmoid": sum(_is_hsigmoid(m) for m in mods),
        "se": len(_se_candidates(model)),
    }


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


# ----------------------------------------------------------------------------------------------- passes

def hswish_to_relu(model: nn.Module, activation: str = "relu") -> PassResult:
    """Replace every h-swish by ReLU (or ReLU6): they fold into the int8 conv's output range; h-swish does not."""
    if activation not in ("relu", "relu6"):
        raise InputError(f"unknown replacement for h-swish '{activation}'", "choose relu or relu6")
    new = copy.deepcopy(model)
    names = [n for n, m in new.named_modules() if n and _is_hswish(m)]
    for n in names:
        _set_module(new, n, nn.ReLU() if activation == "relu" else nn.ReLU6())
    label = "ReLU" if activation == "relu" else "ReLU6"
    changes = [f"{n}: h-swish -> {label}" for n in names]
    return PassResult(model=new, changes=changes, name=f"hswish_to_{activation}", exact=False)


class ChannelScale(nn.Module):
    """x * s[c]: what an SE block becomes when its gate is frozen and no conv could absorb it."""

    def __init__(self, scale: torch.Tensor):
        super().__init__()
        self.scale = nn.Parameter(scale.detach().clone().reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


@torch.no_grad()
def remove_se(model: nn.Module, images: torch.Tensor) -> PassResult:
    """Replace each SE block by its mean gate over ``images``, folded into the conv that consumes its output.

    The constant gate is the best a fixed scale can do on those images (so distillation starts close), and
    folded into the next conv's input channels it costs nothing at run time. The consumer is found by tracing
    the model with torch.fx; where it is not a single plain conv, the block becomes a ``ChannelScale``.
    """
    new = copy.deepcopy(model)
    gates = measure_se_gates(new, images)
    consumers = _se_consumers(new, list(gates))
    changes = []
    for name, gate in gates.items():
        conv_name = consumers.get(name)
        if conv_name is not None:
            _scale_conv_inputs(new.get_submodule(conv_name), gate)
            _set_module(new, name, nn.Identity())
            changes.append(f"{name}: SE block removed; its mean gate (mean {gate.mean():.3f}) folded into {conv_name}")
        else:
            _set_module(new, name, ChannelScale(gate))
            changes.append(f"{name}: SE block -> constant per-channel scale (mean {gate.mean():.3f}); "
                           "no single conv consumes it, so it stays a Mul")
    return PassResult(model=new, changes=changes, name="remove_se", exact=False)


def _se_consumers(model: nn.Module, se_names: list[str]) -> dict[str, str]:
    """SE block name -> the plain conv that is the only consumer of its output (torch.fx trace); {} if untraceable."""
    if not se_names:
        return {}
    import torch.fx as fx

    leaves = {id(model.get_submodule(n)) for n in se_names}

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return id(m) in leaves or super().is_leaf_module(m, qualname)

    try:
        graph = _Tracer().trace(model)
    except Exception:  # models with data-dependent control flow: fall back to ChannelScale
        return {}
    out = {}
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in se_names or len(node.users) != 1:
            continue
        user = next(iter(node.users))
        if user.op != "call_module" or len(user.args) != 1 or user.args[0] is not node or user.kwargs:
            continue
        conv = model.get_submodule(user.target)
        if isinstance(conv, nn.Conv2d) and conv.padding_mode == "zeros":
            out[node.target] = user.target
    return out


def _scale_conv_inputs(conv: nn.Conv2d, scale: torch.Tensor) -> None:
    """conv(x * s) == conv'(x) with W'[o, j] = W[o, j] * s[input channel of (o, j)] (zero padding stays zero)."""
    out_ch, in_per_group = conv.weight.shape[:2]
    out_per_group = out_ch // conv.groups
    group = torch.arange(out_ch) // out_per_group
    idx = group[:, None] * in_per_group + torch.arange(in_per_group)[None, :]
    conv.weight.mul_(scale[idx][..., None, None])


# ------------------------------------------------------------------------------------------ the lite flow

def lite_passes(model: nn.Module, images: torch.Tensor, rewrites: Sequence[str] = DEFAULT_REWRITES) -> list[PassResult]:
    """Apply the chosen rewrites in order; ``rewrites`` names: relu | relu6 (h-swish), gate, se.

    'se' removes the SE blocks (which removes their gates too); 'gate' keeps them with folded Clip gates.
    """
    unknown = set(rewrites) - {"relu", "relu6", "gate", "se"}
    if unknown:
        raise InputError(f"unknown lite rewrite(s): {', '.join(sorted(unknown))}", "choose from relu, relu6, gate, se")
    results: list[PassResult] = []
    current = model
    # SE first: its gates are measured on the original function, before anything else changes.
    if "se" in rewrites:
        results.append(remove_se(current, images))
        current = results[-1].model
    if "gate" in rewrites:
        results.append(fold_hardsigmoid_gates(current))
        current = results[-1].model
    for act in ("relu", "relu6"):
        if act in rewrites:
            results.append(hswish_to_relu(current, act))
            current = results[-1].model
    return results


def _nothing_to_rewrite(name: str) -> EdgezooError:
    return EdgezooError(
        f"--lite has nothing to rewrite in {name}: it has no h-swish, h-sigmoid or squeeze-excitation blocks",
        "--lite is for MobileNet v3 and GhostNet-style models; export this one without --lite",
    )


def load_distill_images(folder: str | Path, input_size: tuple[int, int, int], mean, std, preset=None) -> np.ndarray:
    """Unlabelled images for distillation, prepared as calibration images are (the one image preparation,
    with the checkpoint ``preset``'s crop and interpolation when given); clear errors for bad folders."""
    from edgezoo.export.calibration import list_images, load_image_folder

    files = list_images(folder, what="distillation image folder", option="--distill-images DIR")
    how = {"crop_pct": preset.crop_pct, "interpolation": preset.interpolation} if preset is not None else {}
    # A fixed-seed sample caps the memory an ImageNet-sized folder would take.
    return load_image_folder(folder, input_size, mean, std, count=min(len(files), MAX_DISTILL_IMAGES), **how)


def split_heldout(images: np.ndarray, fraction: float = 0.15, min_heldout: int = 8,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out); too few images to spare any: (all, empty)."""
    n = len(images)
    k = int(round(n * fraction))
    if k < min_heldout or n - k < min_heldout:
        return images, images[:0]
    order = np.random.default_rng(seed).permutation(n)
    return images[order[k:]], images[order[:k]]


class LiteReport(dict):
    """The JSON-able lite report; also carries (outside the JSON) what ``add_int8_agreement`` needs."""

    original: nn.Module | None = None
    heldout: np.ndarray | None = None


def apply_lite(model: nn.Module, spec: Any, options: "ExportOptions",
               calibration: np.ndarray) -> tuple[nn.Module, LiteReport]:
    """Rewrite ``model`` for fast int8, distill it back towards the original, and report what happened.

    ``spec``: what the model is (name, input_size, mean, std; an edgezoo.sources.ModelSource in the pipeline);
    ``options``: the ExportOptions; read here: ``distill_images`` (a folder; default: the ``calib``
    folder, else the calibration array), ``distill_steps`` (default 300 within a 20-minute budget), ``distill_time_budget`` (seconds),
    ``distill_checkpoint`` (path of a resumable checkpoint), ``lite_rewrites`` (default relu + se), ``seed``.
    A tenth or so of the images is held out to report how often the lite model agrees with the original.
    """
    from edgezoo.export.distill import DistillConfig, agreement, distill

    name = getattr(spec, "name", type(model).__name__)
    found = lite_rewrites_available(model)
    if not any(found.values()):
        raise _nothing_to_rewrite(name)
    input_size = tuple(calibration.shape[1:]) if calibration is not None and calibration.ndim == 4 else tuple(spec.input_size)
    # The default: the calibration folder is enough. Distilling on synthetic images is a last resort.
    folder = options.distill_images or options.calib
    notes = []
    if folder is not None:
        images = load_distill_images(folder, input_size, spec.mean, spec.std, getattr(spec, "preset", None))
        source = f"{len(images)} images from {folder}"
    else:
        if calibration is None or len(calibration) == 0:
            raise InputError("--lite needs images to distill on", "give --distill-images DIR or --calib DIR")
        images = np.asarray(calibration, dtype=np.float32)
        source = f"{len(images)} synthetic calibration images"
        notes.append("distilled on synthetic images: pass --distill-images DIR (or --calib DIR) with real, "
                     "unlabelled images for the lite model to keep the original's accuracy")
    seed = options.seed
    train, heldout = split_heldout(images, seed=seed)
    train_t = torch.from_numpy(np.ascontiguousarray(train, dtype=np.float32))

    original = copy.deepcopy(model).eval()
    rewrites = tuple(options.lite_rewrites or DEFAULT_REWRITES)
    t0 = time.perf_counter()
    results = lite_passes(original, train_t, rewrites)
    changes = [c for r in results for c in r.changes]
    if not changes:
        raise _nothing_to_rewrite(name)
    student = results[-1].model

    heldout_t = torch.from_numpy(np.ascontiguousarray(heldout, dtype=np.float32))
    before = agreement(original, student, heldout_t) if len(heldout) else None
    steps, budget = options.distill_steps, options.distill_time_budget
    if steps is None and budget is None:
        budget = DEFAULT_TIME_BUDGET_S  # the default run must end on a slow CPU too; the report says where
    cfg = DistillConfig(
        steps=int(steps or DEFAULT_DISTILL_STEPS),
        time_budget_s=budget,
        seed=seed,
        checkpoint=options.distill_checkpoint,
    )
    run = distill(student, original, train_t, cfg, progress=True)
    after = agreement(original, run.model, heldout_t) if len(heldout) else None

    report = LiteReport(
        rewrites=[r.name for r in results if r.changes],
        changes=changes,
        found=found,
        distillation={
            "images": source, "train_images": len(train), "heldout_images": len(heldout),
            **run.summary(),
        },
        heldout_agreement_fp32={"before_distillation": before, "after_distillation": after},
        seconds=round(time.perf_counter() - t0, 1),
        notes=notes,
    )
    report.original, report.heldout = original, heldout
    return run.model, report


def add_int8_agreement(report: LiteReport, int8_path: str | Path) -> LiteReport:
    """After quantizing the lite model: top-1 agreement of the lite int8 file with the original fp32 model."""
    if report.original is None or report.heldout is None or not len(report.heldout):
        report["heldout_agreement_int8"] = None
        return report
    from edgezoo.export.agreement import ort_runner, run_batched

    x = np.ascontiguousarray(report.heldout, dtype=np.float32)
    with ort_runner(int8_path) as runner:
        lite = run_batched(runner, x)[0]
    with torch.no_grad():
        ref = report.original.eval()(torch.from_numpy(x)).numpy()
    report["heldout_agreement_int8"] = float(np.mean(lite.argmax(1) == ref.argmax(1)))
    return report
