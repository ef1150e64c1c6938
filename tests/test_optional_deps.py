"""A missing optional dependency is one clear line and a non-zero exit, before any output is written."""

from __future__ import annotations

from conftest import run_edgezoo
from onnx_builders import conv_relu_gap as _tiny_onnx


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
