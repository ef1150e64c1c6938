"""ExecuTorch runner: a tiny torch CNN lowered to XNNPACK (.pte) against onnxruntime on the same input; the
threadpool size is set and read back; bad files and inputs are one clear error; the missing extra in one line.

Tolerance: max abs diff <= 1e-4 on logits of magnitude ~1 (both fp32; XNNPACK and onnxruntime pick different
convolution algorithms).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from conftest import require
from edge_models import SIZE, ort_reference, torch_models
from edgezoo.errors import InputError, MissingDependencyError

require("executorch", "ExecuTorch (edgezoo[executorch]) is not installed")
pytest.importorskip("torch", reason="PyTorch is needed to lower the test model")

from edgezoo.runtimes import open_runner  # noqa: E402
from edgezoo.runtimes.executorch import ExecuTorchRunner  # noqa: E402


def test_pte_matches_onnxruntime():
    files = torch_models()
    x = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    with open_runner(files["pte"], threads=1) as r:  # .pte -> executorch by default
        assert isinstance(r, ExecuTorchRunner)
        assert [(i.name, i.shape, i.layout) for i in r.inputs] == [("input", (1, 3, SIZE, SIZE), "NCHW")]
        assert r.outputs[0].shape == (1, 10)
        (y,) = r.infer({"input": x})
    np.testing.assert_allclose(y, ort_reference(files["onnx"], x), atol=1e-4, rtol=0)


def test_thread_count_is_applied_and_read_back():
    from executorch.extension.pybindings import portable_lib

    files = torch_models()
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)
    for threads in (1, 2):
        with ExecuTorchRunner(files["pte"], threads=threads) as r:
            r.infer({"input": x})
            assert portable_lib._threadpool_get_thread_count() == threads == r.settings()["threads"]
            assert f"{threads} thread" in r.describe() and "XnnpackBackend" in r.settings()["backends"]
    # XNNPACK holds the pool a method was loaded with: a second count while one is loaded is refused
    with ExecuTorchRunner(files["pte"], threads=2) as r, ExecuTorchRunner(files["pte"], threads=2) as same:
        r.infer({"input": x}), same.infer({"input": x})  # the same count is fine
        with pytest.raises(InputError, match="one threadpool per process"):
            ExecuTorchRunner(files["pte"], threads=1).activate()
        r.infer({"input": x})  # and the loaded ones still run
    with ExecuTorchRunner(files["pte"], threads=1) as r:  # once they are gone, any count again
        assert r.settings()["threads"] == 1


def test_bad_files_and_inputs(tmp_path):
    files = torch_models()
    with ExecuTorchRunner(files["pte"]) as r:
        with pytest.raises(InputError, match="does not fit the program's input"):
            r.infer({"input": np.zeros((2, 3, SIZE, SIZE), np.float32)})
        with pytest.raises(InputError, match="do not match"):
            r.infer({"x": np.zeros((1, 3, SIZE, SIZE), np.float32)})
    bad = tmp_path / "bad.pte"
    bad.write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match="executorch cannot load"):
        ExecuTorchRunner(bad).activate()
    with pytest.raises(InputError, match="has no method 'encode'"):
        ExecuTorchRunner(files["pte"], method="encode").activate()
    with pytest.raises(InputError, match="executorch runs .pte files; .*net.onnx is an .onnx file"):
        open_runner(files["onnx"], "executorch")
    with pytest.raises(InputError, match="no such file"):
        ExecuTorchRunner(tmp_path / "missing.pte")


def test_missing_executorch_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "executorch.runtime", None)
    with pytest.raises(MissingDependencyError) as info:
        ExecuTorchRunner(torch_models()["pte"])
    assert "ExecuTorch is not installed" in str(info.value) and "pip install 'edgezoo[executorch]'" in str(info.value)
