"""ShuffleNet v2: torchvision's state_dicts (every width) load and give torchvision's outputs."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")

from conftest import assert_loads_reference_state_dict  # noqa: E402


@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5",
                                  "shufflenet_v2_x2_0"])
def test_parity_with_torchvision(torchvision, name, tmp_path):
    torch.manual_seed(0)
    assert_loads_reference_state_dict(getattr(torchvision.models, name)(weights=None), name, tmp_path)
