"""The accuracy budget (``--max-drop P`` on ``--eval``, ``--min-sqnr DB``): the most sensitive layers stay in
float, a group at a time, until an int8 file meets it; then the fastest file that meets it, of every target
and precision.

Sensitivity is measured, not guessed: for every quantized layer (Conv, Gemm, MatMul) of the onnxruntime QDQ
file, the output SQNR against fp32 when that layer alone computes in float (its weights and its input
dequantized, ``float_layer``); the layers are ranked by that SQNR, best first, as NNCF's accuracy control and
AIMET's AutoQuant rank quantizers by their effect. The ranking is read once, on at most ``RANK_IMAGES`` of
the images, on the onnxruntime file; the QDQ targets (onnxruntime, OpenVINO, which converts a QDQ ONNX) then
rebuild their int8 file with the first 1, 2, 4, 8, ... ranked layers excluded from quantization (the
recipe's ``float_nodes``, ``exclude_nodes`` of the QDQ build), until the file meets the budget on all the
images. The PT2E targets (ExecuTorch, LiteRT) are measured against the budget as built; their quantizers are
not given per-layer exclusions here, and their row says so.

Latency: every verified file and every step of the search is timed (batch 1, interleaved, as ``--bench``),
so the report can say what each group of float layers cost and which file is fastest among those that meet
the budget.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

QDQ_TARGETS = ("onnxruntime", "openvino")
LAYER_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")
RANK_IMAGES = 64
MAX_GROUPS = 8  # 1, 1, 2, 4, ... ranked layers: at most this many rebuilds per target


@dataclass(frozen=True)
class Budget:
    max_drop: float | None = None  # top-1 points on labelled images
    min_sqnr: float | None = None  # dB against fp32

    def describe(self) -> str:
        parts = []
        if self.max_drop is not None:
            parts.append(f"top-1 at most {self.max_drop:g} points below fp32")
        if self.min_sqnr is not None:
            parts.append(f"output SQNR at least {self.min_sqnr:g} dB against fp32")
        return " and ".join(parts)

    def measure(self, ref: np.ndarray, out: np.ndarray, labels: np.ndarray | None) -> dict:
        """The file's figures against fp32's on the same images, and whether they meet the budget."""
        from edgezoo.runtimes.comparator import sqnr_db

        s = float(sqnr_db(ref, out))
        m = {"sqnr_db": round(s, 2) if np.isfinite(s) else None}  # None: identical outputs (JSON has no inf)
        ok = True
        if self.min_sqnr is not None:
            ok &= s >= self.min_sqnr
        if labels is not None:
            from edgezoo.export.accuracy import topk_correct

            m["top1"] = round(float(topk_correct(out, labels, 1).mean() * 100), 2)
            m["top1_drop"] = round(float(topk_correct(ref, labels, 1).mean() * 100) - m["top1"], 2)
            if self.max_drop is not None:
                ok &= m["top1_drop"] <= self.max_drop + 1e-9
        m["meets"] = bool(ok)
        return m


# ------------------------------------------------------------------------------------------ sensitivity

def quantized_layers(model) -> list[str]:
    """Names of the nodes of a QDQ ONNX model whose weights are quantized (an int8 initializer -> DQ), in
    graph order: the layers the budget may keep in float."""
    inits = {i.name for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    out = []
    for n in model.graph.node:
        if n.op_type in LAYER_OPS and len(n.input) > 1:
            dq = producer.get(n.input[1])
            if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in inits:
                out.append(n.name)
    return out


def float_weights(path) -> dict[str, np.ndarray]:
    """The initializers of a float ONNX file by name (the weights a QDQ file was quantized from)."""
    import onnx
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def float_layer(model, names, originals: dict[str, np.ndarray] | None = None) -> "onnx.ModelProto":  # noqa: F821
    """A copy of QDQ ``model`` in which the nodes ``names`` compute in float: each input that comes through a
    DequantizeLinear reads the float tensor instead (an activation's Q input, or a weight). A weight is taken
    from ``originals`` (by its name before quantization) when there, because the QDQ file's biases absorbed
    the bias correction of the quantized weights (edgezoo.export.bias_correction); else dequantized."""
    import onnx
    from onnx import numpy_helper

    from edgezoo.export.bias_correction import dequantize

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name: i for i in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    wanted = set(names)
    for n in m.graph.node:
        if n.name not in wanted:
            continue
        for k, x in enumerate(n.input):
            dq = producer.get(x)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            if dq.input[0] in inits:
                name = f"{x}__float"
                if name not in inits:
                    value = dequantize(dq, inits).astype(np.float32)
                    orig = (originals or {}).get(dq.input[0].removesuffix("_quantized"))
                    if orig is not None and orig.shape == value.shape:
                        value = orig.astype(np.float32)
                    t = numpy_helper.from_array(value, name)
                    m.graph.initializer.append(t)
                    inits[name] = t
                n.input[k] = name
            else:
                q = producer.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear":
                    n.input[k] = q.input[0]
    return m


def rank_layers(qdq_path: Path, inputs: np.ndarray, reference: np.ndarray, float_source: Path | None = None,
                progress=lambda s: None) -> list[dict]:
    """Every quantized layer of ``qdq_path`` with the output SQNR (dB, against ``reference``) when it alone
    computes in float (its weights read from ``float_source``, the fp32 ONNX, when given); most sensitive
    (highest SQNR when float) first, ties in graph order."""
    import onnx

    from edgezoo.export.quantize import run_batched
    from edgezoo.runtimes.comparator import sqnr_db
    from edgezoo.runtimes.onnxruntime import OrtRunner

    model = onnx.load(str(qdq_path))
    originals = float_weights(float_source) if float_source is not None else None
    with OrtRunner(str(qdq_path), threads=1) as r:
        base = float(sqnr_db(reference, run_batched(r, inputs)[0]))
    rows = []
    layers = quantized_layers(model)
    for i, name in enumerate(layers):
        progress(f"accuracy budget: layer sensitivity {i + 1}/{len(layers)}")
        with OrtRunner(float_layer(model, [name], originals).SerializeToString(), threads=1) as r:
            s = float(sqnr_db(reference, run_batched(r, inputs)[0]))
        rows.append({"layer": name, "sqnr_db_when_float": round(s, 2), "gain_db": round(s - base, 2)})
    return sorted(rows, key=lambda r: -r["sqnr_db_when_float"])


def groups(n: int, max_groups: int = MAX_GROUPS) -> list[int]:
    """Cumulative counts of ranked layers to try in float: 1, 2, 4, 8, ... up to all ``n``."""
    out, k = [], 1
    while k < n and len(out) < max_groups - 1:
        out.append(k)
        k *= 2
    return out + [n] if n else []


# ------------------------------------------------------------------------------------------ the search

def keep_float_until(ctx, target_name: str, budget: Budget, ranking: list[str], images: np.ndarray,
                     reference: np.ndarray, labels: np.ndarray | None, scratch: Path) -> dict:
    """Rebuild ``target_name``'s int8 file (a QDQ target) with the first 1, 2, 4, ... of ``ranking`` in float
    until it meets ``budget`` on ``images``. Returns the steps (each with its file under ``scratch``) and the
    index of the step that met it (None: not even with every ranked layer in float)."""
    from edgezoo.export.targets import file_name, get_target, run_on

    target = get_target(target_name)
    recipe = ctx.int8_recipe()
    steps = []
    met = None
    for k in groups(len(ranking)):
        kept = list(ranking[:k])
        sub = dataclasses.replace(ctx, recipe=dataclasses.replace(recipe, float_nodes=kept),
                                  files={"onnxruntime:fp32": ctx.files["onnxruntime:fp32"]}, out_dir=scratch)
        path = scratch / file_name(target_name, f"int8.float{k}", target.suffix)
        ctx.progress(f"accuracy budget: {target_name} int8 with {k} layer(s) in float")
        target.build(sub, "int8", path)
        with target.runner(path, ctx.threads, "int8") as r:
            out = run_on(r, images)[0]  # the class scores the budget is set on
        m = budget.measure(reference, out, labels)
        steps.append({"float_layers": kept, "added": kept[len(steps and steps[-1]["float_layers"] or []):],
                      "path": path, **m})
        if m["meets"]:
            met = len(steps) - 1
            break
    return {"steps": steps, "met": met}


def meet_budget(run) -> dict:
    """The pipeline's budget step (``run``: edgezoo.export.pipeline.ExportRun after the targets step): measure
    every file against the budget, search float layers for the QDQ targets whose int8 file misses it, add
    the files that meet it to the bundle, time them, and name the fastest file that meets it."""
    from edgezoo.export.accuracy import outputs_of, outputs_on
    from edgezoo.export.targets import agreement, bench_rows, file_name, get_target, run_on

    o, ctx = run.options, run.context
    budget = Budget(o.max_drop, o.min_sqnr)
    if run.labelled is not None:
        images, labels, on = run.labelled.images, run.labelled.labels, run.labelled.describe()
    else:
        images, labels, on = run.eval_inputs[0], None, run.eval_inputs[1]
    rows = run.report.get("targets", [])

    def run_file(target: str, path: Path, precision: str) -> np.ndarray:
        if run.labelled is not None:  # the accuracy step reuses these outputs
            return outputs_on(run.labelled, target, path, precision, ctx.threads)
        return outputs_of(target, path, precision, images, ctx.threads)

    ref = run_file("onnxruntime", run.files["fp32"], "fp32")
    for r in rows:
        if r.get("status") == "ok" and r.get("same_file_as") is None:
            r["budget_check"] = budget.measure(ref, run_file(r["target"], run.tmp / r["file"], r["precision"]), labels)
    result: dict = {"budget": budget.describe(), "images": on, "targets": {}}
    misses = [r for r in rows if r.get("precision") == "int8" and "budget_check" in r
              and not r["budget_check"]["meets"]]
    scratch = run.tmp / ".budget"
    timed: list[dict] = []
    try:
        if any(r["target"] in QDQ_TARGETS for r in misses):
            scratch.mkdir(exist_ok=True)
            qdq = ctx.files.get("onnxruntime:int8")
            if qdq is None:  # the onnxruntime target was not asked: rank on a QDQ file made for the purpose
                from edgezoo.export.targets.onnxruntime import qdq_file

                qdq = scratch / "rank.int8.onnx"
                qdq_file(ctx, "onnxruntime", qdq)
            n = min(RANK_IMAGES, len(images))
            ranked = rank_layers(qdq, images[:n], ref[:n], ctx.files["onnxruntime:fp32"], ctx.progress)
            result["ranking"] = {"on": f"{qdq.name} (onnxruntime), {n} images", "layers": ranked}
        for r in misses:
            name = r["target"]
            if name not in QDQ_TARGETS:
                r["budget_check"]["action"] = ("missed the budget as built; layers are kept in float for the QDQ "
                                               "targets (onnxruntime, OpenVINO) only, not in this runtime's "
                                               "PT2E quantizer")
                result["targets"][name] = {"met": False, "action": r["budget_check"]["action"]}
                continue
            search = keep_float_until(ctx, name, budget, [x["layer"] for x in result["ranking"]["layers"]], images,
                                      ref, labels, scratch)
            entry = {"met": search["met"] is not None, "steps": []}
            for i, s in enumerate(search["steps"]):
                step = {k: v for k, v in s.items() if k != "path"}
                step["file"] = str(s["path"].relative_to(run.tmp))
                entry["steps"].append(step)
                timed.append({"target": name, "precision": "int8", "file": step["file"], "status": "ok",
                              "agreement": {}, "_step": (name, i)})
            if search["met"] is not None:
                s = search["steps"][search["met"]]
                final = run.tmp / file_name(name, "int8.budget", get_target(name).suffix)
                shutil.copyfile(s["path"], final)
                if final.suffix == ".xml":
                    shutil.copyfile(s["path"].with_suffix(".bin"), final.with_suffix(".bin"))
                    run.files[f"{name}.int8.budget.bin"] = final.with_suffix(".bin")
                run.files[f"{name}.int8.budget"] = final
                m = {k: v for k, v in s.items() if k not in ("path", "float_layers", "added")}
                with get_target(name).runner(final, ctx.threads, "int8") as runner:
                    agreed = agreement(ctx.reference, run_on(runner, ctx.eval_inputs, ctx.output_names),
                                       ctx.output_names)
                rows.append({"target": name, "precision": "int8", "variant": "budget", "file": final.name,
                             "status": "ok", "size_bytes": _size(final), "float_layers": s["float_layers"],
                             "agreement": agreed,
                             "budget_check": m, "method": f"{r.get('method', '')}; {len(s['float_layers'])} "
                                                          "layers kept in float for the budget"})
                entry["file"] = final.name
            result["targets"][name] = entry
        ok = [r for r in rows if r.get("status") == "ok" and "budget_check" in r]
        run.step("accuracy budget: timing the files (interleaved, 1 thread)")
        bench_rows(ctx, ok + timed)
        for t in timed:
            name, i = t["_step"]
            result["targets"][name]["steps"][i]["latency_ms"] = t.get("latency_ms")
        for name, entry in result["targets"].items():
            base = next((r.get("latency_ms") for r in rows if r["target"] == name and r["precision"] == "int8"
                         and r.get("variant") is None), None)
            prev = base
            for s in entry.get("steps", []):
                lat = s.get("latency_ms")
                s["cost_ms"] = None if lat is None or prev is None else round(lat - prev, 3)
                prev = lat if lat is not None else prev
            entry["unconstrained_latency_ms"] = base
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    meeting = [r for r in rows if r.get("budget_check", {}).get("meets") and "latency_ms" in r]
    if meeting:
        best = min(meeting, key=lambda r: r["latency_ms"])
        result["fastest"] = {k: best.get(k) for k in ("target", "precision", "file", "latency_ms")}
        result["fastest"].update({k: best["budget_check"].get(k) for k in ("top1_drop", "sqnr_db")})
    return result


def _size(path: Path) -> int:
    side = path.with_suffix(".bin")
    return path.stat().st_size + (side.stat().st_size if path.suffix == ".xml" and side.exists() else 0)


# ------------------------------------------------------------------------------------------ report

def budget_markdown(report: dict) -> list[str]:
    b = report.get("budget")
    if not b:
        return []
    lines = ["", "## Accuracy budget", "", f"Budget: {b['budget']}, measured on {b['images']}.", "",
             "| target | precision | file | top-1 drop (points) | SQNR dB | meets | p50 ms |", "|---|---|---|---|---|---|---|"]
    for r in report.get("targets", []):
        c = r.get("budget_check")
        if not c:
            continue
        drop = f"{c['top1_drop']:+.1f}" if "top1_drop" in c else "-"
        lat = f"{r['latency_ms']:.2f}" if "latency_ms" in r else "-"
        lines.append(f"| {r['target']} | {r['precision']}{' (budget)' if r.get('variant') == 'budget' else ''} | "
                     f"{r['file']} | {drop} | {_db(c['sqnr_db'])} | {'yes' if c['meets'] else 'no'} | {lat} |")
    for name, e in b.get("targets", {}).items():
        if "action" in e:
            lines += ["", f"{name}: {e['action']}."]
            continue
        lines += ["", f"{name}: layers kept in float, a group at a time (unconstrained int8 p50 "
                  f"{_ms(e.get('unconstrained_latency_ms'))}):", "",
                  "| layers added to float | total in float | top-1 drop | SQNR dB | meets | p50 ms | cost ms |",
                  "|---|---|---|---|---|---|---|"]
        for s in e["steps"]:
            drop = f"{s['top1_drop']:+.1f}" if "top1_drop" in s else "-"
            lines.append(f"| {', '.join(f'`{x}`' for x in s['added'])} | {len(s['float_layers'])} | {drop} | "
                         f"{_db(s['sqnr_db'])} | {'yes' if s['meets'] else 'no'} | {_ms(s.get('latency_ms'))} | "
                         f"{_ms(s.get('cost_ms'), sign=True)} |")
        if not e["met"]:
            lines += ["", f"{name}: not met even with every quantized layer tried in float."]
    if b.get("ranking"):
        top = b["ranking"]["layers"][:10]
        lines += ["", f"Layer sensitivity (output SQNR when that layer alone is float; {b['ranking']['on']}):", "",
                  "| layer | SQNR dB when float | gain dB |", "|---|---|---|"]
        lines += [f"| `{x['layer']}` | {x['sqnr_db_when_float']:.1f} | {x['gain_db']:+.1f} |" for x in top]
    f = b.get("fastest")
    lines += ["", f"Fastest file that meets the budget: {f['file']} ({f['target']} {f['precision']}, "
              f"{f['latency_ms']:.2f} ms)." if f else "No timed file meets the budget."]
    return lines


def _db(v) -> str:
    return "identical" if v is None else f"{v:.1f}"


def _ms(v, sign: bool = False) -> str:
    return "-" if v is None else (f"{v:+.2f}" if sign else f"{v:.2f}")


def budget_summary(report: dict) -> list[str]:
    b = report.get("budget")
    if not b:
        return []
    out = [f"budget ({b['budget']}):"]
    for name, e in b.get("targets", {}).items():
        if "action" in e:
            out.append(f"  {name} int8: {e['action']}")
        elif e["met"]:
            last = e["steps"][-1]
            out.append(f"  {name} int8: met with {len(last['float_layers'])} layer(s) in float -> {e['file']} "
                       f"({_ms(last.get('latency_ms'))} ms vs {_ms(e.get('unconstrained_latency_ms'))} ms unconstrained)")
        else:
            out.append(f"  {name} int8: not met even with every quantized layer in float")
    f = b.get("fastest")
    out.append(f"  fastest file that meets it: {f['file']} ({f['target']} {f['precision']}, {f['latency_ms']:.2f} ms)"
               if f else "  no file meets it")
    return out
