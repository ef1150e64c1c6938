"""benchmarks/results/readme_figures/summary.md from the rounds readme_figures.sh wrote: per figure, the median
ratio of each round, their spread, and the load of every round. The README quotes the median over rounds."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "results" / "readme_figures"


def _compare(data: dict) -> dict:
    return data["results"][0]["compare"] if "results" in data else data["latency"]


def main() -> None:
    rounds = sorted(p for p in ROOT.glob("round*") if p.is_dir())
    figures: dict[tuple[str, str], list[float]] = {}
    loads, commands, whens = {}, {}, []
    for r in rounds:
        whens.append(f"- {r.name}: {' / '.join((r / 'when.txt').read_text().split(chr(10))[:2])}")
        for f in sorted(r.glob("*.json")):
            data = json.loads(f.read_text())
            c = _compare(data)
            commands[f.stem] = data.get("reproduce", "")
            loads.setdefault(f.stem, []).append(max(c.get("round_load_1min") or [float("nan")]))
            for name, ratio in c["ratio_median"].items():
                if name != c["baseline"]:
                    figures.setdefault((f.stem, f"{name} / {c['baseline']}"), []).append(ratio)
    lines = ["# The README's speed figures, round by round", "",
             "Each figure is the median of per-round ratios of one `edgezoo bench --vs` / `edgezoo compare` run "
             "(each file in a process of its own, 1 thread, batch 1, 15 interleaved rounds x 10 runs); this table "
             "gives every run's figure, the median over runs and the spread (max - min). Written by "
             "`python benchmarks/readme_figures_summary.py` from `benchmarks/readme_figures.sh`'s rounds.", "",
             "Rounds (UTC, 1-minute load average before):", "", *whens, "",
             "| run | ratio | " + " | ".join(r.name for r in rounds) + " | median | spread |",
             "|---|---|" + "---|" * len(rounds) + "---|---|"]
    for (stem, what), values in figures.items():
        cells = " | ".join(f"{v:.3f}" for v in values)
        lines.append(f"| {stem} | {what} | {cells} | {statistics.median(values):.3f} | "
                     f"{max(values) - min(values):.3f} |")
    lines += ["", "Highest 1-minute load seen in any timed round, per run:", ""]
    lines += [f"- {stem}: " + ", ".join(f"{v:.2f}" for v in vals) for stem, vals in loads.items()]
    lines += ["", "Commands (run in the bundles' folder; `compare` inside `lite0/`):", ""]
    lines += [f"- {stem}: `{cmd}`" for stem, cmd in commands.items()]
    (ROOT / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
