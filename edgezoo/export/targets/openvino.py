"""OpenVINO target: IR (.xml + .bin) from the verified fp32 ONNX; bf16 on CPUs that have it; int8.

fp32: openvino.convert_model(fp32 ONNX) -> save_model(compress_to_fp16=False), run with the f32 precision
hint. bf16: the same IR run with the bf16 hint (OpenVINO's CPU plugin computes in bf16 on AMX/AVX512-BF16
CPUs; elsewhere the runner says so). int8: NNCF post-training quantization (nncf.quantize on the OpenVINO
model, an nncf.Dataset of the calibration images), saved as IR.
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
        from edgezoo.export.targets.rules import openvino_findings

        return openvino_findings(model)

    def build(self, ctx: TargetContext, precision: str, path: Path) -> dict:
        import openvino as ov

        src = ctx.files.get("onnxruntime:fp32")
        if src is None:
            raise RuntimeError("the openvino target converts the verified fp32 ONNX, which was not written")
        model = ov.convert_model(os.fspath(src))
        facts = {"method": "openvino.convert_model(fp32 ONNX)"}
        if precision == "int8":
            try:
                import nncf
            except ImportError:
                from edgezoo.errors import MissingDependencyError

                raise MissingDependencyError("nncf", "pip install 'edgezoo[openvino]'",
                                             "OpenVINO's int8 comes from NNCF") from None
            import numpy as np

            data = [np.ascontiguousarray(ctx.calibration[i:i + 1]) for i in range(len(ctx.calibration))]
            model = nncf.quantize(model, nncf.Dataset(data), subset_size=len(data))
            facts["method"] = "NNCF post-training quantization (nncf.quantize, default preset)"
        if precision == "bf16" and "onnxruntime:fp32" in ctx.files and f"openvino:fp32" in ctx.files:
            # bf16 is a run-time hint on the same IR: share the fp32 file instead of writing it twice
            return {**facts, "same_file_as": "fp32", "_path": ctx.files["openvino:fp32"]}
        ov.save_model(model, os.fspath(path), compress_to_fp16=False)
        return facts

    def runner(self, path: Path, threads: int | None, precision: str):
        from edgezoo.runtimes.openvino import OpenVinoRunner

        return OpenVinoRunner(path, threads=threads, precision="bf16" if precision == "bf16" else "f32")


TARGET = OpenVinoTarget()
