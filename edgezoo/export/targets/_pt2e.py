"""PT2E static int8 shared by the ExecuTorch and LiteRT targets: export, annotate, calibrate, convert.

Why ReLU6 needs help: the XNNPACK quantizer fuses conv + ReLU (one observer, after the ReLU) but treats
``hardtanh`` (ReLU6) as an op that shares its input's observer. The conv output is then quantized over its
pre-clip range (a BN-folded conv reaches tens), and the ReLU6 output inherits that coarse scale: on
EfficientNet-Lite0 (ReLU6 after every conv) the int8 output fell to ~4 dB SQNR. ``FusedClampQuantizer``
annotates conv/linear -> hardtanh/clamp as one pattern, as conv -> ReLU already is: no observer between
them, one after the clip, so the int8 range is [0, 6] at most. XNNPACK runs the clip as the conv's output
bounds, so nothing runs in float in between (tested in tests/test_targets_edge.py).
"""

from __future__ import annotations

import numpy as np

# hardtanh only: XNNPACK fuses conv -> hardtanh as the conv's output bounds, but a conv -> clamp (an SE gate's
# folded h-sigmoid, passes.ClipAct) without an observer between them is left undelegated (MobileNetV3's SE
# convs then failed to lower: "Missing out variants: dequantize_per_channel")
_CLAMP_OPS = ("hardtanh.default", "hardtanh_.default")
_CONVS = ("conv2d.default",)
_FUSABLE = ("conv2d.default", "conv1d.default", "linear.default", "addmm.default")


def _target(node) -> str:
    t = node.target
    return f"{getattr(t, '_opname', '')}.{getattr(t, '_overloadname', '')}" if hasattr(t, "_opname") else str(t)


def fused_clamp_quantizer(inner, float_convs: int = 0):
    """A Quantizer that runs ``inner``, re-annotates conv/linear -> clip pairs as one fused pattern, and leaves
    the first ``float_convs`` convs of the graph (edgezoo.export.int8_recipe's float head) unannotated, in float."""
    from torchao.quantization.pt2e.quantizer import Quantizer
    from torchao.quantization.pt2e.quantizer.quantizer import QuantizationAnnotation

    key = "quantization_annotation"

    class FusedClampQuantizer(Quantizer):
        def transform_for_annotation(self, model):
            return inner.transform_for_annotation(model)

        def annotate(self, model):
            model = inner.annotate(model)
            for n in model.graph.nodes:
                if n.op != "call_function" or _target(n) not in _CLAMP_OPS or not n.args:
                    continue
                prev = n.args[0]
                if getattr(prev, "op", None) != "call_function" or _target(prev) not in _FUSABLE \
                        or len(prev.users) != 1 or key not in prev.meta:
                    continue
                prev_ann = prev.meta[key]
                out_spec = prev_ann.output_qspec
                if out_spec is None:
                    continue
                prev_ann.output_qspec = None
                n.meta[key] = QuantizationAnnotation(input_qspec_map={}, output_qspec=out_spec, _annotated=True)
            convs = [n for n in model.graph.nodes if n.op == "call_function" and _target(n) in _CONVS]
            for conv in convs[:float_convs]:
                conv.meta.pop(key, None)
                for user in conv.users:  # the clip that took over the conv's output observer
                    if _target(user) in _CLAMP_OPS and key in user.meta and not user.meta[key].input_qspec_map:
                        user.meta.pop(key)
            return model

        def validate(self, model):
            return inner.validate(model)

    return FusedClampQuantizer()


def pt2e_recipe(recipe) -> str:
    """The int8 recipe as the PT2E targets apply it: XNNPACK widens before multiplying, so 8-bit weights."""
    head = f"first {recipe.head_convs} convs in float" if recipe.head_convs else "no float head"
    return f"{head}, {'bias correction' if recipe.bias_correction else 'no bias correction'}"


def quantize_pt2e(model, example: np.ndarray, calibration: np.ndarray, quantizer):
    """Static int8 of ``model`` (eval) with ``quantizer``: returns the converted GraphModule."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    x = torch.from_numpy(np.ascontiguousarray(example[:1], dtype=np.float32))
    graph = torch.export.export(model.eval(), (x,)).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for i in range(len(calibration)):
            prepared(torch.from_numpy(np.ascontiguousarray(calibration[i:i + 1], dtype=np.float32)))
    return convert_pt2e(prepared)
