"""SqueezeNet 1.0 / 1.1: torchvision's state_dicts load and give torchvision's outputs."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")

from conftest import assert_loads_reference_state_dict  # noqa: E402


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet1_1"])
def test_parity_with_torchvision(torchvision, name, tmp_path):
    torch.manual_seed(0)
    assert_loads_reference_state_dict(getattr(torchvision.models, name)(weights=None), name, tmp_path)
