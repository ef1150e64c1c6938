"""onnxruntime: CPU by default, other execution providers by short name when the installed build has them.

No torch here: this is what a device with only onnxruntime and numpy runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgezoo.errors import InputError, MissingDependencyError
from edgezoo.runtimes.base import Runner, TensorInfo, first_line, guess_layout, shape_of
from edgezoo.runtimes.descriptor import FileKind, RuntimeDescriptor

# Short names users type -> onnxruntime's provider names, and the package that brings each one.
PROVIDERS = {
    "cpu": ("CPUExecutionProvider", "pip install onnxruntime"),
    "cuda": ("CUDAExecutionProvider", "pip install onnxruntime-gpu (needs an NVIDIA GPU)"),
    "tensorrt": ("TensorrtExecutionProvider", "pip install onnxruntime-gpu tensorrt (needs an NVIDIA GPU)"),
    "openvino": ("OpenVINOExecutionProvider", "pip install onnxruntime-openvino"),
    "dml": ("DmlExecutionProvider", "pip install onnxruntime-directml (Windows)"),
    "coreml": ("CoreMLExecutionProvider", "pip install onnxruntime (macOS build)"),
}

OPT_LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC",
              "disable": "ORT_DISABLE_ALL", "none": "ORT_DISABLE_ALL"}

# ONNX tensor element type strings (as onnxruntime reports them) -> numpy
ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16, "tensor(uint16)": np.uint16,
    "tensor(int32)": np.int32, "tensor(uint32)": np.uint32, "tensor(int64)": np.int64,
    "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_, "tensor(string)": np.object_,
}


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError("onnxruntime", "pip install onnxruntime", "edgezoo needs it to run .onnx files") from None
    return onnxruntime


def resolve_providers(providers: str | Sequence[str] | None) -> list[str]:
    """Short or full provider names -> onnxruntime's names, CPU appended as fallback; error if not in this build."""
    ort = import_onnxruntime()
    if providers is None:
        return ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [p for p in providers.split(",") if p.strip()]
    available = ort.get_available_providers()
    full_names = {v[0].lower(): v[0] for v in PROVIDERS.values()}
    out: list[str] = []
    for p in providers:
        key = p.strip().lower()
        if key in PROVIDERS:
            full, install = PROVIDERS[key]
        elif key in full_names or key.endswith("executionprovider"):
            full = full_names.get(key, p.strip())
            install = next((v[1] for v in PROVIDERS.values() if v[0] == full), "an onnxruntime build with it")
        else:
            raise InputError(f"unknown execution provider '{p}'", f"choose from {', '.join(PROVIDERS)}")
        if full not in available:
            raise MissingDependencyError(
                f"onnxruntime's {full}", install,
                f"this onnxruntime build has {', '.join(available)}",
            )
        if full not in out:
            out.append(full)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")  # nodes the accelerator cannot take fall back to the CPU
    return out


class OrtRunner(Runner):
    """An ONNX model in an onnxruntime InferenceSession.

    ``threads`` sets intra-op threads (inter-op stays 1: these CNNs are a chain, and one pool keeps
    measurements comparable); ``profile=True`` turns on onnxruntime's profiler (see ``end_profiling``).
    """

    name = "onnxruntime"

    def __init__(
        self,
        path_or_bytes: str | os.PathLike | bytes,
        threads: int | None = None,
        providers: str | Sequence[str] | None = None,
        graph_optimization: str = "all",
        session_options: Any = None,
        profile: bool = False,
    ) -> None:
        super().__init__()
        self._ort = import_onnxruntime()
        if isinstance(path_or_bytes, (bytes, bytearray)):
            self.path: Path | None = None
            self._model: str | bytes = bytes(path_or_bytes)
        else:
            self.path = Path(path_or_bytes)
            check_onnx_file(self.path)
            self._model = os.fspath(self.path)
        if threads is not None and threads < 1:
            raise InputError(f"threads must be at least 1, got {threads}")
        if graph_optimization.lower() not in OPT_LEVELS:
            raise InputError(f"unknown graph optimization level '{graph_optimization}'",
                             f"choose from {', '.join(OPT_LEVELS)}")
        self.threads = threads
        self.providers = resolve_providers(providers)
        self.graph_optimization = graph_optimization.lower()
        self.session_options = session_options
        self.profile = profile
        self.session = None
        self.profile_file: str | None = None

    @property
    def model_source(self) -> str | bytes:
        """The path or bytes this runner was opened with (to open a second session on the same model)."""
        return self._model

    def _options(self):
        ort = self._ort
        opts = self.session_options if self.session_options is not None else ort.SessionOptions()
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[self.graph_optimization])
        if self.threads is not None:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        if self.profile:
            opts.enable_profiling = True
        opts.log_severity_level = 3  # warnings about unused initializers etc. are not the user's problem
        return opts

    def _activate(self) -> None:
        from edgezoo.onnx_bounds import check_model_bounds

        # a few hundred bytes can declare a constant of 2**31 values that the session would build
        check_model_bounds(self._model, str(self.path or "the model bytes"))
        try:
            self.session = self._ort.InferenceSession(self._model, self._options(), providers=self.providers)
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            where = self.path or "the model bytes"
            raise InputError(f"onnxruntime cannot load {where}: {first_line(e)}",
                             "is it a complete, valid ONNX file?") from None

    def _deactivate(self) -> None:
        if self.session is not None and self.profile and self.profile_file is None:
            self.profile_file = self.session.end_profiling()
        self.session = None

    def end_profiling(self) -> str | None:
        """Stop the profiler and return the path of its JSON trace (written in the working folder)."""
        if self.session is not None and self.profile and self.profile_file is None:
            self.profile_file = self.session.end_profiling()
        return self.profile_file

    def _inputs(self) -> list[TensorInfo]:
        return [_info(i) for i in self.session.get_inputs()]

    def _outputs(self) -> list[TensorInfo]:
        return [_info(o) for o in self.session.get_outputs()]

    def _infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self.session.run(None, feeds)
        except Exception as e:
            shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in feeds.items())
            raise InputError(f"onnxruntime cannot run the model on {shapes}: {first_line(e)}",
                             "check the input size and batch against the model's inputs") from None

    def metadata(self) -> dict[str, str]:
        """The file's raw metadata_props."""
        self._require_active()
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def model_metadata(self):
        from edgezoo.onnx_meta import PREFIX, ModelMetadata

        props = self.metadata()
        if not any(k.startswith(PREFIX) for k in props):
            return None
        return ModelMetadata.from_props(props)

    def model_size_bytes(self) -> int | None:
        if self.path is not None:
            return self.path.stat().st_size + _external_data_size(self.path)
        return len(self._model)

    def settings(self) -> dict[str, Any]:
        # onnxruntime does not report its thread count back; this is what the session was built with
        return {"threads": self.threads, "providers": list(self.providers),
                "graph_optimization": self.graph_optimization}

    def describe(self) -> str:
        prov = "+".join(p.replace("ExecutionProvider", "") for p in self.providers)
        thr = f", {self.threads} thread{'s' if self.threads != 1 else ''}" if self.threads else ""
        return f"onnxruntime {self._ort.__version__} ({prov}{thr})"


def _info(node) -> TensorInfo:
    dtype = ORT_DTYPES.get(node.type)
    if dtype is None:  # e.g. sequences, maps, bfloat16: no numpy array edgezoo could feed or compare
        raise InputError(f"tensor '{node.name}' has type {node.type}, which edgezoo cannot run",
                         "edgezoo runs models whose inputs and outputs are numeric or string tensors")
    shape = shape_of(node.shape)
    return TensorInfo(node.name, shape, np.dtype(dtype), guess_layout(shape))


def _external_data_size(path: Path) -> int:
    side = path.with_name(path.name + ".data")
    return side.stat().st_size if side.exists() else 0


def check_onnx_file(path: Path) -> None:
    """Cheap checks with clear messages before onnxruntime gives its own (longer) ones."""
    from edgezoo.fileio import check_model_path

    check_model_path(path, "an ONNX file")


ONNX = FileKind("onnx", (".onnx",), "an .onnx file", ".onnx files")


def open_file(model, threads=None, providers=None, graph_optimization="all") -> OrtRunner:
    return OrtRunner(model, threads=threads, providers=providers, graph_optimization=graph_optimization)


DESCRIPTOR = RuntimeDescriptor(
    "onnxruntime", ("ort",), (ONNX,), open_file, extra=None, install="pip install onnxruntime",
    options=("threads", "providers", "graph_optimization"))
