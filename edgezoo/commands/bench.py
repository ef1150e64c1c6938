"""`edgezoo bench`: latency of a model file (.onnx, OpenVINO .xml, .pte, .tflite, TensorRT engine) or a registry
model on any runtime; `--vs` ratios; `--ops`.

The command is thin: it opens runners (edgezoo.runtimes), measures (edgezoo.profile.latency), prints a
rich table and writes JSON. Nothing here imports torch at module level, so an .onnx file benches on a
device with onnxruntime and numpy only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional

import typer

from edgezoo.errors import InputError
from edgezoo.runtimes import files_help, runtimes_help, suffixes_help
from edgezoo.runtimes.inputs import input_size_option

SCHEMA = "edgezoo.bench/1"


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench_command(
        model: str = typer.Argument(..., help=f"A model file ({files_help()}) or a registry name."),
        runtime: str = typer.Option("auto", "--runtime", "-r",
                                    help=f"auto, {runtimes_help()} (auto: {suffixes_help()}, registry name -> "
                                         "torch; a registry name on a runtime that runs .onnx is exported in "
                                         "memory first)."),
        precision: Optional[str] = typer.Option(None, "--precision",
                                                help="OpenVINO inference precision: f32 (default), bf16, f16 or auto "
                                                     "(OpenVINO's choice: bf16 on CPUs that have it)."),
        streams: Optional[int] = typer.Option(None, "--streams", help="OpenVINO CPU streams (default 1)."),
        provider: Optional[str] = typer.Option(None, "--provider",
                                               help="onnxruntime execution providers, e.g. cuda or tensorrt,cuda."),
        threads: Optional[int] = typer.Option(None, "--threads", "-t", help="Intra-op threads (default: the runtime's)."),
        batch: List[str] = typer.Option(["1"], "--batch", "-b", help="Batch size; repeat or comma-separate: -b 1,8."),
        input_size: Optional[str] = input_size_option("from the model's metadata or the spec"),
        warmup: int = typer.Option(10, "--warmup", help="Untimed runs before measuring."),
        iterations: Optional[int] = typer.Option(None, "--iterations", "-n", help="Timed runs (default 100)."),
        budget: Optional[float] = typer.Option(None, "--time", help="Seconds of timed runs per batch size "
                                               "(with -n, whichever ends first)."),
        vs: Optional[str] = typer.Option(None, "--vs", help="Compare with this model in interleaved rounds."),
        vs_runtime: Optional[str] = typer.Option(None, "--vs-runtime",
                                                 help="Runtime of the --vs model (alone: MODEL on two runtimes)."),
        rounds: int = typer.Option(15, "--rounds", help="Interleaved rounds for --vs."),
        iters_per_round: int = typer.Option(10, "--iters-per-round", help="Runs of each model per round for --vs."),
        ops: bool = typer.Option(False, "--ops", help="Also profile per-operator time (onnxruntime)."),
        top: int = typer.Option(10, "--top", help="Slowest nodes to list with --ops."),
        graph_opt: str = typer.Option("all", "--graph-opt", help="onnxruntime graph optimisation: all, extended, "
                                      "basic, disable."),
        weights: Optional[Path] = typer.Option(None, "--weights", help="Checkpoint for a registry model."),
        json_path: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON to this path."),
    ) -> None:
        """Measure latency (p50/p90/p99, mean, std, throughput, peak memory, model size); --vs for a ratio."""
        from edgezoo.runtimes.inputs import parse_input_size

        batches = parse_batches(batch)
        size = parse_input_size(input_size)
        if warmup < 0:
            raise InputError(f"--warmup must be 0 or more, got {warmup}")
        if iterations is not None and iterations < 1:
            raise InputError(f"--iterations must be at least 1, got {iterations}")
        if budget is not None and budget <= 0:
            raise InputError(f"--time must be positive, got {budget}")
        if rounds < 1 or iters_per_round < 1:
            raise InputError("--rounds and --iters-per-round must be at least 1")
        if ops and (vs is not None or vs_runtime is not None):
            raise InputError("--ops profiles one model; run it without --vs / --vs-runtime")
        if json_path is not None:
            from edgezoo.fileio import check_writable

            check_writable(json_path, "--json")  # before measuring, not after minutes of it
        opts = dict(threads=threads, providers=provider, graph_optimization=graph_opt,
                    weights=os.fspath(weights) if weights else None, input_size=size)
        # OpenVINO's options travel only when given, so other runtimes never see them
        opts.update({k: v for k, v in (("precision", precision), ("streams", streams)) if v is not None})
        try:
            if vs is not None or vs_runtime is not None:
                report = run_compare(model, runtime, vs or model, vs_runtime or runtime, batches, opts, warmup,
                                     rounds, iters_per_round)
                report["reproduce"] = command_line(
                    ["bench", model, "--vs", vs or model], {"-r": None if runtime == "auto" else runtime,
                     "--vs-runtime": vs_runtime, "-t": threads, "-b": ",".join(map(str, batches)),
                     "--input-size": input_size, "--precision": precision, "--streams": streams,
                     "--provider": provider, "--graph-opt": None if graph_opt == "all" else graph_opt,
                     "--weights": weights, "--rounds": rounds, "--iters-per-round": iters_per_round,
                     "--warmup": warmup})
            else:
                if ops and runtime.lower() == "auto":
                    runtime = "onnxruntime"  # the per-operator profile is onnxruntime's
                runner = _open(model, runtime, opts)
                try:
                    if ops:
                        _require_ort(model, runner)
                    report = run_latency(model, runner, batches, opts, warmup, iterations, budget)
                    if ops and not report["interrupted"]:
                        try:
                            report["ops"] = run_ops(runner, batches[0], opts, top)
                        except KeyboardInterrupt:
                            report["interrupted"] = True
                finally:
                    runner.deactivate()
        except KeyboardInterrupt:  # while loading, before anything was measured
            from edgezoo.console import console

            console.print("[yellow]interrupted[/yellow] before anything was measured")
            raise typer.Exit(130) from None
        finish(report, json_path)


# --- option parsing ------------------------------------------------------------------------------------------

def parse_batches(values: List[str]) -> list[int]:
    out: list[int] = []
    for v in values:
        for part in str(v).split(","):
            if not part.strip():
                continue
            try:
                b = int(part)
            except ValueError:
                raise InputError(f"batch size '{part}' is not a whole number") from None
            if b < 1:
                raise InputError(f"batch size must be at least 1, got {b}")
            if b not in out:
                out.append(b)
    if not out:
        raise InputError("no batch size given")
    return out


def command_line(args: list[str], options: dict[str, Any]) -> str:
    """The `edgezoo ...` command that measures the same thing again: every option that shaped the figure."""
    import shlex

    parts = ["edgezoo", *map(str, args)]
    for flag, value in options.items():
        if value is not None:
            parts += [flag, os.fspath(value) if isinstance(value, Path) else str(value)]
    return shlex.join(parts)


# --- measurements --------------------------------------------------------------------------------------------

def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgezoo.console import console

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def _open(model: str, runtime: str | None, opts: dict[str, Any]):
    from edgezoo.console import console
    from edgezoo.export.loaders import open_model

    with console.status(f"loading {model}"):
        runner = open_model(model, runtime, **opts)
        runner.activate()
    return runner


def _model_json(model: str, runner) -> dict[str, Any]:
    from edgezoo.profile.worker import runner_json

    return runner_json(model, runner)


def run_latency(model, runner, batches, opts, warmup, iterations, budget) -> dict[str, Any]:
    from edgezoo.profile.latency import MeasurementInterrupted, measure
    from edgezoo.runtimes import memory
    from edgezoo.runtimes.inputs import feeds_for

    report = _report("latency", opts, warmup=warmup, iterations=iterations, budget_s=budget)
    try:
        report["models"] = [_model_json(model, runner)]
        # every batch's input is checked before any timing, so a bad size fails at once
        all_feeds = {b: feeds_for(runner, batch=b, input_size=opts["input_size"]) for b in batches}
        with _progress() as progress:
            for b in batches:
                feeds = all_feeds[b]
                runner.check_feeds(feeds)
                total = iterations if iterations is not None else (None if budget is not None else 100)
                task = progress.add_task(f"batch {b}", total=total)
                exact_peak = memory.reset_peak()
                row: dict[str, Any] = {"batch": b, "input_shapes": {k: list(v.shape) for k, v in feeds.items()}}
                try:
                    runner.infer(feeds)  # first run outside the timing: it may allocate or fail on the size
                    stats = measure(lambda: runner.infer(feeds), warmup=warmup, iterations=iterations,
                                    budget_s=budget, progress=lambda d, t: progress.update(task, completed=d))
                except MeasurementInterrupted as e:
                    report["interrupted"] = True
                    if e.partial.n:
                        report["results"].append(_latency_row(row, e.partial, b, exact_peak))
                    break
                report["results"].append(_latency_row(row, stats, b, exact_peak))
    except KeyboardInterrupt:
        report["interrupted"] = True
    return report


def _latency_row(row, stats, batch, exact_peak) -> dict[str, Any]:
    from edgezoo.runtimes import memory

    row = dict(row)
    row["latency_ms"] = stats.to_dict()
    row["throughput_per_s"] = batch * 1e3 / stats.mean if stats.mean > 0 else None
    row["peak_rss_bytes"] = memory.peak_rss_bytes()
    row["peak_rss_scope"] = "this batch size" if exact_peak else "process lifetime"
    return row


def run_compare(model_a, runtime_a, model_b, runtime_b, batches, opts, warmup, rounds, iters) -> dict[str, Any]:
    """Each model in a process of its own (edgezoo.profile.worker): runtimes' thread pools never share one."""
    from edgezoo.console import console
    from edgezoo.profile.latency import MeasurementInterrupted, compare_timed
    from edgezoo.profile.worker import RunnerProcess

    report = _report("compare", opts, warmup=warmup, rounds=rounds, iters_per_round=iters,
                     isolation="each model in a process of its own")
    workers: list[RunnerProcess] = []
    try:
        infos = []
        for model, runtime in ((model_a, runtime_a), (model_b, runtime_b)):
            with console.status(f"loading {model}"):
                workers.append(RunnerProcess())
                infos.append(workers[-1].open(model, runtime, **opts))
        a, b = workers
        label_a, label_b = _labels(model_a, infos[0]["runtime"], model_b, infos[1]["runtime"])
        report["models"] = [dict(infos[0], label=label_a), dict(infos[1], label=label_b)]
        for bs in batches:  # both must run every batch size before anything is timed
            for w in workers:
                w.prepare(str(bs), batch=bs, input_size=opts["input_size"])
        with _progress() as progress:
            for bs in batches:
                task = progress.add_task(f"batch {bs}: rounds", total=rounds * 2)
                try:
                    res = compare_timed({label_a: lambda n, bs=bs: a.time(str(bs), n),
                                         label_b: lambda n, bs=bs: b.time(str(bs), n)},
                                        rounds=rounds, iters_per_round=iters, warmup=warmup,
                                        progress=lambda d, t: progress.update(task, completed=d))
                except MeasurementInterrupted as e:
                    report["interrupted"] = True
                    if e.partial.rounds:
                        report["results"].append({"batch": bs, "compare": e.partial.to_dict()})
                    break
                report["results"].append({"batch": bs, "compare": res.to_dict()})
    except KeyboardInterrupt:
        report["interrupted"] = True
    finally:
        for w in workers:
            w.close()
    return report


def _labels(model_a, runtime_a: str, model_b, runtime_b: str) -> tuple[str, str]:
    la, lb = f"{Path(model_a).name} ({runtime_a})", f"{Path(model_b).name} ({runtime_b})"
    if la == lb:
        la, lb = f"{la} #1", f"{lb} #2"
    return la, lb


def _require_ort(model, runner) -> None:
    from edgezoo.runtimes.onnxruntime import OrtRunner

    if not isinstance(runner, OrtRunner):
        raise InputError(f"--ops needs onnxruntime's profiler; {model} runs on {runner.name}",
                         "use --runtime onnxruntime")


def run_ops(runner, batch, opts, top) -> dict[str, Any]:
    from edgezoo.console import console
    from edgezoo.profile.latency import op_times

    with console.status("profiling operators"):
        # a second, profiling session on the same model: profiling slows the runs it records
        res = op_times(runner.model_source, threads=opts["threads"] or 1, runs=20, warmup=5,
                       input_size=opts["input_size"], batch=batch, providers=opts["providers"],
                       graph_optimization=opts["graph_optimization"])
    d = res.to_dict()
    d["batch"] = batch
    d["slowest"] = res.slowest(top)
    return d


# --- report --------------------------------------------------------------------------------------------------

def _report(mode: str, opts: dict[str, Any], **settings) -> dict[str, Any]:
    from edgezoo import __version__
    from edgezoo.profile.latency import describe_machine

    return {"schema": SCHEMA, "mode": mode, "edgezoo": __version__, "machine": describe_machine(),
            "settings": {"threads": opts["threads"], "providers": opts["providers"],
                         "graph_optimization": opts["graph_optimization"],
                         "input_size": list(opts["input_size"]) if opts["input_size"] else None,
                         "precision": opts.get("precision"), "streams": opts.get("streams"), **settings},
            "models": [], "results": [], "interrupted": False}


def finish(report: dict[str, Any], json_path: Path | None) -> None:
    from edgezoo.console import console
    from edgezoo.fileio import write_json

    if report["mode"] == "latency":
        print_latency(report)
    else:
        print_compare(report)
    if report.get("ops"):
        print_ops(report["ops"])
    if report["interrupted"]:
        console.print("[yellow]interrupted[/yellow]: the table shows what was measured before Ctrl-C"
                      + (f"; {json_path} not written" if json_path else ""))
        raise typer.Exit(130)
    if json_path is not None:
        write_json(json_path, report)
        console.print(f"wrote {json_path}")


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for div, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def print_latency(report: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from edgezoo.console import console

    m = report["models"][0] if report["models"] else {"model": "?", "backend": "?", "size_bytes": None}
    shapes = sorted({"x".join(map(str, next(iter(r["input_shapes"].values()), [])[1:])) for r in report["results"]})
    table = Table(title=escape(f"{m['model']} on {m['backend']}"),
                  caption=escape(f"input {', '.join(shapes) or '-'}; model size {_fmt_bytes(m['size_bytes'])}; "
                                 f"peak RSS of the process"),
                  header_style="bold")
    for col in ("batch", "runs", "p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms", "items/s", "peak RSS MiB"):
        table.add_column(col, justify="right")
    for r in report["results"]:
        s = r["latency_ms"]
        table.add_row(str(r["batch"]), str(s["n"]), format_ms(s["p50"]), format_ms(s["p90"]), format_ms(s["p99"]), format_ms(s["mean"]),
                      format_ms(s["std"]), f"{r['throughput_per_s']:.0f}" if r["throughput_per_s"] else "-",
                      f"{r['peak_rss_bytes'] / (1 << 20):.0f}" if r["peak_rss_bytes"] else "-")
    console.print(table)


def format_ms(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}" if x >= 1000 else f"{x:.2f}"


def print_compare(report: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from edgezoo.console import console

    if len(report["models"]) < 2:
        return
    la, lb = report["models"][0]["label"], report["models"][1]["label"]
    table = Table(title="B / A in interleaved rounds (ratio < 1: B is faster)", header_style="bold",
                  caption=f"median of per-round ratios; {report['settings']['iters_per_round']} runs of each "
                          f"per round")
    for col in ("batch", "rounds", "A p50 ms", "B p50 ms", "B/A", "IQR", "min-max"):
        table.add_column(col, justify="right")
    for r in report["results"]:
        c = r["compare"]
        table.add_row(str(r["batch"]), str(c["rounds"]), format_ms(c["stats"][la]["p50"]), format_ms(c["stats"][lb]["p50"]),
                      f"{c['ratio_median'][lb]:.3f}", f"{c['ratio_q25'][lb]:.2f}-{c['ratio_q75'][lb]:.2f}",
                      f"{c['ratio_min'][lb]:.2f}-{c['ratio_max'][lb]:.2f}")
    console.print(escape(f"A = {la}: {report['models'][0]['backend']}"), highlight=False)
    console.print(escape(f"B = {lb}: {report['models'][1]['backend']}"), highlight=False)
    console.print(table)
    if report.get("reproduce"):
        console.print(escape(f"reproduce: {report['reproduce']}"), highlight=False, soft_wrap=True)


def print_ops(ops: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from edgezoo.console import console

    total = ops["total_ms"]
    t = Table(title=f"time by operator type (batch {ops['batch']}, {ops['threads']} thread(s), "
                    f"{ops['runs']} profiled runs; kernels {total:.3f} of {ops['run_ms']:.3f} ms per run)",
              header_style="bold")
    for col in ("op type", "nodes", "ms/run", "share"):
        t.add_column(col, justify="left" if col == "op type" else "right")
    counts: dict[str, int] = {}
    for n in ops["nodes"]:
        counts[n["op_type"]] = counts.get(n["op_type"], 0) + 1
    for op, ms in ops["by_type"].items():
        t.add_row(op, str(counts.get(op, 0)), f"{ms:.3f}", f"{ms / total:.1%}" if total else "-")
    console.print(t)
    s = Table(title=f"slowest {len(ops['slowest'])} nodes", header_style="bold")
    for col in ("node", "op type", "ms/run", "share"):
        s.add_column(col, justify="right" if col in ("ms/run", "share") else "left")
    for n in ops["slowest"]:
        s.add_row(escape(n["name"]), n["op_type"], f"{n['time_ms']:.3f}", f"{n['time_ms'] / total:.1%}" if total else "-")
    console.print(s)
