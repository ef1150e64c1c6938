"""GhostNet: timm's state_dicts load and give timm's outputs; Ghost modules and SE as the paper has them."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
from torch import nn  # noqa: E402

import edgezoo  # noqa: E402
from edgezoo.models.counting import count_params  # noqa: E402
from edgezoo.testing import randomize_bn  # noqa: E402


@pytest.mark.parametrize("name, timm_name", [("ghostnet_x0_5", "ghostnet_050"), ("ghostnet_x1_0", "ghostnet_100"),
                                             ("ghostnet_x1_3", "ghostnet_130")])
def test_ghostnet_matches_timm(timm, tmp_path, name, timm_name):
    torch.manual_seed(0)
    ref = randomize_bn(timm.create_model(timm_name), seed=1).eval()
    assert count_params(ref) == edgezoo.get_spec(name).reference.params
    path = tmp_path / "timm.pth"
    torch.save(ref.state_dict(), path)
    ours = edgezoo.create_model(name, weights=str(path))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert expected.abs().max() > 0.05  # a check on outputs that are not ~0
    assert (got - expected).abs().max().item() <= 1e-5
    # our own state_dict loads back as it is (the remap leaves non-timm keys alone)
    torch.save(ours.state_dict(), path)
    again = edgezoo.create_model(name, weights=str(path))
    with torch.no_grad():
        assert torch.equal(again(x), got)


def test_ghostnet_structure():
    m = edgezoo.create_model("ghostnet_x1_0")
    se = [b.se for b in m.features[1:-1] if b.se is not None]
    assert [s.fc1.out_channels for s in se] == [20, 32, 120, 168, 168, 240, 240]  # make_divisible(c/4, 4)
    assert all(isinstance(s.scale_activation, nn.Hardsigmoid) for s in se)
    assert m.conv_head.bias is not None and m.conv_head.out_channels == 1280  # bias, no BN, not scaled
    assert not any(isinstance(x, nn.Hardswish) for x in m.modules())
    ghost = m.features[2].ghost1  # 16 -> 48: primary 1x1 makes 24, cheap dw 3x3 makes 24
    assert ghost.primary_conv[0].out_channels == 24 and ghost.cheap_operation[0].groups == 24
