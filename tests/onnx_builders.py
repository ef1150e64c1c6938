"""Tiny ONNX models built by hand, for the tests that need a file whose every figure can be worked out.

Imported as ``from onnx_builders import ...`` (pytest puts tests/ on sys.path, as it does for conftest).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F32 = TensorProto.FLOAT
OPSET = 17
# onnx's helper stamps its own newest IR version, which the pinned onnxruntime may not read yet.
IR_VERSION = 8


def value_info(name: str, shape, elem_type: int = F32) -> onnx.ValueInfoProto:
    """A graph input or output; ``shape=None`` leaves the shape unknown, strings are symbolic dimensions."""
    return helper.make_tensor_value_info(name, elem_type, shape)


def const(name: str, shape, value: float = 1.0, dtype=np.float32) -> TensorProto:
    """An initializer filled with one value (figures stay easy to work out by hand)."""
    return numpy_helper.from_array(np.full(shape, value, dtype=dtype), name)


def random_weight(name: str, shape, seed: int = 0, scale: float = 1.0) -> TensorProto:
    """Standard-normal values times ``scale``, from a seeded generator."""
    values = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return numpy_helper.from_array(values * np.float32(scale) if scale != 1.0 else values, name)


def make_model(nodes, inputs, outputs, inits=(), opset: int = OPSET, name: str = "t") -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), name, list(inputs), list(outputs), initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = IR_VERSION
    return model


def conv_relu_gap(path=None, hw=(8, 8), metadata=None, pads: int = 1):
    """Conv(3->4, 3x3) -> Relu -> GlobalAveragePool on input "x" (batch dynamic), output "y" (batch, 4, 1, 1).

    ``hw=None`` leaves height and width dynamic; ``metadata`` (an ``edgezoo.onnx_meta.ModelMetadata``) is
    stamped into the file. Saved to ``path`` (returned) when given, else the ModelProto is returned.
    """
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[pads] * 4),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["y"], name="gap")]
    h, w = hw if hw else ("height", "width")
    model = make_model(nodes, [value_info("x", ["batch", 3, h, w])], [value_info("y", ["batch", 4, 1, 1])],
                       [random_weight("w", (4, 3, 3, 3))], name="tiny")
    if metadata is not None:
        from edgezoo.onnx_meta import set_metadata

        set_metadata(model, metadata)
    if path is None:
        return model
    onnx.save(model, path)
    return path


def doubler(path, metadata=None):
    """y = 2 * x on input "x" [n, 4], output "y" [n, 4]; ``metadata`` stamped in when given. Saved to ``path``."""
    model = make_model([helper.make_node("Mul", ["x", "two"], ["y"])], [value_info("x", ["n", 4])],
                       [value_info("y", ["n", 4])], [const("two", [], 2.0)], name="double")
    if metadata is not None:
        from edgezoo.onnx_meta import set_metadata

        set_metadata(model, metadata)
    onnx.save(model, path)
    return path
