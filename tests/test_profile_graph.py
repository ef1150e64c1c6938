"""Static profiler: hand-computed cases, QDQ int8 bytes, foreign ONNX files, bad files, zoo MAC totals."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgezoo.errors import InputError
from edgezoo.profile.graph import profile_onnx
from onnx_builders import const, make_model, value_info


_model, _vi, _w = make_model, value_info, const


def conv_model(c1, c2, h, w, k=1, group=1, stride=1, bias=False):
    pad = k // 2
    ins = ["x", "w"] + (["b"] if bias else [])
    node = helper.make_node("Conv", ins, ["y"], name="/block/conv/Conv", group=group, kernel_shape=[k, k],
                            pads=[pad] * 4, strides=[stride, stride])
    inits = [_w("w", (c2, c1 // group, k, k))] + ([_w("b", (c2,))] if bias else [])
    return _model([node], [_vi("x", [1, c1, h, w])], [_vi("y", None)], inits)


def test_1x1_conv_matches_g1_formulas():
    h = w = 14
    c1, c2 = 32, 64
    p = profile_onnx(conv_model(c1, c2, h, w))
    (n,) = p.nodes
    B = h * w * c1 * c2  # paper Eq. 1: FLOPs B = hwc1c2
    assert n.macs == B
    assert n.mem_access == h * w * (c1 + c2) + c1 * c2  # MAC = hw(c1+c2) + c1c2
    assert n.mem_access >= 2 * np.sqrt(h * w * B) + B / (h * w)  # the lower bound, strict when c1 != c2
    assert n.params == c1 * c2
    assert n.bytes_read == 4 * (h * w * c1 + c1 * c2) and n.bytes_written == 4 * h * w * c2
    assert n.category == "conv" and n.kernel == (1, 1)
    assert n.cio == h * w * (c1 + c2)
    assert n.intensity == pytest.approx(2 * B / (4 * (h * w * (c1 + c2) + c1 * c2)))
    balanced = profile_onnx(conv_model(45, 45, h, w)).nodes[0]  # equal widths meet the bound (c1 = c2)
    Bb = h * w * 45 * 45
    assert balanced.mem_access == pytest.approx(2 * np.sqrt(h * w * Bb) + Bb / (h * w))


def test_grouped_conv_matches_g2_formula():
    h = w = 28
    c1 = c2 = 64
    g = 4
    n = profile_onnx(conv_model(c1, c2, h, w, group=g)).nodes[0]
    B = h * w * c1 * c2 // g
    assert n.macs == B and n.group == g and n.category == "group_conv"
    # paper Eq. 2: MAC = hw(c1+c2) + c1c2/g = hw*c1 + B*g/c1 + B/hw
    assert n.mem_access == h * w * (c1 + c2) + c1 * c2 // g
    assert n.mem_access == h * w * c1 + B * g // c1 + B // (h * w)


def test_depthwise_strided_conv_with_bias():
    c, h = 24, 56
    n = profile_onnx(conv_model(c, c, h, h, k=3, group=c, stride=2, bias=True)).nodes[0]
    ho = 28
    assert n.category == "depthwise" and n.output_shapes == [[1, c, ho, ho]]
    assert n.macs == c * ho * ho * 9  # Cout*Hout*Wout*(Cin/g)*k*k, no bias term
    assert n.params == c * 9 + c
    assert n.bytes_read == 4 * (c * h * h + c * 9 + c)
    assert n.bytes_written == 4 * c * ho * ho


def test_gemm_matmul_and_batch():
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="/fc/Gemm", transB=1),
             helper.make_node("MatMul", ["y", "m"], ["z"], name="/head/MatMul")]
    m = _model(nodes, [_vi("x", ["batch", 128])], [_vi("z", None)],
               [_w("w", (10, 128)), _w("b", (10,)), _w("m", (10, 7))])
    p = profile_onnx(m, batch=3)
    gemm, mm = p.nodes
    assert p.inputs == {"x": [3, 128]}
    assert gemm.macs == 3 * 128 * 10 and gemm.params == 1290 and gemm.category == "gemm"
    assert mm.macs == 3 * 10 * 7 and mm.params == 70
    assert p.macs == 3 * 128 * 10 + 3 * 70


def test_elementwise_add_counts_ops_not_macs():
    m = _model([helper.make_node("Add", ["a", "b"], ["y"], name="/blk/Add")],
               [_vi("a", [1, 16, 8, 8]), _vi("b", [1, 16, 8, 8])], [_vi("y", None)])
    n = profile_onnx(m).nodes[0]
    e = 16 * 8 * 8
    assert n.macs == 0 and n.ops == e and n.category == "elementwise"
    assert n.bytes_read == 2 * 4 * e and n.bytes_written == 4 * e
    assert n.mem_access == 3 * e and n.params == 0


def _qdq_conv_model(c1=16, c2=32, h=10):
    """input -> Q -> DQ -> Conv(DQ(int8 w)) -> Q -> DQ -> output: onnxruntime runs one QLinearConv."""
    u8, s8 = TensorProto.UINT8, TensorProto.INT8
    sc = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zu = numpy_helper.from_array(np.array(128, np.uint8), "zu")
    zs = numpy_helper.from_array(np.array(0, np.int8), "zs")
    wq = numpy_helper.from_array(np.ones((c2, c1, 1, 1), np.int8), "wq")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zu"], ["xq"], name="/in/Q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "zu"], ["xd"], name="/blk/conv/DQ"),
        helper.make_node("DequantizeLinear", ["wq", "s", "zs"], ["wd"], name="/blk/conv/wDQ"),
        helper.make_node("Conv", ["xd", "wd"], ["y"], name="/blk/conv/Conv"),
        helper.make_node("QuantizeLinear", ["y", "s", "zu"], ["yq"], name="/blk/conv/Q"),
        helper.make_node("DequantizeLinear", ["yq", "s", "zu"], ["out"], name="/out/DQ"),
    ]
    del u8, s8
    return _model(nodes, [_vi("x", [1, c1, h, h])], [_vi("out", None)], [sc, zu, zs, wq])


def test_qdq_conv_counts_int8_bytes():
    c1, c2, h = 16, 32, 10
    p = profile_onnx(_qdq_conv_model(c1, c2, h))
    by_name = {n.name: n for n in p.nodes}
    conv = by_name["/blk/conv/Conv"]
    assert conv.int8 and conv.dtype == "uint8"
    assert conv.bytes_read == h * h * c1 + c1 * c2  # one byte per activation and per weight
    assert conv.bytes_written == h * h * c2
    assert conv.params == c1 * c2 and conv.macs == h * h * c1 * c2
    # the DQ/Q pairs around the conv are folded into it; the graph-input Q and output DQ remain
    assert set(by_name) == {"/in/Q", "/blk/conv/Conv", "/out/DQ"}
    assert p.absorbed_qdq == 2
    assert by_name["/in/Q"].bytes_read == 4 * h * h * c1 and by_name["/in/Q"].bytes_written == h * h * c1


def test_float_conv_same_graph_counts_four_bytes():
    c1, c2, h = 16, 32, 10
    n = profile_onnx(conv_model(c1, c2, h, h)).nodes[0]
    assert n.bytes_read == 4 * (h * h * c1 + c1 * c2)


def test_scopes_group_into_blocks_and_views_move_no_bytes():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="/stage2/stage2.0/conv/Conv"),
        helper.make_node("Relu", ["c"], ["r"], name="/stage2/stage2.0/act/Relu"),
        helper.make_node("Conv", ["r", "w"], ["c2"], name="/stage2/stage2.1/conv/Conv"),
        helper.make_node("Flatten", ["c2"], ["f"], name="/head/Flatten"),
    ]
    m = _model(nodes, [_vi("x", [1, 8, 4, 4])], [_vi("f", None)], [_w("w", (8, 8, 1, 1))])
    p = profile_onnx(m)
    blocks = {g.name: g for g in p.groups(2)}
    assert set(blocks) == {"stage2/stage2.0", "stage2/stage2.1", "head"}
    assert blocks["stage2/stage2.0"].total("macs") == 16 * 64
    stages = {g.name: len(g.nodes) for g in p.groups(1)}
    assert stages == {"stage2": 3, "head": 1}
    flat = [n for n in p.nodes if n.op_type == "Flatten"][0]
    assert flat.bytes_read == 0 and flat.bytes_written == 0


@pytest.mark.parametrize("content", [b"", b"this is not an onnx file at all \x00\xff" * 10])
def test_bad_files_raise_input_error(tmp_path, content):
    f = tmp_path / "bad.onnx"
    f.write_bytes(content)
    with pytest.raises(InputError):
        profile_onnx(f)


def test_truncated_file_raises_input_error(tmp_path):
    data = conv_model(16, 16, 8, 8).SerializeToString()
    f = tmp_path / "cut.onnx"
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError):
        profile_onnx(f)
    with pytest.raises(InputError):
        profile_onnx(tmp_path / "missing.onnx")


def test_symbolic_spatial_dims_need_input_size():
    m = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], [_vi("x", ["n", 3, "h", "w"])],
               [_vi("y", None)])
    with pytest.raises(InputError, match="input-size"):
        profile_onnx(m)
    assert profile_onnx(m, input_size=(3, 5, 6)).nodes[0].ops == 90


def test_torchvision_export_profiles(torchvision, tmp_path):
    """A file edgezoo did not write: torchvision's own model, exported plainly (not simplified)."""
    import torch

    model = torchvision.models.mobilenet_v2().eval()
    path = tmp_path / "tv.onnx"
    with torch.no_grad():
        torch.onnx.export(model, (torch.zeros(1, 3, 64, 64),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {0: "b"}})
    p = profile_onnx(path)
    # MobileNetV2 at 64x64: MACs scale with the feature map area except the classifier
    assert p.totals()["gemm_macs"] == 1280 * 1000
    assert 0.07 < (p.macs - 1_280_000) / (300_774_272 - 1_280_000) < 0.095  # (64/224)^2 = 0.0816 + stride rounding
    assert p.total("params") > 3_400_000
    assert any(n.category == "depthwise" for n in p.nodes)


def _smallest_per_family():
    pytest.importorskip("torch", reason="PyTorch (edgezoo[torch]) is not installed")
    from edgezoo.models.registry import list_specs

    best = {}
    for s in list_specs():
        if s.reference.macs and (s.family not in best or s.reference.macs < best[s.family].reference.macs):
            best[s.family] = s
    return sorted(best.values(), key=lambda s: s.name)


@pytest.mark.parametrize("spec", _smallest_per_family(), ids=lambda s: s.name)
def test_zoo_macs_from_exported_onnx_within_1_percent(spec):
    """Representative subset: the smallest model of every registered family (the whole zoo, all 20-odd
    models at their default size, is checked by benchmarks/guidelines_table.py; exporting HarDNet-85 alone
    takes ~10 s here). Counted from the exported ONNX, not from PyTorch."""
    from edgezoo.export.onnx import to_onnx_proto

    proto, _ = to_onnx_proto(spec.build().eval(), spec.input_size, simplify=True)
    macs = profile_onnx(proto).macs
    assert abs(macs / spec.reference.macs - 1) < 0.01, (spec.name, macs, spec.reference.macs)


def test_fixed_input_dims_are_not_overridden(tmp_path):
    from onnx import TensorProto, helper

    from edgezoo.errors import InputError
    from edgezoo.profile.graph import profile_onnx

    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 1, 1], [1.0] * 12)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert profile_onnx(model, input_size=(3, 8, 8)).totals()["macs"] == 8 * 8 * 4 * 3
    with pytest.raises(InputError, match="fixed shape 3x8x8"):
        profile_onnx(model, input_size=(3, 16, 16))


def test_shared_weights_count_once():
    """One conv's weights used three times (a recurrent block): params are the initializer's, once."""
    c = 16
    nodes = [helper.make_node("Conv", [x, "w", "b"], [y], name=f"c{k}", pads=[1, 1, 1, 1])
             for k, (x, y) in enumerate((("x", "a"), ("a", "b1"), ("b1", "y")))]
    p = profile_onnx(_model(nodes, [_vi("x", [1, c, 8, 8])], [_vi("y", None)], [_w("w", (c, c, 3, 3)), _w("b", (c,))]))
    assert p.totals()["params"] == c * c * 9 + c
    assert all(n.params == c * c * 9 + c for n in p.nodes)  # each node still shows the weights it reads
    assert p.groups(1)[0].total("params") == c * c * 9 + c


def test_batch_on_fixed_batch_input_says_so():
    m = conv_model(8, 8, 4, 4)
    p = profile_onnx(m, batch=4)
    assert p.inputs == {"x": [1, 8, 4, 4]}
    assert any("--batch 4 has no effect" in note for note in p.notes)
    assert profile_onnx(m).notes == []


def test_custom_op_is_named_and_known_nodes_are_profiled():
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="conv"),
             helper.make_node("MyOp", ["a"], ["b"], name="mine", domain="com.example"),
             helper.make_node("Relu", ["b"], ["y"], name="relu")]
    g = helper.make_graph(nodes, "t", [_vi("x", [1, 8, 4, 4])], [_vi("y", None)], [_w("w", (8, 8, 1, 1))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    m.ir_version = 8
    p = profile_onnx(m)
    assert p.unknown_ops == ["com.example::MyOp"]
    assert any("com.example::MyOp" in note for note in p.notes)
    by = {n.name: n for n in p.nodes}
    assert by["conv"].macs == 16 * 64 and by["conv"].sized
    assert not by["relu"].sized and by["relu"].ops == 0


def test_unknown_shapes_run_only_for_the_tensors_still_unknown(monkeypatch):
    """A reshape whose target comes from Shape arithmetic (ReduceProd) that static inference cannot follow:
    one run resolves it, asking onnxruntime only for the unknown tensors, not every tensor in the graph."""
    from edgezoo.profile import graph as G

    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Shape", ["c"], ["s"]), helper.make_node("ReduceProd", ["s"], ["p"], keepdims=1),
             helper.make_node("Concat", ["one", "p"], ["shp"], axis=0),
             helper.make_node("Reshape", ["c", "shp"], ["r"], name="reshape"),
             helper.make_node("Relu", ["r"], ["y"], name="relu")]
    m = _model(nodes, [_vi("x", [1, 4, 3, 3])], [_vi("y", None)],
               [_w("w", (4, 4, 1, 1)), numpy_helper.from_array(np.array([1], np.int64), "one")])
    asked = []
    real = G._shapes_by_running
    monkeypatch.setattr(G, "_shapes_by_running", lambda *a: (asked.extend(a[3]), real(*a))[1])
    p = profile_onnx(m)
    assert {n.name: n for n in p.nodes}["relu"].output_shapes == [[1, 36]]
    assert asked and "c" not in asked and set(asked) <= {"s", "p", "shp", "r", "y"}


def test_qdq_fusion_read_from_the_runtime_graph():
    """When onnxruntime leaves a DQ -> Conv -> Q as float ops (its optimized graph still has the Conv reading
    a DequantizeLinear output), the conv is float and the Q/DQ nodes are nodes of their own."""
    from edgezoo.profile.fusion import RuntimeGraph, RuntimeNode, runtime_graph

    m = _qdq_conv_model()
    rt = runtime_graph(m.SerializeToString())  # onnxruntime fuses this one into QLinearConv
    fused = profile_onnx(m, runtime=rt)
    assert fused.qdq_fusion == "onnxruntime"
    assert {n.name: n for n in fused.nodes}["/blk/conv/Conv"].int8
    unfused_rt = RuntimeGraph([
        RuntimeNode("/in/Q", "QuantizeLinear", "", ("x", "s", "zu"), ("xq",)),
        RuntimeNode("/blk/conv/DQ", "DequantizeLinear", "", ("xq", "s", "zu"), ("xd",)),
        RuntimeNode("/blk/conv/wDQ", "DequantizeLinear", "", ("wq", "s", "zs"), ("wd",)),
        RuntimeNode("/blk/conv/Conv", "Conv", "", ("xd", "wd"), ("y",)),
        RuntimeNode("/blk/conv/Q", "QuantizeLinear", "", ("y", "s", "zu"), ("yq",)),
        RuntimeNode("/out/DQ", "DequantizeLinear", "", ("yq", "s", "zu"), ("out",))])
    p = profile_onnx(m, runtime=unfused_rt)
    by = {n.name: n for n in p.nodes}
    assert not by["/blk/conv/Conv"].int8 and by["/blk/conv/Conv"].bytes_written == 4 * 32 * 10 * 10
    assert {"/blk/conv/DQ", "/blk/conv/Q"} <= set(by) and p.absorbed_qdq == 0
