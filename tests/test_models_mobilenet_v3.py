"""MobileNet v3 large / small: torchvision's state_dicts load and give torchvision's outputs."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")

from conftest import assert_loads_reference_state_dict  # noqa: E402


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "mobilenet_v3_small"])
def test_parity_with_torchvision(torchvision, name, tmp_path):
    torch.manual_seed(0)
    assert_loads_reference_state_dict(getattr(torchvision.models, name)(weights=None), name, tmp_path)
