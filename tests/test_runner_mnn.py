"""MNN runner: the tiny ONNX model converted by MNN's converter runs within 1e-4 (relative) of onnxruntime,
at batch 1 and 2; threads are set and read back from the session; MNN's own int8 stays within the QDQ
tolerance the other runners use; a corrupt .mnn and a missing extra are one line each."""

from __future__ import annotations

import functools
import json
import struct

import numpy as np
import pytest

from conftest import run_edgezoo
from edge_models import SIZE, _folder, onnx_model, ort_reference
from edgezoo.errors import InputError, MissingDependencyError

pytest.importorskip("MNN", reason="MNN (edgezoo[mnn]) is not installed")

from edgezoo.export.targets.mnn import FEATURE_METHOD, QUANTIZE, calibration_images, convert, run_tool  # noqa: E402
from edgezoo.runtimes import open_runner  # noqa: E402
from edgezoo.runtimes.mnn import MNNRunner  # noqa: E402


@functools.lru_cache(maxsize=None)
def mnn_model():
    path = _folder() / "tiny.mnn"
    convert(onnx_model(), path, (3, SIZE, SIZE))
    return path


@functools.lru_cache(maxsize=None)
def mnn_int8():
    folder = _folder() / "mnn-calib"
    folder.mkdir(exist_ok=True)
    cal = np.random.default_rng(1).standard_normal((64, 3, SIZE, SIZE)).astype(np.float32)  # KL wants many
    config = {**calibration_images(cal, folder), "path": str(folder) + "/", "feature_quantize_method": FEATURE_METHOD,
              "weight_quantize_method": "MAX_ABS"}
    (folder / "config.json").write_text(json.dumps(config))
    out = _folder() / "tiny.int8.mnn"
    run_tool(QUANTIZE, ["quantized.out", str(mnn_model()), str(out), str(folder / "config.json")], "quantizer", out)
    return out


def _x(batch=1, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)


@pytest.mark.parametrize("batch", [1, 2])
def test_mnn_matches_onnxruntime(batch):
    x = _x(batch)
    ref = ort_reference(onnx_model(), x)
    with open_runner(mnn_model(), threads=1) as r:  # .mnn -> mnn by default
        assert isinstance(r, MNNRunner)
        (info,) = r.inputs
        assert info.name == "input" and info.shape == ("batch", 3, SIZE, SIZE) and info.layout == "NCHW"
        (y,) = r.infer({"input": x})
        assert r.outputs[0].shape == ("batch", 5)
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max()


def test_threads_are_read_back():
    for n in (1, 2):
        with MNNRunner(mnn_model(), threads=n) as r:
            assert r.settings()["threads"] == n and f"{n} thread" in r.describe()
    with pytest.raises(InputError, match="threads"):
        MNNRunner(mnn_model(), threads=0)


def test_mnn_int8_within_the_qdq_tolerance():
    x = _x(4, seed=3)
    ref = ort_reference(onnx_model(), x)
    with open_runner(mnn_int8(), threads=1) as r:
        (y,) = r.infer({"input": x})
    assert np.abs(y - ref).max() <= 0.1 * np.abs(ref).max()
    assert (y.argmax(1) == ref.argmax(1)).mean() >= 0.5


def test_corrupt_mnn_is_one_line(tmp_path):
    rand = tmp_path / "rand.mnn"
    rand.write_bytes(np.random.default_rng(0).bytes(65536))
    with pytest.raises(InputError, match="is not an MNN model"):
        open_runner(rand)
    cut = tmp_path / "cut.mnn"
    data = mnn_model().read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="mnn cannot load"):
        open_runner(cut).activate()
    head = tmp_path / "head.mnn"  # a plausible root offset, garbage after it
    head.write_bytes(struct.pack("<I", 32) + np.random.default_rng(1).bytes(4096))
    r = run_edgezoo("bench", str(head), "-n", "2", block_torch=True)
    assert r.returncode == 2 and r.stderr.count("\n") <= 3 and "Traceback" not in r.stderr, r.stderr


def test_bench_and_compare_take_mnn_files_without_torch(tmp_path):
    r = run_edgezoo("bench", str(mnn_model()), "-t", "1", "-n", "3", "--warmup", "1", block_torch=True)
    assert r.returncode == 0, r.stderr
    assert "MNN" in r.stdout
    out = tmp_path / "c.json"
    r = run_edgezoo("compare", str(onnx_model()), str(mnn_model()), "-t", "1", "--rounds", "1",
                    "--iters-per-round", "1", "--count", "2", "--json", str(out), block_torch=True)
    assert r.returncode == 0, r.stderr
    entries = json.loads(out.read_text())["entries"]
    assert [e["runtime"] for e in entries] == ["onnxruntime", "mnn"]
    assert entries[1]["agreement"][0]["max_rel_diff"] <= 1e-4


def test_missing_mnn_says_which_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "MNN", None)  # `import MNN` now fails
    with pytest.raises(MissingDependencyError, match=r"MNN is not installed .*pip install 'edgezoo\[mnn\]'"):
        MNNRunner(mnn_model())
    r = run_edgezoo("bench", str(mnn_model()), "-n", "2", block_torch=True, env={"EDGEZOO_BLOCK_IMPORTS": "MNN"})
    assert r.returncode == 2 and "pip install 'edgezoo[mnn]'" in r.stderr and "Traceback" not in r.stderr
