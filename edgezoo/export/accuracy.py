"""Top-1/top-5 of every exported file on labelled images, and whether its change against fp32 is real.

A file's change is paired: the same images go through fp32 and through the file, so what matters is the images
on which exactly one of them is right. Two figures say whether the change is more than noise:

- a 95% paired bootstrap interval of the difference in top-1 points (images resampled with replacement,
  both files' answers kept together), and
- McNemar's exact test: under "no difference" the discordant images split 50/50, so the p-value is the
  two-sided binomial tail of the smaller count.

On 500 images a top-1 change of 0.4 points is two images, well inside both; the report says "within noise"
unless the interval excludes zero. Every file runs through its target's own Runner (edgezoo.export.targets:
``target.runner`` and ``run_on``), the path the verification and the benchmark take. No torch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per image: is the label among the ``k`` largest outputs."""
    logits = logits.reshape(len(logits), -1)
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return (top == labels[:, None]).any(axis=1)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: ``only_a`` images right only under A, ``only_b`` only under B."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def paired_change(ref_correct: np.ndarray, test_correct: np.ndarray, seed: int = 0,
                  samples: int = BOOTSTRAP_SAMPLES) -> dict:
    """The change in accuracy (points) of ``test`` against ``ref`` on the same images, with its paired 95%
    bootstrap interval, McNemar's exact p-value, and a verdict ("within noise" unless the interval excludes 0)."""
    ref = np.asarray(ref_correct, dtype=bool)
    test = np.asarray(test_correct, dtype=bool)
    n = len(ref)
    d = test.astype(np.int8) - ref.astype(np.int8)  # +1: only test right, -1: only ref right
    change = float(d.mean() * 100) if n else 0.0
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(samples, n)) if n else np.zeros((samples, 0), dtype=int)
    boot = d[idx].mean(axis=1) * 100 if n else np.zeros(samples)
    lo, hi = np.quantile(boot, [(1 - CONFIDENCE) / 2, 1 - (1 - CONFIDENCE) / 2])
    only_test, only_ref = int((d > 0).sum()), int((d < 0).sum())
    p = mcnemar_exact(only_ref, only_test)
    noise = bool(lo <= 0 <= hi)
    return {"change_points": round(change, 2), "ci95": [round(float(lo), 2), round(float(hi), 2)],
            "only_fp32_right": only_ref, "only_file_right": only_test, "mcnemar_p": round(p, 4),
            "images": n, "within_noise": noise, "verdict": verdict(change, lo, hi, p, n)}


def verdict(change: float, lo: float, hi: float, p: float, n: int) -> str:
    """One sentence a reader can act on: the change, its interval, and whether it is noise."""
    head = f"{change:+.1f} points (95% CI {lo:+.1f} to {hi:+.1f}, McNemar p = {p:.2g}, {n} images)"
    if lo <= 0 <= hi:
        return f"{head}: within noise, no measurable change on {n} images"
    return f"{head}: a real {'loss' if change < 0 else 'gain'}, beyond noise on {n} images"


def accuracy_of(logits: np.ndarray, labels: np.ndarray) -> dict:
    return {"top1": round(float(topk_correct(logits, labels, 1).mean() * 100), 2),
            "top5": round(float(topk_correct(logits, labels, 5).mean() * 100), 2)}


def compare_to_reference(ref_logits: np.ndarray, logits: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict:
    """Accuracy of ``logits`` and its paired change against ``ref_logits`` (fp32), plus agreement and SQNR."""
    from edgezoo.export.quantize import output_agreement

    out = accuracy_of(logits, labels)
    a = output_agreement(ref_logits.reshape(len(ref_logits), -1), logits.reshape(len(logits), -1))
    out["top1_agreement"] = a["top1_agreement"]
    out["sqnr_db"] = a["sqnr_db"] if np.isfinite(a["sqnr_db"]) else None  # None: identical (JSON has no inf)
    out["top1_change"] = paired_change(topk_correct(ref_logits, labels, 1), topk_correct(logits, labels, 1), seed)
    out["top5_change"] = paired_change(topk_correct(ref_logits, labels, 5), topk_correct(logits, labels, 5), seed)
    return out


def outputs_of(target_name: str, path: Path, precision: str, images: np.ndarray, threads: int | None = 1):
    """A file's first output (the class scores top-1/top-5 are read from) on ``images``, through its target's
    own Runner."""
    from edgezoo.export.targets import get_target, run_on

    with get_target(target_name).runner(path, threads, precision) as r:
        return run_on(r, images)[0]


def outputs_on(labelled, target_name: str, path: Path, precision: str, threads: int | None = 1) -> np.ndarray:
    """``outputs_of`` on a LabelledSet's images, each file run once (kept in ``labelled.outputs``)."""
    key = (str(path), precision)
    if key not in labelled.outputs:
        labelled.outputs[key] = outputs_of(target_name, path, precision, labelled.images, threads)
    return labelled.outputs[key]


def evaluate_bundle(folder: Path, rows: Sequence[dict], files: dict, labelled, threads: int | None = 1) -> dict:
    """Accuracy of every file of the bundle on ``labelled`` (edgezoo.export.labelled.LabelledSet): each verified
    row of run_targets (files in ``folder``) and the fp16 ONNX, each against the fp32 ONNX ``files['fp32']``
    (through onnxruntime). Returns report.json's ``eval``: the folder, fp32's figures, one entry per file."""
    images, labels = labelled.images, labelled.labels
    fp32 = Path(files["fp32"])
    ref = outputs_on(labelled, "onnxruntime", fp32, "fp32", threads)
    todo = [(r["target"], r["precision"], r["file"]) for r in rows
            if r.get("status") == "ok" and r.get("precision") != "engine" and r.get("same_file_as") is None]
    if "fp16" in files:
        todo.append(("onnxruntime", "fp16", Path(files["fp16"]).name))
    out_files = []
    for target, precision, name in todo:
        entry = {"target": target, "precision": precision, "file": name}
        if name == fp32.name:
            out = ref
        else:
            try:
                out = outputs_on(labelled, target, Path(folder) / name, "fp32" if precision == "fp16" else precision,
                                 threads)
            except Exception as e:  # noqa: BLE001 - a file that will not run costs its figures, not the bundle
                entry["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
                out_files.append(entry)
                continue
        entry.update(compare_to_reference(ref, out, labels))
        out_files.append(entry)
    return {**labelled.to_dict(), "reference": f"{fp32.name} (onnxruntime)", **accuracy_of(ref, labels),
            "files": out_files}


def accuracy_markdown(report: dict) -> list[str]:
    """The report's "Accuracy on labelled images" section: one row per file, the noise verdict per row."""
    ev = report.get("eval")
    if not ev:
        return []
    lines = ["", "## Accuracy on labelled images", "",
             f"{ev['images']} images from {ev['root']} ({ev['layout']} layout, {ev['classes']} classes); "
             f"fp32 reference {ev['reference']}: top-1 {ev['top1']:.1f}%, top-5 {ev['top5']:.1f}%.", ""]
    if ev.get("skipped"):
        lines += [f"Skipped {len(ev['skipped'])} image(s) that cannot be decoded: "
                  + "; ".join(f"{s['file']} ({s['reason']})" for s in ev["skipped"][:10])
                  + (" ..." if len(ev["skipped"]) > 10 else ""), ""]
    lines += ["| target | precision | file | top-1 | top-5 | top-1 change vs fp32 (95% CI) | McNemar p | "
              "top-1 agreement | SQNR dB |", "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for a in ev.get("files", []):
        if "error" in a:
            notes.append(f"- {a['target']} {a['precision']}: could not be evaluated: {a['error']}")
            continue
        c = a["top1_change"]
        lines.append(f"| {a['target']} | {a['precision']} | {a['file']} | {a['top1']:.1f} | {a['top5']:.1f} | "
                     f"{c['change_points']:+.1f} ({c['ci95'][0]:+.1f} to {c['ci95'][1]:+.1f})"
                     f"{'' if c['within_noise'] else ' **real**'} | {c['mcnemar_p']:.2g} | "
                     f"{a['top1_agreement'] * 100:.1f}% | {_db(a['sqnr_db'])} |")
    lines += ["", f"A change whose 95% interval holds 0 is within noise: on {ev['images']} images one image is "
              f"{100 / max(ev['images'], 1):.2f} points, and such a change says nothing about the file."]
    return lines + ([""] + notes if notes else [])


def accuracy_summary(report: dict) -> list[str]:
    """Lines for the printed summary."""
    ev = report.get("eval")
    if not ev:
        return []
    out = [f"accuracy on {ev['images']} labelled images ({ev['layout']}): fp32 top-1 {ev['top1']:.1f}%, "
           f"top-5 {ev['top5']:.1f}%"]
    if ev.get("skipped"):  # each one is named in the warnings above
        out[0] += f" ({len(ev['skipped'])} skipped: cannot be decoded)"
    for a in ev.get("files", []):
        if "error" not in a and a["file"] != ev["reference"].split(" ")[0]:
            out.append(f"{a['target']} {a['precision']} ({a['file']}): top-1 {a['top1']:.1f}%, "
                       f"agreement {a['top1_agreement'] * 100:.1f}%, SQNR {_db(a['sqnr_db'])} dB, "
                       f"change {a['top1_change']['verdict']}")
    return out


def _db(v) -> str:
    return "identical" if v is None else f"{v:.1f}"
