"""One model file loaded for serving: its Runner (edgezoo.runtimes), its inputs and outputs, how to feed it.

Everything the server needs to know about a model is worked out here once, at start-up, so that the request
path only checks arrays against plain Python values. No PyTorch: the runner's runtime and numpy only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgezoo.errors import EdgezooError, InputError
from edgezoo.imageprep import CROP_FRACTION, INTERPOLATION
from edgezoo.onnx_meta import ModelMetadata
from edgezoo.runtimes import files_help
from edgezoo.runtimes.base import Runner, TensorInfo


def tensor_json(t: TensorInfo) -> dict[str, Any]:
    """/v1's description of a tensor: free dimensions by name, or "?" when unnamed."""
    return {"name": t.name, "dtype": np.dtype(t.dtype).name,
            "shape": [d if isinstance(d, int) else (d or "?") for d in t.shape]}


@dataclass
class Preprocessing:
    """How an image becomes this model's input: (C, H, W), per-channel mean/std of 0..1 pixels, crop ratio."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float = CROP_FRACTION  # the crop is this fraction of the image (ImageNet evaluation)
    layout: str = "NCHW"
    interpolation: str = INTERPOLATION  # the checkpoint preset's resize filter

    def to_json(self) -> dict[str, Any]:
        return {"input_size": list(self.input_size), "mean": list(self.mean), "std": list(self.std),
                "crop_pct": self.crop_pct, "layout": self.layout, "interpolation": self.interpolation}


@dataclass(frozen=True)
class ModelIO:
    """What request parsing needs to know of a model (picklable: JSON is parsed in a helper process)."""

    name: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


@dataclass
class ServedModel:
    name: str
    path: Path
    runner: Runner  # active
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    metadata: ModelMetadata
    preprocessing: Preprocessing | None
    fixed_batch: int | None  # the input's static batch size, or None when the batch dimension is free
    batchable: bool = True  # False when the free batch dimension does not work beyond 1 (checked at load)
    notes: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str] | None:
        return self.metadata.labels

    @property
    def io(self) -> ModelIO:
        return ModelIO(self.name, tuple(self.inputs), tuple(self.outputs))

    @property
    def runtime(self) -> str:
        return self.runner.name

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One run (called from the batcher's worker thread; the runtimes release the GIL while they run)."""
        return self.runner.infer(feeds)

    def describe(self) -> dict[str, Any]:
        m = self.metadata
        return {
            "name": self.name,
            "file": self.path.name,
            "runtime": self.runner.describe(),
            "inputs": [tensor_json(t) for t in self.inputs],
            "outputs": [tensor_json(t) for t in self.outputs],
            "precision": m.precision or "fp32",
            "batching": "dynamic" if self.fixed_batch is None and self.batchable else "one by one",
            "fixed_batch": self.fixed_batch,
            "preprocessing": self.preprocessing.to_json() if self.preprocessing else None,
            "labels": m.labels,
            "num_classes": m.num_classes,
            "source_model": m.model or None,
            "edgezoo_version": m.version or None,
            "notes": self.notes,
        }


def served_name(path: Path, meta: ModelMetadata) -> str:
    """The name a file is served under: the model named in its metadata (``efficientnet_lite0``), with the
    precision appended when it is not fp32 (``efficientnet_lite0.int8``, ``efficientnet_lite0.fp16``), so a
    bundle's files get distinct names; a file without edgezoo metadata goes by its file name."""
    if not meta.model:
        return model_name_for(path)
    name = _url_safe(meta.model)
    if not name:
        return model_name_for(path)
    precision = _url_safe(meta.precision or "fp32")
    return name if precision in ("", "fp32") else f"{name}.{precision}"


def _url_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")


def model_name_for(path: Path) -> str:
    """A URL-safe model name from the file name (``mobilenet_v3_small.int8.onnx`` -> ``mobilenet_v3_small.int8``)."""
    stem = path.name[:-5] if path.name.lower().endswith(".onnx") else path.stem  # keep ".int8" of x.int8.onnx
    return _url_safe(stem) or "model"


def session_options(threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # Spinning worker threads keep both cores busy between runs and starve the event loop that parses the
    # next requests; a server shares its cores with its own HTTP handling, so let them sleep.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def open_served_runner(path: Path, runtime: str | None, threads: int | None,
                       providers: Sequence[str] | None) -> Runner:
    """The runner for ``path`` (``runtime`` None: the file's default), activated; one-line errors."""
    from edgezoo.runtimes import normalize_runtime, open_runner

    rt = normalize_runtime(runtime)
    if rt in (None, "onnxruntime") and path.suffix.lower() == ".onnx":
        from edgezoo.runtimes.onnxruntime import OrtRunner

        runner = OrtRunner(path, threads=threads, providers=list(providers) if providers else None,
                           session_options=session_options())
    else:
        if rt == "torch":
            raise InputError("the server runs model files, not registry models", "export it first: edgezoo export NAME")
        runner = open_runner(path, runtime=rt, threads=threads, providers=providers)
    runner.activate()
    return runner


def load_model(path: str | os.PathLike, name: str | None = None, threads: int | None = None,
               override: dict[str, Any] | None = None, providers: Sequence[str] | None = None,
               check_batching: bool = True, runtime: str | None = None) -> ServedModel:
    """Open a model file for serving. ``override`` may set input_size/mean/std/labels missing from its metadata."""
    path = Path(path)
    if path.is_dir() and path.suffix.lower() != ".xml":
        raise InputError(f"{path} is a folder, not a model file", f"pass the model file itself ({files_help()})")
    if not path.exists():
        raise InputError(f"model file not found: {path}")
    if not path.is_dir():
        from edgezoo.fileio import check_model_path

        check_model_path(path, "a model file")  # empty, or a FIFO that would block the start
    runner = open_served_runner(path, runtime, threads, providers)
    meta = runner.model_metadata() or ModelMetadata.from_props({})
    for k, v in (override or {}).items():
        if v is not None:
            setattr(meta, k, tuple(v) if k in ("input_size", "mean", "std") else v)
    inputs, outputs = list(runner.inputs), list(runner.outputs)
    unsupported = [t for t in inputs if np.dtype(t.dtype).kind not in "biuf"]
    if unsupported:
        raise InputError(f"{path.name}: input '{unsupported[0].name}' has a type the server cannot take")
    model = ServedModel(
        name=name or served_name(path, meta), path=path, runner=runner, inputs=inputs, outputs=outputs,
        metadata=meta, preprocessing=_preprocessing(inputs, meta), fixed_batch=_fixed_batch(inputs),
    )
    _warm_up(model, check_batching)
    return model


def _fixed_batch(inputs: list[TensorInfo]) -> int | None:
    """Batch along dim 0 only when every input has a free first dimension; otherwise its static size."""
    firsts = [t.shape[0] if t.shape else 1 for t in inputs]
    if all(not isinstance(d, int) for d in firsts):
        return None
    return next(d for d in firsts if isinstance(d, int))


def _preprocessing(inputs: list[TensorInfo], meta: ModelMetadata) -> Preprocessing | None:
    """Images are served only for one 4-D float input whose size, mean and std are known."""
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or np.dtype(inputs[0].dtype).kind != "f":
        return None
    if not (meta.input_size and meta.mean and meta.std):
        return None
    c, h, w = (int(x) for x in meta.input_size)
    if len(meta.mean) != c or len(meta.std) != c or any(s == 0 for s in meta.std):
        return None
    shape = inputs[0].shape
    layout = "NHWC" if shape[3] == c and shape[1] != c else "NCHW"
    crop = float(meta.crop_pct) if meta.crop_pct else CROP_FRACTION  # files written before presets lack it
    return Preprocessing((c, h, w), tuple(map(float, meta.mean)), tuple(map(float, meta.std)), crop, layout,
                         meta.interpolation or INTERPOLATION)


def example_feeds(model: ServedModel, batch: int) -> dict[str, np.ndarray]:
    """Zeros of a valid shape (free dimensions: the preprocessing size where known, else 1)."""
    feeds = {}
    pre = model.preprocessing
    for t in model.inputs:
        dims = []
        for i, d in enumerate(t.shape):
            if i == 0:
                dims.append(batch if model.fixed_batch is None else model.fixed_batch)
            elif isinstance(d, int):
                dims.append(d)
            elif pre is not None and len(t.shape) == 4:
                chw = pre.input_size if pre.layout == "NCHW" else (pre.input_size[1], pre.input_size[2],
                                                                   pre.input_size[0])
                dims.append(chw[i - 1])
            else:
                dims.append(1)
        feeds[t.name] = np.zeros(dims, dtype=t.dtype)
    return feeds


def _warm_up(model: ServedModel, check_batching: bool) -> None:
    """Run once (first runs allocate), and check that a free batch dimension really takes a batch of 2:
    some exports name the dimension but hard-code 1 inside (a Reshape), and would fail every batched run."""
    try:
        model.run(example_feeds(model, 1))
    except Exception as e:
        model.notes.append(f"warm-up run failed ({str(e).splitlines()[0][:200]}); free input dimensions "
                           "must be given in each request")
        return
    if model.fixed_batch is None and check_batching:
        try:
            outs = model.run(example_feeds(model, 2))
            if any(o.ndim == 0 or o.shape[0] != 2 for o in outs):
                raise EdgezooError("outputs do not follow the batch dimension")
        except Exception:
            model.batchable = False
            model.notes.append("the batch dimension is free but a batch of 2 fails; served one by one")
