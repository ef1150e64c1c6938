"""Compare runners on the same inputs, after Polygraphy's ``Comparator``: run every runner on the same
samples, then score each one's outputs against the first's.

Files of different formats from one model may hold their image input in different layouts (an .onnx in
NCHW, a TensorFlow-made .tflite in NHWC): samples are kept in NCHW and transposed for a runner whose input
is NHWC; NHWC image outputs are transposed back before scoring. numpy only (no torch).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from edgezoo.errors import InputError
from edgezoo.runtimes.base import Runner, TensorInfo


def to_layout(x: np.ndarray, src: str | None, dst: str | None) -> np.ndarray:
    """An image array from one layout to the other ("NCHW" <-> "NHWC"); unchanged when either is unknown."""
    if x.ndim != 4 or src is None or dst is None or src == dst:
        return x
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1) if dst == "NHWC" else x.transpose(0, 3, 1, 2))


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """10 log10(signal power / noise power); inf when identical."""
    ref = ref.astype(np.float64)
    noise = float(np.mean((ref - test.astype(np.float64)) ** 2))
    signal = float(np.mean(ref ** 2))
    if noise == 0:
        return float("inf")
    if signal == 0:
        return float("-inf")
    return float(10.0 * np.log10(signal / noise))


def agreement(ref: np.ndarray, test: np.ndarray) -> dict[str, Any]:
    """How closely ``test`` follows ``ref`` (same shape; the first axis is the batch).

    max_rel_diff is the largest absolute difference relative to the largest |reference| value (an
    element-wise ratio explodes where the reference is near zero); top-1 agreement is over the batch, each
    sample's outputs flattened; cosine is per sample (mean and worst)."""
    if ref.shape != test.shape:
        raise InputError(f"outputs of shapes {ref.shape} and {test.shape} cannot be compared")
    ref64, test64 = ref.astype(np.float64), test.astype(np.float64)
    diff = np.abs(ref64 - test64)
    scale = float(np.max(np.abs(ref64))) if ref.size else 0.0
    n = ref.shape[0] if ref.ndim else 1
    r2, t2 = ref64.reshape(n, -1), test64.reshape(n, -1)
    den = np.linalg.norm(r2, axis=1) * np.linalg.norm(t2, axis=1)
    cos = np.where(den > 0, np.sum(r2 * t2, axis=1) / np.maximum(den, 1e-300), 1.0)
    return {
        "samples": int(n),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "max_rel_diff": float(diff.max() / scale) if scale > 0 else (0.0 if not diff.size or diff.max() == 0 else float("inf")),
        "cosine_mean": float(np.mean(cos)),
        "cosine_min": float(np.min(cos)),
        "top1_agreement": float(np.mean(r2.argmax(1) == t2.argmax(1))) if r2.shape[1] > 1 else None,
        "sqnr_db": sqnr_db(ref, test),
    }


def feeds_in_layout(runner: Runner, samples: Sequence[np.ndarray], layouts: Sequence[str | None]) -> dict[str, np.ndarray]:
    """Feeds for ``runner``: the k-th sample (in ``layouts[k]``) goes to its k-th input, in that input's layout."""
    infos = runner.inputs
    if len(infos) != len(samples):
        raise InputError(f"{runner.describe()} has {len(infos)} inputs; the first model has {len(samples)}",
                         "compare files of the same model")
    return {info.name: to_layout(x, src, info.layout).astype(info.dtype, copy=False)
            for info, x, src in zip(infos, samples, layouts)}


def outputs_in_layout(outputs: Sequence[np.ndarray], infos: Sequence[TensorInfo], layouts: Sequence[str | None]
                      ) -> list[np.ndarray]:
    return [to_layout(o, info.layout, dst) for o, info, dst in zip(outputs, infos, layouts)]


def run_all(runners: Sequence[Runner], batches: Sequence[Sequence[np.ndarray]], layouts: Sequence[str | None]
            ) -> list[list[np.ndarray]]:
    """Every runner on every batch; per runner, its outputs concatenated over the batches (in the first
    runner's output layouts)."""
    ref_out_layouts = [o.layout for o in runners[0].outputs]
    results = []
    for runner in runners:
        parts = []
        for samples in batches:
            feeds = feeds_in_layout(runner, samples, layouts)
            runner.check_feeds(feeds)
            parts.append(outputs_in_layout(runner.infer(feeds), runner.outputs, ref_out_layouts))
        results.append([np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))])
    return results


def score(reference: Sequence[np.ndarray], test: Sequence[np.ndarray]) -> list[dict[str, Any]]:
    """Agreement of each output of ``test`` with the same output of ``reference`` (by position)."""
    if len(reference) != len(test):
        raise InputError(f"the models have {len(reference)} and {len(test)} outputs", "compare files of the same model")
    return [agreement(np.asarray(r), np.asarray(t)) for r, t in zip(reference, test)]


__all__ = ["agreement", "sqnr_db", "to_layout", "feeds_in_layout", "run_all", "score"]
