"""TensorRT engine planning without TensorRT; the one-line error when it is missing; and, where TensorRT and an
NVIDIA GPU are present, engines built from the int8 QDQ file and the fp16 file, checked against onnxruntime."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
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


def test_build_without_tensorrt_says_what_to_install(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as if it were not installed, wherever this runs
    p = plan_engine(tiny / "dyn.onnx", tiny / "m.engine", "fp32")
    with pytest.raises(MissingDependencyError) as e:
        build_engine(p)
    assert "tensorrt" in str(e.value).lower() and "GPU" in str(e.value)
    assert not (tiny / "m.engine").exists()


def require_tensorrt_and_gpu() -> None:
    """Skip, naming what is missing, unless TensorRT, cuda-python and an NVIDIA GPU are all there."""
    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("TensorRT is not installed (pip install tensorrt cuda-python)")
    from edgezoo.runtimes.tensorrt import import_cudart

    try:
        cudart = import_cudart()
    except MissingDependencyError:
        pytest.skip("cuda-python is not installed (the TensorRT runner moves buffers with it)")
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count < 1:
        pytest.skip(f"no NVIDIA GPU with a CUDA driver (cudaGetDeviceCount: {err}, {count})")


@pytest.fixture(scope="module")
def qdq_and_fp16(tmp_path_factory):
    """A small CNN's fp32 file, its int8 QDQ file (onnxruntime's static quantization) and its fp16 file."""
    require_tensorrt_and_gpu()
    from edgezoo.export.quantize import quantize_int8, to_fp16

    d = tmp_path_factory.mktemp("trt-files")
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=16),
                      nn.ReLU(), nn.Conv2d(16, 32, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(32, 10)).eval()
    export_onnx(m, d / "model.fp32.onnx", (3, 32, 32))
    calib = np.random.default_rng(0).standard_normal((32, 3, 32, 32)).astype(np.float32)
    quantize_int8(d / "model.fp32.onnx", d / "model.int8.onnx", calib)
    to_fp16(d / "model.fp32.onnx", d / "model.fp16.onnx")
    return d


@pytest.mark.parametrize("precision, min_sqnr_db", [("int8", 20.0), ("fp16", 35.0)])
def test_engine_from_file_matches_onnxruntime(qdq_and_fp16, precision, min_sqnr_db):
    require_tensorrt_and_gpu()
    from edgezoo.runtimes.comparator import agreement
    from edgezoo.runtimes.onnxruntime import OrtRunner
    from edgezoo.runtimes.tensorrt import TrtRunner

    src = qdq_and_fp16 / f"model.{precision}.onnx"
    plan = plan_engine(src, qdq_and_fp16 / f"model.{precision}.engine", precision, max_batch=8, opt_batch=4)
    report = build_engine(plan)
    assert report["precision"] == precision and report["size_bytes"] > 0
    x = np.random.default_rng(1).standard_normal((8, 3, 32, 32)).astype(np.float32)
    with OrtRunner(src) as ort:
        ref = ort.infer({ort.inputs[0].name: x})[0]
    with TrtRunner(plan.engine_path) as trt:
        got = trt.infer({trt.inputs[0].name: x})[0]
    a = agreement(ref.astype(np.float32), got.astype(np.float32))
    assert got.shape == ref.shape == (8, 10)
    assert a["sqnr_db"] >= min_sqnr_db, a
    assert a["top1_agreement"] >= 0.75, a
