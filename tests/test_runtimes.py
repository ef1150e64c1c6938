"""Runners: one interface over onnxruntime, torch eager and TensorRT; synthetic inputs; clear errors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from edgezoo.errors import EdgezooError, InputError, MissingDependencyError, UnknownModelError
from edgezoo.onnx_meta import ModelMetadata
from edgezoo.runtimes import model_kind, normalize_runtime, open_runner
from edgezoo.runtimes.base import TensorInfo
from edgezoo.runtimes.inputs import feeds_for, make_array, parse_input_size, resolve_shape
from edgezoo.runtimes.onnxruntime import OrtRunner
from onnx_builders import conv_relu_gap as tiny_onnx


@pytest.fixture
def tiny(tmp_path):
    return tiny_onnx(tmp_path / "tiny.onnx")


def test_ort_runner_describes_and_infers(tiny):
    runner = OrtRunner(tiny, threads=1)
    assert not runner.is_active
    with runner as r:
        assert r.is_active
        (inp,) = r.inputs
        assert inp == TensorInfo("x", ("batch", 3, 8, 8), np.dtype(np.float32)) and inp.dynamic
        assert r.outputs[0].shape == ("batch", 4, 1, 1)
        (y,) = r.infer({"x": np.ones((2, 3, 8, 8), np.float32)})
        assert y.shape == (2, 4, 1, 1)
        assert r.model_size_bytes() == tiny.stat().st_size
        assert r.model_metadata() is None  # a foreign ONNX without edgezoo metadata
    assert not runner.is_active
    with pytest.raises(EdgezooError, match="not active"):
        runner.infer({"x": np.ones((1, 3, 8, 8), np.float32)})


def test_ort_runner_bytes_equal_path(tiny):
    x = make_array((1, 3, 8, 8), np.float32)
    with OrtRunner(tiny) as a, OrtRunner(tiny.read_bytes(), graph_optimization="disable") as b:
        np.testing.assert_allclose(a.infer({"x": x})[0], b.infer({"x": x})[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("content, match", [(None, "no such file"), (b"", "empty"),
                                            (b"hello, not onnx", "cannot load"), ("truncated", "cannot load")])
def test_ort_runner_bad_files(tmp_path, tiny, content, match):
    path = tmp_path / "bad.onnx"
    if content == "truncated":
        path.write_bytes(tiny.read_bytes()[:60])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=match):
        OrtRunner(path).activate()


def test_ort_runner_bad_options(tiny):
    with pytest.raises(InputError, match="unknown execution provider"):
        OrtRunner(tiny, providers="warp-drive")
    with pytest.raises(InputError, match="threads"):
        OrtRunner(tiny, threads=0)
    with pytest.raises(InputError, match="optimization"):
        OrtRunner(tiny, graph_optimization="max")
    assert OrtRunner(tiny, providers="cpu").providers == ["CPUExecutionProvider"]


def test_ort_runner_missing_provider(tiny):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime build has CUDA")
    with pytest.raises(MissingDependencyError, match="CUDAExecutionProvider") as info:
        OrtRunner(tiny, providers="cuda")
    assert "onnxruntime-gpu" in str(info.value)


def test_ort_runner_impossible_size_at_run_time(tmp_path):
    path = tiny_onnx(tmp_path / "dyn.onnx", hw=None, pads=0)  # an unpadded 3x3 conv needs at least 3x3
    with OrtRunner(path) as r:
        assert r.infer({"x": np.ones((1, 3, 5, 5), np.float32)})[0].shape == (1, 4, 1, 1)
        with pytest.raises(InputError, match="cannot run"):
            r.infer({"x": np.ones((1, 3, 2, 2), np.float32)})


def test_check_feeds(tiny):
    with OrtRunner(tiny) as r:
        r.check_feeds({"x": np.ones((5, 3, 8, 8), np.float32)})
        with pytest.raises(InputError, match="do not match"):
            r.check_feeds({"input": np.ones((1, 3, 8, 8), np.float32)})
        with pytest.raises(InputError, match="does not fit"):
            r.check_feeds({"x": np.ones((1, 3, 9, 8), np.float32)})


def test_feeds_from_metadata(tmp_path):
    meta = ModelMetadata(model="tiny", input_size=(3, 6, 10), mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.1))
    path = tiny_onnx(tmp_path / "meta.onnx", hw=None, metadata=meta)
    with OrtRunner(path) as r:
        assert r.model_metadata().input_size == (3, 6, 10)
        x = feeds_for(r, batch=3)["x"]
        assert x.shape == (3, 3, 6, 10) and x.dtype == np.float32
        # pixels in [0, 1], normalised with the file's own mean/std
        for c, (m, s) in enumerate(zip(meta.mean, meta.std)):
            assert x[:, c].min() >= (0 - m) / s - 1e-5 and x[:, c].max() <= (1 - m) / s + 1e-5
        assert feeds_for(r, batch=1, input_size=(4, 5))["x"].shape == (1, 3, 4, 5)  # the user's size wins
        np.testing.assert_array_equal(feeds_for(r)["x"], feeds_for(r)["x"])  # deterministic


def test_resolve_shape_errors():
    fixed = TensorInfo("x", ("batch", 3, 8, 8), np.dtype(np.float32))
    assert resolve_shape(fixed, 4) == (4, 3, 8, 8)
    assert resolve_shape(fixed, 1, (8, 8)) == (1, 3, 8, 8)
    with pytest.raises(InputError, match="fixed at 3x8x8"):
        resolve_shape(fixed, 1, (16, 16))
    with pytest.raises(InputError, match="channels"):
        resolve_shape(fixed, 1, (1, 8, 8))
    with pytest.raises(InputError, match="fixed batch of 1"):
        resolve_shape(TensorInfo("x", (1, 3, 8, 8), np.dtype(np.float32)), 2)
    with pytest.raises(InputError, match="--input-size"):
        resolve_shape(TensorInfo("x", ("batch", 3, None, None), np.dtype(np.float32)), 1)
    with pytest.raises(InputError, match="batch must be"):
        resolve_shape(fixed, 0)


def test_parse_input_size():
    assert parse_input_size(None) is None
    assert parse_input_size("224") == (224, 224)
    assert parse_input_size("160x128") == (160, 128)
    assert parse_input_size("3x96x96") == (3, 96, 96)
    assert parse_input_size(64) == (64, 64)
    for bad in ("big", "0", "1x2x3x4", "-5"):
        with pytest.raises(InputError):
            parse_input_size(bad)


def test_make_array_dtypes():
    assert make_array((2, 3), np.uint8).dtype == np.uint8
    assert make_array((2, 3), np.int64).min() >= 0
    assert make_array((4,), np.bool_).dtype == np.bool_


def test_model_kind_and_runtime_names(tmp_path):
    assert model_kind("mobilenet_v2") == "registry"
    assert model_kind("model.onnx") == "onnx"
    assert model_kind("dir/model") == "onnx"
    assert model_kind("model.engine") == "engine" and model_kind("m.plan") == "engine"
    assert normalize_runtime("ORT") == "onnxruntime" and normalize_runtime("auto") is None
    with pytest.raises(InputError, match="unknown runtime"):
        normalize_runtime("tvm")


def test_open_runner_dispatch(tiny, tmp_path):
    assert isinstance(open_runner(tiny), OrtRunner)
    with pytest.raises(InputError, match="registry model name"):
        open_runner(tiny, "torch")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    with pytest.raises(InputError, match="TensorRT engine"):
        open_runner(engine, "onnxruntime")
    with pytest.raises(InputError, match="tensorrt runs TensorRT engines .*; mobilenet_v2 is a registry model name"):
        open_runner("mobilenet_v2", "tensorrt")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_missing_says_what_to_install(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 16)
    with pytest.raises(MissingDependencyError) as info:
        open_runner(engine)
    msg = str(info.value)
    assert "TensorRT is not installed" in msg and "NVIDIA GPU" in msg and "pip install tensorrt" in msg
    with pytest.raises(InputError, match="no such file"):  # a missing file is named first
        open_runner(tmp_path / "missing.engine")


# --- torch eager -------------------------------------------------------------------------------------------

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")


def _tiny_module():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


def test_backends_agree_in_a_loop(tmp_path):
    """The point of one interface: the same feeds through every backend is a loop."""
    from edgezoo.export.onnx import export_onnx
    from edgezoo.runtimes.torch import TorchRunner

    module = _tiny_module()
    path = tmp_path / "m.onnx"
    export_onnx(module, path, (3, 8, 8), metadata=ModelMetadata(model="tiny"), simplify=False)
    x = make_array((2, 3, 8, 8), np.float32)
    outs = {}
    for runner in (OrtRunner(path, threads=1), TorchRunner(module, threads=1, input_size=(3, 8, 8))):
        with runner:
            (name,) = [i.name for i in runner.inputs]
            outs[runner.name] = runner.infer({name: x})[0]
    np.testing.assert_allclose(outs["onnxruntime"], outs["torch"], rtol=1e-4, atol=1e-5)


def test_torch_runner_threads_restored_and_errors():
    from edgezoo.runtimes.torch import TorchRunner

    before = torch.get_num_threads()
    with TorchRunner(_tiny_module(), threads=1, input_size=(3, 8, 8)) as r:
        assert torch.get_num_threads() == 1
        assert r.inputs[0].shape == ("batch", 3, "height", "width")
        assert feeds_for(r)["input"].shape == (1, 3, 8, 8)
        assert r.model_size_bytes() == (4 * 3 * 9 + 4) * 4
        with pytest.raises(InputError, match="cannot run"):
            r.infer({"input": np.ones((1, 5, 8, 8), np.float32)})  # wrong channel count
    assert torch.get_num_threads() == before
    with pytest.raises(UnknownModelError):
        TorchRunner("mobilenet_v99")
