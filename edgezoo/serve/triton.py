"""Write a Triton Inference Server model repository entry for an ONNX file or a TensorRT plan.

Layout (https://github.com/triton-inference-server/server/blob/main/docs/user_guide/model_repository.md):

    OUT_DIR/<name>/config.pbtxt
    OUT_DIR/<name>/1/model.onnx      (platform onnxruntime_onnx)  or  1/model.plan (platform tensorrt_plan)
    OUT_DIR/<name>/labels.txt        (when the file carries labels: Triton's classification extension)

The config follows Triton's ``ModelConfig`` protobuf (model_config.proto). With ``max_batch_size > 0``
Triton adds the batch dimension itself, so ``dims`` leave it out; that is only valid when the file's first
dimension is free, so a fixed-batch file gets ``max_batch_size: 0`` and its full shape. Other models in
OUT_DIR are left alone; ``<name>`` is replaced whole, only once it is complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

from edgezoo.errors import InputError
from edgezoo.fileio import atomic_directory

DEFAULT_MAX_BATCH = 16
DEFAULT_QUEUE_DELAY_US = 100
PLAN_SUFFIXES = (".plan", ".engine")

# ONNX TensorProto.DataType -> Triton's DataType enum names
ONNX_TO_TRITON = {
    1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16", 6: "TYPE_INT32",
    7: "TYPE_INT64", 8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 12: "TYPE_UINT32",
    13: "TYPE_UINT64", 16: "TYPE_BF16",
}


class TensorIO:
    """One input or output: name, Triton data type, full shape (None for a free dimension)."""

    def __init__(self, name: str, data_type: str, shape: Sequence[int | None]):
        self.name, self.data_type, self.shape = name, data_type, list(shape)


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


def read_onnx_io(path: Path) -> tuple[list[TensorIO], list[TensorIO], dict]:
    """Graph inputs (initializers excluded) and outputs, and edgezoo's metadata, without loading weights."""
    import onnx

    try:
        proto = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends
        raise InputError(f"cannot read {path} as ONNX: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}") \
            from None
    inits = {i.name for i in proto.graph.initializer}

    def conv(vi) -> TensorIO:
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or tt.elem_type not in ONNX_TO_TRITON:
            raise InputError(f"{path.name}: '{vi.name}' is not a tensor type Triton's ONNX backend takes")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        return TensorIO(vi.name, ONNX_TO_TRITON[tt.elem_type], dims)

    inputs = [conv(vi) for vi in proto.graph.input if vi.name not in inits]
    outputs = [conv(vi) for vi in proto.graph.output]
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
) -> Path:
    """Write ``out_dir/<name>/`` for Triton; returns that folder.

    ``max_batch_size``: for an ONNX file with a free batch dimension, default 16; a fixed-batch file takes
    only 0 (Triton then passes the full shape through). A TensorRT plan cannot be read without TensorRT, so
    its ``max_batch_size`` must be given (the optimisation profile's maximum, or 0 for a fixed-shape engine);
    its inputs and outputs come from ``reference_onnx`` (the file it was built from; by default an .onnx of
    the same stem beside it) or, without one, are left for Triton to fill in from the engine.
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
    if max_queue_delay_us < 0:
        raise InputError("max queue delay must be >= 0 microseconds")
    name = name or _default_name(src)
    if not name or name.startswith(".") or any(c in name for c in "/\\ \t\n"):
        raise InputError(f"invalid model name '{name}' (it becomes a folder name)")

    inputs: list[TensorIO] = []
    outputs: list[TensorIO] = []
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

    text = render_config(name, "tensorrt_plan" if is_plan else "onnxruntime_onnx", max_batch_size, inputs,
                         outputs, preferred, max_queue_delay_us, kind, count,
                         label_output=_label_output(outputs, labels, max_batch_size),
                         parameters=_parameters(info["props"]))
    target = Path(out_dir) / name
    with atomic_directory(target) as tmp:
        version = tmp / "1"
        version.mkdir()
        shutil.copyfile(src, version / ("model.plan" if is_plan else "model.onnx"))
        for rel in info["external"]:  # weights kept beside the .onnx travel with it, same relative path
            ext_src = (src.parent / rel).resolve()
            if not ext_src.is_file() or src.parent.resolve() not in ext_src.parents:
                raise InputError(f"{src.name} refers to external data '{rel}' that is missing or outside its folder")
            (version / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ext_src, version / rel)
        if labels is not None:
            (tmp / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
        (tmp / "config.pbtxt").write_text(text, encoding="utf-8")
    return target


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


def _label_output(outputs: list[TensorIO], labels: list[str] | None, max_batch: int) -> str | None:
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


def _dims(t: TensorIO, max_batch: int) -> list[str]:
    shape = t.shape[1:] if max_batch > 0 else t.shape
    return [str(d) if d is not None else "-1" for d in shape]


def render_config(name: str, platform: str, max_batch: int, inputs: list[TensorIO], outputs: list[TensorIO],
                  preferred: list[int], queue_delay_us: int, kind: str, count: int,
                  label_output: str | None = None, parameters: dict[str, str] | None = None) -> str:
    lines = [f"name: {_q(name)}", f"platform: {_q(platform)}", f"max_batch_size: {max_batch}"]
    for section, tensors in (("input", inputs), ("output", outputs)):
        for t in tensors:
            dims = _dims(t, max_batch)
            lines += [f"{section} [", "  {", f"    name: {_q(t.name)}", f"    data_type: {t.data_type}",
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
