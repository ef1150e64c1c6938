"""Each edgezoo Runner against its runtime's own benchmark program, model by model: what the runner adds.

- OpenVINO (.xml or .onnx): ``benchmark_app -m FILE -d CPU -hint none -nthreads T -nstreams 1 -api sync -infer_precision f32
  -shape [1,C,H,W] -niter N`` (its "Median" latency; f32 asked for, as the runner asks: on a CPU with bf16 the tool
  would otherwise compute in bf16) against ``OpenVinoRunner(threads=T, precision="f32")``;
- LiteRT (.tflite): ``litert-benchmark --model FILE --num_threads T --num_runs N`` (its median, from
  ``--result_json``) against ``LiteRTRunner(threads=T)``.

Both sides run under benchmarks/protocol.py's rules: a fresh process per side per round (the tools are
processes of their own anyway), rounds interleaved with the order reversed every other round, a round taken
only below load 1 (wait, retry, cap), the load and time of every round recorded. The figure per file is the
median over rounds of runner p50 / tool p50; the goal (issue 21) is at most 1.03.

Note: ``litert-benchmark`` runs LiteRT's CompiledModel API with its CPU accelerator, while the runner uses the
Interpreter with the XNNPACK delegate: a gap there may be the API, not the runner's own work.

    python benchmarks/runner_overhead.py FILE [FILE ...] [--threads 1] [--rounds 5] [--runs 100]
        -> benchmarks/results/runner_overhead.json / .md
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import machine  # noqa: E402
from protocol import Entry, load_1min, time_once, wait_for_quiet  # noqa: E402

OUT = ROOT / "benchmarks" / "results"
GOAL = 1.03


def runtime_of(path: Path) -> str:
    return "litert" if path.suffix.lower() == ".tflite" else "openvino"


def tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        raise SystemExit(f"{name} not found: install edgezoo[openvino] / edgezoo[litert] (their wheels ship it)")
    return found


def input_shape(path: Path) -> list[int]:
    from edgezoo.export.loaders import open_model

    with open_model(str(path), runtime_of(path)) as r:
        shape = r.inputs[0].shape
    return [1] + [int(d) for d in shape[1:]]


def tool_command(path: Path, threads: int, runs: int, shape: list[int], json_out: Path) -> list[str]:
    if runtime_of(path) == "litert":
        return [tool("litert-benchmark"), "--model", str(path), "--num_threads", str(threads), "--num_runs",
                str(runs), "--warmup_runs", "10", "--result_json", str(json_out)]
    return [tool("benchmark_app"), "-m", str(path), "-d", "CPU", "-hint", "none", "-nthreads", str(threads),
            "-nstreams", "1", "-api", "sync", "-infer_precision", "f32", "-shape", "[" + ",".join(map(str, shape)) + "]", "-niter", str(runs)]


def tool_p50(path: Path, threads: int, runs: int, shape: list[int]) -> float:
    with tempfile.TemporaryDirectory(prefix="edgezoo-tool-") as tmp:
        json_out = Path(tmp) / "result.json"
        proc = subprocess.run(tool_command(path, threads, runs, shape, json_out), capture_output=True, text=True,
                              timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(proc.args[0]).name} failed on {path}: {proc.stderr.strip()[-500:]}")
        if runtime_of(path) == "litert":
            return float(json.loads(json_out.read_text())["latency"]["median_ms"])
        m = re.findall(r"Median:\s+([0-9.]+)\s*(ms|us)", proc.stdout + proc.stderr)
        if not m:
            raise RuntimeError(f"no Median in benchmark_app's output for {path}")
        value, unit = m[0]  # benchmark_app prints microseconds below a millisecond
        return float(value) / (1000.0 if unit == "us" else 1.0)


def measure_file(path: Path, threads: int, rounds: int, runs: int) -> dict:
    shape = input_shape(path)
    rt = runtime_of(path)
    entry = Entry(path, rt, {"precision": "f32"} if rt == "openvino" else {})
    record = []
    for r in range(rounds):
        load, waited, quiet = wait_for_quiet()
        sides = ("tool", "runner") if r % 2 == 0 else ("runner", "tool")
        p50 = {}
        for side in sides:
            if side == "tool":
                p50["tool"] = tool_p50(path, threads, runs, shape)
            else:
                p50["runner"] = float(np.median(time_once(entry, threads, runs, 10)))
        record.append({"round": r + 1, "start": time.strftime("%H:%M:%SZ", time.gmtime()), "load_1min": load,
                       "waited_s": waited, "quiet": quiet, "load_1min_end": load_1min(),
                       "p50_ms": {k: round(v, 4) for k, v in p50.items()},
                       "runner_over_tool": round(p50["runner"] / p50["tool"], 4)})
        print(f"  {path.name} round {r + 1}: tool {p50['tool']:.3f} ms, runner {p50['runner']:.3f} ms "
              f"(load {load})", flush=True)
    quiet_rounds = [x for x in record if x["quiet"]]
    used = quiet_rounds if len(quiet_rounds) >= 3 else record
    ratios = [x["runner_over_tool"] for x in used]
    return {"file": str(path), "runtime": rt, "threads": threads, "shape": shape,
            "tool_command": " ".join([Path(c).name if i == 0 else c for i, c in
                                      enumerate(tool_command(path, threads, runs, shape, Path("result.json")))]),
            "runner": f"edgezoo bench {path} -r {rt} -t {threads}" + (" --precision f32" if rt == "openvino" else ""),
            "rounds": record, "quiet_rounds": len(quiet_rounds),
            "tool_p50_ms": float(np.median([x["p50_ms"]["tool"] for x in used])),
            "runner_p50_ms": float(np.median([x["p50_ms"]["runner"] for x in used])),
            "runner_over_tool": float(np.median(ratios)),
            "runner_over_tool_range": [float(min(ratios)), float(max(ratios))]}


def write(results: dict) -> None:
    from edgezoo.fileio import atomic_write_text, write_json

    OUT.mkdir(exist_ok=True)
    write_json(OUT / "runner_overhead.json", results)
    m = results["machine"]
    lines = ["# edgezoo's runners against the runtimes' own benchmark programs", "",
             f"Run {results['timestamp']} on {m.get('cpu', '?')} ({m.get('cpus', '?')} logical CPUs); "
             f"{results['threads']} thread(s), batch 1, {results['runs']} runs per side per round; "
             "a fresh process per side per round, rounds interleaved and taken below load 1 "
             "(benchmarks/protocol.py). Ratio = runner p50 / tool p50 (median over rounds); goal <= "
             f"{GOAL}.", "",
             "| file | runtime | tool p50 ms | runner p50 ms | runner / tool | range | goal met | quiet rounds |",
             "|---|---|---|---|---|---|---|---|"]
    for f in results["files"]:
        lo, hi = f["runner_over_tool_range"]
        lines.append(f"| {Path(f['file']).name} | {f['runtime']} | {f['tool_p50_ms']:.3f} | {f['runner_p50_ms']:.3f} "
                     f"| {f['runner_over_tool']:.3f} | {lo:.3f}-{hi:.3f} | "
                     f"{'yes' if f['runner_over_tool'] <= GOAL else 'no'} | {f['quiet_rounds']}/{len(f['rounds'])} |")
    lines += ["", "Commands (tool, then the runner through edgezoo):", ""]
    for f in results["files"]:
        loads = ", ".join(str(x["load_1min"]) for x in f["rounds"])
        lines += [f"- {Path(f['file']).name}: `{f['tool_command']}`; `{f['runner']}` (1-minute load per round: {loads})"]
    atomic_write_text(OUT / "runner_overhead.md", "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path, help=".xml/.onnx (OpenVINO) and .tflite (LiteRT) files")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args()
    results = {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
               "threads": args.threads, "runs": args.runs, "files": []}
    for path in args.files:
        results["files"].append(measure_file(path, args.threads, args.rounds, args.runs))
        write(results)


if __name__ == "__main__":
    main()
