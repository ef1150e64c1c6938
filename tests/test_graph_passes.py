"""edgezoo.export.graph_passes on hand-built ONNX graphs: what each pass rewrites, and that the numbers stay."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx is not installed")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgezoo.export import graph_passes as G  # noqa: E402


def _mean_model(axes, keepdims: int, opset: int) -> onnx.ModelProto:
    """x [N, 4, 6, 6] -> ReduceMean(axes, keepdims) -> y."""
    inits, inputs, attrs = [], ["x"], {"keepdims": keepdims}
    if opset >= 18:
        inits.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
        inputs.append("axes")
    else:
        attrs["axes"] = list(axes)
    node = helper.make_node("ReduceMean", inputs, ["y"], name="mean", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("axes,keepdims,opset", [((2, 3), 0, 17), ((-1, -2), 1, 17), ((2, 3), 0, 18),
                                                 ((3, 2), 1, 18)])
def test_a_mean_over_height_and_width_becomes_global_average_pool(axes, keepdims, opset):
    model = _mean_model(axes, keepdims, opset)
    result = G.spatial_mean_to_global_pool(model)
    ops = [n.op_type for n in result.model.graph.node]
    assert ops == (["GlobalAveragePool"] if keepdims else ["GlobalAveragePool", "Flatten"]), ops
    assert result.changes == ["mean: ReduceMean over H, W -> GlobalAveragePool"]
    assert not result.model.graph.initializer  # the axes input is gone with its node
    check = G.check_graph_pass(model, result, (4, 6, 6), batch=3)
    assert check.ok and check.max_abs_diff <= 1e-6, check


@pytest.mark.parametrize("axes", [(1,), (1, 2, 3), (2,)])
def test_a_mean_over_other_axes_stays(axes):
    model = _mean_model(axes, 0, 17)
    result = G.spatial_mean_to_global_pool(model)
    assert [n.op_type for n in result.model.graph.node] == ["ReduceMean"] and result.changes == []
