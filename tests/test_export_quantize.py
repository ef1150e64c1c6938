"""int8/fp16 conversion, float-island counting, agreement figures, calibration images."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")

from edgezoo.errors import InputError  # noqa: E402
from edgezoo.export import passes as P  # noqa: E402
from edgezoo.export.calibration import load_image_folder, synthetic_images  # noqa: E402
from edgezoo.export.onnx import export_onnx  # noqa: E402
from edgezoo.export.quantize import (compare_models, float_islands, optimized_graph, quantize_int8,  # noqa: E402
                                     to_fp16)
from edgezoo.models.registry import create_model  # noqa: E402
from edgezoo.onnx_meta import ModelMetadata, read_metadata  # noqa: E402
from edgezoo.testing import randomize_bn  # noqa: E402

SIZE = (3, 64, 64)


@pytest.fixture(scope="module")
def mv3(tmp_path_factory):
    """MobileNet v3 small at 64x64: the original fp32 file and the int8-form source file."""
    d = tmp_path_factory.mktemp("mv3")
    m = randomize_bn(create_model("mobilenet_v3_small"))
    folded = P.fold_batchnorm(m).model
    export_onnx(folded, d / "fp32.onnx", SIZE, ModelMetadata(model="mobilenet_v3_small"))
    q = P.rewrite_activations(P.fold_hardsigmoid_gates(folded).model, hardswish="mul_relu6").model
    export_onnx(q, d / "src.onnx", SIZE, ModelMetadata(model="mobilenet_v3_small"))
    return d


def test_int8_mobilenet_v3_has_no_float_islands(mv3):
    calib = synthetic_images(4, SIZE)
    report = quantize_int8(mv3 / "src.onnx", mv3 / "int8.onnx", calib)
    assert report["activations"] == "uint8" and report["per_channel"]
    opt = optimized_graph(mv3 / "int8.onnx")
    islands = float_islands(opt)
    assert islands == []
    ops = {n.op_type for n in opt.graph.node}
    assert not ops & {"HardSwish", "HardSigmoid", "Mul", "Add", "Clip"}  # all became QLinear ops
    assert read_metadata(mv3 / "int8.onnx").model == "mobilenet_v3_small"


def test_plain_quantization_leaves_islands_that_the_counter_finds(mv3):
    """The default onnxruntime op list leaves HardSwish out: the counter must see those islands."""
    quantize_int8(mv3 / "fp32.onnx", mv3 / "plain.onnx", synthetic_images(2, SIZE),
                  op_types=["Conv", "Gemm", "Add", "Mul", "GlobalAveragePool"])
    islands = float_islands(optimized_graph(mv3 / "plain.onnx"))
    assert len(islands) > 0


def test_agreement_figures(mv3):
    x = synthetic_images(6, SIZE, seed=3)
    r = compare_models(mv3 / "fp32.onnx", mv3 / "int8.onnx", x) if (mv3 / "int8.onnx").exists() else None
    if r is None:
        quantize_int8(mv3 / "src.onnx", mv3 / "int8.onnx", synthetic_images(4, SIZE))
        r = compare_models(mv3 / "fp32.onnx", mv3 / "int8.onnx", x)
    assert 0.0 <= r["top1_agreement"] <= 1.0 and r["images"] == 6
    assert 0.9 < r["cosine_mean"] <= 1.0 + 1e-6 and r["sqnr_db"] > 10
    worst = r["worst_layers"]
    assert 0 < len(worst) <= 10 and [w["sqnr_db"] for w in worst] == sorted(w["sqnr_db"] for w in worst)
    same = compare_models(mv3 / "fp32.onnx", mv3 / "fp32.onnx", x, worst_layers=0)
    assert same["top1_agreement"] == 1.0 and same["sqnr_db"] == float("inf")


def test_fp16_keeps_io_types_and_agrees(mv3):
    import onnx

    to_fp16(mv3 / "fp32.onnx", mv3 / "fp16.onnx")
    m = onnx.load(str(mv3 / "fp16.onnx"))
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in m.graph.initializer)
    r = compare_models(mv3 / "fp32.onnx", mv3 / "fp16.onnx", synthetic_images(4, SIZE), worst_layers=0)
    assert r["sqnr_db"] > 30


def test_quantize_rejects_bad_method_and_data(mv3):
    with pytest.raises(InputError, match="method"):
        quantize_int8(mv3 / "src.onnx", mv3 / "x.onnx", synthetic_images(1, SIZE), method="magic")
    with pytest.raises(InputError, match="calibration"):
        quantize_int8(mv3 / "src.onnx", mv3 / "x.onnx", np.zeros((0, 3, 64, 64), np.float32))


def test_load_image_folder(tmp_path):
    from PIL import Image

    (tmp_path / "cls").mkdir()
    for i in range(3):
        Image.new("RGB", (80 + 10 * i, 60), (255, 0, 0)).save(tmp_path / "cls" / f"{i}.png")
    a = load_image_folder(tmp_path, (3, 32, 32), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert a.shape == (3, 3, 32, 32) and a.dtype == np.float32
    assert np.allclose(a[:, 0], 2.0) and np.allclose(a[:, 1], -2.0)  # red, normalised
    assert load_image_folder(tmp_path, (3, 32, 32), (0,) * 3, (1,) * 3, count=2).shape[0] == 2


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_image_folder(tmp_path / "nope", SIZE, (0,) * 3, (1,) * 3)
    with pytest.raises(InputError, match="no images"):
        load_image_folder(tmp_path, SIZE, (0,) * 3, (1,) * 3)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(InputError, match="bad.jpg"):
        load_image_folder(tmp_path, SIZE, (0,) * 3, (1,) * 3)


def test_reducemean_becomes_int8_global_pool(tmp_path):
    """ShuffleNet v2's x.mean([2, 3]) would stay a float ReduceMean island in onnxruntime."""
    import onnx

    from edgezoo.export.quantize import reducemean_to_global_pool

    export_onnx(randomize_bn(create_model("shufflenet_v2_x0_5")), tmp_path / "s.onnx", SIZE)
    m = onnx.load(str(tmp_path / "s.onnx"))
    assert reducemean_to_global_pool(m) == 1 and "ReduceMean" not in {n.op_type for n in m.graph.node}
    onnx.save(m, str(tmp_path / "g.onnx"))
    x = synthetic_images(2, SIZE)
    assert compare_models(tmp_path / "s.onnx", tmp_path / "g.onnx", x, worst_layers=0)["max_abs_diff"] <= 1e-5
    quantize_int8(tmp_path / "s.onnx", tmp_path / "q.onnx", x)
    assert float_islands(optimized_graph(tmp_path / "q.onnx")) == []


def test_concat_inputs_share_the_output_scale(tmp_path):
    """GhostNet's concat of primary and cheap features: one scale on both sides, so int8 Concat is a copy."""
    import onnx

    from edgezoo.export.quantize import concat_scale_overrides

    m = P.drop_noop_slices(P.fold_batchnorm(randomize_bn(create_model("ghostnet_x0_5"))).model).model
    m = P.fold_hardsigmoid_gates(m).model  # else its 7 SE HardSigmoids stay float islands
    export_onnx(m, tmp_path / "g.onnx", SIZE)
    x = synthetic_images(3, SIZE)
    r = quantize_int8(tmp_path / "g.onnx", tmp_path / "q.onnx", x)
    assert r["concat_inputs_sharing_scale"] > 0
    q = onnx.load(str(tmp_path / "q.onnx"))
    assert concat_scale_overrides(q)  # the concats are still there to share
    init = {i.name: onnx.numpy_helper.to_array(i) for i in q.graph.initializer}
    producer = {o: n for n in q.graph.node for o in n.output}
    for n in (n for n in q.graph.node if n.op_type == "Concat"):
        scales = {float(init[producer[i].input[1]]) for i in n.input}
        assert len(scales) == 1
    assert float_islands(optimized_graph(tmp_path / "q.onnx")) == []
    # 5 dB, not more: on x86 CPUs without VNNI onnxruntime's U8S8 kernels saturate 16-bit sums (about 10 dB
    # here on an AVX2 EPYC, more on VNNI CPUs); the check is that sharing scales keeps int8 working at all
    assert compare_models(tmp_path / "g.onnx", tmp_path / "q.onnx", x, worst_layers=0)["sqnr_db"] > 5


def test_small_rgb_stem_stays_float_on_onnxruntime_but_not_a_big_one():
    from edgezoo.export.int8_forms import choose, small_stem_convs
    from edgezoo.export.onnx import to_onnx_proto
    from edgezoo.models.registry import create_model

    mv3 = create_model("mobilenet_v3_small")
    graph = to_onnx_proto(mv3, (3, 64, 64), simplify=False)[0].graph
    assert len(small_stem_convs(graph)) == 1  # 3x3, 3 -> 16
    sq = to_onnx_proto(create_model("squeezenet1_0"), (3, 64, 64), simplify=False)[0].graph
    assert small_stem_convs(sq) == []  # 7x7, 3 -> 96: a fifth of the MACs, int8 pays there
    sh = to_onnx_proto(create_model("shufflenet_v2_x0_5"), (3, 64, 64), simplify=False)[0].graph
    assert small_stem_convs(sh) == []  # 3x3, 3 -> 24, but a max-pool follows
    assert choose(mv3, "onnxruntime").float_stem and not choose(mv3, "tensorrt").float_stem


def test_quiet_restores_logging_and_stderr_and_leaves_onnxruntime_severity_alone(monkeypatch, capfd):
    import logging
    import os

    import onnxruntime as ort

    from edgezoo.export import quantize

    calls = []
    monkeypatch.setattr(ort, "set_default_logger_severity", lambda level: calls.append(level))
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", logging.INFO)
    fd_before = os.fstat(2)
    with quantize._quiet():
        assert root.level == logging.ERROR
        os.write(2, b"C++ side chatter\n")  # what onnxruntime's logger writes during calibration
    os.write(2, b"after\n")
    assert calls == []  # the process-wide severity (which cannot be read back) is never changed
    assert root.level == logging.INFO
    assert (os.fstat(2).st_ino, os.fstat(2).st_dev) == (fd_before.st_ino, fd_before.st_dev)
    err = capfd.readouterr().err
    assert "chatter" not in err and "after" in err
    with pytest.raises(RuntimeError):  # restored on an error too
        with quantize._quiet():
            raise RuntimeError("boom")
    assert root.level == logging.INFO and os.fstat(2).st_ino == fd_before.st_ino


def test_export_checks_run_models_through_the_runner(mv3, monkeypatch, tmp_path):
    """One execution path: parity checks, agreement figures and metadata reads open an OrtRunner."""
    from pathlib import Path

    from edgezoo.runtimes.onnxruntime import OrtRunner

    opened = []
    real = OrtRunner._activate
    monkeypatch.setattr(OrtRunner, "_activate", lambda self: (opened.append(self.path), real(self))[1])
    compare_models(mv3 / "fp32.onnx", mv3 / "fp32.onnx", synthetic_images(2, SIZE), worst_layers=0)
    read_metadata(mv3 / "fp32.onnx")
    assert opened == [mv3 / "fp32.onnx"] * 3
    root = Path(__file__).resolve().parents[1] / "edgezoo"
    direct = [str(p.relative_to(root)) for p in [*(root / "export").glob("*.py"), root / "onnx_meta.py"]
              if "InferenceSession(" in p.read_text()]
    assert direct == []
