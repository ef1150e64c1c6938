"""`edgezoo bench` in a subprocess: JSON schema, ratio mode, --ops, the device side without torch, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from onnx_builders import conv_relu_gap as tiny_onnx
from tests.conftest import ROOT, run_edgezoo

LATENCY_KEYS = {"n", "mean", "std", "p50", "p90", "p99", "min", "max"}


@pytest.fixture
def tiny(tmp_path):
    return tiny_onnx(tmp_path / "tiny.onnx")


def no_traceback(proc):
    assert "Traceback" not in proc.stdout + proc.stderr


def test_bench_json_schema(tiny, tmp_path):
    out = tmp_path / "r" / "bench.json"
    proc = run_edgezoo("bench", str(tiny), "-n", "5", "--warmup", "1", "-b", "1,3", "-t", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "p50 ms" in proc.stdout and "items/s" in proc.stdout
    rep = json.loads(out.read_text())
    assert rep["schema"] == "edgezoo.bench/1" and rep["mode"] == "latency" and rep["interrupted"] is False
    assert {"cpus", "platform", "onnxruntime"} <= set(rep["machine"])
    assert rep["settings"]["threads"] == 1 and rep["settings"]["iterations"] == 5
    (m,) = rep["models"]
    assert m["runtime"] == "onnxruntime" and m["size_bytes"] == tiny.stat().st_size
    assert m["inputs"] == [{"name": "x", "shape": ["batch", 3, 8, 8], "dtype": "float32"}]
    assert [r["batch"] for r in rep["results"]] == [1, 3]
    for r in rep["results"]:
        assert set(r["latency_ms"]) == LATENCY_KEYS and r["latency_ms"]["n"] == 5
        assert r["input_shapes"] == {"x": [r["batch"], 3, 8, 8]}
        assert r["throughput_per_s"] > 0 and r["peak_rss_bytes"] > 0


def test_bench_without_torch_with_ops(tiny, tmp_path):
    """The device side: an .onnx file benches and profiles where `import torch` fails."""
    out = tmp_path / "ops.json"
    proc = run_edgezoo("bench", str(tiny), "-n", "3", "--warmup", "1", "--ops", "--top", "2", "--json", str(out),
                       block_torch=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "time by operator type" in proc.stdout
    rep = json.loads(out.read_text())
    assert "torch" not in rep["machine"]
    ops = rep["ops"]
    assert ops["batch"] == 1 and ops["runs"] == 20 and len(ops["slowest"]) == 2
    assert sum(ops["by_type"].values()) == pytest.approx(ops["total_ms"])
    assert sum(n["time_ms"] for n in ops["nodes"]) == pytest.approx(ops["total_ms"])
    assert ops["total_ms"] <= ops["run_ms"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ops.json", "tiny.onnx"]  # no profiler trace left


def test_bench_vs_identical_models(tiny, tmp_path):
    out = tmp_path / "vs.json"
    proc = run_edgezoo("bench", str(tiny), "--vs", str(tiny), "--rounds", "3", "--iters-per-round", "4",
                       "--warmup", "1", "-b", "2", "--json", str(out), block_torch=True)
    assert proc.returncode == 0, proc.stderr
    assert "B/A" in proc.stdout
    rep = json.loads(out.read_text())
    assert rep["mode"] == "compare" and len(rep["models"]) == 2
    la, lb = (m["label"] for m in rep["models"])
    assert la != lb
    (res,) = rep["results"]
    c = res["compare"]
    assert res["batch"] == 2 and c["rounds"] == 3 and c["baseline"] == la
    assert c["counts"] == {la: 12, lb: 12}  # both ran the same count
    assert c["round_ratios"][la] == [1.0, 1.0, 1.0] and len(c["round_ratios"][lb]) == 3
    assert c["ratio_min"][lb] <= c["ratio_q25"][lb] <= c["ratio_median"][lb] <= c["ratio_q75"][lb] <= c["ratio_max"][lb]


def test_bench_registry_model_on_two_runtimes(tmp_path):
    pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
    out = tmp_path / "two.json"
    proc = run_edgezoo("bench", "squeezenet1_1", "--vs-runtime", "onnxruntime", "--input-size", "64", "-t", "1",
                       "--rounds", "2", "--iters-per-round", "2", "--warmup", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(out.read_text())
    assert [m["runtime"] for m in rep["models"]] == ["torch", "onnxruntime"]
    assert rep["models"][1]["metadata"]["input_size"] == [3, 64, 64]  # exported at the asked size
    assert rep["results"][0]["compare"]["counts"] == {m["label"]: 4 for m in rep["models"]}


@pytest.mark.parametrize("case", ["missing", "truncated", "not_onnx", "size", "tensorrt", "provider", "batch"])
def test_bench_bad_input(case, tiny, tmp_path):
    out = tmp_path / "keep.json"
    out.write_text('{"earlier": "result"}')
    target, extra = str(tiny), []
    if case == "missing":
        target = str(tmp_path / "missing.onnx")
    elif case == "truncated":
        (tmp_path / "t.onnx").write_bytes(tiny.read_bytes()[:50])
        target = str(tmp_path / "t.onnx")
    elif case == "not_onnx":
        (tmp_path / "n.onnx").write_text("name,value\n1,2\n")
        target = str(tmp_path / "n.onnx")
    elif case == "size":
        extra = ["--input-size", "32"]  # the model's input is fixed at 8x8
    elif case == "tensorrt":
        extra = ["--runtime", "tensorrt"]
    elif case == "provider":
        extra = ["--provider", "openvino"]
    elif case == "batch":
        extra = ["-b", "0"]
    proc = run_edgezoo("bench", target, "-n", "2", *extra, "--json", str(out), block_torch=True)
    assert proc.returncode != 0
    assert proc.stderr.startswith("error:"), proc.stderr
    no_traceback(proc)
    assert json.loads(out.read_text()) == {"earlier": "result"}  # an earlier output survives
    if case == "tensorrt":
        assert "TensorRT is not installed" in proc.stderr and "NVIDIA GPU" in proc.stderr


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_bench_registry_name_without_torch(runtime):
    proc = run_edgezoo("bench", "mobilenet_v2", "--runtime", runtime, "-n", "1", block_torch=True)
    assert proc.returncode != 0
    assert proc.stderr.startswith("error: PyTorch is not installed"), proc.stderr
    assert ".onnx files run on onnxruntime without it" in proc.stderr
    no_traceback(proc)


def test_bench_ctrl_c_prints_partial(tiny, tmp_path):
    out = tmp_path / "int.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "no_torch"), str(ROOT)])}
    # a shell starts background jobs with SIGINT ignored, and a child inherits that: give the child the default
    # disposition, as a terminal's Ctrl-C would find it (a CI run started with `&` hung here otherwise)
    proc = subprocess.Popen([sys.executable, "-m", "edgezoo", "bench", str(tiny), "--time", "120", "--warmup", "1",
                             "--json", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(6)  # imports and session set-up take about a second; then it measures for two minutes
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stdout and "p50 ms" in stdout
    assert "Traceback" not in stdout + stderr
    assert not out.exists()  # a partial measurement is printed, not written


@pytest.mark.parametrize("where, says", [("file/x.json", "file is a file, not a folder"),
                                         ("/proc/edgezoo-x.json", "does not accept new files"),
                                         (".", "is a folder, not a file")])
def test_bench_json_path_is_checked_before_measuring(tiny, tmp_path, where, says):
    (tmp_path / "file").write_text("x")
    target = where if where.startswith("/") else str(tmp_path / where)
    proc = run_edgezoo("bench", str(tiny), "-n", "2", "--json", target, block_torch=True)
    assert proc.returncode == 2 and says in " ".join(proc.stderr.split()), proc.stderr
    assert "p50" not in proc.stdout  # nothing was measured
    no_traceback(proc)


def test_bench_input_size_uses_the_common_grammar(tiny):
    from edgezoo.runtimes.inputs import INPUT_SIZE_GRAMMAR

    proc = run_edgezoo("bench", str(tiny), "-n", "1", "--input-size", "10000", block_torch=True)
    assert proc.returncode == 2 and "must lie in 1..4096" in proc.stderr
    assert INPUT_SIZE_GRAMMAR.split(",")[0] in " ".join(proc.stderr.split())
    ok = run_edgezoo("bench", str(tiny), "-n", "1", "--warmup", "0", "--input-size", "3x8x8", block_torch=True)
    assert ok.returncode == 0, ok.stderr


def test_an_input_declared_larger_than_memory_is_one_line(tmp_path):
    """A 100-byte file may declare an input of 2**40 floats: bench and compare refuse it before numpy tries."""
    import onnx
    from onnx import TensorProto, helper

    from onnx_builders import make_model

    path = tmp_path / "huge.onnx"
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2 ** 40]) for n in ("x", "y")]
    onnx.save(make_model([helper.make_node("Relu", ["x"], ["y"])], io[:1], io[1:]), path)
    for args in (["bench", str(path), "-n", "1"], ["compare", str(path), str(path)]):
        proc = run_edgezoo(*args, block_torch=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        no_traceback(proc)
        assert "input 'x' of shape 1x1099511627776 would take 4,096.0 GiB" in proc.stderr, proc.stderr


def test_a_constant_of_2_31_values_is_refused_before_onnxruntime_builds_it(tmp_path):
    """The runner checks a foreign file before loading it (edgezoo.onnx_bounds.check_model_bounds): an int64
    ConstantOfShape of [2**31] (16 GiB when run) and an initializer declaring 2**40 floats are one line each.
    The child gets 6 GiB of address space, so a regression fails here instead of taking the machine's memory."""
    import resource

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from onnx_builders import make_model, value_info

    x, y = value_info("x", [1], TensorProto.INT64), value_info("y", None, TensorProto.INT64)
    big = make_model([helper.make_node("ConstantOfShape", ["s"], ["c"], value=numpy_helper.from_array(
                          np.array([1], np.int64))),
                      helper.make_node("ReduceSum", ["c"], ["r"], keepdims=1), helper.make_node("Add", ["x", "r"], ["y"])],
                     [x], [y], [numpy_helper.from_array(np.array([2 ** 31], np.int64), "s")])
    w = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2 ** 40], raw_data=b"\0" * 16)
    forged = make_model([helper.make_node("Add", ["x", "w"], ["y"])], [value_info("x", [1])], [value_info("y", None)], [w])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "no_torch"), str(ROOT)])}
    for name, model, says in (("big.onnx", big, "ConstantOfShape node 'c' computes a 2147483648 tensor (16.0 GiB)"),
                              ("forged.onnx", forged, "initializer 'w' declares 1,099,511,627,776 float values")):
        onnx.save(model, tmp_path / name)
        proc = subprocess.run([sys.executable, "-m", "edgezoo", "bench", str(tmp_path / name), "-n", "1"],
                              capture_output=True, text=True, env=env, timeout=120,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30)))
        assert proc.returncode == 2, proc.stderr
        no_traceback(proc)
        assert says in " ".join(proc.stderr.split()), proc.stderr
