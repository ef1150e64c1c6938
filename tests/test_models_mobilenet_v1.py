"""MobileNet v1: MACs at the paper's smaller resolutions, the last depthwise stride, parity with timm."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")

import edgezoo  # noqa: E402
from conftest import assert_loads_reference_state_dict  # noqa: E402
from edgezoo.models.counting import count_macs  # noqa: E402

# Howard et al. 2017, Table 7 (resolution multiplier): Mult-Adds at inputs other than the specs' 224.
# (name, input side, MACs)
OTHER_RESOLUTIONS = [
    ("mobilenet_v1", 192, 418.12e6),
    ("mobilenet_v1", 160, 290.68e6),
    ("mobilenet_v1", 128, 186.40e6),
    ("mobilenet_v1_x0_5", 160, 76.52e6),
]


@pytest.mark.parametrize("name, side, expected", OTHER_RESOLUTIONS)
def test_macs_at_other_resolutions_within_one_percent(name, side, expected):
    macs = count_macs(edgezoo.create_model(name), (3, side, side))
    assert abs(macs / expected - 1) < 0.01, f"{macs / 1e6:.2f}M vs {expected / 1e6:.2f}M"


def test_mobilenet_v1_last_depthwise_has_stride_1():
    # The paper's Table 1 prints s2 for the last dw conv; only s1 gives 569M and a 7x7 final map.
    m = edgezoo.create_model("mobilenet_v1")
    assert m.features[-1][0][0].stride == (1, 1)
    assert m.features(torch.zeros(1, 3, 224, 224)).shape[-2:] == (7, 7)


def test_parity_with_timm_mobilenetv1(timm, tmp_path):
    torch.manual_seed(0)
    assert_loads_reference_state_dict(timm.create_model("mobilenetv1_100", pretrained=False), "mobilenet_v1",
                                      tmp_path)
