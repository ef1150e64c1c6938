"""`edgezoo export NAME`: model -> verified passes -> fp32 ONNX -> int8 / fp16 / TensorRT -> one bundle.

Each step is checked numerically and reported; the bundle (ONNX files, report.json, report.md) is written to
a temporary folder beside the target and swapped in whole, so a failed run leaves no partial bundle and an
earlier bundle intact; a Triton repository entry (``triton``) is swapped in together with it. Everything that
can be checked cheaply (edgezoo.export.options.validate: names, ranges, input files, every output location)
is checked before any slow step.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgezoo.errors import InputError, VerificationError
from edgezoo.export import int8_forms
from edgezoo.export.options import DEFAULT_OUT_ROOT, ExportOptions, default_out_dir, validate  # noqa: F401

Progress = Callable[[str], None]  # called with the name of each step as it starts


@dataclass
class ExportOutcome:
    out_dir: Path
    report: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def run_export(options: ExportOptions, progress: Progress | None = None) -> ExportOutcome:
    import torch

    from edgezoo import __version__
    from edgezoo.export import passes as P
    from edgezoo.export.calibration import load_image_folder, synthetic_images
    from edgezoo.export.onnx import export_onnx
    from edgezoo.fileio import atomic_directories, atomic_write_text, write_json
    from edgezoo.models.registry import create_model
    from edgezoo.onnx_meta import ModelMetadata

    step = progress or (lambda s: None)
    t_start = time.perf_counter()
    notes: list[str] = []

    # --- cheap checks first (edgezoo.export.options): names, ranges, inputs, every output location ----------
    checked = validate(options)
    options, spec, size, out_dir = checked.options, checked.spec, checked.size, checked.out_dir
    notes.extend(checked.warnings)
    # the checkpoint's preset: how its images were prepared, its class names (edgezoo.models.presets)
    from edgezoo.models.presets import default_preset, preset_for_keys, with_classes

    if options.weights is not None:
        from edgezoo.models.weights import read_state_dict

        preset = preset_for_keys(spec, read_state_dict(options.weights).keys())
    else:
        preset = default_preset(spec)
    num_classes = options.num_classes or spec.num_classes
    preset = with_classes(preset, num_classes)
    from edgezoo.export.targets import get_target

    for t in options.targets:
        get_target(t)  # an unknown target name fails before any work
    calibration = None
    calib_source = None
    if options.int8 or options.lite:
        step("calibration images")
        if options.calib is not None:
            calibration = load_image_folder(options.calib, size, preset.mean, preset.std,
                                            count=options.calib_count + options.eval_count, seed=options.seed,
                                            crop_pct=preset.crop_pct, interpolation=preset.interpolation)
            calib_source = f"{min(len(calibration), options.calib_count)} images from {options.calib}"
        else:
            calibration = synthetic_images(options.calib_count, size, seed=options.seed)
            calib_source = f"{len(calibration)} synthetic images (no --calib folder)"
            notes.append("int8 was calibrated on synthetic images: accuracy needs real ones; pass --calib DIR "
                         "with a few hundred images like those the model will see")

    # --- model and passes --------------------------------------------------------------------------------
    step("build model")
    torch.manual_seed(options.seed)
    model_kwargs = {"num_classes": options.num_classes} if options.num_classes else {}
    model = create_model(spec.name, weights=str(options.weights) if options.weights else None, **model_kwargs)
    labels = list(preset.labels) if preset.labels else None
    lite_report = None
    if options.lite:
        from edgezoo.export.lite import apply_lite

        step("lite rewrites and distillation")
        model, lite_report = apply_lite(model, spec, options, calibration)
    model.eval()

    pass_reports: list[dict] = []

    def apply(fn, current, *args, label: str | None = None, **kwargs):
        step(f"pass {label or fn.__name__}")
        result = fn(current, *args, **kwargs)
        if label:
            result.name = label
        check = P.check_pass(current, result, size)
        pass_reports.append({"name": result.name, "changes": result.changes, "n_changes": len(result.changes),
                             **{k: v for k, v in check.to_dict().items() if k != "pass"}})
        if not check.ok:
            raise VerificationError(f"pass {result.name} changed the outputs by {check.max_abs_diff:.3g} "
                                    f"(tolerance {check.tolerance:g})")
        return result.model

    folded = apply(P.fold_batchnorm, model)
    folded = apply(P.rewrite_channel_shuffle, folded)
    folded = apply(P.drop_noop_slices, folded)
    fp32_model = apply(P.rewrite_activations, folded, relu6="clip")

    files: dict[str, Path] = {}
    report: dict[str, Any] = {
        "model": spec.name, "family": spec.family, "edgezoo": __version__,
        "input_size": list(size), "opset": options.opset,
        "batch": "dynamic" if options.batch is None else options.batch,
        "weights": str(options.weights) if options.weights else "random init (no --weights)",
        "preset": {"name": preset.name, "source": preset.source, "mean": list(preset.mean), "std": list(preset.std),
                   "crop_pct": preset.crop_pct, "interpolation": preset.interpolation},
        "passes": pass_reports, "files": {},
    }
    if lite_report is not None:
        report["lite"] = lite_report

    def meta(precision: str, passes: list[str], extra: dict | None = None) -> ModelMetadata:
        return ModelMetadata(model=spec.name, input_size=tuple(size), mean=tuple(preset.mean), std=tuple(preset.std),
                             num_classes=num_classes, labels=labels, crop_pct=preset.crop_pct,
                             interpolation=preset.interpolation, preset=preset.name,
                             weights=preset.source if options.weights else "random init",
                             precision=precision, passes=passes, version=__version__, extra=extra or {})

    dynamic = options.batch is None
    stack = contextlib.ExitStack()
    # the bundle and the Triton entry are written to temporary folders and swapped in together at the end,
    # so a failure anywhere (Triton included) leaves both as they were
    targets = [out_dir] + ([checked.triton_entry] if checked.triton_entry is not None else [])
    try:
        tmp, *triton_tmp = stack.enter_context(atomic_directories(*targets))
    except OSError as e:  # e.g. a read-only file system, which os.access does not see for root
        raise InputError(f"cannot write bundle {out_dir}: {e.strerror or e}", "choose another folder with -o DIR") from None
    with stack:
        # --- fp32 ---------------------------------------------------------------------------------------
        step("export fp32 ONNX")
        fp32_path = tmp / "model.fp32.onnx"
        fp32_passes = [p["name"] for p in pass_reports]
        res = export_onnx(fp32_model, fp32_path, size, meta("fp32", fp32_passes + (["lite"] if lite_report else [])),
                          opset=options.opset, dynamic_batch=dynamic, batch=options.batch or 1)
        files["fp32"] = fp32_path
        report["export"] = {"simplified": res.simplified, "dynamic_batch": dynamic,
                            "checks": [{"batch": ck.batch, "max_abs_diff": ck.max_abs_diff, "tolerance": ck.tolerance}
                                       for ck in res.checks]}

        eval_inputs = _eval_inputs(calibration, options, size)

        # --- int8 ---------------------------------------------------------------------------------------
        if options.int8:
            from edgezoo.export.quantize import (compare_models, float_islands, island_summary,
                                                 optimized_graph, quantize_int8)

            forms = int8_forms.choose(fp32_model, options.backend)
            step("int8 activation forms")
            q_model = folded
            # the int8 source re-does the activation rewrite in its own forms: keep the passes before it
            q_passes = [p for p in fp32_passes if not p.startswith("rewrite_activations")]
            q_model = apply(P.fold_hardsigmoid_gates, q_model)
            q_passes.append("fold_hardsigmoid_gates")
            if forms.defer_scale:
                q_model = apply(P.defer_hardswish_scale, q_model)
                q_passes.append("defer_hardswish_scale")
            label = f"rewrite_activations(hardswish={forms.hardswish})"
            q_model = apply(P.rewrite_activations, q_model, relu6="clip", hardswish=forms.hardswish, label=label)
            q_passes.append(label)
            src_path = tmp / ".int8-source.fp32.onnx"
            export_onnx(q_model, src_path, size, meta("fp32", q_passes), opset=options.opset,
                        dynamic_batch=dynamic, batch=options.batch or 1)
            step("quantize int8")
            calib_set = calibration[: options.calib_count]
            exclude = forms.exclude_nodes(src_path)
            int8_path = tmp / "model.int8.onnx"
            q_report = quantize_int8(src_path, int8_path, calib_set, per_channel=not options.per_tensor,
                                     method=options.method, exclude_nodes=exclude)
            _restamp(int8_path, meta("int8", q_passes + ["quantize_int8"],
                                     {"int8_forms": forms.describe(), "calibration": calib_source}))
            files["int8"] = int8_path
            step("int8 agreement with fp32")
            agreement = compare_models(fp32_path, int8_path, eval_inputs[0], layer_ref_path=src_path)
            src_path.unlink()
            if lite_report is not None:
                from edgezoo.export.lite import add_int8_agreement

                add_int8_agreement(lite_report, int8_path)
            islands = float_islands(optimized_graph(int8_path))
            report["int8"] = {
                **q_report, "size_bytes": int8_path.stat().st_size,
                "calibration": calib_source, "forms": forms.describe(),
                "agreement": {**agreement, "inputs": eval_inputs[1]},
                "float_islands": {"count": len(islands), "by_op": island_summary(islands),
                                  "intended": forms.intended_float},
            }
            if islands and not forms.expects_islands:
                notes.append(f"int8 graph still runs {len(islands)} ops in float between DQ and Q: "
                             f"{island_summary(islands)}")

        # --- fp16 ---------------------------------------------------------------------------------------
        if options.fp16:
            from edgezoo.export.quantize import compare_models, to_fp16

            step("fp16")
            fp16_path = tmp / "model.fp16.onnx"
            h_report = to_fp16(fp32_path, fp16_path, keep_io_types=not options.fp16_io)
            _restamp(fp16_path, meta("fp16", fp32_passes + ["to_fp16"]))
            files["fp16"] = fp16_path
            report["fp16"] = {**h_report, "size_bytes": fp16_path.stat().st_size}
            if not options.fp16_io:
                report["fp16"]["agreement"] = {**compare_models(fp32_path, fp16_path, eval_inputs[0], worst_layers=0),
                                               "inputs": eval_inputs[1]}

        # --- targets ------------------------------------------------------------------------------------
        target_rows = _run_targets(options, spec, size, fp32_model, calibration, eval_inputs, tmp, files, step)
        report["targets"] = target_rows
        from edgezoo.export.targets import fastest_int8

        best = fastest_int8(target_rows)
        if best is not None:
            report["fastest_int8"] = {k: best.get(k) for k in ("target", "file", "latency_ms", "ratio_to_fastest_fp32")}
        for r in target_rows:
            if r.get("status") != "ok":
                notes.append(r["error"] if r["status"] == "missing" else f"target {r['target']} {r['precision']} "
                             f"failed: {r['error']}")

        # --- TensorRT -----------------------------------------------------------------------------------
        if options.tensorrt:
            from edgezoo.export.tensorrt import build_engine, plan_engine

            step("TensorRT engine")
            precision = "int8" if options.int8 else ("fp16" if options.fp16 else "fp32")
            src = files[precision]  # fp32 is always there, int8/fp16 when asked for
            plan = plan_engine(src, tmp / f"model.{precision}.engine", precision,
                               timing_cache=tmp / "timing.cache")
            report["tensorrt"] = build_engine(plan)
            files["engine"] = Path(plan.engine_path)

        report["files"] = {k: {"file": p.name, "size_bytes": p.stat().st_size} for k, p in files.items()}
        report["notes"] = notes
        report["seconds"] = round(time.perf_counter() - t_start, 1)
        step("write report")
        write_json(tmp / "report.json", report)
        atomic_write_text(tmp / "report.md", render_markdown(report))
        if triton_tmp:
            step("Triton model repository")
            _write_triton_entry(files.get("int8") or files["fp32"], triton_tmp[0], spec.name)

    files = {k: out_dir / p.name for k, p in files.items()}
    outcome = ExportOutcome(out_dir, report, files, notes)
    if checked.triton_entry is not None:
        outcome.files["triton"] = checked.triton_entry
    return outcome


def _run_targets(options, spec, size, fp32_model, calibration, eval_inputs, tmp, files, step) -> list[dict]:
    """Every asked target's files, verified against the PyTorch fp32 model on the evaluation images."""
    import torch

    from edgezoo.export.targets import TargetContext, bench_rows, run_targets

    with torch.no_grad():
        ref = torch.cat([fp32_model(torch.from_numpy(eval_inputs[0][i:i + 8]))
                         for i in range(0, len(eval_inputs[0]), 8)]).numpy()
    ctx = TargetContext(spec.name, tuple(size), fp32_model,
                        calibration[: options.calib_count] if calibration is not None else eval_inputs[0][:1],
                        eval_inputs[0], ref, tmp, per_channel=not options.per_tensor, threads=1, progress=step)
    for key in ("fp32", "int8"):
        if key in files:
            ctx.files[f"onnxruntime:{key}"] = files[key]
    precisions = ["fp32"] + (["bf16"] if options.bf16 else []) + (["int8"] if options.int8 else [])
    rows = run_targets(ctx, list(options.targets), precisions)
    for r in rows:  # the other targets' files belong to the bundle too
        if r.get("status") == "ok" and r["target"] != "onnxruntime" and r.get("same_file_as") is None:
            files[f"{r['target']}.{r['precision']}"] = tmp / r["file"]
            if r["file"].endswith(".xml"):
                files[f"{r['target']}.{r['precision']}.bin"] = (tmp / r["file"]).with_suffix(".bin")
    if options.bench:
        step("benchmark targets (interleaved, 1 thread)")
        bench_rows(ctx, rows)
    return rows


def _write_triton_entry(model_path: Path, entry_tmp: Path, name: str) -> None:
    """Triton's files for ``model_path`` into ``entry_tmp``, the temporary folder of REPOSITORY/<name>."""
    import os

    from edgezoo.serve.triton import write_triton_repository

    written = write_triton_repository(model_path, entry_tmp, name=name)  # entry_tmp/<name>/...
    for item in Path(written).iterdir():
        os.replace(item, entry_tmp / item.name)
    Path(written).rmdir()


def _eval_inputs(calibration: np.ndarray | None, options: ExportOptions, size) -> tuple[np.ndarray, str]:
    """Inputs for the agreement figures: held-out real images when the folder has enough, else fresh ones."""
    from edgezoo.export.calibration import synthetic_images

    if calibration is not None and options.calib is not None and len(calibration) > options.calib_count:
        held = calibration[options.calib_count:]
        return held, f"{len(held)} held-out images from {options.calib} (not used for calibration)"
    if calibration is not None and options.calib is not None:
        return calibration, f"the {len(calibration)} calibration images (the folder has no more to hold out)"
    n = min(options.eval_count, 16)
    return synthetic_images(n, size, seed=options.seed + 1), f"{n} synthetic images (seed {options.seed + 1})"


def _restamp(path: Path, meta) -> None:
    import onnx

    from edgezoo.fileio import atomic_write_bytes
    from edgezoo.onnx_meta import set_metadata

    model = onnx.load(str(path))
    set_metadata(model, meta)
    atomic_write_bytes(path, model.SerializeToString())


# ------------------------------------------------------------------------------------------------ report

def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def render_markdown(r: dict) -> str:
    lines = [f"# edgezoo export: {r['model']}", "",
             f"input {'x'.join(map(str, r['input_size']))}, batch {r['batch']}, opset {r['opset']}, "
             f"weights: {r['weights']}, edgezoo {r['edgezoo']}", ""]
    if r.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in r["notes"]] + [""]
    lines += ["## Passes (each checked against the model before it)", "",
              "| pass | changes | max abs diff | tolerance | ok |", "|---|---|---|---|---|"]
    for p in r["passes"]:
        tol = "inexact" if p["tolerance"] is None else f"{p['tolerance']:.1e}"
        lines.append(f"| {p['name']} | {p['n_changes']} | {p['max_abs_diff']:.2e} | {tol} | "
                     f"{'yes' if p['ok'] else 'NO'} |")
    exp = r.get("export", {})
    lines += ["", "## ONNX Runtime vs PyTorch", ""]
    lines += [f"- batch {c['batch']}: max abs diff {c['max_abs_diff']:.2e} (tolerance {c['tolerance']:.0e})"
              for c in exp.get("checks", [])]
    lines += ["", "## Files", "", "| file | size |", "|---|---|"]
    lines += [f"| {v['file']} | {_mb(v['size_bytes'])} |" for v in r["files"].values()]
    if "int8" in r:
        q = r["int8"]
        a = q["agreement"]
        lines += ["", "## int8", "",
                  f"QDQ, {q['activations']} activations / {q['weights']} weights, "
                  f"{'per-channel' if q['per_channel'] else 'per-tensor'}, {q['method']} calibration on "
                  f"{q['calibration']}.", "",
                  f"Activation forms: {q['forms']}", "",
                  f"Against fp32 on {a['inputs']}:", "",
                  f"- top-1 agreement {a['top1_agreement'] * 100:.1f}%",
                  f"- cosine similarity mean {a['cosine_mean']:.4f} (min {a['cosine_min']:.4f})",
                  f"- output SQNR {a['sqnr_db']:.1f} dB", ""]
        fi = q["float_islands"]
        lines.append(f"Ops onnxruntime runs in float between DQ and Q: {fi['count']} {fi['by_op'] or ''}"
                     + (f" (intended: {fi['intended']})" if fi["intended"] and fi["count"] else ""))
        if a.get("worst_layers"):
            lines += ["", "Ten worst layers by SQNR:", "", "| tensor | op | SQNR dB |", "|---|---|---|"]
            lines += [f"| `{w['tensor']}` | {w['op_type']} | {w['sqnr_db']:.1f} |" for w in a["worst_layers"]]
    if "fp16" in r and "agreement" in r["fp16"]:
        a = r["fp16"]["agreement"]
        lines += ["", "## fp16", "", f"top-1 agreement {a['top1_agreement'] * 100:.1f}%, cosine "
                  f"{a['cosine_mean']:.5f}, SQNR {a['sqnr_db']:.1f} dB on {a['inputs']}"]
    from edgezoo.export.report import targets_markdown

    lines += targets_markdown(r.get("targets", []))
    if "tensorrt" in r:
        lines += ["", "## TensorRT", "", f"{r['tensorrt']}"]
    if "lite" in r:
        lines += ["", "## lite", "", "```", _json(r["lite"]), "```"]
    lines += ["", f"Took {r.get('seconds', '?')} s.", ""]
    return "\n".join(lines)


def _json(o) -> str:
    import json

    from edgezoo.fileio import _jsonable

    return json.dumps(o, indent=2, default=_jsonable)
