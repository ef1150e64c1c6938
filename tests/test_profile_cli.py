"""`edgezoo profile` and `edgezoo guidelines`: device side without PyTorch, outputs, bad input."""

from __future__ import annotations

import csv
import json

import pytest
from onnx import helper

from conftest import run_edgezoo
from onnx_builders import make_model, random_weight, value_info


def small_onnx(path, c=16, hw=32):
    """A small dynamic-batch CNN with exporter-like scoped names: conv-relu, a 2-branch block, pool, gemm."""
    nodes = [
        helper.make_node("Conv", ["input", "w0"], ["a"], name="/stem/stem.0/Conv", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["a"], ["b"], name="/stem/stem.1/Relu"),
        helper.make_node("Conv", ["b", "w1"], ["p"], name="/stage1/stage1.0/left/Conv"),
        helper.make_node("Conv", ["b", "w2"], ["q"], name="/stage1/stage1.0/right/Conv", group=c,
                         pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["p", "q"], ["cat"], name="/stage1/stage1.0/Concat", axis=1),
        helper.make_node("GlobalAveragePool", ["cat"], ["g"], name="/pool/GlobalAveragePool"),
        helper.make_node("Flatten", ["g"], ["f"], name="/Flatten"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], name="/fc/Gemm", transB=1),
    ]
    inits = [random_weight(n, s, seed=k, scale=0.1)
             for k, (n, s) in enumerate([("w0", (c, 3, 3, 3)), ("w1", (c, c, 1, 1)), ("w2", (c, 1, 3, 3)),
                                         ("fw", (10, 2 * c)), ("fb", (10,))])]
    m = make_model(nodes, [value_info("input", ["batch", 3, hw, hw])], [value_info("logits", ["batch", 10])], inits,
                   name="small")
    path.write_bytes(m.SerializeToString())
    return path


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    return small_onnx(tmp_path_factory.mktemp("prof") / "small.onnx")


def test_profile_without_torch_writes_json_and_csv(onnx_file, tmp_path):
    js, cs = tmp_path / "p.json", tmp_path / "p.csv"
    r = run_edgezoo("profile", str(onnx_file), "--input-size", "3,32,32", "--json", str(js), "--csv", str(cs),
                    block_torch=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "MACs" in r.stdout and "stage1" in r.stdout
    d = json.loads(js.read_text())
    stem = 16 * 16 * 16 * 27
    convs = stem + 16 * 16 * 16 * 16 + 16 * 16 * 16 * 9
    assert d["totals"]["macs"] == convs + 320
    assert d["totals"]["conv_macs"] == convs and d["totals"]["gemm_macs"] == 320
    assert {b["name"] for b in d["blocks"]} >= {"stem/stem.0", "stage1/stage1.0", "fc"}
    rows = list(csv.DictReader(cs.open()))
    assert len(rows) == len(d["nodes"]) == 8
    assert rows[0]["name"] == "/stem/stem.0/Conv" and int(rows[0]["macs"]) == stem


def test_guidelines_without_torch(onnx_file, tmp_path):
    js = tmp_path / "g.json"
    r = run_edgezoo("guidelines", str(onnx_file), "--input-size", "32", "--json", str(js), block_torch=True,
                    timeout=120)
    assert r.returncode == 0, r.stderr
    for g in ("G1", "G2", "G3", "G4"):
        assert g in r.stdout
    d = json.loads(js.read_text())
    assert [f["guideline"] for f in d["findings"]] == ["G1", "G2", "G3", "G4"]
    g3 = d["findings"][2]
    assert g3["layers"][0]["block"] == "stage1/stage1.0" and g3["layers"][0]["parallel_branches"] == 2


def test_profile_roofline_measure_and_plot_without_torch(onnx_file, tmp_path):
    png, js = tmp_path / "roof.png", tmp_path / "r.json"
    r = run_edgezoo("profile", str(onnx_file), "--input-size", "32", "--measure", "--runs", "3",
                    "--peak-gflops", "50", "--bandwidth-gbs", "10", "--plot", str(png), "--json", str(js),
                    block_torch=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:4] == b"\x89PNG"
    roof = json.loads(js.read_text())["roofline"]
    assert roof["peaks"]["peak_gflops"] == 50 and roof["peaks"]["source"] == "given"
    assert roof["measured_total_ms"] > 0 and roof["lower_bound_ms"] > 0
    assert any(row["measured_ms"] for row in roof["by_op_type"])
    ort = roof["per_runtime"]["onnxruntime"]  # the whole file timed in a process of its own
    assert ort["share_of_bound"] == pytest.approx(roof["lower_bound_ms"] / ort["p50_ms"], rel=1e-2)


@pytest.mark.parametrize("content", [None, b"", b"\x08\x07garbage" * 50, "truncated"])
def test_bad_files_fail_cleanly_with_no_output(onnx_file, tmp_path, content):
    target = tmp_path / "m.onnx"
    if content == "truncated":
        data = onnx_file.read_bytes()
        target.write_bytes(data[: len(data) // 3])
    elif content is not None:
        target.write_bytes(content)
    js = tmp_path / "out.json"
    for cmd in ("profile", "guidelines"):
        r = run_edgezoo(cmd, str(target), "--json", str(js), block_torch=True, timeout=60)
        assert r.returncode != 0
        assert "error:" in r.stderr and "Traceback" not in r.stderr
        assert not js.exists() and not list(tmp_path.glob(".out.json*"))


def test_unknown_model_name_suggests(tmp_path):
    r = run_edgezoo("profile", "mobilenet_v9", timeout=120)
    assert r.returncode != 0 and "unknown model" in r.stderr and "Traceback" not in r.stderr


def test_profile_registry_name_matches_paper_macs(tmp_path):
    pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
    js = tmp_path / "p.json"
    r = run_edgezoo("profile", "mobilenet_v3_small", "--top", "3", "--json", str(js), timeout=300)
    assert r.returncode == 0, r.stderr
    macs = json.loads(js.read_text())["totals"]["macs"]
    assert abs(macs / 56.5e6 - 1) < 0.01


@pytest.mark.parametrize("target", ["/proc/edgezoo-x.json", "/sys/edgezoo-x.json"])
def test_unwritable_system_paths_are_one_line(onnx_file, target):
    for cmd in ("profile", "guidelines"):
        r = run_edgezoo(cmd, str(onnx_file), "--input-size", "32", "--json", target, block_torch=True, timeout=60)
        assert r.returncode != 0 and "Traceback" not in r.stderr
        assert f"cannot write {target}" in r.stderr


def test_guidelines_print_advice_and_detail(onnx_file):
    r = run_edgezoo("guidelines", str(onnx_file), "--input-size", "32", block_torch=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("advice:") == 4
    assert "fork/join" in r.stdout  # G3's detail line


def test_peak_int8_alone_turns_the_roofline_on(onnx_file, tmp_path):
    js = tmp_path / "r.json"
    r = run_edgezoo("profile", str(onnx_file), "--input-size", "32", "--peak-int8-gops", "77",
                    "--json", str(js), block_torch=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "peaks given + measured" in " ".join(r.stdout.split())
    roof = json.loads(js.read_text())["roofline"]
    assert roof["peaks"]["peak_int8_gops"] == 77 and roof["peaks"]["origin"]["peak_int8_gops"] == "given"
    assert roof["peaks"]["origin"]["peak_gflops"] == roof["peaks"]["origin"]["bandwidth_gbs"] == "measured"
    assert roof["peaks"]["peaks_were"] == "given + measured"
    r = run_edgezoo("profile", str(onnx_file), "--input-size", "32", "--peak-int8-gops", "77", "--peak-gflops", "5",
                    "--bandwidth-gbs", "2", "--json", str(js), block_torch=True, timeout=180)
    assert json.loads(js.read_text())["roofline"]["peaks"]["peaks_were"] == "given"


def test_a_fifo_is_refused_not_read(tmp_path):
    """A named pipe passes exists() and opening it waits for a writer for ever: every command that opens a
    model file by path refuses it in one line instead (the shared edgezoo.fileio.check_model_path)."""
    import os

    from edgezoo.errors import InputError
    from edgezoo.serve.model import load_model

    fifo = tmp_path / "f.onnx"
    os.mkfifo(fifo)
    for args in (["profile", str(fifo)], ["guidelines", str(fifo)], ["profile", str(fifo), "--input-size", "32"],
                 ["bench", str(fifo), "-n", "1"], ["compare", str(fifo), str(fifo)]):
        r = run_edgezoo(*args, block_torch=True, timeout=60)
        assert r.returncode != 0 and "Traceback" not in r.stderr, (args, r.stderr)
        assert "is a named pipe (FIFO), not an ONNX file" in r.stderr, (args, r.stderr)
    with pytest.raises(InputError, match="named pipe"):
        load_model(fifo)


@pytest.mark.parametrize("name, head, says", [
    ("m.pte", b"\x1c\x00\x00\x00ET12" + b"\x00" * 56, "m.pte is a .pte file"),
    ("m.tflite", b"\x18\x00\x00\x00TFL3" + b"\x00" * 56, "m.tflite is a .tflite file"),
    ("m.xml", b'<?xml version="1.0"?>\n<net name="m" version="11"></net>\n', "m.xml is an OpenVINO IR (.xml) file"),
    ("renamed.onnx", b"\x18\x00\x00\x00TFL3" + b"\x00" * 56, "renamed.onnx is a TFLite (.tflite) file"),
    ("renamed2.onnx", b"\x1c\x00\x00\x00ET12" + b"\x00" * 56, "renamed2.onnx is an ExecuTorch (.pte) program"),
])
def test_other_runtimes_files_are_named_not_called_incomplete(tmp_path, name, head, says):
    """A .pte, .tflite or OpenVINO .xml file is fine, just not ONNX: profile says so and points to bench."""
    path = tmp_path / name
    path.write_bytes(head)
    for cmd in ("profile", "guidelines"):
        r = run_edgezoo(cmd, str(path), block_torch=True, timeout=60)
        text = " ".join(r.stderr.split())
        assert r.returncode == 2 and "Traceback" not in text, text
        assert says in text and "read ONNX graphs" in text and f"edgezoo bench {path}" in text, text
        assert "complete" not in text


def test_a_graph_with_a_cycle_is_named_as_such(tmp_path):
    nodes = [helper.make_node("Add", ["x", "c"], ["a"], name="add"), helper.make_node("Relu", ["a"], ["b"], name="r1"),
             helper.make_node("Relu", ["b"], ["c"], name="r2"), helper.make_node("Identity", ["b"], ["y"], name="out")]
    path = tmp_path / "cycle.onnx"
    path.write_bytes(make_model(nodes, [value_info("x", [1, 3, 8, 8])], [value_info("y", [1, 3, 8, 8])])
                     .SerializeToString())
    for cmd in ("profile", "guidelines"):
        r = run_edgezoo(cmd, str(path), block_torch=True, timeout=60)
        text = " ".join(r.stderr.split())
        assert r.returncode == 2 and "Traceback" not in text, text
        assert "the graph has a cycle (through node 'add')" in text and "--input-size" not in text, text


def _hostile(kind: str):
    """Small valid files that declare (or compute from constants) tensors of 2**31 to 2**40 values."""
    import numpy as np
    import onnx
    from onnx import TensorProto, numpy_helper

    big = numpy_helper.from_array(np.array([2 ** 31], np.int64), "s")
    one = numpy_helper.from_array(np.array([1], np.int64))
    x, y = value_info("x", [1], TensorProto.INT64), value_info("y", None, TensorProto.INT64)
    total = [helper.make_node("ReduceSum", ["c"], ["r"], keepdims=1), helper.make_node("Add", ["x", "r"], ["y"])]
    if kind == "constant_of_shape_2_40":  # the 105-byte file: a float ConstantOfShape of [2**40]
        s40 = numpy_helper.from_array(np.array([2 ** 40], np.int64), "s")
        return make_model([helper.make_node("ConstantOfShape", ["s"], ["y"])], [], [value_info("y", None)], [s40])
    if kind == "int64_constant_of_shape":  # what onnxruntime's symbolic shape inference fills with numpy
        return make_model([helper.make_node("ConstantOfShape", ["s"], ["c"], value=one), *total], [x], [y], [big])
    if kind in ("Expand", "Tile"):
        return make_model([helper.make_node(kind, ["one", "s"], ["c"]), *total], [x], [y],
                          [big, numpy_helper.from_array(np.array([1], np.int64), "one")])
    if kind == "size_no_inference_knows":  # onnx cannot size it; only a run would (it gets a memory budget)
        halves = numpy_helper.from_array(np.array([2 ** 30, 2 ** 30], np.int64), "h")
        return make_model([helper.make_node("ReduceSum", ["h"], ["s"], keepdims=1),
                           helper.make_node("ConstantOfShape", ["s"], ["c"], value=one), *total], [x], [y], [halves])
    assert kind == "declares_more_than_it_holds"
    w = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2 ** 40], raw_data=b"\0" * 16)
    return make_model([helper.make_node("Add", ["x", "w"], ["y"])], [value_info("x", [1])], [value_info("y", None)],
                      [w])


@pytest.mark.parametrize("kind, says", [
    ("constant_of_shape_2_40", "ConstantOfShape node 'y' computes a 1099511627776 tensor (4,096.0 GiB) from constants"),
    ("int64_constant_of_shape", "ConstantOfShape node 'c' computes a 2147483648 tensor (16.0 GiB) from constants"),
    ("Expand", "Expand node 'c' computes a 2147483648 tensor (16.0 GiB)"),
    ("Tile", "Tile node 'c' computes a 2147483648 tensor (16.0 GiB)"),
    ("size_no_inference_knows", "running it once needs more than half of this machine's memory"),
    ("declares_more_than_it_holds", "is inconsistent: initializer 'w' declares 1,099,511,627,776 float values "
                                    "(4,096.0 GiB, dims [1099511627776]) but holds 4"),
])
def test_files_that_declare_huge_tensors_cost_one_line_not_the_memory(tmp_path, kind, says):
    """A few hundred bytes of valid ONNX can make onnx/onnxruntime tools build tensors of 16 GiB to 4 TiB:
    profile and guidelines refuse in one line and stay small. The child gets 6 GiB of address space, so a
    regression fails here instead of taking the machine's memory."""
    import os
    import resource
    import subprocess
    import sys

    path = tmp_path / f"{kind}.onnx"
    path.write_bytes(_hostile(kind).SerializeToString())
    cap = (6 if kind != "size_no_inference_knows" else 14) << 30  # the last is past the budget edgezoo sets
    for cmd in ("profile", "guidelines"):
        r = subprocess.run([sys.executable, "-m", "edgezoo", cmd, str(path)], capture_output=True, text=True,
                           timeout=120, env={**os.environ},
                           preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)))
        text = " ".join(r.stderr.split())
        assert r.returncode == 2 and "Traceback" not in text, text[-2000:]
        assert says in text, text[-2000:]


def test_memory_budget_is_lifted_after_the_block():
    import resource

    import numpy as np

    from edgezoo.onnx_bounds import memory_budget, physical_memory

    before = resource.getrlimit(resource.RLIMIT_AS)
    with memory_budget(0.05):
        with pytest.raises(MemoryError):  # reserved, never touched: safe even where the limit did not hold
            np.empty(int(physical_memory() * 0.2), dtype=np.uint8)
    assert resource.getrlimit(resource.RLIMIT_AS) == before
