"""Distillation: bring a rewritten ("lite") model back to its original's function on unlabelled images, on the CPU.

The student starts from the original weights (the lite passes only change activations and fold SE gates), so a
few hundred steps of matching the teacher's temperature-softened outputs recover most of what the rewrite cost.

BatchNorm: the student's BN running statistics are first re-estimated on the distillation images (the
rewrites change the activations each BN sees), then the whole student trains in eval mode: BN normalises with
those fixed statistics and only its affine weights learn, and dropout is off. Batches of 32 and fewer would
give noisy batch statistics, and eval-mode training makes what is trained exactly what is exported.

Deterministic: the images of step k and their augmentation come from a generator seeded by (seed, k), so a
run gives the same weights twice, and a run resumed from its checkpoint gives the same weights as one that
was never interrupted. Checkpoints are written atomically (temp file + rename).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgezoo.errors import InputError
from edgezoo.fileio import atomic_write_bytes
from edgezoo.models.batchnorm import recalibrate_bn

CHECKPOINT_VERSION = 1


@dataclass
class DistillConfig:
    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-4  # Adam, cosine-decayed to lr * final_lr_fraction over `steps`
    final_lr_fraction: float = 0.05
    weight_decay: float = 0.0
    temperature: float = 4.0  # KL on logits / T, scaled by T^2 (Hinton et al.)
    mse_weight: float = 0.0  # plus MSE between raw logits, if > 0
    label_weight: float = 0.5  # cross-entropy weight when labels are given
    augment: bool = True  # random shifts of up to 1/16 of the image side
    recalibrate_bn: bool = True
    seed: int = 0
    time_budget_s: float | None = None  # stop early (at a step boundary) after this long
    checkpoint: str | Path | None = None
    checkpoint_every: int = 25

    def key(self, student: nn.Module, images: torch.Tensor, labels: torch.Tensor | None) -> str:
        """What a checkpoint must match to be resumed: the run's settings, the model's shapes, the data."""
        settings = {k: v for k, v in asdict(self).items()
                    if k not in ("time_budget_s", "checkpoint", "checkpoint_every")}
        shapes = [(n, tuple(p.shape)) for n, p in student.state_dict().items()]
        h = hashlib.sha256(json.dumps([settings, shapes, tuple(images.shape)], default=str).encode())
        h.update(images[: min(len(images), 64)].numpy().tobytes())
        if labels is not None:
            h.update(labels.numpy().tobytes())
        return h.hexdigest()[:16]


@dataclass
class DistillResult:
    model: nn.Module
    steps_done: int
    steps_planned: int
    losses: list[float] = field(default_factory=list)
    resumed_from: int = 0
    seconds: float = 0.0
    stopped_by: str = "steps"  # "steps" or "time budget"

    @property
    def first_loss(self) -> float | None:
        return float(np.mean(self.losses[:10])) if self.losses else None

    @property
    def final_loss(self) -> float | None:
        return float(np.mean(self.losses[-10:])) if self.losses else None

    def summary(self) -> dict:
        return {
            "steps": self.steps_done, "steps_planned": self.steps_planned, "resumed_from_step": self.resumed_from,
            "stopped_by": self.stopped_by, "first_loss": _round(self.first_loss),
            "final_loss": _round(self.final_loss), "seconds": round(self.seconds, 1),
        }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 5)


def distill(
    student: nn.Module,
    teacher: nn.Module,
    images: torch.Tensor | np.ndarray,
    config: DistillConfig | None = None,
    labels: torch.Tensor | np.ndarray | None = None,
    progress: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> DistillResult:
    """Train a copy of ``student`` to match ``teacher`` on ``images`` (N, C, H, W); returns the trained copy.

    ``labels`` (N,) class indices, if given, add a cross-entropy term. ``on_step(step, loss)`` is called after
    every step (the tests interrupt a run from it). With ``config.checkpoint`` set, an existing checkpoint of
    the same run is resumed, and one is written every ``checkpoint_every`` steps, at the end, and when the run
    is interrupted.
    """
    cfg = config or DistillConfig()
    if cfg.steps < 1:
        raise InputError(f"distillation steps must be at least 1, got {cfg.steps}")
    images = torch.as_tensor(np.asarray(images, dtype=np.float32)) if isinstance(images, np.ndarray) else images.float()
    if images.dim() != 4 or len(images) == 0:
        raise InputError(f"distillation needs a batch of images (N, C, H, W), got shape {tuple(images.shape)}")
    if labels is not None:
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if labels.shape != (len(images),):
            raise InputError(f"labels must be one class index per image: {len(images)} images, "
                             f"labels of shape {tuple(labels.shape)}")

    student = copy.deepcopy(student)
    teacher = copy.deepcopy(teacher).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    params = [p for p in student.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    key = cfg.key(student, images, labels)
    ckpt = Path(cfg.checkpoint) if cfg.checkpoint else None
    start, losses = 0, []
    if ckpt is not None and ckpt.exists():
        start, losses = _load_checkpoint(ckpt, key, student, opt)
    elif cfg.recalibrate_bn:
        recalibrate_bn(student, images, cfg.batch_size)

    result = DistillResult(student, start, cfg.steps, losses, resumed_from=start)
    t0 = time.perf_counter()
    step = start
    bar = _progress_bar(progress, cfg.steps, start)
    try:
        student.eval()  # BN frozen (statistics fixed), dropout off: see the module docstring
        while step < cfg.steps:
            if cfg.time_budget_s is not None and time.perf_counter() - t0 >= cfg.time_budget_s:
                result.stopped_by = "time budget"
                break
            loss = _train_step(student, teacher, opt, images, labels, cfg, step)
            losses.append(loss)
            step += 1
            if bar is not None:
                bar[0].update(bar[1], completed=step, description=f"distilling (loss {loss:.4f})")
            if on_step is not None:
                on_step(step, loss)
            if ckpt is not None and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                _save_checkpoint(ckpt, key, step, student, opt, losses)
    except KeyboardInterrupt:
        if ckpt is not None and step > start:
            _save_checkpoint(ckpt, key, step, student, opt, losses)  # state after the last completed step
        raise
    finally:
        if bar is not None:
            bar[0].stop()
    if ckpt is not None and step > start:
        _save_checkpoint(ckpt, key, step, student, opt, losses)
    for p in student.parameters():
        p.requires_grad_(False)
    result.steps_done, result.losses = step, losses
    result.seconds = time.perf_counter() - t0
    return result


def _train_step(student, teacher, opt, images, labels, cfg: DistillConfig, step: int) -> float:
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    idx = torch.randint(0, len(images), (min(cfg.batch_size, len(images)),), generator=g)
    x = images[idx]
    if cfg.augment:
        x = random_shift(x, g)
    lr = cfg.lr * (cfg.final_lr_fraction + (1 - cfg.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))
    for group in opt.param_groups:
        group["lr"] = lr
    with torch.no_grad():
        t = teacher(x)
    s = student(x)
    T = cfg.temperature
    loss = F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), log_target=True, reduction="batchmean") * T * T
    if cfg.mse_weight > 0:
        loss = loss + cfg.mse_weight * F.mse_loss(s, t)
    if labels is not None and cfg.label_weight > 0:
        loss = loss + cfg.label_weight * F.cross_entropy(s, labels[idx])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def random_shift(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Shift each image by up to 1/16 of its side (edge pixels repeated): cheap, label-preserving variety."""
    n, _, h, w = x.shape
    p = max(1, min(h, w) // 16)
    padded = F.pad(x, (p, p, p, p), mode="replicate")
    offs = torch.randint(0, 2 * p + 1, (n, 2), generator=g)
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offs.tolist())])


@torch.no_grad()
def agreement(teacher: nn.Module, student: nn.Module, images: torch.Tensor, batch_size: int = 64) -> float:
    """Fraction of ``images`` on which both models pick the same top-1 class."""
    teacher.eval(), student.eval()
    same = 0
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size]
        same += int((teacher(x).argmax(1) == student(x).argmax(1)).sum())
    return same / max(1, len(images))


def _save_checkpoint(path: Path, key: str, step: int, student: nn.Module, opt, losses: list[float]) -> None:
    buf = io.BytesIO()
    torch.save({"version": CHECKPOINT_VERSION, "key": key, "step": step, "student": student.state_dict(),
                "optimizer": opt.state_dict(), "losses": list(losses)}, buf)
    atomic_write_bytes(path, buf.getvalue())


def _load_checkpoint(path: Path, key: str, student: nn.Module, opt) -> tuple[int, list[float]]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(f"cannot read distillation checkpoint {path}: {str(e).splitlines()[0] if str(e) else e}",
                         "delete it to start over") from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise InputError(f"{path} is not an edgezoo distillation checkpoint", "delete it to start over")
    if state.get("key") != key:
        raise InputError(f"distillation checkpoint {path} belongs to another run (other model, images or settings)",
                         "delete it, or choose another checkpoint path")
    student.load_state_dict(state["student"])
    opt.load_state_dict(state["optimizer"])
    return int(state["step"]), [float(v) for v in state["losses"]]


def _progress_bar(enabled: bool, total: int, start: int):
    """A rich progress bar, or None when disabled or when another live display (the pipeline's) is active."""
    if not enabled:
        return None
    from rich.console import Console
    from rich.errors import LiveError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True)
    try:
        bar.start()
    except LiveError:
        return None
    return bar, bar.add_task("distilling", total=total, completed=start)
