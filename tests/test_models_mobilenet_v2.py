"""MobileNet v2: torchvision's state_dict loads and gives torchvision's outputs."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")

from conftest import assert_loads_reference_state_dict  # noqa: E402


def test_parity_with_torchvision(torchvision, tmp_path):
    torch.manual_seed(0)
    assert_loads_reference_state_dict(torchvision.models.mobilenet_v2(weights=None), "mobilenet_v2", tmp_path)
