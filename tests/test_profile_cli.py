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
