"""TensorRT engine planning without TensorRT; the one-line error when it is missing."""

from __future__ import annotations

import importlib.util

import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
from torch import nn  # noqa: E402

from edgezoo.errors import InputError, MissingDependencyError  # noqa: E402
from edgezoo.export.onnx import export_onnx  # noqa: E402
from edgezoo.export.tensorrt import build_engine, plan_engine  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("trt")
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    export_onnx(m, d / "dyn.onnx", (3, 16, 16))
    export_onnx(m, d / "fixed.onnx", (3, 16, 16), dynamic_batch=False, batch=2)
    return d


def test_plan_dynamic_batch_profile(tiny):
    p = plan_engine(tiny / "dyn.onnx", tiny / "m.engine", "fp32", max_batch=16, opt_batch=4, timing_cache=tiny / "t")
    assert p.dynamic_batch and p.profile == ((1, 3, 16, 16), (4, 3, 16, 16), (16, 3, 16, 16))
    assert not p.strongly_typed and p.input_name == "input"
    assert p.timing_cache.endswith("t")


def test_plan_fixed_batch_and_precisions(tiny):
    p = plan_engine(tiny / "fixed.onnx", tiny / "m.engine", "fp16")
    assert not p.dynamic_batch and p.profile == ((2, 3, 16, 16),) * 3 and p.strongly_typed
    with pytest.raises(InputError, match="Q/DQ|QuantizeLinear"):
        plan_engine(tiny / "dyn.onnx", tiny / "m.engine", "int8")
    with pytest.raises(InputError, match="precision"):
        plan_engine(tiny / "dyn.onnx", tiny / "m.engine", "int4")


def test_build_without_tensorrt_says_what_to_install(tiny):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here; this checks the message when it is not")
    p = plan_engine(tiny / "dyn.onnx", tiny / "m.engine", "fp32")
    with pytest.raises(MissingDependencyError) as e:
        build_engine(p)
    assert "tensorrt" in str(e.value).lower() and "GPU" in str(e.value)
    assert not (tiny / "m.engine").exists()
