"""Every zoo model: MACs counted from its exported ONNX vs the published figure, and the G1-G4 findings.

Exports each registered model at its default input size (verify=False, simplify=True, in memory), profiles
the ONNX with edgezoo.profile.graph and checks the ShuffleNet V2 guidelines. This is the zoo-wide form of the
"within 1% of the published MACs" check (tests/test_profile_graph.py checks one model per family).
Exits non-zero if any model is off by 1% or more.

Usage: python benchmarks/guidelines_table.py [--only NAME ...]
Writes benchmarks/results/guidelines.md and guidelines.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgezoo.export.onnx import to_onnx_proto  # noqa: E402
from edgezoo.fileio import atomic_write_text, write_json  # noqa: E402
from edgezoo.models.registry import list_specs  # noqa: E402
from edgezoo.profile.graph import profile_onnx  # noqa: E402
from edgezoo.profile.guidelines import check_guidelines  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SEV = {"ok": "ok", "low": "low", "medium": "**medium**", "high": "**HIGH**"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="only these model names")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    rows = []
    for spec in list_specs():
        if args.only and spec.name not in args.only:
            continue
        t0 = time.time()
        proto, simplified = to_onnx_proto(spec.build().eval(), spec.input_size, simplify=True)
        t_export = time.time() - t0
        t0 = time.time()
        prof = profile_onnx(proto)
        t_profile = time.time() - t0
        tot = prof.totals()
        findings = check_guidelines(prof)
        paper = spec.reference.macs
        row = {"model": spec.name, "family": spec.family, "input": list(spec.input_size),
               "macs": tot["macs"], "paper_macs": paper,
               "macs_error": None if not paper else tot["macs"] / paper - 1,
               "params_onnx": tot["params"], "bytes": tot["bytes"], "mem_access": tot["mem_access"],
               "intensity": tot["intensity"], "cio": tot["cio"], "cio_without_depthwise": tot["cio_without_depthwise"],
               "nodes": tot["nodes"], "simplified": simplified, "export_s": round(t_export, 2),
               "profile_s": round(t_profile, 3), "findings": [f.to_dict() for f in findings]}
        rows.append(row)
        err = "-" if row["macs_error"] is None else f"{row['macs_error']:+.3%}"
        print(f"{spec.name:22s} MACs {tot['macs'] / 1e6:9.2f}M (paper {paper / 1e6 if paper else 0:9.2f}M, {err}) "
              + " ".join(f"{f.guideline}:{f.severity}" for f in findings), flush=True)
    bad = [r for r in rows if r["macs_error"] is not None and abs(r["macs_error"]) >= 0.01]
    write_json(args.out / "guidelines.json", rows)
    atomic_write_text(args.out / "guidelines.md", markdown(rows, bad))
    print(f"wrote {args.out / 'guidelines.md'}; {len(rows) - len(bad)}/{len(rows)} models within 1% of the paper MACs")
    return 1 if bad else 0


def markdown(rows: list[dict], bad: list[dict]) -> str:
    lines = [
        "# The zoo under the ShuffleNet V2 guidelines (static profile of the exported ONNX)",
        "",
        "Each model exported at its default input size (opset 17, onnxsim), batch 1, fp32; profiled by "
        "`edgezoo.profile.graph` (MACs = conv + gemm multiply-accumulates without the bias term). "
        f"{len(rows) - len(bad)} of {len(rows)} models are within 1% of the published MACs"
        + ("" if not bad else f"; off by 1% or more: {', '.join(r['model'] for r in bad)}") + ".",
        "",
        "## MACs, memory traffic and CIO",
        "",
        "| model | MACs (ONNX) | published | error | bytes moved (fp32) | memory access cost (elements) | "
        "FLOPs/byte | CIO | CIO w/o depthwise | nodes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        err = "-" if r["macs_error"] is None else f"{r['macs_error']:+.3%}"
        lines.append(f"| {r['model']} | {r['macs'] / 1e6:.2f}M | {r['paper_macs'] / 1e6 if r['paper_macs'] else 0:.2f}M | "
                     f"{err} | {r['bytes'] / 1e6:.1f}MB | {r['mem_access'] / 1e6:.2f}M | {r['intensity']:.2f} | "
                     f"{r['cio'] / 1e6:.2f}M | {r['cio_without_depthwise'] / 1e6:.2f}M | {r['nodes']} |")
    lines += [
        "",
        "## Guideline findings",
        "",
        "G1: extra memory access of all 1x1 convs over the equal-width bound 2*sqrt(hwB) + B/hw. "
        "G2: extra memory access of group convs vs g=1 at equal FLOPs, as a share of the model's (depthwise is "
        "counted under G4, as the paper does). G3: small (non-conv) ops per conv, and the most parallel conv "
        "branches meeting in one block. G4: element-wise ops' share of the bytes moved (in brackets: with "
        "depthwise convs). Severity thresholds are edgezoo's rules of thumb (see edgezoo/profile/guidelines.py).",
        "",
        "| model | G1 extra MAC (1x1) | G2 group-conv extra | G3 small ops/conv, max branches | G4 element-wise bytes |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        f = {x["guideline"]: x for x in r["findings"]}
        g3_branches = max((l["parallel_branches"] for l in f["G3"]["layers"]), default=0)
        g4_dw = f["G4"]["figure"].split("with depthwise convs ")[-1].split(" of bytes")[0]
        lines.append(
            f"| {r['model']} | {SEV[f['G1']['severity']]} {f['G1']['value']:.1%} | "
            f"{SEV[f['G2']['severity']]} {f['G2']['value']:.1%} | "
            f"{SEV[f['G3']['severity']]} {f['G3']['value']:.2f}, {g3_branches} | "
            f"{SEV[f['G4']['severity']]} {f['G4']['value']:.1%} ({g4_dw}) |")
    lines += ["", "Worst layer per finding (full lists in guidelines.json):", ""]
    for r in rows:
        f = {x["guideline"]: x for x in r["findings"]}
        parts = []
        if f["G1"]["layers"]:
            l = f["G1"]["layers"][0]
            parts.append(f"G1 `{l['name']}` {l['c1']}->{l['c2']} at {l['hw']} px, +{l['excess']:.0%}")
        if f["G2"]["layers"]:
            l = f["G2"]["layers"][0]
            parts.append(f"G2 `{l['name']}` g={l['groups']}")
        if f["G4"]["layers"]:
            l = f["G4"]["layers"][0]
            parts.append(f"G4 {l['op_type']} x{l['count']} {l['share_of_bytes']:.0%} of bytes")
        lines.append(f"- {r['model']}: " + "; ".join(parts))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
