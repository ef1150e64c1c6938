"""Checks every registered model passes: the spec's reference figures, forward shapes, no NaN, dynamic batch,
ONNX round trip; names and aliases."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
ort = pytest.importorskip("onnxruntime")

import edgezoo  # noqa: E402
from edgezoo.errors import UnknownModelError  # noqa: E402
from edgezoo.export.onnx import to_onnx_proto  # noqa: E402
from edgezoo.models.counting import count_macs, count_params  # noqa: E402
from edgezoo.testing import randomize_bn  # noqa: E402

ALL = edgezoo.list_models()


def _small_size(spec) -> tuple[int, int, int]:
    """A smaller input the model must also take: about 2/3 of the default side, a multiple of 32."""
    c, h, _ = spec.input_size
    side = max(32, (h * 2 // 3) // 32 * 32)
    return (c, side, side)


@pytest.mark.parametrize("name", ALL)
def test_params_exact_and_macs_within_one_percent_of_the_spec(name):
    """The registry states what each model has (ReferenceFigures); the family tests check those figures
    against the reference implementations (torchvision, timm, the authors' code)."""
    spec = edgezoo.get_spec(name)
    assert spec.reference.params and spec.reference.macs, f"{name}: the spec states no reference figures"
    model = edgezoo.create_model(name)
    assert count_params(model) == spec.reference.params
    macs = count_macs(model, spec.input_size)
    assert abs(macs / spec.reference.macs - 1) < 0.01, f"{macs / 1e6:.2f}M vs {spec.reference.macs / 1e6:.2f}M"


@pytest.mark.parametrize("name", ALL)
def test_forward_default_and_smaller_size(name):
    spec = edgezoo.get_spec(name)
    model = randomize_bn(edgezoo.create_model(name))
    torch.manual_seed(0)
    for size in (spec.input_size, _small_size(spec)):
        with torch.no_grad():
            y = model(torch.randn(2, *size))
        assert y.shape == (2, spec.num_classes), size
        assert torch.isfinite(y).all(), size


@pytest.mark.parametrize("name", ALL)
def test_onnx_round_trip_dynamic_batch(name):
    spec = edgezoo.get_spec(name)
    model = randomize_bn(edgezoo.create_model(name))
    size = _small_size(spec)
    proto, _ = to_onnx_proto(model, size, simplify=False)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, *size)).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        out = sess.run(None, {"input": x})[0]
        assert out.shape == ref.shape == (batch, spec.num_classes)
        scale = max(1.0, float(np.abs(ref).max()))
        assert np.abs(out - ref).max() <= 1e-4 * scale, f"batch {batch}"


def test_width_mult_is_a_builder_knob():
    m = edgezoo.create_model("mobilenet_v2", width_mult=0.5, num_classes=10)
    assert m.classifier[-1].out_features == 10
    assert sum(p.numel() for p in m.parameters()) < 3_504_872


def test_aliases_and_unknown_names():
    assert edgezoo.get_spec("mobilenetv3").name == "mobilenet_v3_large"
    assert edgezoo.get_spec("MobileNetV2").name == "mobilenet_v2"
    assert edgezoo.get_spec("shufflenetv2").name == "shufflenet_v2_x1_0"
    assert edgezoo.get_spec("squeezenet").name == "squeezenet1_0"
    assert edgezoo.get_spec("mobilenetv1").name == "mobilenet_v1"
    with pytest.raises(UnknownModelError) as e:
        edgezoo.create_model("mobilenet_v4")
    assert e.value.suggestions and all("mobilenet" in s for s in e.value.suggestions)


def test_new_names_and_aliases_resolve():
    names = set(edgezoo.list_models())
    assert {"shufflenet_v1_g3_x1_0", "shufflenet_v1_g8_x1_5", "effnet", "ghostnet_x0_5", "ghostnet_x1_3",
            "hardnet39ds", "hardnet68ds", "hardnet68", "hardnet85"} <= names
    for alias, name in [("shufflenetv1", "shufflenet_v1_g3_x1_0"), ("shufflenetv1_g8_x1_0", "shufflenet_v1_g8_x1_0"),
                        ("ghostnet", "ghostnet_x1_0"), ("ghostnet_100", "ghostnet_x1_0"),
                        ("ghostnet_050", "ghostnet_x0_5"), ("hardnet", "hardnet68"), ("HarDNet-39DS", "hardnet39ds"),
                        ("effnet", "effnet")]:
        assert edgezoo.get_spec(alias).name == name
