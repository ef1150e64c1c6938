"""OpenVINO: .onnx files (fp32, and QDQ int8, which OpenVINO turns into its own int8 kernels) and OpenVINO IR
(.xml beside its .bin), on the CPU by default.

Precision: on CPUs with bf16 support (AMX / AVX-512 BF16) OpenVINO runs an f32 model in bf16 unless told
otherwise (its INFERENCE_PRECISION_HINT). Here the default is f32, what the file holds; ``precision="bf16"``
asks for bf16, ``"auto"`` leaves OpenVINO's own choice. What ran is read back from the compiled model
(``settings()``, ``describe()``): a CPU without bf16 runs f32 whatever was asked. No torch here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgezoo.errors import InputError, MissingDependencyError
from edgezoo.runtimes.base import Runner, TensorInfo, check_model_file, check_threads, first_line, guess_layout
from edgezoo.runtimes.descriptor import FileKind, RuntimeDescriptor

SUFFIXES = (".onnx", ".xml")
# what users type -> OpenVINO's precision hint (None: leave OpenVINO's default)
PRECISIONS = {"f32": "f32", "fp32": "f32", "float32": "f32", "bf16": "bf16", "bfloat16": "bf16",
              "f16": "f16", "fp16": "f16", "float16": "f16", "auto": None, "default": None}


def import_openvino():
    try:
        import openvino
    except ImportError:
        raise MissingDependencyError("OpenVINO", "pip install 'edgezoo[openvino]'",
                                     "the openvino runtime needs it") from None
    return openvino


def normalize_precision(precision: str | None) -> str | None:
    """'f32' (the default), 'bf16', 'f16' or None for OpenVINO's own choice."""
    if precision is None:
        return "f32"
    try:
        return PRECISIONS[str(precision).lower()]
    except KeyError:
        raise InputError(f"unknown OpenVINO precision '{precision}'", "choose from f32, bf16, f16, auto") from None


class OpenVinoRunner(Runner):
    """An .onnx file or OpenVINO IR compiled for ``device`` (CPU).

    ``threads`` -> INFERENCE_NUM_THREADS, ``streams`` -> NUM_STREAMS (default: the latency hint, one
    stream), ``precision`` -> INFERENCE_PRECISION_HINT (default f32; see the module docstring).

    A model whose only open dimension is the batch is compiled at batch 1, the shape OpenVINO's own
    ``benchmark_app -shape`` runs: OpenVINO's CPU kernels for a dynamic shape ran Lite0 5-8% slower. Another
    batch gets the model compiled as it is (dynamic), on first use.
    """

    name = "openvino"

    def __init__(self, model: str | os.PathLike | bytes, threads: int | None = None, streams: int | None = None,
                 precision: str | None = None, device: str = "CPU") -> None:
        super().__init__()
        check_threads(threads)
        if streams is not None and (not isinstance(streams, int) or streams < 1):
            raise InputError(f"streams must be a whole number of at least 1, got {streams!r}")
        self.precision_asked = precision
        self._hint = normalize_precision(precision)
        self.threads, self.streams, self.device = threads, streams, device
        if isinstance(model, (bytes, bytearray)):
            self.path: Path | None = None
            self._bytes: bytes | None = bytes(model)
        else:
            self.path, self._bytes = Path(model), None
            suffix = self.path.suffix.lower()
            if suffix not in SUFFIXES:
                raise InputError(f"openvino runs .onnx files and OpenVINO IR (.xml + .bin); {self.path} is "
                                 f"{'an' if suffix[:2] in ('.a', '.e', '.i', '.o', '.u') else 'a'} "
                                 f"{suffix or 'suffix-less'} file")
            what = "an ONNX file" if suffix == ".onnx" else "an OpenVINO IR .xml file"
            check_model_file(self.path, what)
            if suffix == ".xml" and not self.path.with_suffix(".bin").exists():
                raise InputError(f"{self.path} has no weights file {self.path.with_suffix('.bin').name} beside it",
                                 "OpenVINO IR is an .xml and a .bin with the same name")
        self._ov = import_openvino()
        self.compiled = self.request = self._model = None
        self._dynamic: tuple[Any, Any] | None = None  # (compiled, request) of the model as it is, when apart
        self._fixed_at_one = False  # compiled at batch 1 from a model whose batch is open
        self._settings: dict[str, Any] = {}

    def _config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if self._hint is not None:
            cfg["INFERENCE_PRECISION_HINT"] = self._hint
        if self.threads is not None:
            cfg["INFERENCE_NUM_THREADS"] = int(self.threads)
        if self.streams is not None:
            cfg["NUM_STREAMS"] = int(self.streams)
        return cfg

    def _activate(self) -> None:
        core = self._ov.Core()
        where = self.path or "the model bytes"
        try:
            self._model = core.read_model(self._bytes if self._bytes is not None else os.fspath(self.path))
            one = self._at_batch_one(self._model)
            self.compiled = core.compile_model(one, self.device, self._config())
            self._fixed_at_one = one is not self._model
        except Exception as e:  # OpenVINO raises RuntimeError with pages of frontend detail
            raise InputError(f"openvino cannot load {where}: {first_line(e)}",
                             "is it a complete, valid ONNX file or OpenVINO IR?") from None
        self.request = self.compiled.create_infer_request()
        self._settings = self._read_back()

    def _at_batch_one(self, model):
        """A copy of ``model`` at batch 1 when the batch is its only open dimension; else ``model``."""
        shapes = [port.get_partial_shape() for port in model.inputs]
        if not all(len(p) > 0 and p[0].is_dynamic and all(d.is_static for d in list(p)[1:]) for p in shapes):
            return model
        one = model.clone()
        one.reshape({port.get_any_name(): [1, *(d.get_length() for d in list(p)[1:])]
                     for port, p in zip(model.inputs, shapes)})
        return one

    def _request_for(self, feeds: dict[str, np.ndarray]):
        """The batch-1 request, or (another batch) the model compiled as it is, made once."""
        if not self._fixed_at_one or all(np.shape(v)[:1] == (1,) for v in feeds.values()):
            return self.request
        if self._dynamic is None:
            compiled = self._ov.Core().compile_model(self._model, self.device, self._config())
            self._dynamic = (compiled, compiled.create_infer_request())
        return self._dynamic[1]

    def _read_back(self) -> dict[str, Any]:
        def prop(key):
            try:
                return self.compiled.get_property(key)
            except Exception:  # a device that does not report this property
                return None

        precision = prop("INFERENCE_PRECISION_HINT")
        return {"device": self.device,
                "precision_asked": self._hint or "auto",
                "precision": precision.get_type_name() if hasattr(precision, "get_type_name") else precision,
                "threads": prop("INFERENCE_NUM_THREADS"),
                "streams": prop("NUM_STREAMS") if prop("NUM_STREAMS") is None else int(prop("NUM_STREAMS"))}

    def _deactivate(self) -> None:
        self.compiled = self.request = self._model = self._dynamic = None

    @property
    def precision(self) -> str | None:
        """The precision OpenVINO compiled the model in ("f32", "bf16", "f16"), read back; None before activate."""
        return self._settings.get("precision")

    def settings(self) -> dict[str, Any]:
        return dict(self._settings)

    def _io(self, ports) -> list[TensorInfo]:
        out = []
        for port in ports:
            shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
            try:
                dtype = np.dtype(port.get_element_type().to_dtype())
            except Exception:  # an element type numpy has no name for (bf16): it is handed over as float32
                dtype = np.dtype(np.float32)
            out.append(TensorInfo(port.get_any_name(), shape, dtype, guess_layout(shape)))
        return out

    def _inputs(self) -> list[TensorInfo]:
        return self._io(self._model.inputs)  # as the file has them (a batch compiled at 1 is still open)

    def _outputs(self) -> list[TensorInfo]:
        return self._io(self._model.outputs)

    def _infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            # the request reads the caller's (contiguous) arrays in place and hands back views of its own
            # output buffers: no copy in, one copy out (benchmark_app copies neither; the buffers are reused
            # by the next call, so a caller must get copies)
            outs = self._request_for(feeds).infer(feeds, share_inputs=True, share_outputs=True)
        except Exception as e:
            shapes = ", ".join(f"{k} {tuple(np.shape(v))}" for k, v in feeds.items())
            raise InputError(f"openvino cannot run the model on {shapes}: {first_line(e)}",
                             "check the input size and batch against the model's inputs") from None
        return [np.array(v) for v in outs.to_tuple()]

    def model_metadata(self):
        """edgezoo metadata: OpenVINO keeps an ONNX file's metadata_props in rt_info["framework"] (also in IR
        saved from such a model)."""
        from edgezoo.onnx_meta import PREFIX, ModelMetadata

        self._require_active()
        try:
            framework = self._model.get_rt_info()["framework"]
        except Exception:
            return None
        props = {}
        for key in framework if isinstance(framework, dict) else ():
            if isinstance(key, str) and key.startswith(PREFIX):
                try:
                    props[key] = self._model.get_rt_info(["framework", key]).astype(str)
                except Exception:
                    continue
        return ModelMetadata.from_props(props) if props else None

    def model_size_bytes(self) -> int | None:
        if self.path is None:
            return len(self._bytes)
        size = self.path.stat().st_size
        side = self.path.with_suffix(".bin") if self.path.suffix.lower() == ".xml" else \
            self.path.with_name(self.path.name + ".data")
        return size + (side.stat().st_size if side.exists() else 0)

    def describe(self) -> str:
        s = self._settings
        version = self._ov.get_version().split("-")[0]
        if not s:
            return f"OpenVINO {version} ({self.device})"
        asked = "" if s["precision_asked"] == s["precision"] else f", {s['precision_asked']} asked"
        thr = f", {s['threads']} thread{'s' if s['threads'] != 1 else ''}" if s.get("threads") else ""
        return f"OpenVINO {version} ({self.device}, {s['precision']}{asked}{thr}, {s['streams']} stream(s))"



IR = FileKind("ir", (".xml",), "an OpenVINO IR (.xml) file", "OpenVINO IR (.xml + .bin)", side_files=(".bin",))


def open_file(model, threads=None, precision=None, streams=None) -> OpenVinoRunner:
    return OpenVinoRunner(model, threads=threads, streams=streams, precision=precision)


DESCRIPTOR = RuntimeDescriptor(
    "openvino", ("ov",), (IR,), open_file, extra="openvino", options=("threads", "precision", "streams"),
    precisions=("f32", "bf16", "f16", "auto"), also_runs=("onnx",))

__all__ = ["OpenVinoRunner", "import_openvino", "normalize_precision", "PRECISIONS"]
