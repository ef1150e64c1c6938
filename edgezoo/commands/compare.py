"""`edgezoo compare`: the same inputs through every file x runtime, one table of latency and agreement.

Files of different formats from one model (.onnx, OpenVINO .xml, .pte, .tflite) are compared with each
other; each runs on every runtime in --runtimes that can take it. The first (file, runtime) is the
reference: latency ratios and output agreement are against it. Latency is measured in interleaved rounds
(edgezoo.profile.latency.compare_interleaved), as `bench --vs` does. Nothing here imports torch: .onnx and
.xml files compare on onnxruntime and OpenVINO without it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional

import typer

from edgezoo.errors import InputError
from edgezoo.runtimes import files_help, runtimes_help

SCHEMA = "edgezoo.compare/1"


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare_command(
        files: List[str] = typer.Argument(..., help=f"Model files ({files_help()}) or registry "
                                                     "names; the first file on the first runtime is the reference."),
        runtimes: Optional[str] = typer.Option(None, "--runtimes", "-r",
                                               help="Comma-separated runtimes, each file runs on every one that can "
                                                    f"take it: {runtimes_help()}; openvino:bf16 (or :f32, :auto) picks OpenVINO's precision "
                                                    "(default: each file on its own runtime)."),
        threads: Optional[int] = typer.Option(None, "--threads", "-t", help="Threads for every runtime "
                                              "(default: each runtime's own)."),
        batch: int = typer.Option(1, "--batch", "-b", help="Batch size of each run."),
        input_size: Optional[str] = typer.Option(None, "--input-size",
                                                 help="HxW or one side (default: from the files)."),
        images: Optional[Path] = typer.Option(None, "--images", help="A folder of images, prepared with the first "
                                              "file's metadata (size, mean/std); default: random inputs."),
        count: int = typer.Option(8, "--count", "-n", help="Samples (images or random batches' items) for "
                                  "the agreement figures."),
        precision: Optional[str] = typer.Option(None, "--precision", help="OpenVINO precision for openvino "
                                                "entries without one: f32 (default), bf16, f16, auto."),
        rounds: int = typer.Option(15, "--rounds", help="Interleaved latency rounds (0: agreement only)."),
        iters_per_round: int = typer.Option(10, "--iters-per-round", help="Runs of each entry per round."),
        warmup: int = typer.Option(5, "--warmup", help="Untimed runs of each entry before the rounds."),
        seed: int = typer.Option(0, "--seed", help="Seed of the random inputs."),
        json_path: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON to this path."),
    ) -> None:
        """Run files of one model on several runtimes: latency p50, ratio to the first, output agreement."""
        from edgezoo.fileio import check_writable
        from edgezoo.runtimes.inputs import parse_input_size

        size = parse_input_size(input_size)
        if batch < 1:
            raise InputError(f"--batch must be at least 1, got {batch}")
        if count < 1:
            raise InputError(f"--count must be at least 1, got {count}")
        if rounds < 0 or iters_per_round < 1 or warmup < 0:
            raise InputError("--rounds and --warmup must be 0 or more, --iters-per-round at least 1")
        if json_path is not None:
            check_writable(json_path, "--json")
        entries = plan_entries(files, runtimes, precision)
        try:
            report = run_compare(entries, threads=threads, batch=batch, input_size=size, images=images,
                                 count=count, rounds=rounds, iters=iters_per_round, warmup=warmup, seed=seed)
        except KeyboardInterrupt:
            from edgezoo.console import console

            console.print("[yellow]interrupted[/yellow]; nothing written")
            raise typer.Exit(130) from None
        from edgezoo.commands.bench import command_line

        if report.get("latency"):
            report["reproduce"] = command_line(["compare", *files], {
                "-r": runtimes, "-t": threads, "-b": batch, "--input-size": input_size, "--images": images,
                "-n": count, "--precision": precision, "--rounds": rounds, "--iters-per-round": iters_per_round,
                "--warmup": warmup, "--seed": seed})
        print_report(report)
        if json_path is not None:
            from edgezoo.console import console
            from edgezoo.fileio import write_json

            write_json(json_path, report)
            console.print(f"wrote {json_path}")


def parse_runtimes(text: str | None, precision: str | None) -> list[tuple[str, str | None]] | None:
    """"onnxruntime,openvino:bf16" -> [("onnxruntime", None), ("openvino", "bf16")]; None when not given."""
    from edgezoo.runtimes import normalize_runtime
    from edgezoo.runtimes.openvino import normalize_precision

    if text is None:
        if precision is not None:
            normalize_precision(precision)
        return None
    out: list[tuple[str, str | None]] = []
    for part in text.split(","):
        if not part.strip():
            continue
        name, _, prec = part.strip().partition(":")
        rt = normalize_runtime(name)
        if rt is None:
            raise InputError("--runtimes lists runtimes by name; 'auto' is not one",
                             "leave out --runtimes to run each file on its own runtime")
        if prec and rt != "openvino":
            raise InputError(f"'{part.strip()}': only openvino takes a precision")
        if rt == "openvino":
            prec = prec or precision
            normalize_precision(prec)  # a bad name fails here, before any model loads
        entry = (rt, prec or None)
        if entry not in out:
            out.append(entry)
    if not out:
        raise InputError("--runtimes is empty", "e.g. --runtimes onnxruntime,openvino")
    return out


def plan_entries(files: list[str], runtimes: str | None, precision: str | None) -> list[dict[str, Any]]:
    """(file, runtime, precision) for every file x runtime that can take it; an error for a file none takes."""
    from edgezoo.runtimes import can_take, default_runtime, model_kind

    if not files:
        raise InputError("no files to compare")
    rts = parse_runtimes(runtimes, precision)
    entries = []
    for f in files:
        kind = model_kind(f)
        if kind != "registry" and not Path(f).exists():
            raise InputError(f"no such file: {f}")
        if rts is None:
            rt = default_runtime(kind)
            chosen = [(rt, precision if rt == "openvino" else None)]
        else:
            chosen = [(rt, p) for rt, p in rts if can_take(rt, kind)]
            if not chosen:
                from edgezoo.runtimes import check_runtime_takes

                check_runtime_takes(rts[0][0], kind, f)  # raises, naming what the first runtime takes
        entries += [{"model": f, "runtime": rt, "precision": p} for rt, p in chosen]
    return entries


def _label(entry: dict[str, Any]) -> str:
    rt = entry["runtime"] + (f" {entry['precision']}" if entry["precision"] else "")
    return f"{Path(entry['model']).name} ({rt})"


def _open_all(entries, threads, input_size):
    from edgezoo.console import console
    from edgezoo.export.loaders import open_model

    runners = []
    try:
        for e in entries:
            with console.status(f"loading {e['model']} on {e['runtime']}"):
                opts: dict[str, Any] = {"threads": threads, "input_size": input_size}
                if e["runtime"] == "openvino":
                    opts["precision"] = e["precision"]
                runners.append(open_model(e["model"], e["runtime"], **opts).activate())
    except BaseException:
        for r in runners:
            r.deactivate()
        raise
    return runners


def make_samples(reference, batch: int, count: int, input_size, images, seed: int, meta):
    """Batches of inputs in NCHW (images) for the reference runner's inputs: ``count`` samples, in batches of
    ``batch`` (the count is rounded up to whole batches)."""
    import numpy as np

    from edgezoo.runtimes.comparator import to_layout
    from edgezoo.runtimes.inputs import feeds_for

    infos = reference.inputs
    nbatches = -(-count // batch)
    if images is None:
        out = []
        for i in range(nbatches):
            feeds = feeds_for(reference, batch=batch, input_size=input_size, seed=seed + 1000 * i)
            out.append([to_layout(feeds[info.name], info.layout or "NCHW", "NCHW") for info in infos])
        # rank-4 inputs of unknown layout are taken for NCHW, as ONNX and torch have them
        return out, ["NCHW" if i.layout or len(i.shape) == 4 else None for i in infos]
    from edgezoo.export.calibration import load_image_folder

    if len(infos) != 1 or len(infos[0].shape) != 4:
        raise InputError("--images needs a model with one image input", "leave out --images for random inputs")
    info = infos[0]
    layout = info.layout or "NCHW"
    chw = None
    if input_size is not None:
        c = meta.input_size[0] if meta and meta.input_size else (info.shape[3] if layout == "NHWC" else info.shape[1])
        chw = tuple(input_size) if len(input_size) == 3 else (c, *input_size)
    elif meta is not None and meta.input_size:
        chw = tuple(meta.input_size)
    else:
        shape = info.shape if layout == "NCHW" else (info.shape[0], info.shape[3], info.shape[1], info.shape[2])
        if all(isinstance(d, int) for d in shape[1:]):
            chw = tuple(shape[1:])
    if chw is None:
        raise InputError("--images needs an input size: the first file has no edgezoo metadata and a dynamic input",
                         "pass --input-size HxW")
    if meta is None or meta.mean is None or meta.std is None:
        raise InputError("--images needs the model's mean/std, and the first file has no edgezoo metadata",
                         "put a file exported by edgezoo (.onnx) first, or leave out --images")
    arr = load_image_folder(images, chw, meta.mean, meta.std, count=count, seed=seed)
    whole = (len(arr) // batch) * batch
    if whole == 0:
        raise InputError(f"{images} has {len(arr)} usable image(s), fewer than one batch of {batch}",
                         "lower --batch or add images")
    arr = arr[:whole]
    return [[arr[i:i + batch]] for i in range(0, whole, batch)], ["NCHW"]


def run_compare(entries, threads, batch, input_size, images, count, rounds, iters, warmup, seed) -> dict[str, Any]:
    from edgezoo import __version__
    from edgezoo.profile.latency import describe_machine
    from edgezoo.runtimes.comparator import feeds_in_layout, run_all, score

    runners = _open_all(entries, threads, input_size)
    try:
        labels = _unique([_label(e) for e in entries])
        meta = next((m for m in (r.model_metadata() for r in runners) if m is not None), None)
        batches, layouts = make_samples(runners[0], batch, count, input_size, images, seed, meta)
        outputs = run_all(runners, batches, layouts)
        rows = []
        for e, r, label, out in zip(entries, runners, labels, outputs):
            rows.append({"label": label, "model": e["model"], "runtime": r.name, "backend": r.describe(),
                         "settings": r.settings(), "size_bytes": r.model_size_bytes(),
                         "inputs": [dict(i.to_dict(), layout=i.layout) for i in r.inputs],
                         "outputs": [o.to_dict() for o in r.outputs],
                         "agreement": score(outputs[0], out)})
        feeds = [feeds_in_layout(r, batches[0], layouts) for r in runners] if rounds > 0 else []
    finally:
        for r in runners:
            r.deactivate()
    latency = None
    if rounds > 0:
        latency = time_entries(entries, labels, feeds, threads, input_size, rounds, iters, warmup)
        for row in rows:
            row["latency_ms"] = latency["stats"][row["label"]]
            row["ratio"] = latency["ratio_median"][row["label"]]
    return {"schema": SCHEMA, "edgezoo": __version__, "machine": describe_machine(),
            "settings": {"threads": threads, "batch": batch, "input_size": list(input_size) if input_size else None,
                         "inputs": os.fspath(images) if images is not None else "random", "seed": seed,
                         "samples": sum(len(b[0]) for b in batches), "rounds": rounds, "iters_per_round": iters,
                         "warmup": warmup},
            "reference": rows[0]["label"], "entries": rows, "latency": latency}


def time_entries(entries, labels, feeds, threads, input_size, rounds, iters, warmup) -> dict[str, Any]:
    """Interleaved rounds, each entry in a process of its own (edgezoo.profile.worker): one runtime's thread
    pool never runs beside another's."""
    from edgezoo.console import console
    from edgezoo.profile.latency import compare_timed
    from edgezoo.profile.worker import RunnerProcess

    workers: list[RunnerProcess] = []
    try:
        with console.status("starting one process per entry for the latency rounds"):
            for e, f in zip(entries, feeds):
                opts: dict[str, Any] = {"threads": threads, "input_size": input_size}
                if e["runtime"] == "openvino":
                    opts["precision"] = e["precision"]
                workers.append(RunnerProcess())
                workers[-1].open(e["model"], e["runtime"], **opts)
                workers[-1].prepare("x", feeds=f)
        res = compare_timed({label: (lambda n, w=w: w.time("x", n)) for label, w in zip(labels, workers)},
                            rounds=rounds, iters_per_round=iters, warmup=warmup)
    finally:
        for w in workers:
            w.close()
    return dict(res.to_dict(), isolation="each entry in a process of its own")


def _unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if labels.count(label) == 1 else f"{label} #{seen[label]}")
    return out


def _num(x: float | None, fmt: str) -> str:
    if x is None:
        return "-"
    if x == float("inf"):
        return "inf"
    return format(x, fmt)


def print_report(report: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from edgezoo.commands.bench import format_ms
    from edgezoo.console import console

    s = report["settings"]
    table = Table(title=escape(f"against 1 ({s['samples']} {s['inputs']} samples, batch {s['batch']})"),
                  header_style="bold",
                  caption="ratio: median of per-round ratios to the first in interleaved rounds (< 1: faster); "
                          "agreement of the first output; rel = max abs diff / max |reference|")
    for col in ("#", "p50 ms", "ratio", "max abs", "max rel", "cos min", "top-1", "SQNR dB"):
        table.add_column(col, justify="right")
    for k, row in enumerate(report["entries"], 1):
        console.print(escape(f"{k}. {row['label']}: {row['backend']}"), highlight=False)
    for k, row in enumerate(report["entries"], 1):
        a = row["agreement"][0]
        lat = row.get("latency_ms")
        table.add_row(str(k), format_ms(lat["p50"]) if lat else "-",
                      _num(row.get("ratio"), ".3f"), _num(a["max_abs_diff"], ".2e"), _num(a["max_rel_diff"], ".2e"),
                      _num(a["cosine_min"], ".6f"), _num(a["top1_agreement"], ".0%"), _num(a["sqnr_db"], ".1f"))
    console.print(table)
    if report.get("reproduce"):
        console.print(escape(f"reproduce: {report['reproduce']}"), highlight=False, soft_wrap=True)
