"""OpenVINO runner: .onnx (fp32 and QDQ int8) and IR against onnxruntime; threads, streams and precision read
back; bench and compare on OpenVINO with torch blocked; the missing extra in one line.

Tolerances: f32 against onnxruntime f32, max abs diff <= 1e-4 on logits of magnitude ~1 (different kernels,
same precision); bf16 (only where the CPU runs it) cosine >= 0.999 and max abs <= 5e-2 x max |logit|; QDQ
int8 against onnxruntime's int8 run of the same file: max abs <= 0.1 x max |logit| (both quantize the same
way, but OpenVINO may fuse and round differently).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from conftest import require, run_edgezoo
from edge_models import SIZE, onnx_model, ort_reference, qdq_model
from edgezoo.errors import InputError, MissingDependencyError

ov = require("openvino", "OpenVINO (edgezoo[openvino]) is not installed")

from edgezoo.runtimes import open_runner  # noqa: E402
from edgezoo.runtimes.openvino import OpenVinoRunner  # noqa: E402


def _x(batch=2, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)


def test_onnx_f32_matches_onnxruntime_and_reads_back_settings():
    x = _x()
    ref = ort_reference(onnx_model(), x)
    with OpenVinoRunner(onnx_model(), threads=1, streams=1) as r:
        assert [i.name for i in r.inputs] == ["input"] and r.inputs[0].layout == "NCHW"
        assert r.inputs[0].shape == (None, 3, SIZE, SIZE)  # the dynamic batch stays dynamic
        (y,) = r.infer({"input": x})
        s = r.settings()
        assert s["precision"] == "f32" == r.precision and s["precision_asked"] == "f32"
        assert s["threads"] == 1 and s["streams"] == 1
        assert "f32" in r.describe() and "1 thread" in r.describe()
        meta = r.model_metadata()  # OpenVINO keeps the file's metadata_props
        assert meta is not None and meta.model == "tiny" and meta.input_size == (3, SIZE, SIZE)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, atol=1e-4, rtol=0)


def test_a_dynamic_batch_is_compiled_at_batch_one_and_other_batches_still_run():
    """benchmark_app times a static shape; so does the runner at batch 1 (what bench and the targets feed).
    Another batch runs the model as it is, with the same numbers."""
    x = _x(batch=3)
    ref = ort_reference(onnx_model(), x)
    with OpenVinoRunner(onnx_model(), threads=1) as r:
        assert [tuple(d.get_length() for d in p.get_partial_shape()) for p in r.compiled.inputs] == [(1, 3, SIZE, SIZE)]
        assert r.inputs[0].shape == (None, 3, SIZE, SIZE) and r.outputs[0].shape[0] is None
        ones = np.concatenate([r.infer({"input": x[i:i + 1]})[0] for i in range(3)])
        (three,) = r.infer({"input": x})
    assert np.abs(ones - ref).max() <= 1e-4 and np.abs(three - ref).max() <= 1e-4


def test_threads_setting_is_what_openvino_compiled_with():
    for threads in (1, 2):
        with OpenVinoRunner(onnx_model(), threads=threads) as r:
            assert r.settings()["threads"] == threads


def test_bf16_is_asked_for_and_what_ran_is_reported():
    core = ov.Core()
    has_bf16 = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    x = _x()
    ref = ort_reference(onnx_model(), x)
    with OpenVinoRunner(onnx_model(), precision="bf16") as r:
        assert r.settings()["precision_asked"] == "bf16"
        assert r.precision == ("bf16" if has_bf16 else "f32")
        if r.precision != "bf16":
            assert "bf16 asked" in r.describe()  # the user sees that bf16 did not run
        (y,) = r.infer({"input": x})
    cos = np.sum(y * ref, 1) / (np.linalg.norm(y, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.999
    assert np.abs(y - ref).max() <= 5e-2 * np.abs(ref).max()
    with OpenVinoRunner(onnx_model(), precision="auto") as r:  # OpenVINO's own choice, read back
        assert r.settings()["precision_asked"] == "auto" and r.precision in ("f32", "bf16", "f16")


def test_qdq_int8_runs_close_to_onnxruntime_int8():
    x = _x()
    ref = ort_reference(qdq_model(), x)
    with open_runner(qdq_model(), "openvino") as r:
        (y,) = r.infer({"input": x})
    assert np.abs(y - ref).max() <= 0.1 * np.abs(ref).max()
    assert (y.argmax(1) == ref.argmax(1)).mean() >= 0.5


def test_ir_xml_and_bin(tmp_path):
    model = ov.Core().read_model(str(onnx_model()))
    xml = tmp_path / "tiny.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)
    x = _x()
    with open_runner(xml) as r:  # .xml -> openvino by default
        assert isinstance(r, OpenVinoRunner)
        (y,) = r.infer({"input": x})
        assert r.model_size_bytes() == xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
    np.testing.assert_allclose(y, ort_reference(onnx_model(), x), atol=1e-4, rtol=0)
    xml.with_suffix(".bin").unlink()
    with pytest.raises(InputError, match="no weights file tiny.bin"):
        OpenVinoRunner(xml)


def test_bad_input_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="unknown OpenVINO precision 'int3'"):
        OpenVinoRunner(onnx_model(), precision="int3")
    with pytest.raises(InputError, match="threads must be"):
        OpenVinoRunner(onnx_model(), threads=0)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a model")
    with pytest.raises(InputError, match="openvino cannot load"):
        OpenVinoRunner(bad).activate()
    with OpenVinoRunner(onnx_model()) as r:
        with pytest.raises(InputError, match="openvino cannot run"):
            r.infer({"input": np.zeros((1, 4, SIZE, SIZE), np.float32)})
    tfl = tmp_path / "m.tflite"
    tfl.write_bytes(b"x")
    with pytest.raises(InputError, match="openvino runs .onnx files and OpenVINO IR .*; .*m.tflite is a .tflite file"):
        open_runner(tfl, "openvino")
    with pytest.raises(InputError, match=r"onnxruntime takes no precision hint \(--precision\); openvino does"):
        open_runner(onnx_model(), "onnxruntime", precision="bf16")


def test_missing_openvino_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now fails
    with pytest.raises(MissingDependencyError) as info:
        OpenVinoRunner(onnx_model())
    assert "OpenVINO is not installed" in str(info.value) and "pip install 'edgezoo[openvino]'" in str(info.value)


def test_bench_on_openvino_without_torch(tmp_path):
    out = tmp_path / "b.json"
    r = run_edgezoo("bench", str(onnx_model()), "-r", "openvino", "-t", "1", "-n", "5", "--warmup", "1",
                    "--precision", "f32", "--json", str(out), block_torch=True)
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    m = report["models"][0]
    assert m["runtime"] == "openvino" and m["settings"]["precision"] == "f32" and m["settings"]["threads"] == 1
    assert report["results"][0]["latency_ms"]["n"] == 5


def test_compare_onnxruntime_and_openvino_without_torch(tmp_path):
    out = tmp_path / "c.json"
    r = run_edgezoo("compare", str(onnx_model()), str(qdq_model()), "--runtimes", "onnxruntime,openvino",
                    "-t", "1", "--rounds", "2", "--iters-per-round", "2", "--count", "4", "--json", str(out),
                    block_torch=True)
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    labels = [e["label"] for e in report["entries"]]
    assert labels == ["tiny.onnx (onnxruntime)", "tiny.onnx (openvino)", "tiny_int8.onnx (onnxruntime)",
                      "tiny_int8.onnx (openvino)"]
    first, ov_f32 = report["entries"][0], report["entries"][1]
    assert first["agreement"][0]["max_abs_diff"] == 0 and first["ratio"] == 1.0
    assert ov_f32["agreement"][0]["max_abs_diff"] <= 1e-4 and ov_f32["agreement"][0]["samples"] == 4
    assert all(e["latency_ms"]["n"] == 4 for e in report["entries"])  # 2 rounds x 2 runs each


def test_missing_openvino_on_the_cli_is_one_line(tmp_path):
    r = run_edgezoo("bench", str(onnx_model()), "-r", "openvino", block_torch=True,
                    env={"EDGEZOO_BLOCK_IMPORTS": "openvino"})
    assert r.returncode == 2 and "OpenVINO is not installed" in r.stderr and "edgezoo[openvino]" in r.stderr
    assert "Traceback" not in r.stderr
