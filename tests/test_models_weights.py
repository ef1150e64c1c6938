"""Issue 2's checks for the first six families: exact params, MACs within 1%, parity with torchvision/timm."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")

import edgezoo  # noqa: E402
from edgezoo.errors import UnknownModelError, WeightsError  # noqa: E402
from edgezoo.models.counting import count_macs, count_params  # noqa: E402
from edgezoo.testing import randomize_bn  # noqa: E402

# The figures (torchvision/timm num_params; MACs from reference/models.md).
PARAMS = {
    "squeezenet1_0": 1_248_424,
    "squeezenet1_1": 1_235_496,
    "mobilenet_v1": 4_231_976,
    "mobilenet_v1_x0_75": 2_585_560,
    "mobilenet_v1_x0_5": 1_331_592,
    "mobilenet_v1_x0_25": 470_072,
    "mobilenet_v2": 3_504_872,
    "mobilenet_v3_large": 5_483_032,
    "mobilenet_v3_small": 2_542_856,
    "shufflenet_v2_x0_5": 1_366_792,
    "shufflenet_v2_x1_0": 2_278_604,
    "shufflenet_v2_x1_5": 3_503_624,
    "shufflenet_v2_x2_0": 7_393_996,
}

# (name, input side, MACs)
MACS = [
    ("squeezenet1_0", 224, 818.9e6),
    ("squeezenet1_1", 224, 349.2e6),
    ("mobilenet_v1", 224, 568.7e6),
    ("mobilenet_v1_x0_75", 224, 325.40e6),
    ("mobilenet_v1_x0_5", 224, 149.50e6),
    ("mobilenet_v1_x0_25", 224, 41.03e6),
    ("mobilenet_v1", 192, 418.12e6),
    ("mobilenet_v1", 160, 290.68e6),
    ("mobilenet_v1", 128, 186.40e6),
    ("mobilenet_v1_x0_5", 160, 76.52e6),
    ("mobilenet_v2", 224, 300.8e6),
    ("mobilenet_v3_large", 224, 216.6e6),
    ("mobilenet_v3_small", 224, 56.5e6),
    ("shufflenet_v2_x1_0", 224, 144.9e6),
]


@pytest.mark.parametrize("name, expected", PARAMS.items())
def test_param_count_exact(name, expected):
    assert count_params(edgezoo.create_model(name)) == expected


@pytest.mark.parametrize("name, side, expected", MACS)
def test_macs_within_one_percent(name, side, expected):
    macs = count_macs(edgezoo.create_model(name), (3, side, side))
    assert abs(macs / expected - 1) < 0.01, f"{macs / 1e6:.2f}M vs {expected / 1e6:.2f}M"


def test_mobilenet_v1_last_depthwise_has_stride_1():
    # The paper's Table 1 prints s2 for the last dw conv; only s1 gives 569M and a 7x7 final map.
    m = edgezoo.create_model("mobilenet_v1")
    assert m.features[-1][0][0].stride == (1, 1)
    assert m.features(torch.zeros(1, 3, 224, 224)).shape[-2:] == (7, 7)


def _parity(reference, name, tmp_path, **kwargs):
    """Random-init reference -> state_dict file -> our create_model(weights=...) -> same outputs."""
    randomize_bn(reference, seed=1).eval()
    path = tmp_path / "ref.pth"
    torch.save(reference.state_dict(), path)
    ours = edgezoo.create_model(name, weights=str(path), **kwargs)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours(x) - reference(x)).abs().max().item()
    assert diff <= 1e-5, diff


TORCHVISION = ["squeezenet1_0", "squeezenet1_1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
               "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"]


@pytest.mark.parametrize("name", TORCHVISION)
def test_parity_with_torchvision(torchvision, name, tmp_path):
    torch.manual_seed(0)
    _parity(getattr(torchvision.models, name)(weights=None), name, tmp_path)


def test_parity_with_timm_mobilenetv1(timm, tmp_path):
    torch.manual_seed(0)
    _parity(timm.create_model("mobilenetv1_100", pretrained=False), "mobilenet_v1", tmp_path)


def test_checkpoint_for_another_model_names_the_keys(torchvision, tmp_path):
    path = tmp_path / "v2.pth"
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), path)
    with pytest.raises(WeightsError) as e:
        edgezoo.create_model("mobilenet_v3_small", weights=str(path))
    msg = str(e.value)
    assert "does not fit" in msg and "features." in msg


def test_wrong_width_reports_shapes(tmp_path):
    path = tmp_path / "half.pth"
    torch.save(edgezoo.create_model("mobilenet_v2", width_mult=0.5).state_dict(), path)
    with pytest.raises(WeightsError, match="wrong shape"):
        edgezoo.create_model("mobilenet_v2", weights=str(path))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_corrupt_checkpoint_is_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="cannot read weights"):
        edgezoo.create_model("squeezenet1_1", weights=str(path))


def test_hostile_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"w": Evil()}, path)
    with pytest.raises(WeightsError):
        edgezoo.create_model("squeezenet1_1", weights=str(path))


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        edgezoo.create_model("squeezenet1_1", weights=str(tmp_path / "nope.pth"))


def test_aliases_and_unknown_names():
    assert edgezoo.get_spec("mobilenetv3").name == "mobilenet_v3_large"
    assert edgezoo.get_spec("MobileNetV2").name == "mobilenet_v2"
    assert edgezoo.get_spec("shufflenetv2").name == "shufflenet_v2_x1_0"
    assert edgezoo.get_spec("squeezenet").name == "squeezenet1_0"
    assert edgezoo.get_spec("mobilenetv1").name == "mobilenet_v1"
    with pytest.raises(UnknownModelError) as e:
        edgezoo.create_model("mobilenet_v4")
    assert e.value.suggestions and all("mobilenet" in s for s in e.value.suggestions)
