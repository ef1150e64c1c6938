"""Loading public checkpoints into the zoo's models, with errors that name the offending keys."""

from __future__ import annotations

import os
import pickle
import zipfile
from typing import Any, Mapping

import torch

from edgezoo.errors import WeightsError

_SHOW = 5  # how many offending keys an error names


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely (``weights_only=True``) and unwrap the usual containers."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(
            f"cannot read weights from {path}: {first[:200]}",
            "expected a state_dict saved with torch.save(model.state_dict(), path)",
        ) from None
    for key in ("state_dict", "model", "model_state_dict", "net"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    # DataParallel prefixes every key with "module."
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_weights(model: torch.nn.Module, path: str | os.PathLike, spec: Any = None) -> torch.nn.Module:
    state = read_state_dict(path)
    if spec is not None and spec.remap_state_dict is not None:
        state = spec.remap_state_dict(state)
    load_state_dict_checked(model, state, what=f"{os.fspath(path)}" + (f" for {spec.name}" if spec else ""))
    return model


def load_state_dict_checked(model: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str = "weights"):
    """``load_state_dict(strict=True)`` with one readable error naming the first few bad keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_first(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
    if wrong:
        problems.append(f"{len(wrong)} keys with the wrong shape ({_first(wrong)})")
    if problems:
        raise WeightsError(
            f"{what} does not fit the model: " + "; ".join(problems),
            "is this checkpoint for another model or width?",
        )
    model.load_state_dict(dict(state), strict=True)


def _first(items: list[str]) -> str:
    more = f", ... {len(items) - _SHOW} more" if len(items) > _SHOW else ""
    return ", ".join(items[:_SHOW]) + more
