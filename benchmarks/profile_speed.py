"""How long static profiling takes: MobileNet V3 Large (goal: under 2 s), plus the `edgezoo profile` command.

Exports the model once to a temporary .onnx file, then times
  * profile_onnx(path): load + shape inference + per-node counts, the library call (median of N runs);
  * profile + guidelines: the above plus G1-G4;
  * `python -m edgezoo profile FILE` in a subprocess, end to end (interpreter start and imports included).
The machine is shared (2 vCPUs, other jobs running): medians, with the load average recorded.

Usage: python benchmarks/profile_speed.py [--runs 15]
Writes benchmarks/results/profile_speed.json and .md.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgezoo.export.onnx import export_onnx  # noqa: E402
from edgezoo.fileio import atomic_write_text, write_json  # noqa: E402
from edgezoo.models.registry import create_model, get_spec  # noqa: E402
from edgezoo.profile.graph import profile_onnx  # noqa: E402
from edgezoo.profile.guidelines import check_guidelines  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def timed(fn, runs: int) -> list[float]:
    fn()  # warm: first-call imports are not the profiler's cost
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenet_v3_large")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--cli-runs", type=int, default=5)
    args = ap.parse_args()
    spec = get_spec(args.model)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{spec.name}.onnx"
        export_onnx(create_model(spec.name), path, spec.input_size, verify=False)
        lib = timed(lambda: profile_onnx(path), args.runs)
        full = timed(lambda: check_guidelines(profile_onnx(path)), args.runs)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cli, cli_cpu = [], []
        for _ in range(args.cli_runs):
            t = time.perf_counter()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            r = subprocess.run([sys.executable, "-m", "edgezoo", "profile", str(path)], capture_output=True, env=env)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cli.append(time.perf_counter() - t)
            # CPU seconds of the command: what it costs, whatever else the shared machine is running
            cli_cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            if r.returncode:
                raise SystemExit(r.stderr.decode())
        nodes = len(profile_onnx(path).nodes)
        size = path.stat().st_size
    from _common import machine

    res = {"model": spec.name, "nodes": nodes, "onnx_bytes": size, "runs": args.runs,
           "profile_onnx_s": {"median": float(np.median(lib)), "max": float(np.max(lib))},
           "profile_and_guidelines_s": {"median": float(np.median(full)), "max": float(np.max(full))},
           "cli_profile_s": {"median": float(np.median(cli)), "max": float(np.max(cli))},
           "cli_profile_cpu_s": {"median": float(np.median(cli_cpu)), "max": float(np.max(cli_cpu))},
           "goal_s": 2.0, "machine": machine(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    write_json(RESULTS / "profile_speed.json", res)
    m = res["machine"]
    md = f"""# Static profiling speed

{spec.name} ({nodes} nodes, {size / 1e6:.1f} MB ONNX), {m.get('cpu', '?')}, {m.get('cpus', '?')} vCPUs, shared with
other jobs (load average {load_before[0]:.1f} before, {res['loadavg_after'][0]:.1f} after). Medians of {args.runs} runs
({args.cli_runs} for the command); goal: under 2 s.

| what | median | slowest |
|---|---:|---:|
| `profile_onnx(path)`: load, shape inference, per-node counts | {res['profile_onnx_s']['median'] * 1e3:.0f} ms | {res['profile_onnx_s']['max'] * 1e3:.0f} ms |
| the same + G1-G4 guidelines | {res['profile_and_guidelines_s']['median'] * 1e3:.0f} ms | {res['profile_and_guidelines_s']['max'] * 1e3:.0f} ms |
| `python -m edgezoo profile FILE` end to end (interpreter, imports, tables), wall | {res['cli_profile_s']['median']:.2f} s | {res['cli_profile_s']['max']:.2f} s |
| the same, CPU time (user + sys) | {res['cli_profile_cpu_s']['median']:.2f} s | {res['cli_profile_cpu_s']['max']:.2f} s |

The profiler itself takes about a tenth of a second. Most of the command's time goes to starting Python
and importing typer, rich, numpy and onnx (edgezoo.cli alone imports in about 0.4 s on an idle core); the
wall-clock figure also includes waiting for a core on this shared machine.
"""
    atomic_write_text(RESULTS / "profile_speed.md", md)
    print(md)


if __name__ == "__main__":
    main()
