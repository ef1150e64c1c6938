"""A missing optional dependency is one clear line and a non-zero exit, before any output is written."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from conftest import run_edgezoo


def _tiny_onnx(path):
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 1, 1], np.ones(12, dtype=np.float32).tolist())
    node = helper.make_node("Conv", ["input", "w"], ["logits"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4, 8, 8])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_profile_plot_without_matplotlib(tmp_path):
    model = _tiny_onnx(tmp_path / "m.onnx")
    r = run_edgezoo("profile", str(model), "--plot", str(tmp_path / "r.png"), "--json", str(tmp_path / "p.json"),
                    "--peak-gflops", "10", "--bandwidth-gbs", "10", block_torch=True,
                    env={"EDGEZOO_BLOCK_IMPORTS": "matplotlib"})
    assert r.returncode == 2 and "matplotlib is not installed" in r.stderr and "edgezoo[plot]" in r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_serve_without_the_serve_extra(tmp_path):
    model = _tiny_onnx(tmp_path / "m.onnx")
    r = run_edgezoo("serve", str(model), "--port", "0", block_torch=True,
                    env={"EDGEZOO_BLOCK_IMPORTS": "starlette,uvicorn"}, timeout=60)
    assert r.returncode == 2 and "edgezoo[serve]" in r.stderr and "Traceback" not in r.stderr


def test_profile_of_a_model_name_at_an_impossible_size():
    r = run_edgezoo("profile", "squeezenet1_0", "--input-size", "8")
    assert r.returncode == 2 and "cannot take" in r.stderr and "Traceback" not in r.stderr
