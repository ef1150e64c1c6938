"""Triton model repository: config.pbtxt parses as Triton's own ModelConfig and agrees with the ONNX file."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgezoo.errors import InputError
from edgezoo.onnx_meta import ModelMetadata, set_metadata
from edgezoo.serve.triton import write_triton_repository
from conftest import run_edgezoo
from onnx_builders import make_model, value_info


def _model_config_pb2():
    """Triton's ModelConfig protobuf, as tritonclient ships it. Loaded from its file because
    ``tritonclient.grpc/__init__`` needs grpcio, which model_config_pb2 itself does not."""
    tritonclient = pytest.importorskip("tritonclient", reason="tritonclient (edgezoo[test]) is not installed")
    pytest.importorskip("google.protobuf", reason="protobuf is not installed")
    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    if not path.is_file():
        pytest.skip("this tritonclient has no grpc/model_config_pb2.py")
    spec = importlib.util.spec_from_file_location("_triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_config(folder: Path):
    from google.protobuf import text_format

    pb2 = _model_config_pb2()
    return pb2, text_format.Parse((folder / "config.pbtxt").read_text(), pb2.ModelConfig())


def _onnx_file(path: Path, batch: str | int = "batch", labels: list[str] | None = None, classes: int = 5) -> Path:
    """MatMul + Add classifier over a (batch, 2, 4) input; two outputs (logits, and an int64 argmax)."""
    x = value_info("pixels", [batch, 2, 4])
    logits = value_info("logits", [batch, classes])
    top = value_info("top", [batch], TensorProto.INT64)
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, classes], np.arange(8 * classes, dtype=np.float32) / 10)
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 8])
    nodes = [
        helper.make_node("Reshape", ["pixels", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        helper.make_node("ArgMax", ["logits"], ["top"], axis=1, keepdims=0),
    ]
    proto = make_model(nodes, [x], [logits, top], [w, shape], name="g")
    set_metadata(proto, ModelMetadata(model="toy", input_size=(2, 4, 1), labels=labels, num_classes=classes))
    onnx.checker.check_model(proto)
    onnx.save(proto, path)
    return path


def _dims_from_onnx(vi, max_batch: int) -> list[int]:
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
    return dims[1:] if max_batch > 0 else dims


def test_onnx_repository_parses_and_matches_the_file(tmp_path):
    src = _onnx_file(tmp_path / "toy.onnx", labels=[f"c{i}" for i in range(5)])
    folder = write_triton_repository(src, tmp_path / "repo", max_batch_size=8, preferred_batch_sizes=[2, 8],
                                     max_queue_delay_us=250, instance_kind="gpu", count=2)
    assert folder == tmp_path / "repo" / "toy"
    assert (folder / "1" / "model.onnx").read_bytes() == src.read_bytes()
    pb2, cfg = parse_config(folder)
    proto = onnx.load(src)

    assert cfg.name == "toy" and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 8
    assert [i.name for i in cfg.input] == [i.name for i in proto.graph.input]
    assert [o.name for o in cfg.output] == [o.name for o in proto.graph.output]
    for cfg_t, vi in zip(list(cfg.input) + list(cfg.output), list(proto.graph.input) + list(proto.graph.output)):
        want = _dims_from_onnx(vi, 8)
        if want:
            assert list(cfg_t.dims) == want, cfg_t.name
        else:  # a per-row scalar: Triton wants dims [1] reshaped to []
            assert list(cfg_t.dims) == [1] and cfg_t.HasField("reshape") and list(cfg_t.reshape.shape) == []
    assert pb2.DataType.Name(cfg.input[0].data_type) == "TYPE_FP32"
    assert pb2.DataType.Name(cfg.output[1].data_type) == "TYPE_INT64"
    assert list(cfg.dynamic_batching.preferred_batch_size) == [2, 8]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 250
    assert len(cfg.instance_group) == 1 and cfg.instance_group[0].count == 2
    assert cfg.instance_group[0].kind == pb2.ModelInstanceGroup.Kind.Value("KIND_GPU")
    # labels travel as Triton's classification label file on the class output
    assert cfg.output[0].label_filename == "labels.txt"
    assert (folder / "labels.txt").read_text().split() == [f"c{i}" for i in range(5)]
    assert "edgezoo.input_size" in cfg.parameters


def test_defaults_and_fixed_batch(tmp_path):
    dyn = write_triton_repository(_onnx_file(tmp_path / "dyn.onnx"), tmp_path / "repo")
    pb2, cfg = parse_config(dyn)
    assert cfg.max_batch_size == 16 and cfg.dynamic_batching.preferred_batch_size[-1] == 16
    assert cfg.instance_group[0].kind == pb2.ModelInstanceGroup.Kind.Value("KIND_CPU")
    assert not (dyn / "labels.txt").exists()

    fixed_src = _onnx_file(tmp_path / "fixed.onnx", batch=1)
    fixed = write_triton_repository(fixed_src, tmp_path / "repo")
    _, cfg = parse_config(fixed)
    # a fixed first dimension: Triton must not batch it, and dims carry the full shape
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert list(cfg.input[0].dims) == [1, 2, 4]
    with pytest.raises(InputError, match="fixed first dimension"):
        write_triton_repository(fixed_src, tmp_path / "repo", max_batch_size=4)
    # both models sit side by side in one repository
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["dyn", "fixed"]


def test_tensorrt_plan_takes_batch_from_arguments(tmp_path):
    plan = tmp_path / "toy.plan"
    plan.write_bytes(b"not really an engine")  # TensorRT is not installed: the file is copied, not read
    _onnx_file(tmp_path / "toy.onnx")  # same stem: taken as the reference for inputs and outputs
    with pytest.raises(InputError, match="max_batch_size"):
        write_triton_repository(plan, tmp_path / "repo", instance_kind="gpu")
    with pytest.raises(InputError, match="GPU"):
        write_triton_repository(plan, tmp_path / "repo", max_batch_size=4, instance_kind="cpu")
    folder = write_triton_repository(plan, tmp_path / "repo", max_batch_size=4, instance_kind="gpu")
    _, cfg = parse_config(folder)
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 4
    assert (folder / "1" / "model.plan").read_bytes() == b"not really an engine"
    assert list(cfg.input[0].dims) == [2, 4]


def test_bad_inputs_leave_earlier_repository_intact(tmp_path):
    src = _onnx_file(tmp_path / "toy.onnx")
    folder = write_triton_repository(src, tmp_path / "repo")
    before = (folder / "config.pbtxt").read_text()
    with pytest.raises(InputError):
        write_triton_repository(src, tmp_path / "repo", max_batch_size=4, preferred_batch_sizes=[8])
    with pytest.raises(InputError):
        write_triton_repository(src, tmp_path / "repo", instance_kind="tpu")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(InputError):
        write_triton_repository(bad, tmp_path / "repo", name="toy")
    assert (folder / "config.pbtxt").read_text() == before
    assert not [p for p in (tmp_path / "repo").iterdir() if p.name.startswith(".")]


def test_cli_writes_repository_without_torch(tmp_path):
    src = _onnx_file(tmp_path / "toy.onnx")
    r = run_edgezoo("triton", str(src), "-o", str(tmp_path / "repo"), "--name", "clf", "--max-batch", "4",
                    "--preferred", "2,4", block_torch=True, timeout=120)
    assert r.returncode == 0, r.stderr
    _, cfg = parse_config(tmp_path / "repo" / "clf")
    assert cfg.name == "clf" and cfg.max_batch_size == 4 and list(cfg.dynamic_batching.preferred_batch_size) == [2, 4]
    r = run_edgezoo("triton", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "repo"), block_torch=True)
    assert r.returncode != 0 and "not found" in r.stderr and "Traceback" not in r.stderr


def test_empty_or_input_less_files_are_refused_and_nothing_is_written(tmp_path):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    r = run_edgezoo("triton", str(empty), "-o", str(tmp_path / "repo"), block_torch=True)
    assert r.returncode != 0 and "empty" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())
    # a valid ONNX file with no graph inputs (a constant) is not a servable model either
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    c = helper.make_node("Constant", [], ["y"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))
    proto = helper.make_model(helper.make_graph([c], "g", [], [y]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(proto, tmp_path / "const.onnx")
    with pytest.raises(InputError, match="no graph inputs"):
        write_triton_repository(tmp_path / "const.onnx", tmp_path / "repo")
    assert not (tmp_path / "repo" / "const").exists()


def test_python_backend_variant_parses_and_carries_model_py(tmp_path):
    src = _onnx_file(tmp_path / "clf.onnx")
    target = write_triton_repository(src, tmp_path / "repo", backend="python")
    pb2, cfg = parse_config(target)
    assert cfg.backend == "python" and cfg.platform == ""
    assert cfg.max_batch_size == 16 and [i.name for i in cfg.input] == ["pixels"]
    assert (target / "1" / "model.onnx").read_bytes() == src.read_bytes()
    code = (target / "1" / "model.py").read_text()
    compile(code, "model.py", "exec")  # valid Python; it runs under the real Triton in test_triton_server.py
    assert "class TritonPythonModel" in code
    with pytest.raises(InputError, match="unknown Triton backend"):
        write_triton_repository(src, tmp_path / "repo2", backend="tensorflow")


def test_an_entry_replaces_only_its_own_version(tmp_path):
    """Issue 22 #3: other versions and other files in the model's folder, and other models, are kept."""
    src = _onnx_file(tmp_path / "toy.onnx", labels=[f"c{i}" for i in range(5)])
    repo = tmp_path / "repo"
    (repo / "toy" / "2").mkdir(parents=True)
    (repo / "toy" / "2" / "model.onnx").write_bytes(b"version two")
    (repo / "toy" / "notes.txt").write_text("mine")
    (repo / "other" / "1").mkdir(parents=True)
    (repo / "other" / "config.pbtxt").write_text("name: 'other'")
    write_triton_repository(src, repo)  # an entry edgezoo wrote earlier: its version 1 is edgezoo's
    (repo / "toy" / "1" / "stale.onnx").write_bytes(b"left in version 1")
    folder = write_triton_repository(src, repo)
    assert (folder / "2" / "model.onnx").read_bytes() == b"version two"
    assert (folder / "notes.txt").read_text() == "mine"
    assert (repo / "other" / "config.pbtxt").read_text() == "name: 'other'"
    assert sorted(p.name for p in (folder / "1").iterdir()) == ["model.onnx"]  # version 1 is edgezoo's, whole
    assert (folder / "1" / "model.onnx").read_bytes() == src.read_bytes()
    assert parse_config(folder)[1].name == "toy" and (folder / "labels.txt").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def _cyclic(path: Path) -> Path:
    x = value_info("x", ["n", 4])
    y = value_info("y", ["n", 4])
    nodes = [helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Identity", ["b"], ["y"])]
    onnx.save(make_model(nodes, [x], [y], [], name="cycle"), path)
    return path


def _lying_initializer(path: Path) -> Path:
    x = value_info("x", ["n", 4])
    y = value_info("y", ["n", 4])
    w = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2 ** 38, 4], raw_data=b"\0" * 16)
    onnx.save(make_model([helper.make_node("Add", ["x", "w"], ["y"])], [x], [y], [w], name="big"), path)
    return path


@pytest.mark.parametrize("make", [_cyclic, _lying_initializer], ids=["cycle", "2^40 floats in 16 bytes"])
def test_files_onnxruntime_refuses_get_no_entry(tmp_path, make):
    """Issue 22 #13: checked by opening the file in onnxruntime before anything is written."""
    bad = make(tmp_path / "bad.onnx")
    r = run_edgezoo("triton", str(bad), "-o", str(tmp_path / "repo"), block_torch=True, timeout=120)
    assert r.returncode != 0 and "onnxruntime" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) <= 2, r.stderr
    assert not (tmp_path / "repo").exists()


def test_a_version_folder_edgezoo_did_not_write_is_never_replaced(tmp_path):
    from edgezoo.errors import InputError

    src = _onnx_file(tmp_path / "dyn.onnx")
    (tmp_path / "repo" / "dyn" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "dyn" / "1" / "model.onnx").write_bytes(b"the user's version 1")
    with pytest.raises(InputError, match="edgezoo did not write"):
        write_triton_repository(src, tmp_path / "repo")
    assert (tmp_path / "repo" / "dyn" / "1" / "model.onnx").read_bytes() == b"the user's version 1"
