"""`edgezoo export SOURCE`: model -> verified passes -> fp32 ONNX -> int8 / fp16 / targets -> one bundle.

The source is an edgezoo.sources.ModelSource (a zoo model, the user's PyTorch module, or an ONNX graph); the
pipeline never reads the registry itself. A PyTorch source goes through the module passes
(edgezoo.export.passes), an ONNX source through the same passes on the graph (edgezoo.export.graph_passes).

Each step is checked numerically and reported; the bundle (ONNX files, report.json, report.md) is written to
a temporary folder beside the target and swapped in whole, so a failed run leaves no partial bundle and an
earlier bundle intact; a Triton repository entry (``triton``) is swapped in together with it. Everything that
can be checked cheaply (edgezoo.export.options.validate: names, ranges, input files, every output location)
is checked before any slow step.

The export is two tuples of ``Step``s over one ``ExportRun`` state: ``PREPARE`` (preset, calibration images,
model, passes: nothing written) and ``BUNDLE`` (fp32 ONNX, int8, fp16, the targets of
edgezoo.export.targets, TensorRT among them, the report of edgezoo.export.report, Triton), each step enabled by the
options it serves. A new precision or output is one step function and one line in a tuple; a new runtime
is a target module.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from edgezoo.errors import InputError, VerificationError
from edgezoo.export import int8_forms
from edgezoo.export.options import DEFAULT_OUT_ROOT, CheckedExport, ExportOptions, default_out_dir, int8_opset, validate  # noqa: F401

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    from torch import nn

    from edgezoo.export.holdout import CalibrationSplit
    from edgezoo.export.int8_recipe import Int8Recipe
    from edgezoo.export.labelled import LabelledSet
    from edgezoo.export.targets import TargetContext
    from edgezoo.models.presets import Preset
    from edgezoo.sources import ModelSource

Progress = Callable[[str], None]  # called with the name of each step as it starts


@dataclass
class ExportOutcome:
    out_dir: Path
    report: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class ExportRun:
    """What the steps share: the checked options, the model at each stage, the files and the report.

    A PyTorch source goes through ``model`` -> ``folded`` -> ``fp32_model``; an ONNX source through
    ``source.graph`` -> ``fp32_graph`` (the graph passes of edgezoo.export.graph_passes)."""

    options: ExportOptions
    checked: CheckedExport
    step: Progress
    preset: "Preset | None" = None
    num_classes: int = 0
    calibration: np.ndarray | None = None
    calib_source: str | None = None
    eval_inputs: tuple[np.ndarray, str] | None = None
    split: "CalibrationSplit | None" = None  # a --calib folder split into calibration and held-out images
    labelled: "LabelledSet | None" = None  # the --eval images
    model: "nn.Module | None" = None  # as built (and lite-rewritten)
    folded: "nn.Module | None" = None  # after FUNCTION_PASSES: the source of every precision
    fp32_model: "nn.Module | None" = None  # after FP32_PASSES
    fp32_graph: "onnx.ModelProto | None" = None  # an ONNX source after the graph passes
    recipe: "Int8Recipe | None" = None  # shared by every target's int8
    context: "TargetContext | None" = None  # what the targets build from, made once
    last_check: tuple | None = None  # (model, its outputs on the pass checks' batch): the last pass checked
    tmp: Path | None = None  # the bundle's temporary folder
    triton_tmp: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    passes: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    t_start: float = field(default_factory=time.perf_counter)

    @property
    def size(self) -> tuple[int, int, int]:
        return self.checked.size

    @property
    def source(self) -> "ModelSource":
        return self.checked.source

    @property
    def spec(self):
        """The zoo entry (zoo sources only; None otherwise)."""
        return self.checked.source.spec

    def apply(self, fn, current, *args, label: str | None = None, **kwargs):
        """Run pass ``fn`` on ``current``, check it against ``current`` and record it; returns the new model.
        A graph (onnx.ModelProto) goes to ``apply_graph``."""
        import onnx

        if isinstance(current, onnx.ModelProto):
            return self.apply_graph(fn, current, *args, **kwargs)
        from edgezoo.export import passes as P

        self.step(f"pass {label or fn.__name__}")
        result = fn(current, *args, **kwargs)
        if label:
            result.name = label
        last = self.last_check  # passes run in a chain: the last check's after(x) is this before(x)
        check = P.check_pass(current, result, self.size, batch=self.options.batch or 2,
                             before_outputs=last[1] if last is not None and last[0] is current else None)
        self.last_check = (result.model, check.outputs)
        self.passes.append({"name": result.name, "changes": result.changes, "n_changes": len(result.changes),
                            **{k: v for k, v in check.to_dict().items() if k != "pass"}})
        if not check.ok:
            raise VerificationError(f"pass {result.name} changed the outputs by {check.max_abs_diff:.3g} "
                                    f"(tolerance {check.tolerance:g})")
        return result.model

    def apply_graph(self, fn, current, *args, **kwargs):
        """The graph twin of ``apply``: run graph pass ``fn``, check it through onnxruntime, record it."""
        from edgezoo.export.graph_passes import check_graph_pass

        result = fn(current, *args, **kwargs)
        self.step(f"pass {result.name}")
        check = check_graph_pass(current, result, self.size)
        self.passes.append({"name": result.name, "changes": result.changes, "n_changes": len(result.changes),
                            **{k: v for k, v in check.to_dict().items() if k != "pass"}})
        if not check.ok:
            raise VerificationError(f"pass {result.name} changed the outputs by {check.max_abs_diff:.3g} "
                                    f"(tolerance {check.tolerance:g})")
        return result.model

    def meta(self, precision: str, passes: list[str], extra: dict | None = None):
        from edgezoo import __version__
        from edgezoo.onnx_meta import ModelMetadata

        p, o, src = self.preset, self.options, self.source
        weights = (p.source if o.weights else "random init") if src.kind == "zoo" else (p.source or src.weights_described)
        return ModelMetadata(model=src.name, input_size=tuple(self.size), mean=tuple(p.mean), std=tuple(p.std),
                             num_classes=self.num_classes or None, labels=list(p.labels) if p.labels else None,
                             crop_pct=p.crop_pct, interpolation=p.interpolation, preset=p.name,
                             weights=weights,
                             precision=precision, passes=passes, version=__version__, extra=extra or {})

    def export(self, model, path: Path, precision: str, passes: list[str], extra: dict | None = None):
        from edgezoo.export.onnx import export_onnx

        o = self.options
        return export_onnx(model, path, self.size, self.meta(precision, passes, extra), opset=o.opset,
                           dynamic_batch=o.batch is None, batch=o.batch or 1,
                           output_names=[out.name for out in self.source.outputs])


@dataclass(frozen=True)
class Step:
    """One stage of the export: ``enabled(options)`` says whether it runs, ``run(state)`` does it; its name
    goes to the progress callback unless the step names its own sub-steps (``announce=False``)."""

    name: str
    enabled: Callable[[ExportOptions], bool]
    run: Callable[[ExportRun], None]
    announce: bool = True


def _always(o: ExportOptions) -> bool:
    return True


def _needs_images(o: ExportOptions) -> bool:
    return o.int8 or o.lite


# Function-preserving passes every precision starts from, in order; then each precision's own activation forms.
def _function_passes():
    from edgezoo.export import passes as P

    return (P.fold_batchnorm, P.rewrite_channel_shuffle, P.drop_noop_slices)


def _preset(run: ExportRun) -> None:
    """The source's preprocessing (checkpoint preset, file metadata or options) and class count."""
    from edgezoo.export.targets import get_target

    run.preset = run.source.preset
    run.num_classes = run.source.num_classes
    for t in run.options.targets:
        get_target(t)  # an unknown target name fails before any work


def _calibration(run: ExportRun) -> None:
    from dataclasses import replace

    from edgezoo.export.calibration import synthetic_images
    from edgezoo.export.holdout import split_folder

    o, p = run.options, run.preset
    if o.calib is not None:
        run.split = split_folder(o.calib, o.calib_count, o.eval_count, o.seed, run.size, p.mean, p.std,
                                 p.crop_pct, p.interpolation)
        run.calibration = run.split.images
        run.calib_source = run.split.calib_source
        if run.split.note:
            run.notes.append(run.split.note)
        run.options = replace(o, calib_count=run.split.n_calib)  # every later step calibrates on these
    else:
        run.calibration = synthetic_images(o.calib_count, run.size, seed=o.seed)
        run.calib_source = f"{len(run.calibration)} synthetic images (no --calib folder)"
        run.notes.append("int8 was calibrated on synthetic images: accuracy needs real ones; pass --calib DIR "
                         "with a few hundred images like those the model will see")


def _labelled(run: ExportRun) -> None:
    from edgezoo.export.labelled import load_labelled

    p = run.preset
    run.labelled = load_labelled(run.options.eval, run.size, p.mean, p.std, run.num_classes, p.labels,
                                 p.crop_pct, p.interpolation)


def _accuracy(run: ExportRun) -> None:
    from edgezoo.export.accuracy import evaluate_bundle

    run.report["eval"] = evaluate_bundle(run.tmp, run.report.get("targets", []), run.files, run.labelled)
    run.notes += [f"--eval: skipped {p} (cannot be decoded: {why})" for p, why in run.labelled.skipped]


def _budget(run: ExportRun) -> None:
    from edgezoo.export.budget import meet_budget

    run.report["budget"] = meet_budget(run)


def _build_model(run: ExportRun) -> None:
    o, src = run.options, run.source
    if src.is_onnx:
        return
    if src.kind == "zoo":
        from edgezoo.sources import build_zoo_module

        run.model = build_zoo_module(src, seed=o.seed)
    else:
        run.model = src.module
    if o.lite:
        from edgezoo.export.lite import apply_lite

        run.step("lite rewrites and distillation")
        run.model, run.report["lite"] = apply_lite(run.model, src, o, run.calibration)
    run.model.eval()


def _passes(run: ExportRun) -> None:
    if run.source.is_onnx:
        from edgezoo.export import graph_passes as G

        inp = run.source.input
        fix = tuple(run.size[1:]) if {"height", "width"} & set(inp.dynamic) else None
        g = run.source.graph
        if run.source.layout == "NHWC":
            g = run.apply_graph(G.channels_first_input, g)
        need = int8_opset(run.options)
        if need is not None and G.opset(g) < need:
            run.notes.append(f"{run.source.name} is opset {G.opset(g)}; int8 needs {need}, so its graph was "
                             f"converted (onnx.version_converter) and checked through onnxruntime")
            g = run.apply_graph(G.upgrade_opset, g, need)
        g = run.apply_graph(G.simplify, g, fix)
        if fix is not None:
            run.notes.append(f"{run.source.name}'s input '{inp.name}' takes any height and width; the bundle's "
                             f"files are fixed at {fix[0]}x{fix[1]} (--input-size), the batch stays dynamic")
        run.fp32_graph = run.apply_graph(G.fold_batchnorm, g)
        return
    from edgezoo.export import passes as P

    m = run.model
    for fn in _function_passes():
        m = run.apply(fn, m)
    run.folded = m
    run.fp32_model = run.apply(P.rewrite_activations, m, relu6="clip")


def _fp32(run: ExportRun) -> None:
    path = run.tmp / "model.fp32.onnx"
    names = [p["name"] for p in run.passes] + (["lite"] if "lite" in run.report else [])
    if run.source.is_onnx:
        from edgezoo.export.onnx import write_graph

        res = write_graph(run.fp32_graph, run.source.graph, path, run.size, run.meta("fp32", names),
                          original_layout=run.source.layout)
    else:
        res = run.export(run.fp32_model, path, "fp32", names)
    run.files["fp32"] = path
    run.report["export"] = {"simplified": res.simplified, "dynamic_batch": run.options.batch is None,
                            "checks": [{"batch": c.batch, "max_abs_diff": c.max_abs_diff, "tolerance": c.tolerance}
                                       for c in res.checks]}
    run.eval_inputs = _eval_inputs(run.calibration, run.options, run.size, run.split)
    if run.split is not None:
        run.report["agreement_images"] = {"described": run.eval_inputs[1], **run.split.to_dict()}


def _int8(run: ExportRun) -> None:
    """The bundle's int8 file, which is the onnxruntime target's: built once through its ``qdq_file`` (the
    model in its int8 activation forms, each pass checked here, the shared int8 recipe applied), then
    registered so that the targets step verifies it without building it again."""
    from edgezoo.export.agreement import compare_models
    from edgezoo.export.int8_recipe import recipe_for
    from edgezoo.export.qdq_debug import float_islands, island_summary, optimized_graph
    from edgezoo.export.targets.onnxruntime import forms_of, qdq_file

    o = run.options
    ctx = _context(run)
    forms = forms_of(ctx, o.backend)
    run.step("int8 activation forms")
    base = [p["name"] for p in run.passes if not p["name"].startswith("rewrite_activations")]
    # 7-bit weights only for the CPU runtimes whose u8s8 kernels saturate, and only on such a CPU (the one that
    # verifies the file); a file for TensorRT or an unknown (generic) runtime keeps 8-bit weights
    run.recipe = ctx.recipe = recipe_for(run.files["fp32"], reduce_range=None if o.backend in ("onnxruntime", "openvino")
                                         else False)
    src = run.tmp / ".int8-source.fp32.onnx"
    path = run.tmp / "model.int8.onnx"

    def export(model, target: Path, names: list[str]) -> None:
        run.export(model, target, "fp32", base + names)
        run.step("quantize int8")  # the int8 source is written after its passes: calibration comes next

    apply = run.apply  # module passes, or graph passes (by op type) on a graph
    q = qdq_file(ctx, o.backend, path, apply=apply, export=export, method=o.method, keep_source=src)
    source_passes = base + q.pop("source_passes")
    _restamp(path, run.meta("int8", source_passes + ["quantize_int8"],
                            {"int8_forms": forms.describe(), "int8_recipe": q["recipe"]["described"],
                             "calibration": run.calib_source}))
    run.files["int8"] = path
    ctx.files["onnxruntime:int8"] = path
    run.step("int8 agreement with fp32")
    inputs, described = run.eval_inputs
    agreement = compare_models(run.files["fp32"], path, inputs, layer_ref_path=src)
    src.unlink()
    if "lite" in run.report:
        from edgezoo.export.lite import add_int8_agreement

        add_int8_agreement(run.report["lite"], path)
    islands = float_islands(optimized_graph(path))
    run.report["int8"] = {
        **q, "size_bytes": path.stat().st_size, "calibration": run.calib_source, "forms": forms.describe(),
        "agreement": {**agreement, "inputs": described},
        "float_islands": {"count": len(islands), "by_op": island_summary(islands), "intended": forms.intended_float},
    }
    if islands and not forms.expects_islands:
        run.notes.append(f"int8 graph still runs {len(islands)} ops in float between DQ and Q: "
                         f"{island_summary(islands)}")


def _fp16(run: ExportRun) -> None:
    from edgezoo.export.agreement import compare_models
    from edgezoo.export.quantize import to_fp16

    path = run.tmp / "model.fp16.onnx"
    h = to_fp16(run.files["fp32"], path, keep_io_types=not run.options.fp16_io)
    _restamp(path, run.meta("fp16", [p["name"] for p in run.passes] + ["to_fp16"]))
    run.files["fp16"] = path
    run.report["fp16"] = {**h, "size_bytes": path.stat().st_size}
    if not run.options.fp16_io:
        inputs, described = run.eval_inputs
        run.report["fp16"]["agreement"] = {**compare_models(run.files["fp32"], path, inputs, worst_layers=0),
                                           "inputs": described}


def _context(run: ExportRun) -> "TargetContext":
    """What every target builds from, made once: the fp32 model (PyTorch, or None for an ONNX source), its
    verified fp32 ONNX, the calibration and evaluation images and the fp32 outputs on them."""
    if run.context is not None:
        return run.context
    from edgezoo.export.targets import TargetContext

    o = run.options
    inputs = run.eval_inputs[0]
    if run.source.is_onnx:
        from edgezoo.export.agreement import run_model

        refs = run_model(run.files["fp32"], inputs)
    else:
        import torch

        from edgezoo.sources import output_list

        step = o.batch or 8  # a model fixed at a batch (a .pt2 exported at batch 1) runs no other
        chunks = []  # per chunk, every output (the padding's rows dropped)
        with torch.no_grad():
            for i in range(0, len(inputs), step):
                part = inputs[i:i + step]
                outs = output_list(run.fp32_model(torch.from_numpy(_pad(part, step))))
                chunks.append([t[:len(part)] for t in outs])
        refs = [torch.cat(per_output).numpy() for per_output in zip(*chunks)]
    names = [out.name for out in run.source.outputs]
    run.context = TargetContext(run.source.name, tuple(run.size), run.fp32_model,
                                run.calibration[: o.calib_count] if run.calibration is not None else inputs[:1],
                                inputs, refs, run.tmp, per_channel=not o.per_tensor, threads=1, progress=run.step,
                                recipe=run.recipe, output_names=names if len(names) == len(refs) else None)
    run.context.files["onnxruntime:fp32"] = run.files["fp32"]
    return run.context


def _pad(x: np.ndarray, rows: int) -> np.ndarray:
    from edgezoo.export.agreement import pad_rows

    return pad_rows(x, rows)


def _targets(run: ExportRun) -> None:
    """Every asked target's files, verified against the fp32 model on the evaluation images."""
    from edgezoo.export.targets import bench_rows, fastest_int8, fastest_verified, get_target, run_targets
    from edgezoo.runtimes import model_files

    o = run.options
    ctx = _context(run)
    ctx.recipe = ctx.recipe or run.recipe
    precisions = (["fp32"] + (["bf16"] if o.bf16 else []) + (["fp16"] if o.fp16 else [])
                  + (["int8"] if o.int8 else []))
    names, skipped = list(o.targets), []
    if ctx.model is None:  # ExecuTorch and LiteRT convert a PyTorch program; the other targets still land
        skipped = [t for t in names if getattr(get_target(t), "needs_torch", False)]
        names = [t for t in names if t not in skipped]
    rows = run_targets(ctx, names, precisions)
    rows += [{"target": t, "precision": "-", "status": "skipped",
              "error": f"target {t} needs a PyTorch model; {run.source.name} is an ONNX graph (give the PyTorch "
                       "model as FILE.pt2, package.module:attr or an nn.Module for it)"} for t in skipped]
    for r in rows:  # the other targets' files belong to the bundle too
        if r.get("status") == "ok" and r["target"] != "onnxruntime" and r.get("same_file_as") is None:
            run.files[f"{r['target']}.{r['precision']}"] = run.tmp / r["file"]
            for side in model_files(run.tmp / r["file"])[1:]:  # OpenVINO's .bin beside the .xml, ncnn's beside the .param
                run.files[f"{r['target']}.{r['precision']}{side.suffix}"] = side
    if o.bench:
        run.step("benchmark targets (interleaved, 1 thread)")
        bench_rows(ctx, rows)
    run.report["targets"] = rows
    best = fastest_int8(rows)
    if best is not None:
        run.report["fastest_int8"] = {k: best.get(k) for k in ("target", "file", "latency_ms", "ratio_to_fastest_fp32")}
    best = fastest_verified(rows)
    if best is not None:
        run.report["fastest_verified"] = {k: best.get(k) for k in ("target", "precision", "file", "latency_ms",
                                                                   "ratio_to_fastest_fp32")}
    for r in rows:
        if r.get("status") != "ok":
            run.notes.append(r["error"] if r["status"] in ("missing", "skipped") else
                             f"target {r['target']} {r['precision']} failed: {r['error']}")


def _write_report(run: ExportRun) -> None:
    from edgezoo.export.report import render_markdown
    from edgezoo.fileio import atomic_write_text, write_json

    r = run.report
    r["files"] = {k: {"file": p.name, "size_bytes": p.stat().st_size} for k, p in run.files.items()}
    r["notes"] = run.notes
    r["seconds"] = round(time.perf_counter() - run.t_start, 1)
    write_json(run.tmp / "report.json", r)
    atomic_write_text(run.tmp / "report.md", render_markdown(r))


def _triton(run: ExportRun) -> None:
    _write_triton_entry(run.files.get("int8") or run.files["fp32"], run.triton_tmp, run.source.name)


# Before the bundle's temporary folder exists: everything that needs no output.
PREPARE: tuple[Step, ...] = (
    Step("preset", _always, _preset, announce=False),
    Step("calibration images", _needs_images, _calibration),
    Step("labelled images", lambda o: o.eval is not None, _labelled),
    Step("build model", _always, _build_model),
    Step("passes", _always, _passes, announce=False),  # each pass reports itself
)
# Inside it; swapped in whole at the end.
BUNDLE: tuple[Step, ...] = (
    Step("export fp32 ONNX", _always, _fp32),
    Step("int8", lambda o: o.int8, _int8, announce=False),
    Step("fp16", lambda o: o.fp16, _fp16),
    Step("targets", _always, _targets, announce=False),
    Step("accuracy budget", lambda o: o.max_drop is not None or o.min_sqnr is not None, _budget, announce=False),
    Step("accuracy on labelled images", lambda o: o.eval is not None, _accuracy),
    Step("write report", _always, _write_report),
    Step("Triton model repository", lambda o: o.triton is not None, _triton),
)


def run_export(options: ExportOptions | CheckedExport, progress: Progress | None = None) -> ExportOutcome:
    """Export as ``options`` asks; ``options`` may be what ``validate`` returned (the source resolved once)."""
    from edgezoo import __version__
    from edgezoo.export.options import earlier_export_files
    from edgezoo.fileio import atomic_directories

    # --- cheap checks first (edgezoo.export.options): names, ranges, inputs, every output location ----------
    checked = options if isinstance(options, CheckedExport) else validate(options)
    run = ExportRun(checked.options, checked, progress or (lambda s: None), notes=list(checked.warnings))
    o = run.options
    for s in PREPARE:
        _run_step(s, run)
    p, src = run.preset, run.source
    run.report = {
        "model": src.name, "family": src.family, "edgezoo": __version__,
        "source": {"kind": src.kind, **({"path": str(src.path)} if src.path else {}),
                   "input": src.input.name, "dynamic": list(src.input.dynamic),
                   "outputs": [{"name": out.name, "shape": list(out.shape)} for out in src.outputs],
                   "class_scores": src.classifier},
        "input_size": list(run.size), "opset": _graph_opset(run.fp32_graph) if src.is_onnx else o.opset,
        "batch": "dynamic" if o.batch is None else o.batch,
        "weights": src.weights_described,
        "preset": {"name": p.name, "source": p.source, "mean": list(p.mean), "std": list(p.std),
                   "crop_pct": p.crop_pct, "interpolation": p.interpolation},
        "passes": run.passes, "files": {}, **({"lite": run.report["lite"]} if "lite" in run.report else {}),
    }
    out_dir = checked.out_dir
    stack = contextlib.ExitStack()
    # the bundle and the Triton entry are written to temporary folders and swapped in together at the end,
    # so a failure anywhere (Triton included) leaves both as they were
    folders = [out_dir] + ([checked.triton_entry] if checked.triton_entry is not None else [])
    try:
        run.tmp, *triton_tmp = stack.enter_context(atomic_directories(*folders, owned=earlier_export_files))
    except OSError as e:  # e.g. a read-only file system, which os.access does not see for root
        raise InputError(f"cannot write bundle {out_dir}: {e.strerror or e}", "choose another folder with -o DIR") from None
    run.triton_tmp = triton_tmp[0] if triton_tmp else None
    with stack:
        for s in BUNDLE:
            _run_step(s, run)
    files = {k: out_dir / p.name for k, p in run.files.items()}
    outcome = ExportOutcome(out_dir, run.report, files, run.notes)
    if checked.triton_entry is not None:
        outcome.files["triton"] = checked.triton_entry
    return outcome


def _run_step(s: Step, run: ExportRun) -> None:
    if s.enabled(run.options):
        if s.announce:
            run.step(s.name)
        s.run(run)


def _write_triton_entry(model_path: Path, entry_tmp: Path, name: str) -> None:
    """Triton's files for ``model_path`` into ``entry_tmp``, the temporary folder of REPOSITORY/<name>."""
    import os

    from edgezoo.serve.triton import write_triton_repository

    written = write_triton_repository(model_path, entry_tmp, name=name)  # entry_tmp/<name>/...
    for item in Path(written).iterdir():
        os.replace(item, entry_tmp / item.name)
    Path(written).rmdir()


def _eval_inputs(calibration: np.ndarray | None, options: ExportOptions, size, split=None) -> tuple[np.ndarray, str]:
    """Inputs for the agreement figures: the images of the --calib folder held out from calibration
    (edgezoo.export.holdout), else synthetic ones from another seed than the calibration's."""
    from edgezoo.export.calibration import synthetic_images

    if split is not None:
        held = calibration[split.n_calib:]
        return (held if len(held) else calibration), split.held_description()
    n = min(options.eval_count, 16)
    return (synthetic_images(n, size, seed=options.seed + 1),
            f"{n} synthetic images (seed {options.seed + 1}; calibration used seed {options.seed})")


def _restamp(path: Path, meta) -> None:
    import onnx

    from edgezoo.fileio import atomic_write_bytes
    from edgezoo.onnx_meta import set_metadata

    model = onnx.load(str(path))
    set_metadata(model, meta)
    atomic_write_bytes(path, model.SerializeToString())


def _graph_opset(graph) -> int:
    from edgezoo.export.graph_passes import opset

    return opset(graph)
