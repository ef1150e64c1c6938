"""`edgezoo export`: the bundle, its report, and clear errors with nothing partial left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")

from conftest import run_edgezoo  # noqa: E402
from edgezoo.errors import EdgezooError, InputError, UnknownModelError, WeightsError  # noqa: E402
from edgezoo.export.pipeline import ExportOptions, run_export  # noqa: E402
from edgezoo.onnx_meta import read_metadata  # noqa: E402


def _no_partials(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_cli_int8_bundle(tmp_path):
    out = tmp_path / "bundle"
    r = run_edgezoo("export", "mobilenetv3_small", "--int8", "--input-size", "64", "--calib-count", "4",
                    "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "synthetic" in r.stdout + r.stderr  # the warning that accuracy needs real images
    assert {p.name for p in out.iterdir()} == {"model.fp32.onnx", "model.int8.onnx", "report.json", "report.md"}
    rep = json.loads((out / "report.json").read_text())
    assert [p["name"] for p in rep["passes"]][:1] == ["fold_batchnorm"] and all(p["ok"] for p in rep["passes"])
    a = rep["int8"]["agreement"]
    for key in ("top1_agreement", "cosine_mean", "sqnr_db"):
        assert isinstance(a[key], float)
    assert 0 < len(a["worst_layers"]) <= 10
    # per-layer figures compare each int8 tensor with the same tensor of the graph it was quantized from
    # (h-swish outputs are 6x there): a mismatch would show as about -14 dB
    assert all(w["sqnr_db"] > 5 for w in a["worst_layers"])
    assert rep["int8"]["float_islands"]["count"] == 0
    assert rep["files"]["int8"]["size_bytes"] < rep["files"]["fp32"]["size_bytes"] / 3
    assert "top-1 agreement" in (out / "report.md").read_text()
    meta = read_metadata(out / "model.int8.onnx")
    assert meta.precision == "int8" and meta.model == "mobilenet_v3_small" and meta.input_size == (3, 64, 64)
    assert _no_partials(tmp_path) == []


def test_cli_unknown_model_is_one_clear_line(tmp_path):
    r = run_edgezoo("export", "mobilenetv9", "--int8", "-o", str(tmp_path / "b"))
    assert r.returncode == 2 and "unknown model 'mobilenetv9'" in r.stderr and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_empty_calibration_folder(tmp_path):
    (tmp_path / "calib").mkdir()
    r = run_edgezoo("export", "squeezenet1_1", "--int8", "--calib", str(tmp_path / "calib"), "-o",
                    str(tmp_path / "b"))
    assert r.returncode == 2 and "has no images" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "b").exists() and _no_partials(tmp_path) == []


def _opts(tmp_path, **kw):
    return ExportOptions(**{"name": "squeezenet1_1", "input_size": 64, "calib_count": 2, "out": tmp_path / "b", **kw})


def test_non_image_calibration_folder(tmp_path):
    (tmp_path / "calib").mkdir()
    (tmp_path / "calib" / "a.png").write_text("hello")
    with pytest.raises(InputError, match="a.png"):
        run_export(_opts(tmp_path, int8=True, calib=tmp_path / "calib"))
    assert not (tmp_path / "b").exists()


def test_checkpoint_for_another_model(tmp_path):
    from edgezoo.models.registry import create_model

    torch.save(create_model("mobilenet_v2").state_dict(), tmp_path / "mv2.pt")
    with pytest.raises(WeightsError):
        run_export(_opts(tmp_path, weights=tmp_path / "mv2.pt"))
    assert not (tmp_path / "b").exists() and _no_partials(tmp_path) == []


def test_unwritable_output_folder(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="not a folder|not writable|a file"):
        run_export(_opts(tmp_path, out=tmp_path / "afile" / "bundle"))
    with pytest.raises(UnknownModelError):
        run_export(_opts(tmp_path, name="nope"))


def test_failed_run_keeps_the_earlier_bundle(tmp_path, monkeypatch):
    run_export(_opts(tmp_path))
    before = (tmp_path / "b" / "model.fp32.onnx").read_bytes()
    from edgezoo.export import quantize

    def boom(*a, **k):
        raise EdgezooError("quantization exploded")

    monkeypatch.setattr(quantize, "quantize_int8", boom)
    with pytest.raises(EdgezooError, match="exploded"):
        run_export(_opts(tmp_path, int8=True))
    assert (tmp_path / "b" / "model.fp32.onnx").read_bytes() == before
    assert not (tmp_path / "b" / "model.int8.onnx").exists() and _no_partials(tmp_path) == []


def test_fixed_batch_and_fp16(tmp_path):
    out = run_export(_opts(tmp_path, batch=2, fp16=True))
    import onnx

    dim = onnx.load(str(out.files["fp32"])).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_value == 2
    assert out.report["fp16"]["agreement"]["sqnr_db"] > 30


def test_tensorrt_missing_fails_before_any_work(tmp_path):
    import importlib.util

    from edgezoo.errors import MissingDependencyError

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here; this checks the message when it is not")
    with pytest.raises(MissingDependencyError, match="GPU"):
        run_export(_opts(tmp_path, tensorrt=True))
    assert not (tmp_path / "b").exists()


def test_fine_tuned_checkpoint_with_num_classes(tmp_path):
    from edgezoo.models.registry import create_model

    torch.save(create_model("mobilenet_v3_small", num_classes=10).state_dict(), tmp_path / "ten.pt")
    out = run_export(_opts(tmp_path, name="mobilenet_v3_small", weights=tmp_path / "ten.pt", num_classes=10))
    meta = read_metadata(out.files["fp32"])
    assert meta.num_classes == 10 and meta.labels is None


def test_lite_int8_bundle_reports_agreement_of_the_int8_file(tmp_path, monkeypatch):
    # 60 images: enough for the 15% held-out split (at least 8) that the lite report scores on
    import numpy as np

    from edgezoo.export import lite as lite_module
    from edgezoo.runtimes.onnxruntime import OrtRunner

    seen = {}
    real = lite_module.add_int8_agreement

    def spy(report, int8_path):  # what the figure must be computed from: this int8 file, these images
        seen.update(heldout=np.array(report.heldout, np.float32), original=report.original,
                    int8=Path(int8_path).read_bytes())
        return real(report, int8_path)

    monkeypatch.setattr(lite_module, "add_int8_agreement", spy)
    out = run_export(_opts(tmp_path, name="mobilenet_v3_small", int8=True, lite=True, distill_steps=2,
                           input_size=32, calib_count=60))
    lite = out.report["lite"]
    assert seen["int8"] == out.files["int8"].read_bytes()  # the bundle's int8 file was the one scored
    with OrtRunner(seen["int8"]) as runner, torch.no_grad():
        int8_top1 = np.concatenate([runner.infer({runner.inputs[0].name: x[None]})[0] for x in seen["heldout"]])
        ref_top1 = seen["original"].eval()(torch.from_numpy(seen["heldout"])).numpy()
    expected = float(np.mean(int8_top1.argmax(1) == ref_top1.argmax(1)))
    assert len(seen["heldout"]) >= 8 and lite["heldout_agreement_int8"] == pytest.approx(expected)
    assert "lite" in read_metadata(out.files["fp32"]).passes


def test_fixed_batch_int8(tmp_path):
    # calibration and the agreement check must feed a fixed-batch model whole batches (5 images, batch 2)
    out = run_export(_opts(tmp_path, batch=2, int8=True, calib_count=5, eval_count=5))
    assert read_metadata(out.files["int8"]).precision == "int8"
    a = out.report["int8"]["agreement"]
    # every one of the 5 images scored once: none dropped with the short last batch, no padding counted
    assert a["images"] == 5 and a["inputs"].startswith("5 synthetic images"), a
    assert abs(a["top1_agreement"] * 5 - round(a["top1_agreement"] * 5)) < 1e-9
