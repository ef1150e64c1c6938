"""Write a Triton Inference Server model repository entry for an ONNX file or a TensorRT plan.

Layout (https://github.com/triton-inference-server/server/blob/main/docs/user_guide/model_repository.md):

    OUT_DIR/<name>/config.pbtxt
    OUT_DIR/<name>/1/model.onnx      (platform onnxruntime_onnx)  or  1/model.plan (platform tensorrt_plan)
    OUT_DIR/<name>/labels.txt        (when the file carries labels: Triton's classification extension)

The config follows Triton's ``ModelConfig`` protobuf (model_config.proto). With ``max_batch_size > 0``
Triton adds the batch dimension itself, so ``dims`` leave it out; that is only valid when the file's first
dimension is free, so a fixed-batch file gets ``max_batch_size: 0`` and its full shape.

What is written replaces only what it names: the version folder ``<name>/1/`` (swapped in whole, once it is
complete), ``config.pbtxt`` and ``labels.txt``. Other models in OUT_DIR, other versions of the model
(``<name>/2/``) and other files in its folder are never touched. An ONNX file is opened in onnxruntime (the
Runner) before anything is written: a file it refuses (a cycle, an initializer that declares more data than it
holds) gets no entry.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from edgezoo.errors import InputError
from edgezoo.fileio import atomic_directory, atomic_write_text
from edgezoo.runtimes.base import TensorInfo

DEFAULT_MAX_BATCH = 16
DEFAULT_QUEUE_DELAY_US = 100
PLAN_SUFFIXES = (".plan", ".engine")
VERSION = "1"  # the version folder edgezoo writes (and the only one it replaces)

BACKENDS = ("onnxruntime", "python")

# The Python-backend variant: Triton's Python backend runs this file, which runs the ONNX file beside it with
# onnxruntime (the stub's Python must have numpy and onnxruntime). For a Triton without the onnxruntime
# backend (the nvidia-pytriton wheel's server), or to add Python steps around the model.
PYTHON_MODEL = '''"""Triton Python backend model written by edgezoo: runs model.onnx (beside this file) with onnxruntime."""

import json
import os
import sys

# The stub starts Python isolated (PYTHONPATH ignored); honour it, so a deployment can point the stub at the
# environment that has numpy and onnxruntime without building a conda-pack execution environment.
sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


def _array(tensor):
    # through DLPack, not tensor.as_numpy(): the stub reads numpy arrays through the numpy 1 C ABI, which
    # misreads them under numpy 2 (wrong values, wrong sizes); DLPack is the same in both
    return np.array(np.from_dlpack(tensor), copy=True)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.batching = config.get("max_batch_size", 0) > 0
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def _run(self, feeds):
        return self.session.run(self.outputs, feeds)

    def execute(self, requests):
        feeds = [{n: _array(pb_utils.get_input_tensor_by_name(r, n)) for n in self.inputs} for r in requests]
        answers = None
        if self.batching and len(requests) > 1:
            # Triton's dynamic batcher handed us several requests: one onnxruntime run for all of them
            try:
                rows = [f[self.inputs[0]].shape[0] for f in feeds]
                outs = self._run({n: np.concatenate([f[n] for f in feeds]) for n in self.inputs})
                cuts = np.cumsum(rows)[:-1]
                answers = list(zip(*[np.split(o, cuts) for o in outs]))
            except Exception:  # shapes that do not stack, or one bad request: run them one by one
                answers = None
        responses = []
        for i, f in enumerate(feeds):
            try:
                outs = answers[i] if answers is not None else self._run(f)
                # from_dlpack, not Tensor(name, array): see _array
                tensors = [pb_utils.Tensor.from_dlpack(n, np.ascontiguousarray(o)) for n, o in zip(self.outputs, outs)]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as e:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e)[:500])))
        return responses
'''


def triton_type(t: TensorInfo) -> str:
    """Triton's DataType enum name for a tensor: TYPE_ + the KServe name (TYPE_FP32, TYPE_INT64, ...)."""
    from edgezoo.serve.kserve import datatype

    return "TYPE_" + datatype(t.dtype)


def resolve_model_file(path: str | os.PathLike) -> Path:
    """A file, or a bundle folder holding exactly one .onnx (pass the file itself to choose among several)."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".onnx")
        if len(found) == 1:
            return found[0]
        if not found:
            raise InputError(f"no .onnx file in {path}", "pass the model file itself")
        raise InputError(f"{len(found)} .onnx files in {path} ({', '.join(p.name for p in found)})",
                         "pass the one to serve")
    raise InputError(f"not found: {path}")


def read_onnx_io(path: Path) -> tuple[list[TensorInfo], list[TensorInfo], dict]:
    """Graph inputs (initializers excluded) and outputs, and edgezoo's metadata, without loading weights."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty, not an ONNX file")
    try:
        proto = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends
        raise InputError(f"cannot read {path} as ONNX: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}") \
            from None
    inits = {i.name for i in proto.graph.initializer}

    def conv(vi) -> TensorInfo:
        tt = vi.type.tensor_type
        try:
            dtype = np.dtype(tensor_dtype_to_np_dtype(tt.elem_type)) if vi.type.HasField("tensor_type") else None
        except (KeyError, TypeError, ValueError):
            dtype = None
        if dtype is None or dtype.kind not in "biuf":
            raise InputError(f"{path.name}: '{vi.name}' is not a numeric tensor (edgezoo writes Triton entries "
                             "for numeric inputs and outputs)")
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
        return TensorInfo(vi.name, dims, dtype)

    inputs = [conv(vi) for vi in proto.graph.input if vi.name not in inits]
    outputs = [conv(vi) for vi in proto.graph.output]
    if not inputs or not outputs:
        raise InputError(f"{path} has no graph {'inputs' if not inputs else 'outputs'}: not a model Triton can "
                         "serve", "is it a complete ONNX file? (`edgezoo export NAME` writes one)")
    meta = {p.key: p.value for p in proto.metadata_props if p.key.startswith("edgezoo.")}
    ext = _external_data_files(proto)
    return inputs, outputs, {"props": meta, "external": ext}


def _external_data_files(proto) -> list[str]:
    from onnx.external_data_helper import _get_all_tensors

    files = set()
    for t in _get_all_tensors(proto):
        if t.data_location == 1:  # TensorProto.EXTERNAL
            for kv in t.external_data:
                if kv.key == "location":
                    files.add(kv.value)
    return sorted(files)


def write_triton_repository(
    model_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    name: str | None = None,
    max_batch_size: int | None = None,
    preferred_batch_sizes: Sequence[int] | None = None,
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    instance_kind: str = "cpu",
    count: int = 1,
    *,
    reference_onnx: str | os.PathLike | None = None,
    backend: str = "onnxruntime",
) -> Path:
    """Write ``out_dir/<name>/`` for Triton; returns that folder.

    ``max_batch_size``: for an ONNX file with a free batch dimension, default 16; a fixed-batch file takes
    only 0 (Triton then passes the full shape through). A TensorRT plan cannot be read without TensorRT, so
    its ``max_batch_size`` must be given (the optimisation profile's maximum, or 0 for a fixed-shape engine);
    its inputs and outputs come from ``reference_onnx`` (the file it was built from; by default an .onnx of
    the same stem beside it) or, without one, are left for Triton to fill in from the engine.

    ``backend``: "onnxruntime" (platform ``onnxruntime_onnx``, what a real deployment runs) or "python"
    (Triton's Python backend running the file with onnxruntime: ``1/model.py`` beside ``1/model.onnx``).
    """
    src = resolve_model_file(model_path)
    is_plan = src.suffix.lower() in PLAN_SUFFIXES
    if not is_plan and src.suffix.lower() != ".onnx":
        raise InputError(f"{src.name}: expected an .onnx file or a TensorRT .plan/.engine")
    kind = instance_kind.lower()
    if kind not in ("cpu", "gpu"):
        raise InputError(f"instance kind must be cpu or gpu; got '{instance_kind}'")
    if count < 1:
        raise InputError(f"instance count must be at least 1; got {count}")
    if kind == "cpu" and is_plan:
        raise InputError("a TensorRT plan runs on a GPU only", "use instance kind gpu")
    if backend not in BACKENDS:
        raise InputError(f"unknown Triton backend '{backend}'", f"choose from {', '.join(BACKENDS)}")
    if backend == "python" and is_plan:
        raise InputError("the python backend runs .onnx files; a TensorRT plan runs on tensorrt_plan")
    if max_queue_delay_us < 0:
        raise InputError("max queue delay must be >= 0 microseconds")
    name = name or _default_name(src)
    if not name or name.startswith(".") or any(c in name for c in "/\\ \t\n"):
        raise InputError(f"invalid model name '{name}' (it becomes a folder name)")

    inputs: list[TensorInfo] = []
    outputs: list[TensorInfo] = []
    info: dict = {"props": {}, "external": []}
    if is_plan:
        ref = Path(reference_onnx) if reference_onnx else src.with_suffix(".onnx")
        if reference_onnx and not ref.is_file():
            raise InputError(f"reference ONNX not found: {ref}")
        if ref.is_file():
            inputs, outputs, info = read_onnx_io(ref)
            info["external"] = []  # nothing of the reference file is copied
        if max_batch_size is None:
            raise InputError(f"{src.name}: a TensorRT plan's batch range cannot be read without TensorRT",
                             "pass max_batch_size (--max-batch): the engine profile's maximum, or 0 if fixed")
    else:
        inputs, outputs, info = read_onnx_io(src)
    free_batch = bool(inputs) and all(t.shape and t.shape[0] is None for t in inputs + outputs)
    if max_batch_size is None:
        max_batch_size = DEFAULT_MAX_BATCH if free_batch else 0
    if max_batch_size < 0:
        raise InputError(f"max_batch_size must be >= 0; got {max_batch_size}")
    if max_batch_size > 0 and inputs and not free_batch:
        fixed = [t.name for t in inputs + outputs if not t.shape or t.shape[0] is not None]
        raise InputError(f"{src.name}: '{fixed[0]}' has a fixed first dimension, so Triton cannot batch it",
                         "use max_batch_size 0, or export with a dynamic batch")
    preferred = _preferred(preferred_batch_sizes, max_batch_size)
    labels = _labels(info["props"])

    platform = "tensorrt_plan" if is_plan else "onnxruntime_onnx"
    text = render_config(name, platform if backend == "onnxruntime" else "python", max_batch_size, inputs,
                         outputs, preferred, max_queue_delay_us, kind, count,
                         label_output=_label_output(outputs, labels, max_batch_size),
                         parameters=_parameters(info["props"]))
    if not is_plan:
        check_runs(src)
    target = Path(out_dir) / name
    if target.exists() and not target.is_dir():
        raise InputError(f"{target} is a file, not a model folder", "choose another --name or output folder")
    with atomic_directory(target / VERSION, owned=earlier_version_files) as version:
        shutil.copyfile(src, version / ("model.plan" if is_plan else "model.onnx"))
        for rel in info["external"]:  # weights kept beside the .onnx travel with it, same relative path
            ext_src = (src.parent / rel).resolve()
            if not ext_src.is_file() or src.parent.resolve() not in ext_src.parents:
                raise InputError(f"{src.name} refers to external data '{rel}' that is missing or outside its folder")
            (version / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ext_src, version / rel)
        if backend == "python":
            (version / "model.py").write_text(PYTHON_MODEL, encoding="utf-8")
    # the version is in place; the config that names it last (each file written whole, then renamed)
    if labels is not None:
        atomic_write_text(target / "labels.txt", "\n".join(labels) + "\n")
    atomic_write_text(target / "config.pbtxt", text)
    return target


def check_runs(path: Path) -> None:
    """Open ``path`` in onnxruntime and close it: what Triton's onnxruntime backend would refuse is refused
    here, in one line, before any file is written."""
    from edgezoo.runtimes.onnxruntime import OrtRunner

    runner = OrtRunner(path, threads=1, graph_optimization="disable")
    try:
        runner.activate()
    except InputError as e:
        raise InputError(f"{e.message}; no Triton entry written",
                         "Triton's onnxruntime backend would refuse it too: re-export the model") from None
    finally:
        runner.deactivate()


def _default_name(src: Path) -> str:
    from edgezoo.serve.model import model_name_for

    return model_name_for(src.with_suffix(".onnx"))


def _preferred(given: Sequence[int] | None, max_batch: int) -> list[int]:
    if max_batch == 0:
        if given:
            raise InputError("preferred batch sizes need max_batch_size > 0")
        return []
    if given is None:
        # Sizes where a CPU/GPU kernel is usually efficient; Triton still forms other sizes when it must.
        return [b for b in (4, 8, 16, 32, 64, 128) if b < max_batch] + [max_batch]
    sizes = sorted(set(int(b) for b in given))
    if not sizes or sizes[0] < 1 or sizes[-1] > max_batch:
        raise InputError(f"preferred batch sizes must lie in 1..{max_batch}; got {list(given)}")
    return sizes


def _labels(props: dict) -> list[str] | None:
    from edgezoo.onnx_meta import ModelMetadata

    labels = ModelMetadata.from_props(props).labels  # validated there: a list of strings or None
    # labels.txt holds one label per line
    return labels if labels and all("\n" not in x for x in labels) else None


def _label_output(outputs: list[TensorInfo], labels: list[str] | None, max_batch: int) -> str | None:
    """Attach labels to the first output when its class dimension has one entry per label."""
    if not labels or not outputs:
        return None
    shape = outputs[0].shape
    return outputs[0].name if len(shape) >= 1 and shape[-1] == len(labels) else None


def _parameters(props: dict) -> dict[str, str]:
    # Preprocessing travels with the model so a Triton client can find it in the model's config.
    keep = ("edgezoo.model", "edgezoo.input_size", "edgezoo.mean", "edgezoo.std", "edgezoo.precision",
            "edgezoo.version")
    return {k: props[k] for k in keep if k in props}


def _q(s: str) -> str:
    # JSON's escapes for quote, backslash and newline are also protobuf text format's; keep UTF-8 as is
    return json.dumps(s, ensure_ascii=False)


def _dims(t: TensorInfo, max_batch: int) -> list[str]:
    shape = t.shape[1:] if max_batch > 0 else t.shape
    return [str(d) if d is not None else "-1" for d in shape]


def render_config(name: str, platform: str, max_batch: int, inputs: list[TensorInfo], outputs: list[TensorInfo],
                  preferred: list[int], queue_delay_us: int, kind: str, count: int,
                  label_output: str | None = None, parameters: dict[str, str] | None = None) -> str:
    # Triton names a backend as "backend" and a framework file format as "platform" (model_config.proto)
    head = f"backend: {_q(platform)}" if platform == "python" else f"platform: {_q(platform)}"
    lines = [f"name: {_q(name)}", head, f"max_batch_size: {max_batch}"]
    for section, tensors in (("input", inputs), ("output", outputs)):
        for t in tensors:
            dims = _dims(t, max_batch)
            lines += [f"{section} [", "  {", f"    name: {_q(t.name)}", f"    data_type: {triton_type(t)}",
                      f"    dims: [ {', '.join(dims or ['1'])} ]"]
            if not dims:  # Triton needs at least one dim: a scalar (per batch row) is [1] reshaped to []
                lines.append("    reshape: { shape: [ ] }")
            if section == "output" and t.name == label_output:
                lines.append('    label_filename: "labels.txt"')
            lines += ["  }", "]"]
    if max_batch > 0:
        lines += ["dynamic_batching {", f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]",
                  f"  max_queue_delay_microseconds: {queue_delay_us}", "}"]
    lines += ["instance_group [", "  {", f"    count: {count}", f"    kind: KIND_{kind.upper()}", "  }", "]"]
    for k, v in (parameters or {}).items():
        lines += ["parameters {", f"  key: {_q(k)}", f"  value: {{ string_value: {_q(v)} }}", "}"]
    return "\n".join(lines) + "\n"


def earlier_version_files(folder: Path) -> set[str] | None:
    """Everything in version folder ``folder`` when its model folder is an entry edgezoo wrote (the version is
    edgezoo's to replace); None otherwise, so a user's own version folder is never replaced."""
    if earlier_entry_files(folder.parent) is None:
        return None
    return {p.name for p in folder.iterdir()}


def earlier_entry_files(folder: Path) -> set[str] | None:
    """The entries of a model folder that edgezoo wrote there before (its config.pbtxt names the folder):
    config.pbtxt, labels.txt and version 1. None when it is no such entry; anything else in it is the user's
    (``edgezoo.fileio.check_replaceable_dir``)."""
    config = folder / "config.pbtxt"
    if not config.is_file():
        return None
    with open(config, "rb") as f:
        head = f.read(1 << 16).decode("utf-8", "replace")
    return {"config.pbtxt", "labels.txt", "1"} if f'name: "{folder.name}"' in head else None
