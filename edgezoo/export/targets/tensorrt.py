"""TensorRT target: an engine planned from the bundle's ONNX (export.tensorrt); needs TensorRT 10+ and a GPU.

int8 from the QDQ ONNX (strongly typed), fp32 from the fp32 ONNX. Not runnable on a machine without a GPU:
``available()`` says so in one line and the other targets still land.
"""

from __future__ import annotations

from pathlib import Path

from edgezoo.export.targets import TargetContext


class TensorRTTarget:
    name = "tensorrt"
    runtime = "tensorrt"
    extra = "tensorrt"
    precisions = ("fp32", "int8")
    suffix = ".engine"

    def available(self) -> str | None:
        try:
            from edgezoo.runtimes.tensorrt import import_tensorrt

            import_tensorrt()
        except Exception as e:
            return "TensorRT 10+ and an NVIDIA GPU with a CUDA driver are needed"
        return None

    def preflight(self, model) -> list[str]:
        return []

    def build(self, ctx: TargetContext, precision: str, path: Path) -> dict:
        from edgezoo.export.tensorrt import build_engine, plan_engine

        src = ctx.files.get(f"onnxruntime:{precision}")
        if src is None:
            raise RuntimeError(f"the tensorrt target builds from the {precision} ONNX, which was not written")
        plan = plan_engine(src, path, precision, timing_cache=path.with_name("timing.cache"))
        return build_engine(plan)

    def runner(self, path: Path, threads: int | None, precision: str):
        from edgezoo.runtimes.tensorrt import TrtRunner

        return TrtRunner(path)


TARGET = TensorRTTarget()
