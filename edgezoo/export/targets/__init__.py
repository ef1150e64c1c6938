"""Export targets: one module per edge runtime, each writing that runtime's own file in fp32 and int8.

A ``Target`` names its runtime, its pip extra and the precisions it can write; ``available()`` says in one
line what is missing; ``preflight(model)`` lists what it will not quantize or fuse for this model (rules
checked in tests/test_targets_*.py); ``build(ctx, precision, path)`` writes the file; ``runner(path, threads)``
opens it on the runtime's own Runner (edgezoo.runtimes), through which every file is verified against the
PyTorch fp32 model. ``run_targets`` does that for every (target, precision), so one failure costs one row,
never the bundle. Adding a target is one module and one ``register`` call (see the bottom of this file); the
files a target writes (its suffix and side files) are its runtime's file kind (edgezoo.runtimes descriptors).
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from edgezoo.errors import EdgezooError, InputError

PRECISIONS = ("fp32", "bf16", "int8")


@dataclass
class TargetContext:
    """What every target builds from: the verified fp32 model (PyTorch) and its files, the images."""

    name: str  # the zoo name, for file metadata and messages
    input_size: tuple[int, int, int]
    model: Any  # torch.nn.Module after the function-preserving passes (BN folded, ...); None: an ONNX source
    calibration: np.ndarray  # (N, C, H, W) float32, the images int8 ranges come from
    eval_inputs: np.ndarray  # held-out images the agreement is measured on
    reference: Sequence[np.ndarray]  # the fp32 model's outputs on eval_inputs, every one (one array: one output)
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)  # already written: "onnxruntime:fp32" -> path
    per_channel: bool = True
    threads: int | None = 1  # for verification and the benchmark
    progress: Callable[[str], None] = lambda s: None
    cache: dict[str, Any] = field(default_factory=dict)  # models derived once and shared by targets
    recipe: Any = None  # edgezoo.export.int8_recipe.Int8Recipe; None: derived from the fp32 ONNX on first use
    output_names: Sequence[str] | None = None  # of ``reference``, for the report

    def __post_init__(self):
        if isinstance(self.reference, np.ndarray):
            self.reference = [self.reference]

    def int8_recipe(self):
        """The int8 recipe every target applies (float head, bias correction, 7-bit weights where needed)."""
        if self.recipe is None:
            from edgezoo.export.int8_recipe import recipe_for

            src = self.files.get("onnxruntime:fp32")
            if src is None:
                raise RuntimeError("the int8 recipe is read off the verified fp32 ONNX, which was not written")
            self.recipe = recipe_for(src)
        return self.recipe

    def int8_model(self, backend: str = "generic"):
        """The fp32 model with the activation forms an int8 ``backend`` takes (int8_forms), computed once."""
        key = f"int8_model:{backend}"
        if key not in self.cache:
            self.cache[key] = int8_source_model(self.model, backend)
        return self.cache[key]

    def pt2e_model(self):
        """The PT2E targets' int8 source: ``int8_model('generic')`` with the recipe's bias correction (weights
        quantized as the XNNPACK quantizers do), the float head's convs left as they are."""
        if "pt2e_model" not in self.cache:
            from edgezoo.export.int8_recipe import correct_biases_torch, first_convs

            recipe = self.int8_recipe()
            model = self.int8_model("generic")
            if recipe.bias_correction:
                skip = set(first_convs(model, self.calibration, recipe.head_convs))
                model, _ = correct_biases_torch(model, self.calibration, skip=skip, per_channel=self.per_channel)
            self.cache["pt2e_model"] = model
        return self.cache["pt2e_model"]


def int8_source_model(model, backend: str):
    """h-sigmoid gates folded, h-swish in the backend's form: what ``quantize`` sees. Exact passes only."""
    from edgezoo.export import int8_forms
    from edgezoo.export import passes as P

    forms = int8_forms.choose(model, backend)
    m = P.fold_hardsigmoid_gates(model).model
    if forms.defer_scale:
        m = P.defer_hardswish_scale(m).model
    return P.rewrite_activations(m, relu6="keep", hardswish=forms.hardswish).model.eval()


class Target(Protocol):
    name: str
    runtime: str  # the edgezoo runtime its files run on (edgezoo.runtimes descriptor name)
    extra: str  # pip extra that brings the runtime and the converter
    precisions: tuple[str, ...]
    suffix: str  # of the main file; side files (.bin beside .xml / .param) follow from the runtime's file kind

    def available(self) -> str | None:
        """None when the converter and runtime import; else what is missing, in one line."""

    def preflight(self, model) -> list[str]:
        """What this target will not quantize or fuse for ``model``."""

    def build(self, ctx: TargetContext, precision: str, path: Path) -> dict:
        """Write ``path``; returns facts for the report (method, partitions, ...)."""

    def runner(self, path: Path, threads: int | None, precision: str):
        """A (not yet active) edgezoo Runner for ``path``."""


REGISTRY: dict[str, str] = {}  # target name -> module path holding ``TARGET``
_loaded: dict[str, Target] = {}


def register(name: str, module: str) -> None:
    REGISTRY[name] = module


def target_names() -> list[str]:
    """Every registered target, in registration order (no target module is imported)."""
    return list(REGISTRY)


def get_target(name: str) -> Target:
    if name not in REGISTRY:
        raise InputError(f"unknown export target '{name}'", f"choose from {', '.join(REGISTRY)} or all")
    if name not in _loaded:
        _loaded[name] = importlib.import_module(REGISTRY[name]).TARGET
    return _loaded[name]


def parse_targets(text: str | Sequence[str] | None) -> list[str]:
    """'onnxruntime,openvino' / 'all' -> target names (all: those whose extra is installed), in order."""
    if text is None:
        return ["onnxruntime"]
    items = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if not items:
        raise InputError("--target is empty", f"choose from {', '.join(REGISTRY)} or all")
    for t in items:
        if t != "all":
            get_target(t)  # raises for an unknown name, also beside "all"
    if "all" in items:
        return [n for n in REGISTRY if get_target(n).available() is None]
    out = []
    for t in items:
        if t not in out:
            out.append(t)
    return out


def missing_message(target: Target, why: str) -> str:
    return f"target {target.name} skipped: {why} (install it with: pip install 'edgezoo[{target.extra}]')"


def agreement(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray],
              names: Sequence[str] | None = None) -> dict:
    """Every output of a target's file against the fp32 model's (the worst one on top; top-1 only for an
    output shaped [N, classes]). A file whose outputs differ in number or shape fails verification."""
    from edgezoo.export.agreement import outputs_agreement

    if len(outputs) != len(reference):
        raise EdgezooError(f"the file gives {len(outputs)} outputs, the fp32 model {len(reference)}")
    for i, (r, o) in enumerate(zip(reference, outputs)):
        if np.shape(r) != np.shape(o):
            which = names[i] if names else f"output {i}"
            raise EdgezooError(f"{which}: the file gives shape {list(np.shape(o))}, the fp32 model "
                               f"{list(np.shape(r))}")
    return outputs_agreement(reference, outputs, names)


def run_on(runner, inputs: np.ndarray, names: Sequence[str] | None = None) -> list[np.ndarray]:
    """Every output of an active runner, one image at a time (.pte and .tflite programs are planned for
    batch 1). ``names``: the model's output names, in its order; a runtime that keeps the names but lists
    the outputs in another order (MNN sorts them) is read in this one."""
    from edgezoo.export.agreement import run_batched  # the one padded-batch loop (a fixed batch is padded)

    have = [o.name for o in runner.outputs]
    order = names if names and sorted(names) == sorted(have) else None
    return run_batched(runner, inputs, batch=1, outputs=order)


def file_name(target: str, precision: str, suffix: str) -> str:
    base = "model" if target == "onnxruntime" else f"model.{target}"
    return f"{base}.{precision}{suffix}"


def run_targets(ctx: TargetContext, names: Sequence[str], precisions: Sequence[str]) -> list[dict]:
    """Build and verify every (target, precision) asked for; a failure becomes a row with its reason."""
    rows: list[dict] = []
    for name in names:
        target = get_target(name)
        why = target.available()
        if why is not None:
            rows.append({"target": name, "precision": "-", "status": "missing", "error": missing_message(target, why)})
            continue
        try:
            findings = target.preflight(ctx.model)
        except Exception as e:  # a rule that cannot be checked must not stop the build
            findings = [f"preflight failed: {type(e).__name__}: {_first(e)}"]
        for precision in precisions:
            if precision not in target.precisions:
                continue
            row = {"target": name, "precision": precision, "preflight": findings if precision == "int8" else []}
            path = ctx.out_dir / file_name(name, precision, target.suffix)
            ctx.progress(f"{name} {precision}")
            t0 = time.perf_counter()
            built_here = f"{name}:{precision}" not in ctx.files  # never delete a file another step wrote
            try:
                if not built_here:
                    path = ctx.files[f"{name}:{precision}"]
                    facts = {}
                else:
                    facts = target.build(ctx, precision, path) or {}
                    path = facts.pop("_path", path)  # a precision that reuses another's file
                row.update(facts)
                row["build_seconds"] = round(time.perf_counter() - t0, 1)
                if path is not None and precision != "engine" and getattr(target, "runnable", True):
                    with target.runner(path, ctx.threads, precision) as r:
                        row["agreement"] = agreement(ctx.reference, run_on(r, ctx.eval_inputs, ctx.output_names),
                                                     ctx.output_names)
                    row["runtime"] = r.describe()
                row.update(status="ok", file=path.name, size_bytes=_size(path))
                ctx.files[f"{name}:{precision}"] = path
            except EdgezooError as e:
                row.update(status="failed", error=str(e))
                if built_here:
                    _cleanup(path)
            except Exception as e:  # a converter's own exception: one line, the other targets go on
                row.update(status="failed", error=f"{type(e).__name__}: {_first(e)}")
                if built_here:
                    _cleanup(path)
            rows.append(row)
    return rows


def bench_rows(ctx: TargetContext, rows: list[dict], rounds: int = 7, runs: int = 10) -> None:
    """Latency p50 (batch 1, ``ctx.threads``) of every verified row, interleaved and each file in a process of
    its own (edgezoo.profile.worker: one runtime's thread pool never runs beside another's): each round runs
    every file ``runs`` times in turn, so load that comes and goes hits all files alike; adds ``latency_ms``
    and ``ratio`` (to the fastest fp32 file)."""
    from edgezoo.profile.latency import compare_timed
    from edgezoo.profile.worker import RunnerProcess

    ok = [r for r in rows if r.get("status") == "ok" and "agreement" in r]
    workers: list[RunnerProcess] = []
    try:
        for r in ok:
            w = RunnerProcess()
            workers.append(w)
            opts = {"precision": "bf16" if r["precision"] == "bf16" else "f32"} if r["target"] == "openvino" else {}
            info = w.open(str(ctx.out_dir / r["file"]), r["target"], threads=ctx.threads, **opts)
            b = info["inputs"][0]["shape"][0]
            w.prepare("x", batch=b if isinstance(b, int) and b > 1 else 1)
        labels = [f"{k}" for k in range(len(ok))]
        res = compare_timed({k: (lambda n, w=w: w.time("x", n)) for k, w in zip(labels, workers)},
                            rounds=rounds, iters_per_round=runs, warmup=3) if ok else None
    finally:
        for w in workers:
            w.close()
    for r, k in zip(ok, labels if ok else []):
        r["latency_ms"] = round(float(np.median(res.round_medians_ms[k])), 3)
    fp32 = [r["latency_ms"] for r in ok if r["precision"] == "fp32" and "latency_ms" in r]
    for r in ok:
        if fp32 and "latency_ms" in r:
            r["ratio_to_fastest_fp32"] = round(r["latency_ms"] / min(fp32), 3)


KEEPS_ANSWERS = 0.05  # an int8 file keeps the model's answers: top-1 agreement within 5 points of the best int8
# outputs without a top-1 (maps, embeddings): SQNR against fp32 at least this, or within KEEPS_SQNR_SPREAD_DB of the
# best row's when none reaches it
KEEPS_SQNR_DB = 20.0
KEEPS_SQNR_SPREAD_DB = 3.0


def fastest_verified(rows: list[dict], precision: str | None = None) -> dict | None:
    """The fastest verified file (of ``precision``, or of any: on a CPU where int8 gains little an fp32 file
    can beat every int8 one) among those that keep the model's answers: top-1 agreement with the fp32 model
    at most ``KEEPS_ANSWERS`` below the best such row's where the outputs have a top-1, else SQNR at least
    ``KEEPS_SQNR_DB`` (or near the best row's). By latency when measured; untimed, the only candidate there
    is, else None."""
    ok = candidates = [r for r in rows if r.get("status") == "ok" and "agreement" in r
                       and (precision is None or r.get("precision") == precision)]
    if ok and all(r["agreement"].get("top1_agreement") is not None for r in ok):
        best = max(r["agreement"]["top1_agreement"] for r in ok)
        ok = [r for r in ok if r["agreement"]["top1_agreement"] >= best - KEEPS_ANSWERS]
    elif ok:
        best = max(r["agreement"]["sqnr_db"] for r in ok)
        ok = [r for r in ok if r["agreement"]["sqnr_db"] >= min(KEEPS_SQNR_DB, best - KEEPS_SQNR_SPREAD_DB)]
    timed = [r for r in ok if "latency_ms" in r]
    if timed:
        return min(timed, key=lambda r: r["latency_ms"])
    return ok[0] if len(candidates) == 1 and ok else None  # untimed, "fastest" only says "the only one"


def fastest_int8(rows: list[dict]) -> dict | None:
    return fastest_verified(rows, "int8")


def _size(path: Path) -> int:
    from edgezoo.runtimes import model_bytes

    return model_bytes(path)


def _cleanup(path: Path | None) -> None:
    """Remove a file this run wrote and its side files (its runtime's file kind names them)."""
    from edgezoo.runtimes import model_files

    if path is None:
        return
    for p in model_files(path):
        p.unlink(missing_ok=True)


def _first(e: BaseException) -> str:
    from edgezoo.runtimes.base import first_line

    return first_line(e)[:300]


register("onnxruntime", "edgezoo.export.targets.onnxruntime")
register("openvino", "edgezoo.export.targets.openvino")
register("executorch", "edgezoo.export.targets.executorch")
register("litert", "edgezoo.export.targets.litert")
register("tensorrt", "edgezoo.export.targets.tensorrt")
register("mnn", "edgezoo.export.targets.mnn")
register("ncnn", "edgezoo.export.targets.ncnn")
