"""OpenVINO target: IR (.xml + .bin) from the verified fp32 ONNX; bf16 on CPUs that have it; int8.

fp32: openvino.convert_model(fp32 ONNX) -> save_model(compress_to_fp16=False), run with the f32 precision
hint. bf16: the same IR run with the bf16 hint (OpenVINO's CPU plugin computes in bf16 on AMX/AVX512-BF16
CPUs; elsewhere the runner says so). int8: OpenVINO's converter reading a QDQ ONNX edgezoo writes with the
shared int8 recipe (``qdq_source``: the onnxruntime target's file when the model has no h-swish), saved as IR. The issue asked to measure that against NNCF's own
post-training quantization and keep the faster at equal agreement; on EfficientNet-Lite0 with its ImageNet
weights (this AVX2 CPU, 64 calibration views) the QDQ route reached 22.4 dB output SQNR and NNCF 6.2 dB
(default preset), 11.6 dB (overflow_fix=ENABLE), 12.2 dB (and the same float head); the latencies of both
routes, per model, are in benchmarks/results/targets.md. The QDQ file is written in OpenVINO's own
activation forms (int8_forms 'openvino': HSwish kept, which the CPU plugin fuses into the conv).
"""

from __future__ import annotations

import os
from pathlib import Path

from edgezoo.export.targets import TargetContext


class OpenVinoTarget:
    name = "openvino"
    extra = "openvino"
    precisions = ("fp32", "bf16", "int8")
    suffix = ".xml"

    def available(self) -> str | None:
        try:
            import openvino  # noqa: F401
        except ImportError as e:
            return f"openvino is not importable ({e.name or e})"
        return None

    def preflight(self, model) -> list[str]:
        if model is None:  # an ONNX source
            return []
        from edgezoo.export.targets.rules import openvino_findings

        return openvino_findings(model)

    def build(self, ctx: TargetContext, precision: str, path: Path) -> dict:
        import openvino as ov

        src = ctx.files.get("onnxruntime:fp32")
        if src is None:
            raise RuntimeError("the openvino target converts the verified fp32 ONNX, which was not written")
        facts = {"method": "openvino.convert_model(fp32 ONNX)"}
        temporary = None
        if precision == "int8":
            src, temporary = qdq_source(ctx, path)
            facts["method"] = ("openvino.convert_model(edgezoo's QDQ int8 ONNX, any h-swish kept as HSwish): "
                               f"{ctx.int8_recipe().describe()}")
        try:
            model = ov.convert_model(os.fspath(src))
        finally:
            if temporary is not None:
                temporary.unlink(missing_ok=True)
        if precision == "bf16" and "openvino:fp32" in ctx.files:
            # bf16 is a run-time hint on the same IR: share the fp32 file instead of writing it twice
            return {**facts, "same_file_as": "fp32", "_path": ctx.files["openvino:fp32"]}
        ov.save_model(model, os.fspath(path), compress_to_fp16=False)
        return facts

    def runner(self, path: Path, threads: int | None, precision: str):
        from edgezoo.runtimes.openvino import OpenVinoRunner

        return OpenVinoRunner(path, threads=threads, precision="bf16" if precision == "bf16" else "f32")


def qdq_source(ctx: TargetContext, path: Path) -> tuple[Path, Path | None]:
    """The QDQ ONNX OpenVINO's int8 IR is converted from: the model in OpenVINO's activation forms
    (int8_forms 'openvino') with the shared recipe. Without h-swish those are the onnxruntime file's forms, so
    that file is reused when it exists. Returns (path, the temporary file to remove or None)."""
    from edgezoo.export.targets.onnxruntime import forms_of, qdq_file

    if "onnxruntime:int8" in ctx.files and forms_of(ctx, "openvino").hardswish == forms_of(ctx, "onnxruntime").hardswish:
        return ctx.files["onnxruntime:int8"], None
    qdq = path.with_name(".openvino-source.int8.onnx")
    qdq_file(ctx, "openvino", qdq)
    return qdq, qdq

TARGET = OpenVinoTarget()
