"""How close one model's outputs stay to another's: the one padded-batch loop and the one agreement function.

Outputs are not assumed to be class logits: every output is compared on its own (max abs / relative
difference, cosine, SQNR), and top-1 agreement is given only for an output shaped [N, classes].
No torch here: this runs wherever onnxruntime does.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import onnx

from edgezoo.runtimes.comparator import sqnr_db


def ort_runner(path_or_model, threads: int | None = None):
    """An (inactive) onnxruntime Runner on the CPU for a file, its bytes or a ModelProto."""
    from edgezoo.runtimes.onnxruntime import OrtRunner, import_onnxruntime

    src = path_or_model.SerializeToString() if isinstance(path_or_model, onnx.ModelProto) else path_or_model
    # no memory arena: these sessions run models with every activation as an output, and an arena keeps the
    # largest batch's worth for the session's life (hundreds of MB per session on MobileNetV3)
    options = import_onnxruntime().SessionOptions()
    options.enable_cpu_mem_arena = False
    return OrtRunner(src, threads=threads, session_options=options)


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """Repeat the last row until ``x`` has ``rows`` rows (a fixed-batch model takes nothing else)."""
    if len(x) >= rows:
        return x
    return np.concatenate([x, np.repeat(x[-1:], rows - len(x), axis=0)])


def fixed_batch(model: onnx.ModelProto) -> int:
    """The batch an ONNX model's image input is fixed at, else 1."""
    inits = {i.name for i in model.graph.initializer}
    first = next(i for i in model.graph.input if i.name not in inits)
    dims = first.type.tensor_type.shape.dim
    return dims[0].dim_value if len(dims) and dims[0].dim_value > 0 else 1


def input_name(model: onnx.ModelProto) -> str:
    inits = {i.name for i in model.graph.initializer}
    return next(i for i in model.graph.input if i.name not in inits).name


def run_batched(runner, inputs: np.ndarray, batch: int = 8, outputs=None) -> list[np.ndarray]:
    """Run ``inputs`` through an active Runner (``edgezoo.runtimes``) in chunks; ``outputs``: names of the
    outputs to return (default all). A fixed-batch model gets its own batch size, the last chunk padded and
    the padding's outputs dropped."""
    name = runner.inputs[0].name
    fixed = runner.inputs[0].shape[0]
    step = fixed if isinstance(fixed, int) and fixed > 0 else batch
    names = [o.name for o in runner.outputs]
    pick = list(range(len(names))) if outputs is None else [names.index(o) for o in outputs]
    parts: list[list[np.ndarray]] = []
    for i in range(0, len(inputs), step):
        chunk = inputs[i:i + step].astype(np.float32)
        out = runner.infer({name: pad_rows(chunk, step) if step == fixed else chunk})
        out = [out[k] for k in pick]
        parts.append([o[:len(chunk)] if np.ndim(o) else o for o in out])
    # 0-d outputs (constants made graph outputs) are the same in every batch
    return [np.concatenate([p[k] for p in parts]) if np.ndim(parts[0][k]) else parts[0][k]
            for k in range(len(parts[0]))]


def run_model(model, inputs: np.ndarray, batch: int = 8) -> list[np.ndarray]:
    """Every output of an ONNX model (file, bytes or ModelProto) on ``inputs``, through onnxruntime."""
    with ort_runner(model) as r:
        return run_batched(r, np.asarray(inputs, dtype=np.float32), batch)


def is_class_scores(x: np.ndarray) -> bool:
    return x.ndim == 2 and x.shape[1] > 1


def output_agreement(ref: np.ndarray, test: np.ndarray) -> dict:
    """One output against its reference: per-sample cosine, SQNR, max abs / relative difference, and top-1
    agreement when the output is shaped [N, classes] (None otherwise)."""
    ref, test = np.asarray(ref), np.asarray(test)
    ref2, test2 = ref.reshape(len(ref), -1), test.reshape(len(test), -1)
    num = np.sum(ref2 * test2, axis=1)
    den = np.linalg.norm(ref2, axis=1) * np.linalg.norm(test2, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)
    diff = np.abs(ref.astype(np.float64) - test)
    return {
        "images": int(len(ref)),
        "shape": [int(d) for d in ref.shape[1:]],
        "top1_agreement": float(np.mean(ref2.argmax(1) == test2.argmax(1))) if is_class_scores(ref) else None,
        "cosine_mean": float(np.mean(cos)),
        "cosine_min": float(np.min(cos)),
        "sqnr_db": sqnr_db(ref, test),
        "max_abs_diff": float(np.max(diff)),
        "max_rel_diff": float(np.max(diff) / max(float(np.max(np.abs(ref))), 1e-30)),
    }


def outputs_agreement(refs: Sequence[np.ndarray], tests: Sequence[np.ndarray],
                      names: Sequence[str] | None = None) -> dict:
    """Every output against its reference. One output: its figures. Several: the worst output's figures
    (lowest SQNR) at the top, named in ``output``, and every output's under ``outputs``."""
    rows = [output_agreement(r, t) for r, t in zip(refs, tests)]
    if len(rows) == 1:
        return rows[0]
    names = list(names) if names is not None else [f"output_{i}" for i in range(len(rows))]
    for n, row in zip(names, rows):
        row["output"] = n
    worst = min(rows, key=lambda r: r["sqnr_db"])
    return {**worst, "outputs": rows}


def compare_models(ref_path, test_path, inputs: np.ndarray, worst_layers: int = 10, layer_ref_path=None) -> dict:
    """Outputs of ``test`` against ``ref`` on ``inputs``; plus the worst per-layer SQNR when ``test`` has Q/DQ.

    ``layer_ref_path``: the fp32 file ``test`` was quantized from, when it differs from ``ref`` (rewritten
    activation forms rescale some intermediate tensors: per-layer figures must compare like with like).
    """
    inputs = np.asarray(inputs, dtype=np.float32)
    with ort_runner(ref_path) as r:
        ref = run_batched(r, inputs)
        names = [o.name for o in r.outputs]
    with ort_runner(test_path) as r:
        test = run_batched(r, inputs)
    result = outputs_agreement(ref, test, names)
    if worst_layers:
        from edgezoo.export.qdq_debug import layer_sqnr

        try:
            result["worst_layers"] = layer_sqnr(layer_ref_path or ref_path, test_path,
                                                inputs[: min(len(inputs), 16)])[:worst_layers]
        except Exception as e:  # a diagnosis that fails must not fail the export; say so in the report
            result["worst_layers_error"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    return result


def read_model(path: str | os.PathLike) -> onnx.ModelProto:
    return onnx.load(os.fspath(path))
