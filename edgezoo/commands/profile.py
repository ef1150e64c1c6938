"""`edgezoo profile` (MACs vs memory traffic, roofline) and `edgezoo guidelines` (ShuffleNet V2 G1-G4).

Both take an .onnx file (no PyTorch needed) or a registry name (exported to ONNX in memory first).
Everything is computed before any output file is written, so a failure leaves no partial file.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Optional

import typer

from edgezoo.errors import InputError
from edgezoo.onnx_bounds import check_runnable
from edgezoo.runtimes.inputs import input_size_option


def parse_input_size(text: str | None, model: str | None = None) -> tuple[int, int, int] | None:
    """The common --input-size grammar (edgezoo.runtimes.inputs) -> (C, H, W); H,W takes the channels of
    the registry spec or of the file's first input (3 when the file leaves them free)."""
    from edgezoo.runtimes.inputs import image_chw
    from edgezoo.runtimes.inputs import parse_input_size as parse

    size = parse(text)
    if size is None or len(size) == 3:
        return size
    return image_chw(size, _channels(model))


def _channels(model: str | None) -> int:
    from edgezoo.runtimes import model_kind

    if model is not None and model_kind(model) == "registry":
        try:
            from edgezoo.models.registry import get_spec
        except ImportError:  # no torch: load_target says so in one line
            return 3
        return get_spec(model).input_size[0]
    try:
        import onnx

        from edgezoo.fileio import check_model_path

        check_model_path(model, "an ONNX file")  # a FIFO would block onnx.load; load_target says why
        dims = onnx.load(model, load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        return dims[1].dim_value if len(dims) == 4 and dims[1].dim_value > 0 else 3
    except Exception:  # an unreadable file is reported by the profiler itself, in its own words
        return 3


def load_target(model: str, input_size: tuple[int, int, int] | None):
    """(ONNX bytes or path, label, input size) for a file or a registry name."""
    from edgezoo.runtimes import model_kind

    path = Path(model)
    kind = model_kind(model)
    if kind != "registry":  # the same file-or-name rule as `edgezoo bench`
        if not path.exists():
            raise InputError(f"no such file: {model}", "give an .onnx file or a model name from `edgezoo list`")
        from edgezoo.fileio import check_model_path
        from edgezoo.runtimes import file_kinds

        what = file_kinds()[kind][0].what
        check_model_path(path, "an ONNX file" if kind == "onnx" else what)
        if kind != "onnx":  # a .pte, .tflite, OpenVINO .xml or engine: valid, but not ONNX
            from edgezoo.profile.graph import not_onnx

            raise not_onnx(str(path), what)
        return path, str(path), input_size
    from edgezoo.errors import require_torch

    require_torch()
    from edgezoo.export.onnx import to_onnx_proto
    from edgezoo.models.registry import get_spec

    spec = get_spec(model)
    size = input_size or spec.input_size
    try:
        proto, _ = to_onnx_proto(spec.build().eval(), size, simplify=True)
    except RuntimeError as e:
        raise InputError(f"{spec.name} cannot take a {'x'.join(map(str, size))} input: "
                         f"{str(e).strip().splitlines()[0][:200]}") from None
    return proto.SerializeToString(), spec.name, size


def _op_times(source, size, threads: int, runs: int, batch: int = 1):
    from edgezoo.profile.latency import op_times

    return op_times(source if isinstance(source, bytes) else str(source), threads=threads, runs=runs,
                    warmup=max(2, runs // 4), input_size=size, batch=batch)


def _probe_writable(path: Path) -> None:
    """Create and remove a file beside ``path``: the only test that /proc, /sys, read-only mounts and
    permission rules all answer truthfully (os.access says yes to root on /proc)."""
    import errno
    import os
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
    except OSError as e:
        why = f"{path.parent} does not accept new files" if e.errno == errno.ENOENT else \
            f"{e.strerror or type(e).__name__} in {path.parent}"
        raise InputError(f"cannot write {path}: {why}", "choose another output path") from None
    os.close(fd)
    os.unlink(tmp)


def _check_outputs(*paths: Path | None, plot: Path | None = None) -> None:
    """Before any slow work: the output folders exist or can be made and take a file, and --plot has
    matplotlib."""
    from edgezoo.fileio import check_writable

    for p in (*paths, plot):
        if p is not None:
            check_writable(p)
            _probe_writable(Path(p))
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            from edgezoo.errors import MissingDependencyError

            raise MissingDependencyError("matplotlib", "pip install 'edgezoo[plot]'", "--plot draws with it") from None


def _write(fn, path: Path, *args) -> None:
    """An output write that fails after the probe (disk full, a race) is one line, not a traceback."""
    try:
        fn(path, *args)
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or type(e).__name__}") from None


def _runtime_view(source):
    """onnxruntime's optimized graph for ``source`` (what it will run), or None without onnxruntime."""
    from edgezoo.profile.fusion import runtime_graph

    return runtime_graph(source)


def _print_notes(prof) -> None:
    from edgezoo.console import console

    for note in prof.notes:
        console.print(f"[yellow]note[/yellow]: {note}", highlight=False)


def nodes_csv(profile) -> str:
    buf = io.StringIO()
    cols = ["name", "op_type", "category", "block", "dtype", "output_shapes", "macs", "ops", "flops", "params",
            "bytes_read", "bytes_written", "mem_access", "intensity", "cio", "kernel", "group", "int8"]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for n in profile.nodes:
        d = n.to_dict()
        d["output_shapes"] = ";".join("x".join(map(str, s)) for s in d["output_shapes"])
        d["kernel"] = "x".join(map(str, d["kernel"]))
        w.writerow(d)
    return buf.getvalue()


def _per_runtime(model: str, report, threads: int, batch: int, size) -> dict:
    """For an .onnx file: every installed runtime that runs it, timed whole (p50 of 30 runs after 5, in a
    process of its own), and the share of the roofline bound that reaches (edgezoo.profile.roofline)."""
    import importlib.util

    from edgezoo.profile.roofline import bound_shares
    from edgezoo.profile.worker import RunnerProcess

    path = Path(model)
    if path.suffix.lower() != ".onnx" or not path.is_file():
        return {}
    p50 = {}
    for rt in ("onnxruntime", "openvino"):
        if importlib.util.find_spec(rt) is None:
            continue
        with RunnerProcess() as w:
            w.open(str(path), rt, threads=threads)
            w.prepare("x", batch=batch, input_size=size)
            w.time("x", 5)
            times = sorted(w.time("x", 30))
        p50[rt] = times[len(times) // 2]
    shares = bound_shares(report, p50)
    return {rt: {"p50_ms": round(ms, 4), "share_of_bound": shares[rt]} for rt, ms in p50.items() if rt in shares}


def register(app: typer.Typer) -> None:
    @app.command("profile")
    def profile_command(
        model: str = typer.Argument(..., help="An .onnx file, or a model name from `edgezoo list`."),
        input_size: Optional[str] = input_size_option("the file's or the spec's"),
        batch: int = typer.Option(1, "--batch", min=1, help="Batch size for the counts."),
        top: int = typer.Option(10, "--top", min=0, help="How many of the heaviest layers to list."),
        depth: int = typer.Option(2, "--depth", min=1, help="Name-scope depth of a block (1 = stage)."),
        json_path: Optional[Path] = typer.Option(None, "--json", help="Write the full profile as JSON."),
        csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write one row per node as CSV."),
        roofline: bool = typer.Option(False, "--roofline", help="Add the roofline (measures this machine's peaks unless given)."),
        peak_gflops: Optional[float] = typer.Option(None, "--peak-gflops", min=1e-6, help="Target's fp32 peak GFLOP/s (implies --roofline)."),
        bandwidth_gbs: Optional[float] = typer.Option(None, "--bandwidth-gbs", min=1e-6, help="Target's memory bandwidth GB/s (implies --roofline)."),
        peak_int8_gops: Optional[float] = typer.Option(None, "--peak-int8-gops", min=1e-6, help="Target's int8 peak GOP/s (implies --roofline)."),
        measure: bool = typer.Option(False, "--measure", help="Join onnxruntime's per-operator times (implies --roofline)."),
        threads: int = typer.Option(1, "--threads", min=1, help="Threads for --measure and the measured peaks."),
        runs: int = typer.Option(20, "--runs", min=1, help="Profiled runs for --measure."),
        plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG: roofline and time by op type (implies --roofline)."),
    ) -> None:
        """MACs vs memory traffic per layer, block and op type; optionally the roofline and measured times."""
        from rich import box
        from rich.table import Table

        from edgezoo.console import console, fmt_count
        from edgezoo.fileio import atomic_write_text, write_json
        from edgezoo.profile.graph import check_profilable, profile_onnx, short_name

        size = parse_input_size(input_size, model)
        _check_outputs(json_path, csv_path, plot=plot)
        source, label, size = load_target(model, size)
        from edgezoo.profile.fusion import runtime_fusions

        check_profilable(source, size, batch)  # before onnxruntime sees a file that may be hostile
        rt = _runtime_view(source)
        prof = profile_onnx(source, input_size=size, batch=batch, runtime=rt)
        prof.source = label
        fused = runtime_fusions(prof, rt) if rt is not None else None
        given = {"peak_gflops": peak_gflops, "bandwidth_gbs": bandwidth_gbs, "peak_int8_gops": peak_int8_gops}
        want_roof = roofline or measure or plot is not None or any(v is not None for v in given.values())
        report = None
        if want_roof:
            from edgezoo.profile.roofline import MachinePeaks, analyze, measure_peaks

            if peak_gflops is not None and bandwidth_gbs is not None:
                peaks = MachinePeaks(peak_gflops, bandwidth_gbs, peak_int8_gops, "given", threads)
            else:
                peaks = measure_peaks(threads=threads)
                if any(v is not None for v in given.values()):
                    origin = {k: "given" if v is not None else "measured" for k, v in given.items()}
                    peaks = MachinePeaks(peak_gflops or peaks.peak_gflops, bandwidth_gbs or peaks.bandwidth_gbs,
                                         peak_int8_gops or peaks.peak_int8_gops, "given + " + peaks.source, threads,
                                         origin)
            if measure:
                check_runnable(prof, label)
            times = _op_times(source, size, threads, runs, batch) if measure else None
            run_batch = next(iter(prof.inputs.values()), [1])[0] if prof.inputs else 1
            report = analyze(prof, peaks, times, fused=fused, batch=run_batch or 1)

        t = prof.totals()
        console.print(f"[bold]{label}[/bold]  inputs {prof.inputs}  ({t['nodes']} nodes"
                      + (f", {t['int8_nodes']} int8" if t["int8_nodes"] else "") + ")")
        summary = Table(show_header=False, box=None, pad_edge=False)
        for k, v in (
            ("MACs (conv + gemm, no bias)", f"{fmt_count(t['macs'])}  (conv {fmt_count(t['conv_macs'])}, gemm {fmt_count(t['gemm_macs'])})"),
            ("element-wise / pool ops", fmt_count(t["ops"])),
            ("params", f"{t['params']:,}"),
            ("bytes read / written", f"{fmt_count(t['bytes_read'], 'B')} / {fmt_count(t['bytes_written'], 'B')}"),
            ("memory access cost (elements)", fmt_count(t["mem_access"])),
            ("arithmetic intensity", f"{t['intensity']:.2f} FLOPs/byte"),
            ("CIO (HarDNet)", f"{fmt_count(t['cio'])}  (without depthwise {fmt_count(t['cio_without_depthwise'])})"),
        ):
            summary.add_row(f"  {k}", v)
        console.print(summary)
        _print_notes(prof)

        blocks = prof.groups(depth)
        bt = Table(title=f"per block (name depth {depth})", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
        for col in ("block", "nodes", "MACs", "ops", "bytes", "mem access", "FLOPs/B"):
            bt.add_column(col, justify="left" if col == "block" else "right", overflow="fold", no_wrap=col != "block")
        for g in blocks:
            d = g.to_dict()
            bt.add_row(short_name(g.name), str(d["nodes"]), fmt_count(d["macs"]), fmt_count(d["ops"]), fmt_count(d["bytes"], "B"),
                       fmt_count(d["mem_access"]), f"{d['flops'] / d['bytes']:.1f}" if d["bytes"] else "-")
        console.print(bt)
        if top:
            lt = Table(title=f"heaviest {top} layers by MACs", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
            for col in ("layer", "output", "MACs", "FLOPs/B") + (("bound", "bound ms", "meas. ms") if report else ("bytes",)):
                name_col = col == "layer"
                lt.add_column(col, justify="left" if col == "layer" else "right", overflow="fold",
                              no_wrap=not name_col, ratio=1 if name_col else None)
            bounds = {l.name: l for l in report.layers} if report else {}
            for n in prof.heaviest(top, "macs"):
                row = [short_name(n.name) + (f" g{n.group}" if n.group > 1 else ""),
                       "x".join(map(str, n.output_shapes[0][1:])) if n.output_shapes else "-",
                       fmt_count(n.macs), f"{n.intensity:.1f}"]
                if not report:
                    row.append(fmt_count(n.bytes, "B"))
                else:
                    l = bounds[n.name]
                    row += [{"memory": "mem", "compute": "cmp"}.get(l.bound, l.bound), f"{l.bound_ms:.4f}", "-" if l.measured_ms is None else f"{l.measured_ms:.4f}"]
                lt.add_row(*row)
            console.print(lt)
        if report is not None:
            pk = report.peaks
            console.print(f"[bold]roofline[/bold]: peak {pk.peak_gflops:.1f} GFLOP/s"
                          + (f", int8 {pk.peak_int8_gops:.1f} GOP/s" if pk.peak_int8_gops else "")
                          + f", bandwidth {pk.bandwidth_gbs:.1f} GB/s (peaks {pk.how}" + (f": {pk.source}" if pk.source != pk.how else "") + "); ridge "
                          f"{pk.ridge:.1f} FLOPs/byte", highlight=False)
            rd = report.to_dict()
            line = (f"  lower-bound latency {report.lower_bound_ms:.3f} ms (compute {report.compute_ms:.3f}, memory "
                    f"{report.memory_ms:.3f}); {rd['memory_bound_layers']} layers memory-bound, "
                    f"{rd['compute_bound_layers']} compute-bound")
            if report.measured_total_ms:
                line += (f"; measured {report.measured_total_ms:.3f} ms = {rd['achieved_fraction']:.0%} of the bound's"
                         f" speed")
            console.print(line)
            per_runtime = _per_runtime(model, report, threads, batch, size) if measure else {}
            if per_runtime:
                console.print("  share of the bound per runtime (whole-file p50, each in a process of its own): "
                              + ", ".join(f"{rt} {v['p50_ms']:.3f} ms = {v['share_of_bound']:.0%}"
                                          for rt, v in per_runtime.items()), highlight=False)
            ot = Table(title="by op type", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
            for col in ("op type", "count", "memory-bound", "bound ms") + (("measured ms", "achieved") if measure else ()):
                ot.add_column(col, justify="left" if col == "op type" else "right")
            for r in rd["by_op_type"]:
                row = [r["op_type"], str(r["count"]), str(r["memory_bound"]), f"{r['bound_ms']:.4f}"]
                if measure:
                    row += ["-" if r["measured_ms"] is None else f"{r['measured_ms']:.4f}",
                            "-" if not r["achieved_fraction"] else f"{r['achieved_fraction']:.0%}"]
                ot.add_row(*row)
            console.print(ot)
            if measure and report.unattributed_ms:
                console.print("  ops onnxruntime added (no node in the file: layout reorders, ...): " + ", ".join(
                    f"{k} {v:.3f} ms" for k, v in sorted(report.unattributed_ms.items(), key=lambda kv: -kv[1])))
            above = report.above_roof()
            if above:
                console.print(f"  [yellow]note[/yellow]: {len(above)} layer{'s' if len(above) > 1 else ''} ran "
                              f"faster than the roof (e.g. {short_name(above[0].name)}): the {pk.how} peaks "
                              "underestimate what this runtime reaches there (cache-resident data, a better kernel)",
                              highlight=False)

        # outputs last: everything above succeeded
        if plot is not None:
            from edgezoo.profile.roofline import plot_roofline

            _write(lambda p: plot_roofline(report, p, label), plot)
            console.print(f"wrote {plot}")
        if json_path is not None:
            d = prof.to_dict(depth)
            if report is not None:
                d["roofline"] = report.to_dict()
                if measure and per_runtime:
                    d["roofline"]["per_runtime"] = per_runtime
            _write(write_json, json_path, d)
            console.print(f"wrote {json_path}")
        if csv_path is not None:
            _write(atomic_write_text, csv_path, nodes_csv(prof))
            console.print(f"wrote {csv_path}")

    @app.command("guidelines")
    def guidelines_command(
        model: str = typer.Argument(..., help="An .onnx file, or a model name from `edgezoo list`."),
        input_size: Optional[str] = input_size_option("the file's or the spec's"),
        depth: int = typer.Option(2, "--depth", min=1, help="Name-scope depth of a block (for G3)."),
        top: int = typer.Option(5, "--top", min=1, help="Layers listed per finding."),
        measure: bool = typer.Option(False, "--measure", help="Add measured time shares (G4) with onnxruntime."),
        threads: int = typer.Option(1, "--threads", min=1),
        runs: int = typer.Option(20, "--runs", min=1),
        json_path: Optional[Path] = typer.Option(None, "--json", help="Write the findings as JSON."),
    ) -> None:
        """Check the ShuffleNet V2 guidelines G1-G4: which layers break them, by how much, how badly."""
        from rich.table import Table

        from edgezoo.console import console
        from edgezoo.fileio import write_json
        from edgezoo.profile.graph import check_profilable, profile_onnx, short_name
        from edgezoo.profile.guidelines import check_guidelines

        size = parse_input_size(input_size, model)
        _check_outputs(json_path)
        source, label, size = load_target(model, size)
        from edgezoo.profile.fusion import runtime_fusions

        check_profilable(source, size)  # before onnxruntime sees a file that may be hostile
        rt = _runtime_view(source)
        prof = profile_onnx(source, input_size=size, runtime=rt)
        if measure:
            check_runnable(prof, label)
        times = _op_times(source, size, threads, runs) if measure else None
        findings = check_guidelines(prof, times, depth=depth, top=top,
                                    fused=runtime_fusions(prof, rt) if rt is not None else None)
        colors = {"high": "red", "medium": "yellow", "low": "green", "ok": "green"}
        console.print(f"[bold]{label}[/bold]: ShuffleNet V2 guidelines")
        _print_notes(prof)
        for f in findings:
            console.print(f"[bold]{f.guideline}[/bold] [{colors[f.severity]}]{f.severity}[/] {f.title}: {f.figure}",
                          highlight=False)
            if f.detail:
                console.print(f"  [dim]{f.detail}[/dim]", highlight=False)
            console.print(f"  advice: {f.advice}", highlight=False)
            if f.layers:
                tab = Table(show_edge=False, header_style="dim")
                cols = [k for k in f.layers[0] if k not in ("small_ops_list", "join")]
                for c in cols:
                    tab.add_column(c, justify="left" if c in ("name", "block", "op_type") else "right", overflow="fold")
                for row in f.layers:
                    tab.add_row(*[f"{row[c]:.1%}" if c in ("excess", "share_of_bytes")
                                  else short_name(row[c]) if c in ("name", "block") else str(row[c]) for c in cols])
                console.print(tab)
        if json_path is not None:
            _write(write_json, json_path, {"source": label, "inputs": prof.inputs, "notes": prof.notes,
                                           "qdq_fusion": prof.qdq_fusion, "findings": [f.to_dict() for f in findings]})
            console.print(f"wrote {json_path}")
