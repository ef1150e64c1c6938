"""onnxruntime target: the QDQ (U8S8) ONNX of the export pipeline (export.quantize.quantize_int8).

The pipeline writes model.fp32.onnx and model.int8.onnx itself (they are the bundle's main files), both
through ``write_int8`` here; this target registers them so that they are verified and compared in the same
table as the others (and builds them itself when used outside the pipeline, as benchmarks/targets.py does).
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

        if precision == "fp32":
            export_onnx(ctx.model, path, ctx.input_size, dynamic_batch=True)
            return {"method": "torch.onnx.export (TorchScript), onnxsim"}
        return {"method": method_line(qdq_file(ctx, "onnxruntime", path))}

    def runner(self, path: Path, threads: int | None, precision: str):
        from edgezoo.runtimes.onnxruntime import OrtRunner

        return OrtRunner(path, threads=threads)


def qdq_file(ctx: TargetContext, backend: str, path: Path) -> dict:
    """The QDQ file of ``ctx.model`` in ``backend``'s activation forms (int8_forms) with the shared recipe:
    its int8 source exported beside ``path`` and removed again; returns write_int8's report."""
    from edgezoo.export import int8_forms
    from edgezoo.export.onnx import export_onnx

    src = path.with_name(f".{backend}-int8-source.fp32.onnx")
    try:
        export_onnx(ctx.int8_model(backend), src, ctx.input_size, dynamic_batch=True)
        return write_int8(src, path, ctx.calibration, int8_forms.choose(ctx.model, backend), ctx.int8_recipe(),
                          per_channel=ctx.per_channel)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        src.unlink(missing_ok=True)


def write_int8(src, out, calibration, forms, recipe, per_channel: bool = True, method: str = "minmax") -> dict:
    """The QDQ int8 file from ``src`` (the fp32 model in ``forms``' activation forms): the forms' float layers
    and the recipe's float head excluded, the recipe's bias correction and weight range applied."""
    import dataclasses

    import onnx

    from edgezoo.export.int8_recipe import float_head
    from edgezoo.export.quantize import quantize_int8

    exclude = list(forms.exclude_nodes(src))
    head = float_head(onnx.load(str(src), load_external_data=False).graph, recipe.head_convs)
    exclude += [n for n in head + list(recipe.float_nodes) if n not in exclude]
    clipped = None
    if recipe.weight_ranges == "mse":
        from edgezoo.export.weight_rounding import write_clipped

        clipped = write_clipped(src, Path(out).with_name(f".{Path(out).name}.clipped.onnx"),
                                63 if recipe.reduce_range else 127, set(exclude))
    try:
        q = quantize_int8(clipped or src, out, calibration, per_channel=per_channel, method=method,
                          exclude_nodes=exclude, bias_correction=recipe.bias_correction,
                          reduce_range=recipe.reduce_range)
    finally:
        if clipped is not None:
            clipped.unlink(missing_ok=True)
    q["recipe"] = dataclasses.replace(recipe, head_convs=len(head), head_nodes=head).to_dict()
    return q


def method_line(q: dict) -> str:
    return (f"QDQ U8S8 ({q['method']}, {'per-channel' if q['per_channel'] else 'per-tensor'}; "
            f"{q['recipe']['described']})")


TARGET = OnnxRuntimeTarget()
