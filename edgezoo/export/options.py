"""What `edgezoo export` was asked to do, and every check that can be made before any slow work.

``validate(options)`` raises InputError for anything wrong that is visible without building the model:
names, ranges, input files and folders, every output location (bundle, Triton repository), and options
that contradict each other. It returns the options with defaults filled in, plus warnings for options that
have no effect in this run (they are reported, not fatal: ``--method`` without ``--int8`` still gives a
good fp32 bundle).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from edgezoo.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from edgezoo.sources import ModelSource

DEFAULT_OUT_ROOT = Path("edgezoo-out")
DEFAULT_METHOD = "minmax"
DEFAULT_BACKEND = "onnxruntime"
DEFAULT_CALIB_COUNT = 32
DEFAULT_OPSET = 17

# Opsets the pipeline runs end to end here (tried with torch 2.13's TorchScript exporter and onnxruntime
# 1.32): below 7 onnxruntime has no kernels (BatchNormalization-6 is NOT_IMPLEMENTED); above 20 the
# TorchScript exporter warns that it does not support the opset and stamps it anyway. QuantizeLinear
# exists from opset 10 and takes a per-channel axis from 13 (at 12 onnxruntime writes an invalid graph).
MIN_OPSET = 7
MIN_OPSET_INT8_PER_TENSOR = 10
MIN_OPSET_INT8 = 13
MAX_BATCH = 1024


def max_opset() -> int:
    """The TorchScript exporter's own limit (torch.onnx warns above it), 20 in torch 2.13."""
    try:
        from torch.onnx import _constants

        return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))
    except Exception:  # a torch without that private module: the limit we tested
        return 20


@dataclass
class ExportOptions:
    # the source (edgezoo.sources.resolve_source): a zoo name or alias, FILE.onnx, FILE.pt2,
    # package.module:attr, timm:NAME, torchvision:NAME, or an nn.Module object (Python API)
    name: Any
    weights: Path | None = None
    int8: bool = False
    fp16: bool = False
    tensorrt: bool = False  # the old spelling of targets += ("tensorrt",); it also fails early without TensorRT
    calib: Path | None = None
    calib_count: int | None = None  # None: DEFAULT_CALIB_COUNT
    per_tensor: bool = False
    method: str | None = None  # None: DEFAULT_METHOD
    opset: int = DEFAULT_OPSET
    batch: int | None = None  # None: dynamic batch; an int fixes it
    # S, (H, W) or (C, H, W), or the same as text ("224", "160,128"); None: the spec's
    input_size: int | str | Sequence[int] | None = None
    out: Path | None = None
    triton: Path | None = None
    backend: str | None = None  # who runs the int8 file: decides the activation forms (int8_forms)
    eval_count: int = 32
    seed: int = 0
    lite: bool = False
    distill_images: Path | None = None
    distill_steps: int | None = None
    num_classes: int | None = None  # None: the spec's; e.g. 10 to load a fine-tuned checkpoint
    # fp16 ONNX keeps fp32 inputs/outputs unless asked
    fp16_io: bool = False
    # export targets (edgezoo.export.targets): runtimes whose own files are written, verified and compared
    targets: tuple[str, ...] = ("onnxruntime",)
    bench: bool = False  # latency p50 of every target's file, interleaved, 1 thread, batch 1
    bf16: bool = False  # also bf16 for the targets that have it (OpenVINO)
    # preprocessing of a model outside the zoo, in serve's grammar (edgezoo.preprocess_options); None: the
    # file's metadata or the source's own record, else ImageNet's (named in a warning)
    mean: str | Sequence[float] | None = None
    std: str | Sequence[float] | None = None
    layout: str | None = None
    labels: Path | Sequence[str] | None = None
    example_inputs: Any = None  # for an nn.Module source: one (N, C, H, W) tensor
    # --lite (edgezoo.export.lite): which rewrites (None: lite.DEFAULT_REWRITES), a distillation time budget
    # in seconds and a checkpoint file to resume distillation from
    lite_rewrites: tuple[str, ...] | None = None
    distill_time_budget: float | None = None
    distill_checkpoint: Path | None = None
    # labelled images (edgezoo.export.labelled): top-1/top-5 of every file; the accuracy budget (export.budget)
    eval: Path | None = None
    max_drop: float | None = None  # points of top-1 on --eval an int8 file may lose against fp32
    min_sqnr: float | None = None  # dB of output SQNR against fp32 an int8 file must keep


@dataclass
class CheckedExport:
    options: ExportOptions  # defaults filled in
    source: ModelSource
    size: tuple[int, int, int]  # C, H, W
    out_dir: Path
    triton_entry: Path | None  # TRITON/<model name>, replaced whole
    warnings: list[str] = field(default_factory=list)

    @property
    def spec(self):
        """The zoo entry, for a zoo source; None for any other."""
        return self.source.spec


def default_out_dir(model_name: str) -> Path:
    return DEFAULT_OUT_ROOT / model_name


def validate(options: ExportOptions) -> CheckedExport:
    """Every check that needs no model build; InputError (one line) for the first problem found."""
    from edgezoo.runtimes.inputs import parse_input_size
    from edgezoo.sources import resolve_source

    o = options
    parsed = parse_input_size(o.input_size)
    if parsed is not None and min(parsed[-2:]) < 8:
        raise InputError(f"--input-size {parsed[-2]},{parsed[-1]} is too small for a CNN (at least 8 pixels a side)")
    if o.weights is not None and not (isinstance(o.name, str) and o.name.lower().endswith(".onnx")):
        _check_input_file(Path(o.weights), "--weights", "a state_dict file saved with torch.save")
    source = resolve_source(o.name, weights=o.weights, input_size=o.input_size, mean=o.mean, std=o.std,
                            layout=o.layout, labels=o.labels, example_inputs=o.example_inputs,
                            num_classes=o.num_classes)
    size = tuple(int(v) for v in source.input_size)
    if min(size[1:]) < 8:
        raise InputError(f"--input-size {size[1]},{size[2]} is too small for a CNN (at least 8 pixels a side)")
    if source.is_onnx and o.lite:
        raise InputError("--lite rewrites and distils a PyTorch model; this source is an ONNX graph",
                         "export the PyTorch model (a zoo name, FILE.pt2 or package.module:attr) with --lite")
    warnings = _no_effect(o) + list(source.notes)
    if source.is_onnx:
        warnings += [f"{flag} has no effect on an ONNX source (the file's own {what} is kept)"
                     for flag, what, given in (("--batch", "batch", o.batch is not None),
                                               ("--num-classes", "head", o.num_classes is not None),
                                               ("--opset", "opset", o.opset != DEFAULT_OPSET)) if given]
    _check_memory(o, size)

    method = DEFAULT_METHOD if o.method is None else o.method.lower()
    from edgezoo.export.quantize import METHODS

    if method not in METHODS:
        raise InputError(f"unknown calibration method '{o.method}'", f"use one of {', '.join(METHODS)}")
    backend = DEFAULT_BACKEND if o.backend is None else o.backend.lower()
    from edgezoo.export.int8_forms import BACKENDS

    if backend not in BACKENDS:
        raise InputError(f"unknown int8 backend '{o.backend}'", f"use one of {', '.join(BACKENDS)}")
    calib_count = DEFAULT_CALIB_COUNT if o.calib_count is None else o.calib_count
    if calib_count < 1:
        raise InputError(f"--calib-count must be at least 1, got {calib_count}")
    if o.num_classes is not None and o.num_classes < 1:
        raise InputError(f"--num-classes must be at least 1, got {o.num_classes}")
    if o.distill_steps is not None and o.distill_steps < 1:
        raise InputError(f"--distill-steps must be at least 1, got {o.distill_steps}")
    if o.batch is not None and not 1 <= o.batch <= MAX_BATCH:
        raise InputError(f"--batch must lie in 1..{MAX_BATCH}, got {o.batch}")
    _check_opset(o)

    _check_budget(o)
    for folder, option in ((o.calib, "--calib"), (o.distill_images, "--distill-images"), (o.eval, "--eval")):
        if folder is not None:
            _check_input_folder(Path(folder), option)

    out_dir = Path(o.out) if o.out is not None else default_out_dir(source.name)
    triton_entry = None if o.triton is None else Path(o.triton) / source.name
    check_output_folders(out_dir, "bundle" if o.out is None else "-o", triton_entry)
    if o.triton is not None:
        a, b = out_dir.resolve(), triton_entry.resolve()
        if a == b or a in b.parents or b in a.parents:
            raise InputError(f"the bundle {out_dir} and the Triton entry {triton_entry} overlap; each is "
                             "replaced whole", "give -o and --triton folders apart from each other")
    if o.tensorrt:
        from edgezoo.runtimes.tensorrt import import_tensorrt

        import_tensorrt()  # fail in one line now, not after minutes of work
    batch = o.batch if o.batch is not None or source.is_onnx else source.input.fixed_batch
    targets = tuple(o.targets) + (("tensorrt",) if o.tensorrt and "tensorrt" not in o.targets else ())
    filled = replace(o, method=method, backend=backend, calib_count=calib_count, input_size=size, batch=batch,
                     targets=targets)
    return CheckedExport(filled, source, size, out_dir, triton_entry, warnings)


# Peak memory grows with pixels x images held at once (calibration keeps every image's activations):
# mobilenet_v3_small --int8 (32 calibration + 32 held-out images) peaked at 1.2 GB RSS at 224x224 and
# 3.4 GB at 448x448 here, about 300 bytes per pixel per image over a 0.5 GB base.
BYTES_PER_PIXEL_IMAGE = 300
BASE_BYTES = 500e6


def _check_memory(o: ExportOptions, size: tuple[int, ...]) -> None:
    import os

    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    calib = DEFAULT_CALIB_COUNT if o.calib_count is None else o.calib_count
    images = (calib + o.eval_count) if (o.int8 or o.lite) else 4  # fp32: the parity check runs batch 4
    images = max(images, o.batch or 1)
    need = BASE_BYTES + images * size[1] * size[2] * BYTES_PER_PIXEL_IMAGE
    if need > total:
        raise InputError(f"--input-size {size[1]},{size[2]} would need about {need / 1e9:.0f} GB for this export "
                         f"({images} images at once); this machine has {total / 1e9:.0f} GB",
                         "use a smaller --input-size (or fewer --calib-count images)")


def _check_budget(o: ExportOptions) -> None:
    if o.max_drop is not None:
        if not 0 <= o.max_drop < 100:
            raise InputError(f"--max-drop must lie in 0..100 points of top-1, got {o.max_drop:g}")
        if o.eval is None:
            raise InputError("--max-drop needs labelled images to measure top-1 on", "add --eval DIR")
    if o.min_sqnr is not None and not 0 < o.min_sqnr < 200:
        raise InputError(f"--min-sqnr must lie in 0..200 dB, got {o.min_sqnr:g}")
    if (o.max_drop is not None or o.min_sqnr is not None) and not o.int8:
        raise InputError("--max-drop and --min-sqnr are budgets for int8 files", "add --int8")


def _check_opset(o: ExportOptions) -> None:
    top = max_opset()
    if not MIN_OPSET <= o.opset <= top:
        raise InputError(f"--opset {o.opset} is not supported: use {MIN_OPSET}..{top}",
                         f"int8 needs {MIN_OPSET_INT8} or more ({MIN_OPSET_INT8_PER_TENSOR} with --per-tensor); "
                         f"the default is {DEFAULT_OPSET}")
    if o.int8:
        need = MIN_OPSET_INT8_PER_TENSOR if o.per_tensor else MIN_OPSET_INT8
        if o.opset < need:
            what = "per-tensor" if o.per_tensor else "per-channel (the default)"
            raise InputError(f"--opset {o.opset} is too old for {what} int8: use {need}..{top}",
                             "QuantizeLinear exists from opset 10 and takes a per-channel axis from 13")


def int8_opset(o: ExportOptions) -> int | None:
    """The opset an ONNX source's graph must have for the int8 asked (None: no int8)."""
    if not o.int8:
        return None
    return MIN_OPSET_INT8_PER_TENSOR if o.per_tensor else MIN_OPSET_INT8


def _no_effect(o: ExportOptions) -> list[str]:
    """Options that change nothing in this run: said in one line each, before the work starts."""
    given = []
    if not o.int8:
        given += [flag for flag, on in (("--method", o.method is not None), ("--per-tensor", o.per_tensor),
                                        ("--backend", o.backend is not None)) if on]
    if not (o.int8 or o.lite):
        given += [flag for flag, on in (("--calib", o.calib is not None),
                                        ("--calib-count", o.calib_count is not None)) if on]
    if not o.lite:
        given += [flag for flag, on in (("--distill-images", o.distill_images is not None),
                                        ("--distill-steps", o.distill_steps is not None)) if on]
    out = []
    for flag in given:
        needs = "--lite" if flag.startswith("--distill") else ("--int8 or --lite" if flag.startswith("--calib")
                                                               else "--int8")
        out.append(f"{flag} has no effect without {needs} (ignored)")
    return out


def _check_input_file(path: Path, option: str, what: str) -> None:
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder", f"give {what}")
    if not path.exists():
        raise InputError(f"{option} {path} does not exist", f"give {what}")
    if not path.is_file():
        raise InputError(f"{option} {path} is not a regular file", f"give {what}")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise InputError(f"{option} {path} cannot be read: {e.strerror}") from None


def _check_input_folder(path: Path, option: str) -> None:
    if path.is_file():
        raise InputError(f"{option} {path} is a file", "give a folder of images")
    if not path.exists():
        raise InputError(f"{option} {path} does not exist", "give a folder of images")
    if not path.is_dir():
        raise InputError(f"{option} {path} is not a folder", "give a folder of images")
    try:
        next(iter(path.iterdir()), None)
    except OSError as e:
        raise InputError(f"{option} {path} cannot be read: {e.strerror}") from None


def check_output_folders(out_dir: Path, option: str, triton_entry: Path | None) -> None:
    """The bundle folder and the Triton entry can be written and replaced whole: each is new, empty, or an
    earlier output of `edgezoo export` holding nothing else (``earlier_export_files``)."""
    from edgezoo.fileio import check_replaceable_dir, check_writable_dir

    check_replaceable_dir(out_dir, option, owned=earlier_export_files)
    if triton_entry is not None:
        check_writable_dir(triton_entry.parent, "--triton")
        check_replaceable_dir(triton_entry, "--triton", owned=earlier_export_files)


def earlier_export_files(folder: Path) -> set[str] | None:
    """The entries of ``folder`` that an earlier `edgezoo export` wrote, or None when it is no such output.

    A bundle: its report.json names the edgezoo version, the model and its files (side files such as
    ``model.fp32.onnx.data`` or OpenVINO's ``.bin`` share a listed file's stem), and export.log, which the
    export moves in after the report is written (other libraries' messages). A Triton entry written by
    the export: its config.pbtxt, labels.txt and version 1. Anything else in the folder is the user's.
    """
    import json

    report = folder / "report.json"
    if report.is_file() and report.stat().st_size < 16 << 20:
        try:
            r = json.loads(report.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not (isinstance(r, dict) and "edgezoo" in r and "model" in r and isinstance(r.get("files"), dict)):
            return None
        listed = {str(f.get("file")) for f in r["files"].values() if isinstance(f, dict) and f.get("file")}
        stems = tuple(Path(name).stem + "." for name in listed)
        return ({"report.json", "report.md", "export.log", *listed}
                | {n for n in os.listdir(folder) if n.startswith(stems)})
    from edgezoo.serve.triton import earlier_entry_files

    return earlier_entry_files(folder)
