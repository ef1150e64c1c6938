"""Tiny models in every edge format, made once per test process (the converters are slow: seconds each).

``onnx_model`` needs only onnx; ``torch_models`` builds one small torch CNN and writes it as .onnx (torch's
TorchScript exporter), .pte (torch.export -> XNNPACK -> ExecuTorch) and .tflite (litert_torch), plus a
.tflite whose input is NHWC, so that the same input checks every runtime against onnxruntime.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import tempfile
from pathlib import Path

import numpy as np

SIZE = 16  # input is 1 x 3 x SIZE x SIZE


@functools.lru_cache(maxsize=None)
def _folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="edgezoo-edge-models-"))


def onnx_model(name: str = "tiny.onnx", metadata: bool = True) -> Path:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm with random weights and a dynamic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path = _folder() / name
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b"),
             numpy_helper.from_array(rng.standard_normal((5, 8)).astype(np.float32), "fc"),
             numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "fcb")]
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            ["batch", 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if metadata:
        from edgezoo.onnx_meta import ModelMetadata, set_metadata

        set_metadata(model, ModelMetadata(model="tiny", input_size=(3, SIZE, SIZE), mean=(0.5, 0.5, 0.5),
                                          std=(0.25, 0.25, 0.25), num_classes=5))
    onnx.save(model, path)
    return path


def qdq_model() -> Path:
    """``onnx_model`` quantized by onnxruntime (QDQ, uint8 activations, int8 weights) on random data."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    path = _folder() / "tiny_int8.onnx"
    if path.exists():
        return path

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(1)
            self.items = iter([{"input": rng.standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(os.fspath(onnx_model()), os.fspath(path), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return path


@functools.lru_cache(maxsize=None)
def torch_models() -> dict[str, Path]:
    """{'onnx', 'pte', 'tflite', 'tflite_nhwc'} of one tiny torch CNN (fixed batch 1)."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.Hardswish(),
                              torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so the fold is exercised
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)

    class ChannelsLast(torch.nn.Module):  # takes NHWC, as TensorFlow-made .tflite files do
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.permute(0, 3, 1, 2))

    x = torch.randn(1, 3, SIZE, SIZE)
    folder = _folder()
    out = {k: folder / f"net.{s}" for k, s in (("onnx", "onnx"), ("pte", "pte"), ("tflite", "tflite"))}
    out["tflite_nhwc"] = folder / "net_nhwc.tflite"
    torch.onnx.export(net, (x,), os.fspath(out["onnx"]), dynamo=False, input_names=["input"],
                      output_names=["logits"])

    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = to_edge_transform_and_lower(torch.export.export(net, (x,)), partitioner=[XnnpackPartitioner()])
    out["pte"].write_bytes(program.to_executorch().buffer)

    import litert_torch

    with contextlib.redirect_stdout(io.StringIO()):
        litert_torch.convert(net, (x,)).export(os.fspath(out["tflite"]))
        litert_torch.convert(ChannelsLast(net).eval(), (x.permute(0, 2, 3, 1).contiguous(),)).export(
            os.fspath(out["tflite_nhwc"]))
    return out


def ort_reference(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]
