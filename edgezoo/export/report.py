"""The export report's target table (target x precision) in Markdown, and the one-line summary of the best."""

from __future__ import annotations


def _agree(a: dict | None) -> str:
    if not a:
        return "| - | - | - "
    return f"| {a['top1_agreement'] * 100:.1f}% | {a['cosine_mean']:.4f} | {a['sqnr_db']:.1f} "


def targets_markdown(rows: list[dict]) -> list[str]:
    """Rows of run_targets as a table; failed and skipped targets as one line each below it."""
    if not rows:
        return []
    lines = ["", "## Targets (each file checked against PyTorch fp32 through its runtime)", "",
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
