"""Shared fixtures. torchvision and timm are references only, imported through ``reference_libs``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The tests run many tiny models; one intra-op thread each is faster than two fighting over two cores
# (and keeps a loaded machine usable). Subprocesses inherit it. Benchmarks set their own threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")



def require(module: str, reason: str):
    """Import ``module``, skipping (the whole test module) only when its package is not installed at all.

    ``pytest.importorskip`` also skips when an installed package fails to import because one of *its*
    dependencies is missing or incompatible (ModuleNotFoundError from inside it): a broken ``.[all]`` install
    would pass as a row of skips. Here that import error fails the tests instead.
    """
    import importlib
    import importlib.util

    if importlib.util.find_spec(module.split(".")[0]) is None:
        pytest.skip(f"{reason} (no {module.split('.')[0]} package)", allow_module_level=True)
    return importlib.import_module(module)


def _define_torchvision_ops() -> None:
    from edgezoo.sources import torchvision_importable

    torchvision_importable()  # the one place that knows the CPU-build workaround


@pytest.fixture(scope="session")
def torchvision():
    pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
    _define_torchvision_ops()
    return pytest.importorskip("torchvision", reason="torchvision (edgezoo[test]) is not installed")


@pytest.fixture(scope="session")
def timm(torchvision):
    return pytest.importorskip("timm", reason="timm (edgezoo[test]) is not installed")


def run_edgezoo(*args: str, block_torch: bool = False, timeout: float = 300, env: dict | None = None,
                cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """Run `python -m edgezoo ...` in a subprocess; with block_torch, `import torch` fails there."""
    full_env = {**os.environ, **(env or {})}
    if block_torch:
        blocker = ROOT / "tests" / "no_torch"
        full_env["PYTHONPATH"] = os.pathsep.join([str(blocker), str(ROOT), full_env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "edgezoo", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd)


def assert_loads_reference_state_dict(reference, name: str, tmp_path, side: int = 224, **kwargs) -> None:
    """Random-init reference (BN statistics randomised) -> state_dict file -> our ``create_model(weights=...)``
    -> the same outputs; and the reference has the parameter count the spec states."""
    import torch

    import edgezoo
    from edgezoo.models.counting import count_params
    from edgezoo.testing import randomize_bn

    assert count_params(reference) == edgezoo.get_spec(name).reference.params
    randomize_bn(reference, seed=1).eval()
    path = tmp_path / "ref.pth"
    torch.save(reference.state_dict(), path)
    ours = edgezoo.create_model(name, weights=str(path), **kwargs)
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours(x) - reference(x)).abs().max().item()
    assert diff <= 1e-5, diff
