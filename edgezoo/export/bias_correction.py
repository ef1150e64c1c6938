"""Bias correction of weight quantization (Nagel et al. 2019, "Data-Free Quantization", section 4.2).

Quantizing a conv's weights W to Wq shifts the mean of its output by E[conv(x, Wq - W)], a per-channel
offset that the following layers carry and amplify (depthwise convs with few taps suffer most). Subtracting
it from the conv's bias removes the shift. The expectation here is empirical: the fp32 model runs on the
calibration images with, for every conv, a probe Conv(x, Wq - W) beside it whose output is averaged over
batch and space. Linear, so padding and strides are taken into account exactly.

Wq is read from the QDQ model the quantizer wrote (its DequantizeLinear of each weight), so the correction
matches whatever the quantizer did (per-channel or per-tensor, 7-bit or 8-bit). Quantizing the corrected
fp32 model again gives the same weights and the corrected biases. Activation-quantization error is not
corrected (it depends on the activations' own ranges, not on the weights).

No torch: numpy, onnx and onnxruntime, like edgezoo.export.quantize.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgezoo.errors import InputError

PROBE_SUFFIX = "__edgezoo_bias_probe"


def dequantize(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> np.ndarray:
    """The float64 values a DequantizeLinear ``node`` of constant initializers produces."""
    q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
    zp = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64) if len(node.input) > 2 and node.input[2] else 0.0
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    if np.ndim(scale) == 1 and q.ndim > 1:
        shape = [1] * q.ndim
        shape[axis % q.ndim] = -1
        scale, zp = scale.reshape(shape), np.reshape(zp, shape) if np.ndim(zp) else zp
    return (q - zp) * scale


def dequantized_weights(qdq: onnx.ModelProto) -> dict[str, np.ndarray]:
    """float weight name -> the values the QDQ model really uses (DequantizeLinear of a constant)."""
    init = {i.name: i for i in qdq.graph.initializer}
    # the quantizer names the weight X's dequantized output "X_DequantizeLinear_Output" (or X itself)
    return {n.output[0]: dequantize(n, init) for n in qdq.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in init}


def _float_weight_of(qdq: onnx.ModelProto) -> dict[str, str]:
    """Conv node name -> the dequantized-weight tensor it reads in the QDQ model."""
    return {n.name: n.input[1] for n in qdq.graph.node if n.op_type == "Conv" and len(n.input) > 1}


def correct_biases(fp32: onnx.ModelProto, qdq: onnx.ModelProto, calibration: np.ndarray,
                   batch: int = 8) -> tuple[onnx.ModelProto, dict]:
    """A copy of ``fp32`` whose conv biases absorb the mean output shift of ``qdq``'s quantized weights.

    Returns (model, report); the report lists each corrected conv with the largest shift it removed.
    """
    from edgezoo.export.agreement import input_name, ort_runner

    calibration = np.asarray(calibration, dtype=np.float32)
    if calibration.ndim != 4 or len(calibration) == 0:
        raise InputError(f"bias correction needs a non-empty (N, C, H, W) array, got shape {calibration.shape}")
    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    init = {i.name: i for i in model.graph.initializer}
    deq = dequantized_weights(qdq)
    q_weight = _float_weight_of(qdq)

    probe = onnx.ModelProto()
    probe.CopyFrom(fp32)
    targets = []  # (conv node of the fp32 model, probe output name, delta-W initializer name)
    for n in model.graph.node:
        if n.op_type != "Conv" or len(n.input) < 2 or n.input[1] not in init:
            continue
        wq = deq.get(q_weight.get(n.name, ""))
        w = numpy_helper.to_array(init[n.input[1]])
        if wq is None or wq.shape != w.shape:  # left in float, or not a conv the quantizer touched
            continue
        dw = (wq - w.astype(np.float64)).astype(np.float32)
        dw_name = n.name + PROBE_SUFFIX + "_dw"
        conv_out = n.name + PROBE_SUFFIX + "_conv"
        mean_out = n.name + PROBE_SUFFIX
        probe.graph.initializer.append(numpy_helper.from_array(dw, dw_name))
        attrs = [a for a in n.attribute]
        conv = helper.make_node("Conv", [n.input[0], dw_name], [conv_out], name=conv_out)
        conv.attribute.extend(attrs)
        red = helper.make_node("ReduceMean", [conv_out], [mean_out], name=mean_out, axes=[0, 2, 3], keepdims=0)
        if model.opset_import and max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18:
            axes_name = mean_out + "_axes"
            probe.graph.initializer.append(numpy_helper.from_array(np.array([0, 2, 3], np.int64), axes_name))
            red = helper.make_node("ReduceMean", [conv_out, axes_name], [mean_out], name=mean_out, keepdims=0)
        probe.graph.node.extend([conv, red])
        probe.graph.output.append(onnx.ValueInfoProto(name=mean_out))
        targets.append((n, mean_out))
    report = {"pass": "bias_correction", "convs": len(targets), "calibration_images": int(len(calibration)),
              "changes": []}
    if not targets:
        return model, report
    name = input_name(probe)
    sums = [0.0] * len(targets)
    seen = 0
    with ort_runner(probe) as runner:
        fixed = runner.inputs[0].shape[0]
        step = fixed if isinstance(fixed, int) and fixed > 0 else batch
        index = {o.name: k for k, o in enumerate(runner.outputs)}
        for i in range(0, len(calibration), step):
            chunk = calibration[i:i + step]
            if isinstance(fixed, int) and fixed > 0 and len(chunk) < fixed:
                break  # a fixed-batch model: only full batches (padding would bias the means)
            outs = runner.infer({name: chunk})
            for k, t in enumerate(targets):
                sums[k] = sums[k] + outs[index[t[1]]].astype(np.float64) * len(chunk)
            seen += len(chunk)
    if seen == 0:
        raise InputError(f"bias correction needs at least {step} calibration images for this fixed-batch model")
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for i in node.input:
            uses[i] = uses.get(i, 0) + 1
    for (n, _), s in zip(targets, sums):
        shift = np.asarray(s) / seen
        # a bias initializer several convs share (onnxsim merges equal ones, e.g. the zero biases of a
        # freshly initialised model) is corrected in a copy of its own, or each correction would hit them all
        if len(n.input) > 2 and n.input[2] in init and uses.get(n.input[2], 0) == 1:
            b = numpy_helper.to_array(init[n.input[2]]).astype(np.float64)
            init[n.input[2]].CopyFrom(numpy_helper.from_array((b - shift).astype(np.float32), n.input[2]))
        else:
            b = numpy_helper.to_array(init[n.input[2]]).astype(np.float64) if len(n.input) > 2 and n.input[2] in init \
                else 0.0
            bname = n.name + "_corrected_bias"
            model.graph.initializer.append(numpy_helper.from_array((b - shift).astype(np.float32), bname))
            while len(n.input) < 2:
                n.input.append("")
            if len(n.input) == 2:
                n.input.append(bname)
            else:
                n.input[2] = bname
        report["changes"].append(f"{n.name}: bias -= mean weight-quantization shift (max |shift| "
                                 f"{float(np.max(np.abs(shift))):.3g})")
    return model, report
