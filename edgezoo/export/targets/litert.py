"""LiteRT target: a .tflite through litert-torch (no TensorFlow); int8 by litert-torch's PT2E quantizer.

fp32: litert_torch.convert(model). int8: the model in the decomposed activation forms (int8_forms 'generic'),
export -> prepare_pt2e(litert-torch's PT2EQuantizer, symmetric per-channel weights, ReLU6 fused with its conv
by _pt2e.fused_clamp_quantizer) -> calibrate -> convert_pt2e(fold_quantize=False) -> litert_torch.convert with
the same quantizer in its QuantConfig, as litert-torch's documentation shows. Runs on LiteRT's XNNPACK delegate.

litert-torch's quantizer finds adds through get_source_partitions, which misses the residual adds of today's
torch.export graphs: they stay float (DEQUANTIZE -> ADD -> QUANTIZE; ``float_ops`` lists them). Annotating them
int8 was tried and measured (1 thread, this AVX2 CPU, interleaved): MobileNetV3-Large int8 went from 12.5 to
21.6 ms, so they are left as the quantizer leaves them.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np

from edgezoo.export.targets import TargetContext
from edgezoo.export.targets._pt2e import pt2e_recipe


class LiteRTTarget:
    name = "litert"
    runtime = "litert"
    extra = "litert"
    precisions = ("fp32", "int8")
    suffix = ".tflite"
    needs_torch = True  # converts a PyTorch program: an ONNX source gets a one-line "skipped" row

    def available(self) -> str | None:
        try:
            import ai_edge_litert  # noqa: F401
            import litert_torch  # noqa: F401
        except ImportError as e:
            return f"litert-torch / ai-edge-litert are not importable ({e.name or e})"
        return None

    def preflight(self, model) -> list[str]:
        from edgezoo.export.targets.rules import xnnpack_findings

        return xnnpack_findings(model, "litert")

    def build(self, ctx: TargetContext, precision: str, path: Path) -> dict:
        import litert_torch
        import torch

        from edgezoo.fileio import atomic_directory  # noqa: F401  (the bundle folder is already atomic)

        x = torch.from_numpy(np.ascontiguousarray(ctx.calibration[:1], dtype=np.float32))
        facts: dict = {"method": "litert_torch.convert"}
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            if precision == "int8":
                from litert_torch.quantize import pt2e_quantizer as pq
                from litert_torch.quantize.quant_config import QuantConfig
                from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

                from edgezoo.export.targets._pt2e import fused_clamp_quantizer

                inner = pq.PT2EQuantizer().set_global(pq.get_symmetric_quantization_config(is_per_channel=ctx.per_channel))
                recipe = ctx.int8_recipe()
                quantizer = fused_clamp_quantizer(inner, recipe.head_convs)
                graph = torch.export.export(ctx.pt2e_model(), (x,)).module()
                prepared = prepare_pt2e(graph, quantizer)
                for i in range(len(ctx.calibration)):
                    prepared(torch.from_numpy(np.ascontiguousarray(ctx.calibration[i:i + 1], dtype=np.float32)))
                module = convert_pt2e(prepared, fold_quantize=False)
                edge = litert_torch.convert(module, (x,), quant_config=QuantConfig(pt2e_quantizer=inner))
                facts["method"] = ("PT2E static int8 (litert-torch PT2EQuantizer, symmetric "
                                   f"{'per-channel' if ctx.per_channel else 'per-tensor'} weights, ReLU6 fused; "
                                   f"{pt2e_recipe(recipe)})")
            else:
                edge = litert_torch.convert(ctx.model.eval(), (x,))
            tmp = path.with_name(path.name + ".part")
            edge.export(os.fspath(tmp))
            os.replace(tmp, path)
        if precision == "int8":
            facts["ops_in_float"] = float_ops(path)
        return facts

    def runner(self, path: Path, threads: int | None, precision: str):
        from edgezoo.runtimes.litert import LiteRTRunner

        return LiteRTRunner(path, threads=threads)


def float_ops(path: Path) -> dict[str, int]:
    """Ops of an int8 .tflite that compute in float (first input float32), QUANTIZE/DEQUANTIZE aside: where
    the int8 program leaves int8, and XNNPACK's int8 partitions end."""
    from edgezoo.runtimes.litert import import_litert

    interpreter = import_litert()(model_path=os.fspath(path))
    dtypes = {d["index"]: np.dtype(d["dtype"]) for d in interpreter.get_tensor_details()}
    out: dict[str, int] = {}
    for op in interpreter._get_ops_details():  # the only listing of a model's ops the Python API has
        inputs = [i for i in op["inputs"] if i >= 0]
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE") or not inputs or dtypes.get(inputs[0]) != np.float32:
            continue
        out[op["op_name"]] = out.get(op["op_name"], 0) + 1
    return out


TARGET = LiteRTTarget()
