"""`edgezoo export SOURCE [--int8] [--fp16] [--target ...] ...`: the conversion pipeline behind one command.

SOURCE is what edgezoo.sources resolves: a zoo name, FILE.onnx, FILE.pt2, package.module:attr, timm:NAME or
torchvision:NAME. The command parses, calls edgezoo.api.export (the Python API) and prints."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgezoo.export.targets import target_names
from edgezoo.runtimes.inputs import input_size_option


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_command(
        name: str = typer.Argument(..., metavar="SOURCE",
                                   help="A zoo name or alias (see `edgezoo list`, e.g. mobilenetv3), FILE.onnx (fp32), "
                                        "FILE.pt2 (torch.export.save), package.module:attr (an nn.Module or a "
                                        "zero-argument factory), timm:NAME or torchvision:NAME (with --weights)."),
        weights: Optional[Path] = typer.Option(None, "--weights", help="state_dict file (torchvision/timm keys work)."),
        int8: bool = typer.Option(False, "--int8", help="Also write a verified int8 (QDQ, U8S8) ONNX."),
        fp16: bool = typer.Option(False, "--fp16", help="Also write an fp16 ONNX (fp32 inputs/outputs)."),
        tensorrt: bool = typer.Option(False, "--tensorrt", hidden=True,
                                      help="Old spelling of --target ...,tensorrt (kept as an alias)."),
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
        backend: Optional[str] = typer.Option(None, "--backend", hidden=True,
                                              help="Old: the activation forms of model.int8.onnx (onnxruntime, "
                                                   "tensorrt, openvino, generic); each --target now writes its own."),
        triton: Optional[Path] = typer.Option(None, "--triton", help="Also write a Triton model repository here."),
        lite: bool = typer.Option(False, "--lite", help="Quantization-friendly rewrites + distillation (changes the function)."),
        distill_images: Optional[Path] = typer.Option(None, "--distill-images", help="Unlabelled images for --lite."),
        distill_steps: Optional[int] = typer.Option(None, "--distill-steps", help="Distillation steps for --lite."),
        target: str = typer.Option("onnxruntime", "--target",
                                   help=f"Runtimes to write files for, comma-separated: {', '.join(target_names())} "
                                        "(tensorrt: an engine, NVIDIA GPU); 'all' = every one whose extra is "
                                        "installed. Each file is verified against the fp32 model through its runtime."),
        bench: bool = typer.Option(False, "--bench", help="Time every target's file (p50, 1 thread, batch 1, interleaved)."),
        bf16: bool = typer.Option(False, "--bf16", help="Also bf16 for the targets that have it (OpenVINO)."),
        num_classes: Optional[int] = typer.Option(None, "--num-classes",
                                                  help="Classes of the checkpoint (default: the spec's, 1000)."),
        mean: Optional[str] = typer.Option(None, "--mean", help="Per-channel mean of 0..1 pixels (e.g. 0.485,0.456,0.406); "
                                           "default: the model's metadata or preset."),
        std: Optional[str] = typer.Option(None, "--std", help="Per-channel std of 0..1 pixels."),
        layout: Optional[str] = typer.Option(None, "--layout", help="Input layout: NCHW (export takes NCHW models)."),
        labels: Optional[Path] = typer.Option(None, "--labels", help="Text file, one class label per line."),
        eval_dir: Optional[Path] = typer.Option(None, "--eval", help="Labelled images: top-1/top-5 of every file "
                                                "(class subfolders, a labels.csv, or ImageNet synset file names)."),
        max_drop: Optional[float] = typer.Option(None, "--max-drop", help="Top-1 points on --eval an int8 file "
                                                 "may lose; the most sensitive layers stay float until it fits."),
        min_sqnr: Optional[float] = typer.Option(None, "--min-sqnr", help="Output SQNR (dB) against fp32 an int8 "
                                                 "file must keep; the most sensitive layers stay float until it does."),
    ) -> None:
        """Export a model (zoo name, .onnx, .pt2, module:attr, timm:/torchvision:NAME) to a verified bundle: fp32 ONNX, and int8 / fp16 / TensorRT as asked, with a report.

        Every option and output location (-o, --triton) is checked before any work. Options that change nothing in this run (e.g. --method without --int8) are named in a warning, and the export goes on. The bundle and the Triton entry are replaced only when everything succeeded.
        """
        from edgezoo.console import console, err_console
        from edgezoo.errors import require_torch

        require_torch()
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        from edgezoo.api import run as run_export  # the Python API: one path for the CLI and edgezoo.export()
        from edgezoo.export.options import ExportOptions, validate
        from edgezoo.export.targets import parse_targets

        options = ExportOptions(
            name=name, weights=weights, int8=int8, fp16=fp16, tensorrt=tensorrt, calib=calib,
            calib_count=calib_count, per_tensor=per_tensor, method=method, opset=opset, batch=batch,
            input_size=input_size, out=out, triton=triton, backend=backend, lite=lite,
            distill_images=distill_images, distill_steps=distill_steps, num_classes=num_classes,
            targets=tuple(parse_targets(target)), bench=bench, bf16=bf16, mean=mean, std=std, layout=layout,
            labels=labels, eval=eval_dir,
            max_drop=max_drop, min_sqnr=min_sqnr,
        )
        from rich.markup import escape

        if tensorrt:
            err_console.print("note: --tensorrt is spelled --target ...,tensorrt now (the old spelling still works)",
                              highlight=False)
        if backend is not None:
            err_console.print("note: --backend only picks model.int8.onnx's activation forms; each --target "
                              "writes its own int8 file in its runtime's forms", highlight=False)
        checked = validate(options)  # every cheap check, the source resolved once; warnings before the work
        early, before = checked.warnings, checked.out_dir.exists()
        import time

        started = time.time()
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

            try:
                outcome = _run(run_export, checked, step)
            except KeyboardInterrupt:
                outcome = _interrupted(checked, before, started)  # Exit(130) unless the bundle is in place
            # The bundle is in place: the export has succeeded, and Ctrl-C while the summary prints or the
            # interpreter shuts down (torch takes a while) must not make it exit by signal.
            _ignore_ctrl_c()
            if done:
                progress.console.print(f"[green]✓[/green] {done[-1]}", highlight=False)
        outcome.warnings = [w for w in outcome.warnings if w not in early]
        from edgezoo.quiet import move_log

        log = move_log(outcome.out_dir / "export.log")  # other libraries' output, kept with the bundle
        _print_summary(console, outcome, log)


def _interrupted(checked, existed: bool, started: float):
    """Ctrl-C: before the swap nothing was written (the temporary folder is gone); in the instant between
    the swap and the end of the export the new bundle is complete, and the export has succeeded: its outcome
    is read back from report.json so that the summary still prints."""
    import json

    from edgezoo.console import err_console
    from edgezoo.export.pipeline import ExportOutcome

    out_dir = checked.out_dir
    report = out_dir / "report.json"
    if report.is_file() and report.stat().st_mtime >= started:
        _ignore_ctrl_c()  # the export has succeeded: further presses while it shuts down change nothing
        err_console.print(f"interrupted after the bundle was written: {out_dir} is complete", highlight=False,
                          soft_wrap=True)
        triton = {"triton": checked.triton_entry} if checked.triton_entry is not None else {}
        return ExportOutcome(out_dir, json.loads(report.read_text()), files=triton)
    kept = f"the earlier bundle {out_dir} is unchanged" if existed else f"no bundle was written to {out_dir}"
    err_console.print(f"[bold red]interrupted:[/bold red] {kept}", highlight=False, soft_wrap=True)
    raise typer.Exit(130)


def _ignore_ctrl_c() -> None:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(run_export, options, step):
    """edgezoo.api.run, with the failures of the tools under it that bad input can cause told in one line."""
    from edgezoo.errors import InputError

    try:
        return run_export(options, progress=step)  # a CheckedExport: validated once
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
            raise InputError(f"torch.onnx cannot export this model at opset {options.options.opset}: {first}",
                             "try the default --opset 17") from None
        raise


def _print_summary(console, outcome, log=None) -> None:
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
        top1 = f"top-1 agreement {a['top1_agreement'] * 100:.1f}%, " if a.get("top1_agreement") is not None else ""
        which = f" (worst of {len(a['outputs'])} outputs: {a['output']})" if "outputs" in a else ""
        console.print(f"  int8 vs fp32{which}: {top1}cosine {a['cosine_mean']:.4f}, SQNR {a['sqnr_db']:.1f} dB "
                      f"({a['inputs']})", highlight=False)
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
    if r.get("fastest_verified"):
        b = r["fastest_verified"]
        how = f", {b['latency_ms']:.2f} ms" if b.get("latency_ms") else ""
        console.print(f"  fastest verified file: {b['file']} ({b['target']} {b['precision']}{how})", highlight=False)
    from edgezoo.export.accuracy import accuracy_summary
    from edgezoo.export.budget import budget_summary

    for line in accuracy_summary(r) + budget_summary(r):
        console.print(f"  {escape(line)}", highlight=False)
    if "triton" in outcome.files:
        console.print(f"  Triton repository: {outcome.files['triton']}")
    console.print(f"  report: {outcome.out_dir / 'report.md'}")
    if log is not None:
        console.print(f"  other libraries' messages: {log} (--verbose shows them)", highlight=False)
