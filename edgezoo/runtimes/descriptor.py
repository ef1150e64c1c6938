"""What a runtime is, declared once in its own module: ``RuntimeDescriptor`` and the ``FileKind`` it runs.

A runtime module (edgezoo/runtimes/<name>.py) ends with ``DESCRIPTOR = RuntimeDescriptor(...)``: its name
and aliases, the files it runs (suffixes, side files such as OpenVINO's .bin beside the .xml), the pip extra
that brings it, the options its runner takes and an ``open(model, **options) -> Runner``. The registry in
edgezoo.runtimes reads these; commands, loaders and export targets ask the registry, never a list of names.

Importing a descriptor must stay cheap: a runtime module imports its backend inside the runner, never at
module level (the device side imports every descriptor and must not load torch or a backend it does not use).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# The options a runner may take, as commands pass them (keyword -> how a message names it). A runtime lists
# the ones it takes; any other one given to it is refused in one line rather than silently ignored.
OPTIONS = {
    "threads": "thread count (--threads)",
    "providers": "execution providers (--provider)",
    "graph_optimization": "graph optimisation level (--graph-opt)",
    "precision": "precision hint (--precision)",
    "streams": "streams (--streams)",
    "weights": "checkpoint (--weights)",
    "input_size": "input size (--input-size)",
}
# Values commands pass when the user gave nothing; a runtime that does not take the option ignores them.
OPTION_DEFAULTS = {"graph_optimization": "all"}


@dataclass(frozen=True)
class FileKind:
    """One kind of model file: its suffixes, the files beside it that belong to it, and how to name it.

    ``check(path)`` is a cheap look at the bytes before a backend sees them (a header, an identifier, sizes):
    some backends abort the process on a malformed file instead of raising, so a file that cannot be one
    must be refused here, in one line."""

    name: str  # "onnx", "ir", "pte", ...
    suffixes: tuple[str, ...]  # lower case, with the dot; empty for what is not a file (a registry name)
    what: str  # "an .onnx file": how an error names one
    plural: str  # ".onnx files": how a runtime's summary names them
    side_files: tuple[str, ...] = ()  # suffixes that replace the model's suffix: (".bin",) for model.xml + model.bin
    check: Callable[[Path], None] | None = None

    def side_paths(self, path: Path) -> list[Path]:
        return [path.with_suffix(s) for s in self.side_files]


@dataclass(frozen=True)
class RuntimeDescriptor:
    """A runtime: how users name it, which files it runs, what installs it, what its runner takes.

    ``kinds`` are the file kinds this runtime is the default for (a file of that kind opens on it when no
    runtime is asked for); ``also_runs`` names other runtimes' kinds it runs as well (OpenVINO runs .onnx);
    ``built_from`` names kinds that edgezoo.export.loaders converts for it first (ONNX -> TensorRT engine).
    A runtime that runs .onnx also takes a registry name: the loaders export it in memory."""

    name: str
    aliases: tuple[str, ...]
    kinds: tuple[FileKind, ...]
    open: Callable[..., object]  # open(model, **options) -> Runner (not yet active)
    extra: str | None = None  # the pip extra that brings it; None: edgezoo's core dependencies
    install: str = ""  # the install command a missing-dependency message names
    options: tuple[str, ...] = ("threads",)
    precisions: tuple[str, ...] = ()  # precision hints the runner takes (``precision=``)
    also_runs: tuple[str, ...] = ()
    built_from: tuple[str, ...] = ()
    summary: str = ""  # "runs .onnx files and OpenVINO IR (.xml + .bin)"; default: from the kinds

    def __post_init__(self) -> None:
        unknown = [o for o in self.options if o not in OPTIONS]
        if unknown:
            raise ValueError(f"runtime {self.name}: unknown option(s) {unknown}; known: {sorted(OPTIONS)}")

    @property
    def install_command(self) -> str:
        return self.install or (f"pip install 'edgezoo[{self.extra}]'" if self.extra else "pip install edgezoo")

    def suffixes(self) -> tuple[str, ...]:
        return tuple(s for k in self.kinds for s in k.suffixes)


__all__ = ["FileKind", "RuntimeDescriptor", "OPTIONS", "OPTION_DEFAULTS"]
