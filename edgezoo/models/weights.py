"""Loading public checkpoints into the zoo's models, with errors that name the offending keys."""

from __future__ import annotations

import os
import pickle
import re
import struct
import warnings
import zipfile
from typing import Any, Mapping

import torch

from edgezoo.errors import WeightsError

_SHOW = 5  # how many offending keys an error names


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely (``weights_only=True``) and unwrap the usual containers."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise WeightsError(f"weights {path} is a folder", "give the state_dict file inside it")
    if not os.path.isfile(path):
        raise WeightsError(f"weights file not found: {path}")
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of legacy (non-zip) checkpoints; the outcome is what matters
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refused(path, str(e)) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, MemoryError, IndexError, KeyError,
            TypeError, struct.error) as e:
        # a truncated or garbled file fails wherever torch's readers stop: OSError [Errno 22] from a seek past
        # the end of a cut zip, IndexError or struct.error in a cut legacy pickle
        text = (e.strerror if isinstance(e, OSError) and e.strerror else str(e)).strip()
        first = text.splitlines()[0] if text else type(e).__name__
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


def _refused(path: str, torch_text: str) -> WeightsError:
    """torch.load(weights_only=True) refused the pickle: say what it asked for and why that is refused."""
    if "Weights only load failed" not in torch_text:  # not a refusal: a file that is no pickle at all
        first = torch_text.strip().splitlines()[0] if torch_text.strip() else "not a pickle"
        return WeightsError(f"cannot read weights from {path}: {first[:200]}",
                            "expected a state_dict saved with torch.save(model.state_dict(), path)")
    # a module-qualified name; a cut pickle can show "GLOBAL ." (no name), which is damage, not a request
    found = re.search(r"GLOBAL ([A-Za-z_]\w*(?:\.\w+)+)", torch_text)
    if found and _names_nothing(found.group(1)):  # e.g. "torch._u": a name cut short with the file
        return WeightsError(f"cannot read weights from {path}: it is damaged or cut short (its pickle names "
                            f"{found.group(1)}, which does not exist)",
                            "expected a state_dict saved with torch.save(model.state_dict(), path)")
    if not found:  # e.g. "Unsupported operand 120": a plain pickle or not a pickle at all
        what = re.search(r"Unsupported operand \d+", torch_text)
        return WeightsError(f"cannot read weights from {path}: it is not a PyTorch checkpoint that loads safely"
                            + (f" ({what.group(0).lower()} in its pickle)" if what else ""),
                            "expected a state_dict saved with torch.save(model.state_dict(), path)")
    return WeightsError(
        f"refused to load {path}: it asks to call {found.group(1)} while loading, and a pickle that calls code could run anything on "
        "this machine; edgezoo loads only tensors and plain containers (torch.load with weights_only=True)",
        "if the file comes from a source you trust, load it once in Python with torch.load(path, "
        "weights_only=False) and save its state_dict with torch.save; otherwise do not use it")


def _names_nothing(qualname: str) -> bool:
    """True when ``qualname`` certainly names nothing: its module is already imported and lacks it. Nothing
    is imported to find out (a name in an untrusted file must not run a module's import code)."""
    import sys

    parts = qualname.split(".")
    for i in range(len(parts) - 1, 0, -1):
        obj = sys.modules.get(".".join(parts[:i]))
        if obj is not None:
            for name in parts[i:]:
                obj = getattr(obj, name, None)
                if obj is None:
                    return True
            return False
    return False


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
