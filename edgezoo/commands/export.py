"""`edgezoo export NAME [--int8] [--fp16] [--tensorrt] ...`: the conversion pipeline behind one command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgezoo.runtimes.inputs import input_size_option


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_command(
        name: str = typer.Argument(..., help="Model name or alias (see `edgezoo list`), e.g. mobilenetv3."),
        weights: Optional[Path] = typer.Option(None, "--weights", help="state_dict file (torchvision/timm keys work)."),
        int8: bool = typer.Option(False, "--int8", help="Also write a verified int8 (QDQ, U8S8) ONNX."),
        fp16: bool = typer.Option(False, "--fp16", help="Also write an fp16 ONNX (fp32 inputs/outputs)."),
        tensorrt: bool = typer.Option(False, "--tensorrt", help="Also build a TensorRT engine (NVIDIA GPU)."),
        calib: Optional[Path] = typer.Option(None, "--calib", help="Folder of real images for int8 calibration "
                                             "(int8/lite only)."),
        calib_count: Optional[int] = typer.Option(None, "--calib-count",
                                                  help="Calibration images to use (default 32; int8/lite only)."),
        per_tensor: bool = typer.Option(False, "--per-tensor", help="Per-tensor weights (default per-channel; int8 only)."),
        method: Optional[str] = typer.Option(None, "--method", help="Calibration: minmax (default), entropy or "
                                             "percentile (int8 only)."),
        opset: int = typer.Option(17, "--opset", help="ONNX opset, 7..20 (int8: 13..20, or 10..20 with --per-tensor)."),
        batch: Optional[int] = typer.Option(None, "--batch", help="Fix the batch size, 1..1024 (default: dynamic)."),
        input_size: Optional[str] = input_size_option("the spec's"),
        out: Optional[Path] = typer.Option(None, "-o", "--out", help="Bundle folder (default ./edgezoo-out/<model>)."),
        backend: Optional[str] = typer.Option(None, "--backend", help="Runtime the int8 file is for: onnxruntime "
                                              "(default), tensorrt, openvino or generic (int8 only)."),
        triton: Optional[Path] = typer.Option(None, "--triton", help="Also write a Triton model repository here."),
        lite: bool = typer.Option(False, "--lite", help="Quantization-friendly rewrites + distillation (changes the function)."),
        distill_images: Optional[Path] = typer.Option(None, "--distill-images", help="Unlabelled images for --lite."),
        distill_steps: Optional[int] = typer.Option(None, "--distill-steps", help="Distillation steps for --lite."),
        target: str = typer.Option("onnxruntime", "--target",
                                   help="Runtimes to write files for, comma-separated: onnxruntime, openvino, "
                                        "executorch, litert, tensorrt; 'all' = every one whose extra is installed. "
                                        "Each file is verified against PyTorch through its runtime."),
        bench: bool = typer.Option(False, "--bench", help="Time every target's file (p50, 1 thread, batch 1, interleaved)."),
        bf16: bool = typer.Option(False, "--bf16", help="Also bf16 for the targets that have it (OpenVINO)."),
        num_classes: Optional[int] = typer.Option(None, "--num-classes",
                                                  help="Classes of the checkpoint (default: the spec's, 1000)."),
        eval_dir: Optional[Path] = typer.Option(None, "--eval", help="Labelled images: top-1/top-5 of every file "
                                                "(class subfolders, a labels.csv, or ImageNet synset file names)."),
        max_drop: Optional[float] = typer.Option(None, "--max-drop", help="Top-1 points on --eval an int8 file "
                                                 "may lose; the most sensitive layers stay float until it fits."),
        min_sqnr: Optional[float] = typer.Option(None, "--min-sqnr", help="Output SQNR (dB) against fp32 an int8 "
                                                 "file must keep; the most sensitive layers stay float until it does."),
    ) -> None:
        """Export a zoo model to a verified bundle: fp32 ONNX, and int8 / fp16 / TensorRT as asked, with a report.

        Every option and output location (-o, --triton) is checked before any work. Options that change nothing in this run (e.g. --method without --int8) are named in a warning, and the export goes on. The bundle and the Triton entry are replaced only when everything succeeded.
        """
        from edgezoo.console import console, err_console
        from edgezoo.errors import require_torch

        require_torch()
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        from edgezoo.export.options import ExportOptions, validate
        from edgezoo.export.pipeline import run_export
        from edgezoo.export.targets import parse_targets

        options = ExportOptions(
            name=name, weights=weights, int8=int8, fp16=fp16, tensorrt=tensorrt, calib=calib,
            calib_count=calib_count, per_tensor=per_tensor, method=method, opset=opset, batch=batch,
            input_size=input_size, out=out, triton=triton, backend=backend, lite=lite,
            distill_images=distill_images, distill_steps=distill_steps, num_classes=num_classes,
            targets=tuple(parse_targets(target)), bench=bench, bf16=bf16, eval=eval_dir, max_drop=max_drop,
            min_sqnr=min_sqnr,
        )
        from rich.markup import escape

        early = validate(options).warnings  # run_export checks again; this prints the warnings before the work
        for note in early:
            err_console.print(f"[yellow]warning:[/yellow] {escape(note)}", highlight=False)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=err_console, transient=True) as progress:
            task = progress.add_task("starting", total=None)
            done: list[str] = []

            def step(name: str) -> None:
                if done:
                    progress.console.print(f"[green]✓[/green] {done[-1]}", highlight=False)
                done.append(name)
                progress.update(task, description=name)

            outcome = _run(run_export, options, step)
            if done:
                progress.console.print(f"[green]✓[/green] {done[-1]}", highlight=False)
        outcome.warnings = [w for w in outcome.warnings if w not in early]
        _print_summary(console, outcome)


def _run(run_export, options, step):
    """run_export, with the failures of the tools under it that bad input can cause told in one line."""
    from edgezoo.errors import InputError

    try:
        return run_export(options, progress=step)
    except MemoryError:
        raise InputError("not enough memory for this export", "try a smaller --input-size or --calib-count") \
            from None
    except RuntimeError as e:
        text = str(e).strip()
        first = text.splitlines()[0][:300] if text else type(e).__name__
        if "can't allocate memory" in text or "not enough memory" in text.lower():
            raise InputError(f"not enough memory for this export: {first}",
                             "try a smaller --input-size or --calib-count") from None
        import torch

        if isinstance(e, torch.onnx.errors.OnnxExporterError):
            # torch appends its whole IR graph to the message: the first line is what went wrong
            raise InputError(f"torch.onnx cannot export this model at opset {options.opset}: {first}",
                             "try the default --opset 17") from None
        raise


def _print_summary(console, outcome) -> None:
    from rich.markup import escape  # notes hold install commands like edgezoo[openvino]

    r = outcome.report
    for note in outcome.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(note)}", highlight=False)
    console.print(f"[bold]{r['model']}[/bold] -> {outcome.out_dir}/")
    for key, f in r["files"].items():
        console.print(f"  {f['file']:<22} {f['size_bytes'] / 1e6:8.2f} MB")
    if "int8" in r:
        a = r["int8"]["agreement"]
        fi = r["int8"]["float_islands"]
        console.print(f"  int8 vs fp32: top-1 agreement {a['top1_agreement'] * 100:.1f}%, cosine "
                      f"{a['cosine_mean']:.4f}, SQNR {a['sqnr_db']:.1f} dB ({a['inputs']})", highlight=False)
        console.print(f"  float ops left between DQ and Q: {fi['count']}", highlight=False)
    rows = [t for t in r.get("targets", []) if t.get("status") == "ok"]
    if len(rows) > 1 or any("latency_ms" in t for t in rows):
        console.print("  target       precision  SQNR dB   p50 ms  / fastest fp32", highlight=False)
        for t in rows:
            a = t.get("agreement") or {}
            lat = f"{t['latency_ms']:8.2f}" if "latency_ms" in t else "       -"
            ratio = f"{t['ratio_to_fastest_fp32']:6.2f}" if "ratio_to_fastest_fp32" in t else "     -"
            console.print(f"  {t['target']:<12} {t['precision']:<9} {a.get('sqnr_db', float('nan')):7.1f} {lat}  {ratio}",
                          highlight=False)
    if r.get("fastest_int8"):
        b = r["fastest_int8"]
        how = f" ({b['latency_ms']:.2f} ms, {b['ratio_to_fastest_fp32']:.2f} x the fastest fp32)" if b.get("latency_ms") else ""
        console.print(f"  fastest verified int8: {b['file']} ({b['target']}){how}", highlight=False)
    from edgezoo.export.accuracy import accuracy_summary
    from edgezoo.export.budget import budget_summary

    for line in accuracy_summary(r) + budget_summary(r):
        console.print(f"  {escape(line)}", highlight=False)
    if "triton" in outcome.files:
        console.print(f"  Triton repository: {outcome.files['triton']}")
    console.print(f"  report: {outcome.out_dir / 'report.md'}")
