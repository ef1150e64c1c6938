"""onnxruntime target: the QDQ (U8S8) ONNX of the export pipeline (export.quantize.quantize_int8).

The pipeline writes model.fp32.onnx and model.int8.onnx itself (they are the bundle's main files); this
target registers them so that they are verified and compared in the same table as the others.
"""

from __future__ import annotations

from pathlib import Path

from edgezoo.export.targets import TargetContext


class OnnxRuntimeTarget:
    name = "onnxruntime"
    extra = "torch"
    precisions = ("fp32", "int8")
    suffix = ".onnx"

    def available(self) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            return f"onnxruntime is not importable ({e.name or e})"
        return None

    def preflight(self, model) -> list[str]:
        from edgezoo.export.targets.rules import onnxruntime_findings

        return onnxruntime_findings(model)

    def build(self, ctx: TargetContext, precision: str, path: Path) -> dict:
        import torch  # noqa: F401

        from edgezoo.export.onnx import export_onnx
        from edgezoo.export.quantize import quantize_int8

        if precision == "fp32":
            export_onnx(ctx.model, path, ctx.input_size, dynamic_batch=True)
            return {"method": "torch.onnx.export (TorchScript), onnxsim"}
        src = path.with_name(".int8-source.fp32.onnx")
        export_onnx(ctx.int8_model("onnxruntime"), src, ctx.input_size, dynamic_batch=True)
        try:
            q = quantize_int8(src, path, ctx.calibration, per_channel=ctx.per_channel)
        finally:
            src.unlink(missing_ok=True)
        return {"method": f"QDQ U8S8 ({q['method']})"}

    def runner(self, path: Path, threads: int | None, precision: str):
        from edgezoo.runtimes.onnxruntime import OrtRunner

        return OrtRunner(path, threads=threads)


TARGET = OnnxRuntimeTarget()
