"""ncnn runner: the tiny ONNX model converted by pnnx (edgezoo's ncnn target) runs close to onnxruntime at
batch 1 and 3; ``ncnn.Mat(array)`` borrows the buffer, so the runner keeps every array it hands over alive
until ``extract`` (checked with temporaries that would be freed otherwise); threads are set and read back;
the .param's declared input shape and names are what the runner reports; corrupt .param / missing .bin /
missing extra are one line each.

Tolerance: ncnn's own kernels (and its fp16 storage on CPUs with F16C) differ from onnxruntime's: measured
here 1.7e-4 of the largest logit on this model; 1e-3 is asserted.
"""

from __future__ import annotations

import functools
import gc
import json

import numpy as np
import pytest

from conftest import run_edgezoo
from edge_models import SIZE, _folder, onnx_model, ort_reference
from edgezoo.errors import InputError, MissingDependencyError

pytest.importorskip("ncnn", reason="ncnn (edgezoo[ncnn]) is not installed")
pytest.importorskip("pnnx", reason="pnnx (edgezoo[ncnn]) is needed to convert the test model")

from edgezoo.export.targets.ncnn import convert  # noqa: E402
from edgezoo.runtimes import open_runner  # noqa: E402
from edgezoo.runtimes.ncnn import NcnnRunner  # noqa: E402

TOL = 1e-3


@functools.lru_cache(maxsize=None)
def ncnn_model():
    path = _folder() / "tiny.ncnn.param"
    convert(onnx_model(), path, (3, SIZE, SIZE), fp16=False)
    return path


def _x(batch=1, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)


@pytest.mark.parametrize("batch", [1, 3])
def test_ncnn_matches_onnxruntime(batch):
    x = _x(batch)
    ref = ort_reference(onnx_model(), x)
    with open_runner(ncnn_model(), threads=1) as r:  # .param -> ncnn by default
        assert isinstance(r, NcnnRunner)
        (info,) = r.inputs
        assert info.name == "input" and info.shape == ("batch", 3, SIZE, SIZE) and info.layout == "NCHW"
        assert [o.name for o in r.outputs] == ["logits"] and r.outputs[0].shape == ("batch", 5)
        (y,) = r.infer({"input": x})
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() <= TOL * np.abs(ref).max()


class _ReusingExtractor:
    """An Extractor whose ``extract`` first collects garbage and fills fresh memory: what happens to a freed
    input buffer between ``input`` and ``extract`` when the allocator reuses it."""

    def __init__(self, inner):
        self.inner = inner

    def input(self, name, mat):
        return self.inner.input(name, mat)

    def extract(self, name):
        gc.collect()
        self.filler = [np.full((3, SIZE, SIZE), 1e6, np.float32) for _ in range(64)]
        return self.inner.extract(name)


def test_borrowed_buffers_stay_alive_until_extract(monkeypatch):
    """Every feed is converted by the runner (float64, not C-contiguous), so the arrays ncnn.Mat borrows are
    the runner's own temporaries; with memory reused between input and extract, results still match (a runner
    that let them go gives values of 1e6 here)."""
    x = _x(4, seed=5)
    ref = ort_reference(onnx_model(), x)
    odd = np.asfortranarray(x.astype(np.float64))
    with NcnnRunner(ncnn_model(), threads=1) as r:
        real = r.net.create_extractor
        monkeypatch.setattr(r, "net", type("Net", (), {"create_extractor": lambda self: _ReusingExtractor(real()),
                                                        "opt": r.net.opt})())
        (y,) = r.infer({"input": odd})
        assert r._borrowed == []  # released once extract has returned
    assert np.abs(y - ref).max() <= TOL * np.abs(ref).max()


def test_threads_are_read_back():
    for n in (1, 2):
        with NcnnRunner(ncnn_model(), threads=n) as r:
            assert r.settings()["threads"] == n and f"{n} thread" in r.describe()


def test_corrupt_param_and_missing_bin_are_one_line(tmp_path):
    rand = tmp_path / "rand.param"
    rand.write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "rand.bin").write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match="is not an ncnn .param file"):
        open_runner(rand)
    lying = tmp_path / "lying.param"  # the magic line, then counts the file does not hold
    lying.write_text("7767517\n999999999 999999999\nInput in0 0 1 in0\n")
    (tmp_path / "lying.bin").write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match="declares 999999999 layers"):
        open_runner(lying)
    lonely = tmp_path / "lonely.param"
    lonely.write_text(ncnn_model().read_text())
    with pytest.raises(InputError, match="lonely.bin"):
        open_runner(lonely)
    cut = tmp_path / "cut.param"
    cut.write_text(ncnn_model().read_text())
    (tmp_path / "cut.bin").write_bytes(ncnn_model().with_suffix(".bin").read_bytes()[:100])
    r = run_edgezoo("bench", str(cut), "-n", "2", block_torch=True)
    assert r.returncode == 2 and "ncnn cannot load" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_layer_this_ncnn_build_lacks_is_named(tmp_path):
    """pnnx writes ArgMax for an argmax output, which the ncnn wheel is built without: ncnn only prints
    "layer ArgMax not exists or registered"; the runner names the layer."""
    param = tmp_path / "argmax.param"
    lines = ncnn_model().read_text().splitlines()
    last = lines[-1].split()  # type name n_in n_out inputs... outputs... key=value...
    out = last[4 + int(last[2])]  # the last layer's first output blob
    layers, blobs = (int(t) for t in lines[1].split())
    lines[1] = f"{layers + 1} {blobs + 1}"
    lines.append(f"ArgMax argmax_0 1 1 {out} label")
    param.write_text("\n".join(lines) + "\n")
    (tmp_path / "argmax.bin").write_bytes(ncnn_model().with_suffix(".bin").read_bytes())
    with pytest.raises(InputError, match="this ncnn build has no ArgMax layer"):
        open_runner(param).activate()


def test_bench_compare_and_serve_take_param_files_without_torch(tmp_path):
    r = run_edgezoo("bench", str(ncnn_model()), "-t", "1", "-n", "3", "--warmup", "1", block_torch=True)
    assert r.returncode == 0, r.stderr
    assert "ncnn" in r.stdout
    out = tmp_path / "c.json"
    r = run_edgezoo("compare", str(onnx_model()), str(ncnn_model()), "-t", "1", "--rounds", "1",
                    "--iters-per-round", "1", "--count", "2", "--json", str(out), block_torch=True)
    assert r.returncode == 0, r.stderr
    entries = json.loads(out.read_text())["entries"]
    assert [e["runtime"] for e in entries] == ["onnxruntime", "ncnn"]
    assert entries[1]["agreement"][0]["max_rel_diff"] <= TOL


def test_serve_loads_a_param_file():
    pytest.importorskip("starlette", reason="edgezoo[serve] is not installed")
    from edgezoo.serve.model import load_model

    model = load_model(ncnn_model(), threads=1, override={"input_size": (3, SIZE, SIZE), "mean": (0.5,) * 3,
                                                         "std": (0.25,) * 3})
    try:
        assert model.runner.name == "ncnn" and [t.name for t in model.inputs] == ["input"]
        (y,) = model.runner.infer({"input": _x(2)})
        assert y.shape == (2, 5)
    finally:
        model.runner.deactivate()


def test_missing_ncnn_says_which_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ncnn", None)  # `import ncnn` now fails
    with pytest.raises(MissingDependencyError, match=r"ncnn is not installed .*pip install 'edgezoo\[ncnn\]'"):
        NcnnRunner(ncnn_model())
    r = run_edgezoo("bench", str(ncnn_model()), "-n", "2", block_torch=True, env={"EDGEZOO_BLOCK_IMPORTS": "ncnn"})
    assert r.returncode == 2 and "pip install 'edgezoo[ncnn]'" in r.stderr and "Traceback" not in r.stderr
