"""LiteRT runner: tiny torch CNNs converted with litert_torch (.tflite, NCHW as torch had it, and one that
takes NHWC) against onnxruntime on the same input; int8 I/O quantization; `edgezoo compare` across .onnx,
.pte and .tflite files of one model; the missing extra in one line.

Tolerance: max abs diff <= 1e-4 on logits of magnitude ~1 (fp32 on XNNPACK vs onnxruntime).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from conftest import require, run_edgezoo
from edge_models import SIZE, ort_reference, torch_models
from edgezoo.errors import InputError, MissingDependencyError

require("ai_edge_litert", "LiteRT (edgezoo[litert]) is not installed")
require("litert_torch", "litert-torch (edgezoo[litert]) is needed to convert the test model")
pytest.importorskip("torch", reason="PyTorch is needed to convert the test model")

from edgezoo.runtimes import open_runner  # noqa: E402
from edgezoo.runtimes.litert import LiteRTRunner, _from_tensor, _to_tensor  # noqa: E402


def _x(seed=0):
    return np.random.default_rng(seed).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)


def test_tflite_matches_onnxruntime_nchw_and_nhwc():
    files = torch_models()
    x = _x()
    ref = ort_reference(files["onnx"], x)
    with open_runner(files["tflite"], threads=1) as r:  # .tflite -> litert by default
        assert isinstance(r, LiteRTRunner)
        (info,) = r.inputs
        assert info.shape == (1, 3, SIZE, SIZE) and info.layout == "NCHW"
        (y,) = r.infer({info.name: x})
        assert r.settings()["threads"] == 1 and "1 thread" in r.describe()
    np.testing.assert_allclose(y, ref, atol=1e-4, rtol=0)
    with LiteRTRunner(files["tflite_nhwc"], threads=2) as r:  # described as the file has it
        (info,) = r.inputs
        assert info.shape == (1, SIZE, SIZE, 3) and info.layout == "NHWC"
        (y,) = r.infer({info.name: np.ascontiguousarray(x.transpose(0, 2, 3, 1))})
    np.testing.assert_allclose(y, ref, atol=1e-4, rtol=0)


def test_int8_tensors_are_quantized_with_their_own_scale_and_zero_point():
    detail = {"dtype": np.int8, "quantization": (0.05, -3)}
    x = np.array([-10.0, -0.1, 0.0, 0.26, 1.0, 10.0], np.float32)
    q = _to_tensor(x, detail)
    assert q.dtype == np.int8
    assert q.tolist() == [-128, -5, -3, 2, 17, 127]  # round(x / 0.05) - 3, clipped to int8
    np.testing.assert_allclose(_from_tensor(q, detail), (q.astype(np.float32) + 3) * 0.05)
    ids = {"dtype": np.int32, "quantization": (0.0, 0)}  # integer without quantization: passed as is
    assert _to_tensor(np.array([3, 4]), ids).tolist() == [3, 4]


def test_bad_files_and_inputs(tmp_path):
    files = torch_models()
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(InputError, match="litert cannot load"):
        LiteRTRunner(bad).activate()
    with LiteRTRunner(files["tflite"]) as r:
        name = r.inputs[0].name
        with pytest.raises(InputError, match="does not fit"):
            r.infer({name: np.zeros((1, 3, SIZE + 1, SIZE), np.float32)})
    with pytest.raises(InputError, match="litert runs .tflite files; .*net.onnx is an .onnx file"):
        open_runner(files["onnx"], "litert")
    with pytest.raises(InputError, match="threads must be"):
        LiteRTRunner(files["tflite"], threads=-1)


def test_missing_litert_says_which_extra(monkeypatch):
    for name in ("ai_edge_litert", "ai_edge_litert.interpreter"):  # already imported by the other tests
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependencyError) as info:
        LiteRTRunner(torch_models()["tflite"])
    assert "LiteRT is not installed" in str(info.value) and "pip install 'edgezoo[litert]'" in str(info.value)


def test_compare_across_formats_of_one_model(tmp_path):
    require("executorch", "ExecuTorch (edgezoo[executorch]) is not installed")
    files = torch_models()
    out = tmp_path / "c.json"
    r = run_edgezoo("compare", str(files["onnx"]), str(files["pte"]), str(files["tflite"]), str(files["tflite_nhwc"]),
                    "-r", "onnxruntime,openvino,executorch,litert", "-t", "1", "--rounds", "2",
                    "--iters-per-round", "2", "--count", "3", "--json", str(out))
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    runtimes = [e["runtime"] for e in report["entries"]]
    assert runtimes == ["onnxruntime", "openvino", "executorch", "litert", "litert"]
    assert report["entries"][4]["inputs"][0]["layout"] == "NHWC"  # fed the same images, transposed
    for e in report["entries"][1:]:
        a = e["agreement"][0]
        assert a["samples"] == 3 and a["max_abs_diff"] <= 1e-4 and a["top1_agreement"] == 1.0, e["label"]
    bad = run_edgezoo("compare", str(files["tflite"]), "-r", "executorch")
    assert bad.returncode == 2 and "executorch runs .pte files" in bad.stderr and "Traceback" not in bad.stderr
