"""fp32 latency of the zoo's main models on every edge runtime, with agreement against onnxruntime.

For each model (batch 1, 224x224, random-init weights with BatchNorm statistics recalibrated on random data,
edgezoo.runtimes.torch.build_registry_model) one module is converted three ways, each with the converter
its runtime documents:

- .onnx: edgezoo's verified exporter (edgezoo.export.loaders.export_to_bytes), run on onnxruntime and on
  OpenVINO (precision hint f32, and bf16: what OpenVINO compiled is read back and reported);
- .pte: torch.export -> to_edge_transform_and_lower(XnnpackPartitioner) -> to_executorch, run on the
  ExecuTorch runtime (XNNPACK delegate);
- .tflite: litert_torch.convert, run on the LiteRT interpreter (XNNPACK delegate).

All five runners of a model are timed in interleaved rounds (edgezoo.profile.latency.compare_interleaved)
at 1 thread and then 2 threads; ratios are medians of per-round ratios to onnxruntime. Agreement is of the
logits on 4 random normalised images against onnxruntime's.

    python benchmarks/runtimes.py [--models a,b] [--rounds 9] [--iters 5] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ("mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "shufflenet_v2_x1_0", "ghostnet_x1_0",
          "squeezenet1_1", "efficientnet_lite0")
ENTRIES = ("onnxruntime", "openvino f32", "openvino bf16", "executorch", "litert")


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "unknown"


def convert(name: str, folder: Path) -> dict:
    import torch

    from edgezoo.export.loaders import export_to_bytes
    from edgezoo.runtimes.torch import build_registry_model

    spec, module = build_registry_model(name)
    x = torch.zeros(1, *spec.input_size)
    times = {}
    t = time.perf_counter()
    onnx = folder / f"{spec.name}.onnx"
    onnx.write_bytes(export_to_bytes(module, spec))
    times["onnx_s"] = time.perf_counter() - t

    t = time.perf_counter()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    ep = torch.export.export(module, (x,))
    pte = folder / f"{spec.name}.pte"
    pte.write_bytes(to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)
    times["pte_s"] = time.perf_counter() - t

    t = time.perf_counter()
    import litert_torch

    tflite = folder / f"{spec.name}.tflite"
    with contextlib.redirect_stdout(io.StringIO()):
        litert_torch.convert(module, (x,)).export(os.fspath(tflite))
    times["tflite_s"] = time.perf_counter() - t
    return {"onnx": onnx, "pte": pte, "tflite": tflite, "times": times}


def open_entries(files: dict, threads: int) -> dict:
    from edgezoo.runtimes import open_runner

    return {
        "onnxruntime": open_runner(files["onnx"], "onnxruntime", threads=threads),
        "openvino f32": open_runner(files["onnx"], "openvino", threads=threads, precision="f32"),
        "openvino bf16": open_runner(files["onnx"], "openvino", threads=threads, precision="bf16"),
        "executorch": open_runner(files["pte"], "executorch", threads=threads),
        "litert": open_runner(files["tflite"], "litert", threads=threads),
    }


def bench_model(name: str, threads_list, rounds: int, iters: int) -> dict:
    from edgezoo.errors import UnknownModelError
    from edgezoo.models.registry import get_spec
    from edgezoo.profile.latency import compare_interleaved
    from edgezoo.runtimes.comparator import feeds_in_layout, run_all, score, to_layout
    from edgezoo.runtimes.inputs import feeds_for

    try:
        spec = get_spec(name)
    except UnknownModelError:
        return {"model": name, "missing": "not in this checkout's registry"}
    row: dict = {"model": spec.name, "input_size": list(spec.input_size), "threads": {}}
    with tempfile.TemporaryDirectory(prefix="edgezoo-rt-bench-") as tmp:
        files = convert(spec.name, Path(tmp))
        row["convert_s"] = {k: round(v, 1) for k, v in files["times"].items()}
        row["size_bytes"] = {k: files[k].stat().st_size for k in ("onnx", "pte", "tflite")}
        for threads in threads_list:
            runners = open_entries(files, threads)
            for r in runners.values():
                r.activate()
            try:
                ref = runners["onnxruntime"]
                info = ref.inputs[0]
                samples = [[to_layout(feeds_for(ref, 1, seed=s)[info.name], info.layout, "NCHW")] for s in range(4)]
                layouts = ["NCHW"]
                outs = run_all(list(runners.values()), samples, layouts)
                agree = {k: score(outs[0], o)[0] for k, o in zip(runners, outs)}
                feeds = {k: feeds_in_layout(r, samples[0], layouts) for k, r in runners.items()}
                res = compare_interleaved({k: (lambda r=r, f=feeds[k]: r.infer(f)) for k, r in runners.items()},
                                          rounds=rounds, iters_per_round=iters, warmup=3)
                row["threads"][str(threads)] = {
                    k: {"backend": r.describe(), "settings": r.settings(),
                        "p50_ms": res.stats[k].p50, "ratio_to_ort": res.ratio_median[k],
                        "ratio_iqr": [res.ratio_q25[k], res.ratio_q75[k]], "agreement": agree[k]}
                    for k, r in runners.items()}
            finally:
                for r in runners.values():
                    r.deactivate()
            print(f"{spec.name} {threads}t: " + ", ".join(
                f"{k} {v['p50_ms']:.2f} ms" for k, v in row["threads"][str(threads)].items()), flush=True)
    return row


def write_results(out: Path, meta: dict, rows: list[dict]) -> None:
    from edgezoo.fileio import atomic_write_text, write_json

    write_json(out / "runtimes.json", {"machine": meta, "models": rows})
    m = meta["machine"]
    lines = [
        "# fp32 latency on every edge runtime",
        "",
        "Written by `python benchmarks/runtimes.py` (see its docstring for the method). Batch 1, 224x224,",
        "random-init weights with BatchNorm recalibrated; medians of interleaved rounds "
        f"({meta['rounds']} rounds x {meta['iters']} runs per runner); ratio = median per-round ratio to",
        "onnxruntime (< 1: faster). Agreement: logits on 4 random images against onnxruntime's (max abs diff,",
        "SQNR dB; top-1 agreement in the JSON).",
        "",
        f"Machine: {m.get('cpu', '?')}, {m.get('cpus', '?')} CPUs; "
        f"{', '.join(f'{k} {v}' for k, v in meta['versions'].items())}.",
        f"Load at start: `{meta['uptime_start']}`; at end: `{meta['uptime_end']}`.",
        "**The machine was not quiet**: other sessions shared its 2 cores during the run, so treat single figures "
        "with care (single p50s move with the load); ratios within one interleaved run are the robust part.",
        "",
        f"OpenVINO bf16: {meta['bf16_note']}",
        "",
    ]
    for threads in meta["threads"]:
        lines += [f"## {threads} thread{'s' if threads != 1 else ''}", "",
                  "| model | " + " | ".join(f"{e} ms (x ort)" for e in ENTRIES) + " |",
                  "|---|" + "---:|" * len(ENTRIES)]
        for r in rows:
            if "missing" in r:
                lines.append(f"| {r['model']} | " + " | ".join("missing" for _ in ENTRIES) + " |")
                continue
            t = r["threads"][str(threads)]
            lines.append(f"| {r['model']} | " + " | ".join(
                f"{t[e]['p50_ms']:.2f} ({t[e]['ratio_to_ort']:.2f})" for e in ENTRIES) + " |")
        lines.append("")
    lines += ["## Agreement with onnxruntime (1 thread): max abs diff / SQNR dB", "",
              "| model | " + " | ".join(ENTRIES[1:]) + " |", "|---|" + "---:|" * (len(ENTRIES) - 1)]
    for r in rows:
        if "missing" in r:
            continue
        t = r["threads"][str(meta["threads"][0])]
        lines.append(f"| {r['model']} | " + " | ".join(
            f"{t[e]['agreement']['max_abs_diff']:.1e} / {t[e]['agreement']['sqnr_db']:.0f}" for e in ENTRIES[1:]) + " |")
    lines += ["", "## Conversion time (s) and file sizes", "", "| model | .onnx | .pte | .tflite | sizes (KiB) onnx/pte/tflite |",
              "|---|---:|---:|---:|---:|"]
    for r in rows:
        if "missing" in r:
            lines.append(f"| {r['model']} | {r['missing']} | | | |")
            continue
        c, s = r["convert_s"], r["size_bytes"]
        lines.append(f"| {r['model']} | {c['onnx_s']} | {c['pte_s']} | {c['tflite_s']} | "
                     f"{s['onnx'] >> 10} / {s['pte'] >> 10} / {s['tflite'] >> 10} |")
    atomic_write_text(out / "runtimes.md", "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from importlib.metadata import version

    from edgezoo.profile.latency import describe_machine

    meta = {"machine": describe_machine(), "uptime_start": uptime(), "rounds": args.rounds, "iters": args.iters,
            "threads": [int(t) for t in args.threads.split(",")],
            "versions": {p: version(p) for p in ("onnxruntime", "openvino", "executorch", "ai-edge-litert",
                                                 "litert-torch", "torch")}}
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for m in (m for m in args.models.split(",") if m):
        rows.append(bench_model(m, meta["threads"], args.rounds, args.iters))
        finish(args.out, meta, rows)  # after every model, so a run cut short still leaves what it measured
    print(f"wrote {args.out / 'runtimes.md'}")


def finish(out: Path, meta: dict, rows: list[dict]) -> None:
    meta["uptime_end"] = uptime()
    ran = {t["openvino bf16"]["settings"]["precision"] for r in rows if "missing" not in r for t in r["threads"].values()}
    meta["bf16_note"] = (f"asked for bf16, OpenVINO compiled {', '.join(sorted(map(str, ran)))} (read back from "
                         "the compiled model); this CPU does not report bf16 to OpenVINO (its optimization "
                         "capabilities are FP32/INT8), so the bf16 column ran f32" if ran == {"f32"} else
                         f"asked for bf16, OpenVINO compiled {', '.join(sorted(map(str, ran)))}")
    write_results(out, meta, rows)


if __name__ == "__main__":
    main()
