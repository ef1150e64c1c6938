"""Runtimes: one small interface (activate, describe, infer, deactivate), one module per backend.

``Runner`` (base.py) is the interface, after Polygraphy's runners: ``activate()``, ``infer(feeds)``,
``deactivate()``, ``inputs`` / ``outputs``. Each backend's module declares what it is in a
``RuntimeDescriptor`` (descriptor.py): names, the files it runs (suffixes and side files), its pip extra, the
options its runner takes and how to open one. This registry reads them; ``open_runner`` is the one function
that opens any file, picking the runtime by the file's suffix (or the one asked for), and says in one line
when a runtime cannot take a file or an option.

Runners take a file (or bytes); they do not build models: exporting a registry name or building a TensorRT
engine from ONNX is the job of ``edgezoo.export.loaders``, which then calls ``open_runner``. The device side
(onnxruntime + numpy) never loads torch: descriptors import no backend.

Adding a runtime is one module with a ``DESCRIPTOR`` and its name in ``BUILTIN`` below (or, from outside
edgezoo, one ``register_runtime(descriptor)`` call).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from edgezoo.errors import InputError
from edgezoo.runtimes.base import Runner, TensorInfo
from edgezoo.runtimes.descriptor import OPTION_DEFAULTS, OPTIONS, FileKind, RuntimeDescriptor

# edgezoo's own runtimes: modules under edgezoo/runtimes/ that define DESCRIPTOR, in the order help lists them
BUILTIN = ("onnxruntime", "openvino", "executorch", "litert", "tensorrt", "torch", "mnn", "ncnn")

_registry: dict[str, RuntimeDescriptor] = {}
_loaded = False


def register_runtime(descriptor: RuntimeDescriptor) -> RuntimeDescriptor:
    """Add (or replace) a runtime; its names and suffixes must not clash with another runtime's."""
    _load_builtin()
    taken_names = {n: d.name for d in _registry.values() if d.name != descriptor.name
                   for n in (d.name, *d.aliases)}
    taken_suffixes = {s: d.name for d in _registry.values() if d.name != descriptor.name for s in d.suffixes()}
    for n in (descriptor.name, *descriptor.aliases):
        if n.lower() in taken_names:
            raise ValueError(f"runtime name '{n}' is already {taken_names[n.lower()]}'s")
    for s in descriptor.suffixes():
        if s in taken_suffixes:
            raise ValueError(f"suffix '{s}' is already {taken_suffixes[s]}'s")
    _registry[descriptor.name] = descriptor
    return descriptor


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in BUILTIN:
        _registry.setdefault(name, importlib.import_module(f"edgezoo.runtimes.{name}").DESCRIPTOR)


def descriptors() -> list[RuntimeDescriptor]:
    """Every registered runtime, edgezoo's own first."""
    _load_builtin()
    return list(_registry.values())


def runtime_names() -> list[str]:
    return sorted(d.name for d in descriptors())


def get_runtime(name: str) -> RuntimeDescriptor:
    """The descriptor of a runtime by its name or an alias (case-insensitive)."""
    key = name.strip().lower()
    for d in descriptors():
        if key == d.name or key in d.aliases:
            return d
    raise InputError(f"unknown runtime '{name}'", f"choose from auto, {', '.join(runtime_names())}")


def normalize_runtime(runtime: str | None) -> str | None:
    if runtime is None or runtime.strip().lower() == "auto":
        return None
    return get_runtime(runtime).name


def file_kinds() -> dict[str, tuple[FileKind, RuntimeDescriptor]]:
    """kind name -> (the kind, the runtime it opens on by default)."""
    return {k.name: (k, d) for d in descriptors() for k in d.kinds}


def kind_of_suffix(suffix: str) -> FileKind | None:
    suffix = suffix.lower()
    return next((k for k, _ in file_kinds().values() if suffix in k.suffixes), None)


def model_kind(model: str | os.PathLike | bytes) -> str:
    """The kind of what the user typed ('onnx', 'ir', 'pte', ... or 'registry'): a known suffix decides; a path
    that exists or has a folder in it, with another suffix, is taken for ONNX; else a registry name."""
    if isinstance(model, (bytes, bytearray)):
        return "onnx"
    text = os.fspath(model)
    path = Path(text)
    kind = kind_of_suffix(path.suffix)
    if kind is not None:
        return kind.name
    if path.exists() or os.sep in text or "/" in text:
        return "onnx"
    return "registry"


def default_runtime(kind: str) -> str:
    return file_kinds()[kind][1].name


def runs(runtime: str, kind: str) -> bool:
    """Whether ``open_runner`` opens a file of ``kind`` on ``runtime`` as it is."""
    d = get_runtime(runtime)
    return kind in {k.name for k in d.kinds} or kind in d.also_runs


def can_take(runtime: str, kind: str) -> bool:
    """Whether ``runtime`` can take ``kind`` at all: as it is, or after edgezoo.export.loaders builds it (a
    registry name exported to ONNX for a runtime that runs ONNX; an ONNX file built into a TensorRT engine)."""
    d = get_runtime(runtime)
    return runs(d.name, kind) or kind in d.built_from or (kind == "registry" and runs(d.name, "onnx"))


def _summary(d: RuntimeDescriptor) -> str:
    if d.summary:
        return d.summary
    kinds = file_kinds()
    plurals = [kinds[n][0].plural for n in d.also_runs if n in kinds] + [k.plural for k in d.kinds]
    return " and ".join(plurals)


def check_runtime_takes(runtime: str, kind: str, model: str | os.PathLike | bytes) -> None:
    """InputError when ``runtime`` cannot take a model of ``kind``: "litert runs .tflite files; m.onnx is an .onnx file"."""
    d = get_runtime(runtime)
    if runs(d.name, kind):
        return
    shown = "the model bytes" if isinstance(model, (bytes, bytearray)) else os.fspath(model)
    hint = f"it runs on {default_runtime(kind)}"
    if kind == "registry":
        hint = "export it first (edgezoo export NAME), or use `edgezoo bench NAME -r RUNTIME`, which exports in memory"
    elif kind in d.built_from:
        hint = (f"convert it first (edgezoo export NAME --target {d.name}), or bench it: "
                f"edgezoo bench FILE -r {d.name}")
    raise InputError(f"{d.name} runs {_summary(d)}; {shown} is {file_kinds()[kind][0].what}", hint)


def check_options(runtime: str, options: dict) -> dict:
    """The options ``runtime`` takes, from those given (None: not given); InputError for one it does not take."""
    d = get_runtime(runtime)
    out = {}
    for key, value in options.items():
        if key not in OPTIONS:
            raise TypeError(f"open_runner() got an unknown option '{key}'")
        if value is None:
            continue
        if key not in d.options:
            if OPTION_DEFAULTS.get(key) == value:
                continue  # a command's default for another runtime's option: nothing was asked
            owners = [o.name for o in descriptors() if key in o.options]
            raise InputError(f"{d.name} takes no {OPTIONS[key]}; {', '.join(owners) or 'no runtime'} "
                             f"{'does' if len(owners) == 1 else 'do'}",
                             f"drop it, or use --runtime {owners[0]}" if owners else "drop it")
        out[key] = value
    return out


def model_files(path: str | os.PathLike) -> list[Path]:
    """A model file and the side files that belong to it (OpenVINO's .bin beside the .xml), by its suffix."""
    path = Path(path)
    kind = kind_of_suffix(path.suffix)
    return [path] + (kind.side_paths(path) if kind is not None else [])


def model_bytes(path: str | os.PathLike) -> int:
    """Bytes of a model as stored: the file and its side files (those that exist)."""
    return sum(p.stat().st_size for p in model_files(path) if p.exists())


def check_model_bytes(path: str | os.PathLike) -> None:
    """The cheap look at a file's bytes its kind declares (header, identifier, sizes); InputError if it cannot
    be one. Some backends abort the whole process on a malformed file rather than raise."""
    path = Path(path)
    kind = kind_of_suffix(path.suffix)
    if kind is None or kind.check is None or not path.is_file():
        return
    kind.check(path)
    for side in kind.side_paths(path):
        if not side.is_file():
            raise InputError(f"{path} has no {side.name} beside it",
                             f"{kind.what} is {path.suffix} and {' and '.join(kind.side_files)} files with one name")


def open_runner(model: str | os.PathLike | bytes, runtime: str | None = None, **options) -> Runner:
    """A (not yet active) runner for a model file (or ONNX bytes) or, on torch, a registry name.

    ``options`` are those in edgezoo.runtimes.descriptor.OPTIONS (threads, providers, graph_optimization,
    precision, streams, weights, input_size); None means not given. An option the chosen runtime has no use
    for is an error rather than silently ignored.
    """
    kind = model_kind(model)
    rt = normalize_runtime(runtime) or default_runtime(kind)
    check_runtime_takes(rt, kind, model)
    given = check_options(rt, options)
    if not isinstance(model, (bytes, bytearray)) and kind != "registry":
        check_model_bytes(model)
    return get_runtime(rt).open(model, **given)


# --- what help texts print, read off the descriptors ------------------------------------------------------
def runtimes_help() -> str:
    """"onnxruntime, openvino, executorch, ...": the runtimes, in registration order."""
    return ", ".join(d.name for d in descriptors())


def suffixes_help() -> str:
    """".onnx -> onnxruntime, .xml -> openvino, ...": which runtime a file opens on by default."""
    return ", ".join(f"{'/'.join(k.suffixes)} -> {d.name}" for d in descriptors() for k in d.kinds if k.suffixes)


def files_help() -> str:
    """".onnx, .xml (+ .bin), .pte, ...": the model files edgezoo runs."""
    return ", ".join(f"{s}{' (+ ' + ', '.join(k.side_files) + ')' if k.side_files else ''}"
                     for d in descriptors() for k in d.kinds for s in k.suffixes)


__all__ = ["Runner", "TensorInfo", "RuntimeDescriptor", "FileKind", "open_runner", "register_runtime",
           "descriptors", "get_runtime", "model_kind", "normalize_runtime", "default_runtime", "runs", "can_take",
           "check_runtime_takes", "check_options", "runtime_names", "model_files", "model_bytes",
           "check_model_bytes", "runtimes_help", "suffixes_help", "files_help", "BUILTIN"]
