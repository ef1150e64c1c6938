"""ExecuTorch target: a .pte lowered to XNNPACK; int8 by PT2E static quantization with the XNNPACK quantizer.

fp32: torch.export -> to_edge_transform_and_lower(XnnpackPartitioner) -> to_executorch.
int8: the model in the decomposed activation forms (int8_forms 'generic': h-swish as Add/Clip/Mul, which the
XNNPACK quantizer annotates; a HardSwish op it leaves in float and the program splits around it), then
prepare_pt2e(XNNPACKQuantizer, symmetric per-channel weights) -> calibrate -> convert_pt2e -> lower.
ReLU6 after a conv is annotated as one fused pattern (_pt2e.fused_clamp_quantizer: why there).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from edgezoo.export.targets import TargetContext
from edgezoo.export.targets._pt2e import pt2e_recipe


class ExecuTorchTarget:
    name = "executorch"
    runtime = "executorch"
    extra = "executorch"
    precisions = ("fp32", "int8")
    suffix = ".pte"
    needs_torch = True  # converts a PyTorch program: an ONNX source gets a one-line "skipped" row

    def available(self) -> str | None:
        try:
            import executorch.exir  # noqa: F401
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner  # noqa: F401
            import torchao  # noqa: F401
        except ImportError as e:
            return f"executorch is not importable ({e.name or e})"
        return None

    def preflight(self, model) -> list[str]:
        from edgezoo.export.targets.rules import xnnpack_findings

        return xnnpack_findings(model, "executorch")

    def build(self, ctx: TargetContext, precision: str, path: Path) -> dict:
        import torch
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        from edgezoo.fileio import atomic_write_bytes

        x = torch.from_numpy(np.ascontiguousarray(ctx.calibration[:1], dtype=np.float32))
        facts: dict = {"method": "torch.export -> XNNPACK"}
        if precision == "int8":
            from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                XNNPACKQuantizer, get_symmetric_quantization_config)

            from edgezoo.export.targets._pt2e import fused_clamp_quantizer, quantize_pt2e

            inner = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=ctx.per_channel))
            from edgezoo.export.int8_recipe import clip_as_relu6

            recipe = ctx.int8_recipe()
            # ReLU6 as hardtanh, fused with its conv (int8_recipe.clip_as_relu6: 22.7 -> 25.8 dB on Lite0)
            module = quantize_pt2e(clip_as_relu6(ctx.pt2e_model()), ctx.calibration[:1], ctx.calibration,
                                   fused_clamp_quantizer(inner, recipe.head_convs))
            facts["method"] = ("PT2E static int8 (XNNPACK quantizer, symmetric "
                               f"{'per-channel' if ctx.per_channel else 'per-tensor'} weights, ReLU6 fused; "
                               f"{pt2e_recipe(recipe)})")
        else:
            module = ctx.model.eval()
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            ep = torch.export.export(module, (x,))
            edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
            facts["partitions"] = count_delegates(edge.exported_program().graph_module)
            facts["ops_outside_xnnpack"] = ops_outside(edge.exported_program().graph_module)
            atomic_write_bytes(path, edge.to_executorch().buffer)
        return facts

    def runner(self, path: Path, threads: int | None, precision: str):
        from edgezoo.runtimes.executorch import ExecuTorchRunner

        return ExecuTorchRunner(path, threads=threads)


def count_delegates(gm) -> int:
    return sum(1 for n in gm.graph.nodes if n.op == "call_function" and "executorch_call_delegate" in str(n.target))


def ops_outside(gm) -> dict[str, int]:
    """Ops the edge program runs outside the XNNPACK delegate (getitem and the delegate calls excluded)."""
    out: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op != "call_function":
            continue
        t = str(n.target)
        if "executorch_call_delegate" in t or "getitem" in t:
            continue
        key = t.split("::")[-1].split(".")[0] if "::" in t else t.split(".")[-2] if "." in t else t
        out[key] = out.get(key, 0) + 1
    return out


TARGET = ExecuTorchTarget()
