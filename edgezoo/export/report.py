"""The export report (report.json's dict) as Markdown: passes, parity, files, int8, fp16, the target table."""

from __future__ import annotations

from edgezoo.export.accuracy import accuracy_markdown
from edgezoo.export.budget import budget_markdown


def _top1(a: dict) -> str:
    """Top-1 agreement exists only for an output shaped [N, classes] (agreement.output_agreement)."""
    return "n/a" if a.get("top1_agreement") is None else f"{a['top1_agreement'] * 100:.1f}%"


def _agree(a: dict | None) -> str:
    if not a:
        return "| - | - | - "
    return f"| {_top1(a)} | {a['cosine_mean']:.4f} | {a['sqnr_db']:.1f} "


def outputs_markdown(a: dict) -> list[str]:
    """Several outputs: one line each (the figures above are the worst output's)."""
    if "outputs" not in a:
        return []
    lines = ["| output | shape | top-1 agreement | cosine mean | SQNR dB | max abs diff | max rel diff |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {o['output']} | {'x'.join(map(str, o['shape']))} | {_top1(o)} | {o['cosine_mean']:.4f} | "
              f"{o['sqnr_db']:.1f} | {o['max_abs_diff']:.3g} | {o['max_rel_diff']:.3g} |" for o in a["outputs"]]
    return lines + [""]


def targets_markdown(rows: list[dict]) -> list[str]:
    """Rows of run_targets as a table; failed and skipped targets as one line each below it."""
    if not rows:
        return []
    lines = ["", "## Targets (each file checked against the fp32 model through its runtime)", "",
             "| target | precision | file | size | p50 ms | / fastest fp32 | top-1 agreement | cosine | SQNR dB |",
             "|---|---|---|---|---|---|---|---|---|"]
    problems = []
    for r in rows:
        if r.get("status") != "ok":
            problems.append(f"- {r['target']} {r.get('precision', '')}: {r.get('error')}")
            continue
        lat = f"{r['latency_ms']:.2f}" if "latency_ms" in r else "-"
        ratio = f"{r['ratio_to_fastest_fp32']:.2f}" if "ratio_to_fastest_fp32" in r else "-"
        lines.append(f"| {r['target']} | {r['precision']} | {r['file']} | {r['size_bytes'] / 1e6:.2f} MB | {lat} "
                     f"| {ratio} {_agree(r.get('agreement'))}|")
    pre = [(r["target"], f) for r in rows if r.get("status") == "ok" for f in r.get("preflight", [])]
    if pre:
        lines += ["", "What each target keeps in float or rewrites for int8 (preflight):", ""]
        lines += [f"- {t}: {f}" for t, f in pre]
    if problems:
        lines += ["", "Targets that did not land:", ""] + problems
    return lines


def fastest_markdown(r: dict) -> list[str]:
    """The fastest verified file of any precision, and the fastest int8 one, as the summary names them."""
    lines = []
    for key, what in (("fastest_verified", "fastest verified file"), ("fastest_int8", "fastest verified int8 file")):
        b = r.get(key)
        if b:
            how = f", {b['latency_ms']:.2f} ms p50" if b.get("latency_ms") else " (not timed: pass --bench)"
            lines.append(f"- {what}: {b['file']} ({b['target']} {b.get('precision', 'int8')}{how})")
    return [""] + lines if lines else []

def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def render_markdown(r: dict) -> str:
    src = r.get("source", {})
    lines = [f"# edgezoo export: {r['model']}", "",
             (f"source: {src['kind']}" + (f" {src['path']}" if src.get("path") else "") + ", " if src else "")
             + f"input {'x'.join(map(str, r['input_size']))}, batch {r['batch']}, opset {r['opset']}, "
             f"weights: {r['weights']}, edgezoo {r['edgezoo']}", ""]
    if r.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in r["notes"]] + [""]
    lines += ["## Passes (each checked against the model before it)", "",
              "| pass | changes | max abs diff | tolerance | ok |", "|---|---|---|---|---|"]
    for p in r["passes"]:
        tol = "inexact" if p["tolerance"] is None else f"{p['tolerance']:.1e}"
        lines.append(f"| {p['name']} | {p['n_changes']} | {p['max_abs_diff']:.2e} | {tol} | "
                     f"{'yes' if p['ok'] else 'NO'} |")
    exp = r.get("export", {})
    lines += ["", "## ONNX Runtime vs PyTorch", ""]
    lines += [f"- batch {c['batch']}: max abs diff {c['max_abs_diff']:.2e} (tolerance {c['tolerance']:.0e})"
              for c in exp.get("checks", [])]
    lines += ["", "## Files", "", "| file | size |", "|---|---|"]
    lines += [f"| {v['file']} | {_mb(v['size_bytes'])} |" for v in r["files"].values()]
    if "int8" in r:
        q = r["int8"]
        a = q["agreement"]
        lines += ["", "## int8", "",
                  f"QDQ, {q['activations']} activations / {q['weights']} weights, "
                  f"{'per-channel' if q['per_channel'] else 'per-tensor'}, {q['method']} calibration on "
                  f"{q['calibration']}.", "",
                  f"Activation forms: {q['forms']}", ""] + (
                     [f"Recipe: {q['recipe']['described']}", ""] if q.get("recipe") else []) + [
                  f"Against fp32 on {a['inputs']}" + (f" (worst of {len(a['outputs'])} outputs: {a['output']})"
                                                      if "outputs" in a else "") + ":", "",
                  f"- top-1 agreement {_top1(a)}",
                  f"- cosine similarity mean {a['cosine_mean']:.4f} (min {a['cosine_min']:.4f})",
                  f"- output SQNR {a['sqnr_db']:.1f} dB", ""] + outputs_markdown(a)
        fi = q["float_islands"]
        lines.append(f"Ops onnxruntime runs in float between DQ and Q: {fi['count']} {fi['by_op'] or ''}"
                     + (f" (intended: {fi['intended']})" if fi["intended"] and fi["count"] else ""))
        if a.get("worst_layers"):
            lines += ["", "Ten worst layers by SQNR:", "", "| tensor | op | SQNR dB |", "|---|---|---|"]
            lines += [f"| `{w['tensor']}` | {w['op_type']} | {w['sqnr_db']:.1f} |" for w in a["worst_layers"]]
    if "fp16" in r and "agreement" in r["fp16"]:
        a = r["fp16"]["agreement"]
        lines += ["", "## fp16", "", f"top-1 agreement {_top1(a)}, cosine "
                  f"{a['cosine_mean']:.5f}, SQNR {a['sqnr_db']:.1f} dB on {a['inputs']}"]
    lines += targets_markdown(r.get("targets", []))
    lines += fastest_markdown(r)
    lines += accuracy_markdown(r) + budget_markdown(r)
    if "tensorrt" in r:
        lines += ["", "## TensorRT", "", f"{r['tensorrt']}"]
    if "lite" in r:
        lines += ["", "## lite", "", "```", _json(r["lite"]), "```"]
    lines += ["", f"Took {r.get('seconds', '?')} s.", ""]
    return "\n".join(lines)


def _json(o) -> str:
    import json

    return json.dumps(o, indent=2, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))
