"""onnxruntime target: the QDQ (U8S8) ONNX of the export pipeline (export.quantize.quantize_int8).

The bundle's model.int8.onnx is this target's int8 file: the pipeline builds it through ``qdq_file`` (with its
checked passes and metadata) and registers it, so ``run_targets`` verifies it in the same table as the others
without building it again; outside the pipeline (benchmarks/targets.py) ``build`` runs the same ``qdq_file``.
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
        if model is None:  # an ONNX source: what stays float is in the report's float_islands
            return []
        from edgezoo.export.targets.rules import onnxruntime_findings

        return onnxruntime_findings(model)

    def build(self, ctx: TargetContext, precision: str, path: Path) -> dict:
        import torch  # noqa: F401

        from edgezoo.export.onnx import export_onnx

        if precision == "fp32":
            if ctx.model is None:
                raise RuntimeError("the fp32 ONNX of an ONNX source is the pipeline's own file")
            export_onnx(ctx.model, path, ctx.input_size, dynamic_batch=True)
            return {"method": "torch.onnx.export (TorchScript), onnxsim"}
        return {"method": method_line(qdq_file(ctx, "onnxruntime", path))}

    def runner(self, path: Path, threads: int | None, precision: str):
        from edgezoo.runtimes.onnxruntime import OrtRunner

        return OrtRunner(path, threads=threads)


def int8_source(ctx: TargetContext, backend: str, path: Path, apply=None, export=None) -> list[str]:
    """Write the fp32 file the int8 file of ``backend`` is quantized from: the model in that backend's
    activation forms (int8_forms), from the PyTorch model when there is one, else from the fp32 ONNX graph.
    ``apply``: the pipeline's checked pass runner; ``export(model, path, passes)``: how a PyTorch model is
    written (the pipeline stamps its metadata). Returns the names of the passes applied."""
    from edgezoo.export import int8_forms

    if ctx.model is not None:
        from edgezoo.export.onnx import export_onnx

        forms = int8_forms.choose(ctx.model, backend)
        model, names = int8_forms.source_model(ctx.model, forms, apply)
        if export is not None:
            export(model, path, names)
        else:
            export_onnx(model, path, ctx.input_size, dynamic_batch=True)
        return names + _graph_forms(path, backend, apply)
    import onnx

    from edgezoo.fileio import atomic_write_bytes

    fp32 = ctx.files.get("onnxruntime:fp32")
    if fp32 is None:
        raise RuntimeError("the int8 source of an ONNX model is read off the verified fp32 ONNX, which was not written")
    graph = onnx.load(str(fp32))
    out, names = int8_forms.source_graph(graph, int8_forms.choose(graph, backend), apply)
    atomic_write_bytes(path, out.SerializeToString())
    return names


def _graph_forms(path: Path, backend: str, apply=None) -> list[str]:
    """What the module passes could not see, by op type on the exported graph: a PyTorch model whose h-swish or
    h-sigmoid is not an nn.Hardswish / nn.Hardsigmoid module (a .pt2 program, a functional call) still exports
    HardSwish / HardSigmoid nodes. The file is rewritten only when there are any (zoo models: never)."""
    import onnx

    from edgezoo.export import int8_forms
    from edgezoo.fileio import atomic_write_bytes

    graph = onnx.load(str(path))
    if not any(n.op_type in ("HardSwish", "HardSigmoid") for n in graph.graph.node):
        return []
    forms = int8_forms.choose(graph, backend)
    if forms.hardswish == "keep" and backend not in ("onnxruntime", "generic"):
        return []  # the backend takes both ops as they are (TensorRT, OpenVINO)
    out, names = int8_forms.source_graph(graph, forms, apply)
    atomic_write_bytes(path, out.SerializeToString())
    return [f"graph {n}" for n in names]


def forms_of(ctx: TargetContext, backend: str):
    """The int8 forms of ``backend`` for the model: read off the PyTorch modules, or off the fp32 ONNX graph
    by op type when there is no PyTorch model or its modules hide an h-swish the graph has."""
    import onnx

    from edgezoo.export import int8_forms

    graph = None
    if "onnxruntime:fp32" in ctx.files:
        graph = onnx.load(str(ctx.files["onnxruntime:fp32"]), load_external_data=False)
    if ctx.model is None:
        return int8_forms.choose(graph, backend)
    forms = int8_forms.choose(ctx.model, backend)
    if graph is not None and not int8_forms.has_hardswish(ctx.model) and int8_forms.has_hardswish(graph):
        return int8_forms.choose(graph, backend)
    return forms


def qdq_file(ctx: TargetContext, backend: str, path: Path, *, apply=None, export=None, method: str = "minmax",
             keep_source: Path | None = None) -> dict:
    """The QDQ file of the model in ``backend``'s activation forms with the shared recipe: the one int8 path
    (the bundle's model.int8.onnx, OpenVINO's int8 source, benchmarks). Its int8 source is written beside
    ``path`` (or at ``keep_source``, which the caller removes) and removed again; returns write_int8's report
    with the source's passes under ``source_passes``."""
    src = keep_source or path.with_name(f".{backend}-int8-source.fp32.onnx")
    try:
        names = int8_source(ctx, backend, src, apply=apply, export=export)
        q = write_int8(src, path, ctx.calibration, forms_of(ctx, backend), ctx.int8_recipe(),
                       per_channel=ctx.per_channel, method=method)
        q["source_passes"] = names
        return q
    except BaseException:
        path.unlink(missing_ok=True)
        if keep_source is not None:
            keep_source.unlink(missing_ok=True)
        raise
    finally:
        if keep_source is None:
            src.unlink(missing_ok=True)


def write_int8(src, out, calibration, forms, recipe, per_channel: bool = True, method: str = "minmax") -> dict:
    """The QDQ int8 file from ``src`` (the fp32 model in ``forms``' activation forms): the forms' float layers
    and the recipe's float head excluded, the recipe's bias correction and weight range applied."""
    import dataclasses

    import onnx

    from edgezoo.export.int8_recipe import float_nodes
    from edgezoo.export.quantize import quantize_int8

    exclude, head = float_nodes(onnx.load(str(src), load_external_data=False).graph, recipe, forms)
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
