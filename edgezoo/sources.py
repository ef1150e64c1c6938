"""One resolver from what a user names to what the export pipeline reads: a ``ModelSource``.

A source is one of:

- a zoo name or alias (``mobilenetv3``): the registry's builder, its checkpoint preset;
- an ``.onnx`` file (fp32): the graph itself, its inputs read off the file, its preprocessing from edgezoo's
  metadata keys when it has them;
- an ``.pt2`` file written by ``torch.export.save``;
- an import string ``package.module:attr`` naming an ``nn.Module`` instance or a zero-argument factory that
  returns one (the current folder is importable, as uvicorn does for ``module:app``);
- ``timm:NAME`` / ``torchvision:NAME``: the library's architecture, weights only from ``--weights``
  (nothing is downloaded);
- an ``nn.Module`` object (the Python API), with ``example_inputs`` or ``input_size``.

Preprocessing (mean/std, crop, interpolation, layout, class names) comes from, first to last: the options
given (``--mean``, ``--std``, ``--input-size``, ``--layout``, ``--labels``, parsed by the same grammar as
``serve``'s), the file's edgezoo metadata, the source's own record (zoo preset, timm's pretrained config,
torchvision's weights meta), else ImageNet defaults named in one warning.

torch is imported only for the sources that are PyTorch models: resolving an ``.onnx`` file needs onnx and
onnxruntime alone.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from edgezoo.errors import InputError, MissingDependencyError
from edgezoo.models.presets import DEFAULT_CROP, Preset
from edgezoo.preprocess_options import parse_floats, parse_layout, read_labels

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    import torch
    from torch import nn

    from edgezoo.models.registry import ModelSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINDS = ("zoo", "onnx", "pt2", "import", "timm", "torchvision", "module")


@dataclass(frozen=True)
class SourceInput:
    """The image input: its name, the (C, H, W) the export uses, and which dimensions the model leaves open."""

    name: str
    size: tuple[int, int, int]
    dynamic: tuple[str, ...] = ()  # of "batch", "height", "width"
    fixed_batch: int | None = None  # a graph fixed at this batch
    layout: str = "NCHW"  # the source's own; an NHWC graph gets a Transpose in front, so every file takes NCHW


@dataclass(frozen=True)
class SourceOutput:
    name: str
    shape: tuple[int | str, ...]  # one image's batch as given; str for a symbolic dimension

    @property
    def is_class_scores(self) -> bool:
        """[N, classes] with more than one class: top-1 agreement means something for it."""
        return len(self.shape) == 2 and isinstance(self.shape[1], int) and self.shape[1] > 1


@dataclass
class ModelSource:
    """What the export pipeline reads: a PyTorch module or an ONNX graph, its input, preprocessing, classes."""

    name: str  # for the bundle folder, the file metadata, messages
    kind: str  # one of KINDS
    input: SourceInput
    preset: Preset  # mean/std/crop/interpolation/labels/num_classes and where they come from
    layout: str = "NCHW"
    module: "nn.Module | None" = None
    graph: "onnx.ModelProto | None" = None
    path: Path | None = None  # the file the source was read from
    outputs: list[SourceOutput] = field(default_factory=list)
    spec: "ModelSpec | None" = None  # zoo sources only
    weights: Path | None = None
    weights_described: str = "random init (no --weights)"
    family: str = ""
    notes: list[str] = field(default_factory=list)  # warnings for the user (defaults assumed, ...)

    @property
    def is_onnx(self) -> bool:
        return self.graph is not None

    @property
    def input_size(self) -> tuple[int, int, int]:
        return self.input.size

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.preset.mean)

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.preset.std)

    @property
    def num_classes(self) -> int:
        return self.preset.num_classes

    @property
    def classifier(self) -> bool:
        """A single output shaped [N, classes]: outputs read as class scores."""
        return len(self.outputs) == 1 and self.outputs[0].is_class_scores


@dataclass
class Preprocessing:
    """The preprocessing options as given (CLI text or Python values); None: not given."""

    input_size: Any = None  # the --input-size grammar (edgezoo.runtimes.inputs.parse_input_size)
    mean: Any = None
    std: Any = None
    layout: str | None = None
    labels: Any = None  # a path to a text file, or a list of names
    crop_pct: float | None = None
    interpolation: str | None = None

    def parsed(self) -> "Preprocessing":
        from edgezoo.runtimes.inputs import parse_input_size

        labels = self.labels
        if labels is not None and isinstance(labels, (str, os.PathLike)):
            labels = read_labels(labels)
        mean = parse_floats(self.mean, "mean")
        std = parse_floats(self.std, "std")
        if std is not None and any(s <= 0 for s in std):
            raise InputError(f"--std must be positive numbers; got {','.join(map(str, std))}")
        if mean is not None and std is not None and len(mean) != len(std):
            raise InputError(f"--mean has {len(mean)} numbers and --std {len(std)}", "give one per channel")
        return Preprocessing(parse_input_size(self.input_size), mean, std, parse_layout(self.layout),
                             list(labels) if labels is not None else None, self.crop_pct, self.interpolation)


def resolve_source(source: "str | os.PathLike | nn.Module", *, weights: str | os.PathLike | None = None,
                   input_size: Any = None, mean: Any = None, std: Any = None, layout: str | None = None,
                   labels: Any = None, example_inputs: Any = None, num_classes: int | None = None,
                   name: str | None = None) -> ModelSource:
    """Turn what the user named into a ModelSource; InputError (one line) for anything that cannot be one."""
    pre = Preprocessing(input_size, mean, std, layout, labels).parsed()
    if not isinstance(source, (str, os.PathLike)):
        return _from_module_object(source, pre, example_inputs, weights, name)
    text = os.fspath(source)
    lowered = text.lower()
    if lowered.endswith(".onnx"):
        if weights is not None:
            raise InputError("--weights does not apply to an .onnx file (its weights are inside it)")
        return _from_onnx(Path(text), pre, name)
    if lowered.endswith(".pt2"):
        return _from_pt2(Path(text), pre, weights, name)
    if lowered.startswith(("timm:", "torchvision:")):
        lib, _, arch = text.partition(":")
        return _from_library(lib.lower(), arch.strip(), pre, weights, num_classes, name)
    if ":" in text and not os.path.exists(text):
        return _from_import_string(text, pre, weights, example_inputs, name)
    if os.path.exists(text) and not os.path.isdir(text):
        raise InputError(f"{text} is neither an .onnx nor a .pt2 file",
                         "give a zoo name, FILE.onnx, FILE.pt2, package.module:attr, timm:NAME or torchvision:NAME")
    return _from_zoo(text, pre, weights, num_classes)


# ------------------------------------------------------------------------------------------------ zoo

def _from_zoo(text: str, pre: Preprocessing, weights, num_classes: int | None) -> ModelSource:
    from edgezoo.models.presets import default_preset, preset_for_keys, with_classes
    from edgezoo.models.registry import get_spec
    from edgezoo.runtimes.inputs import image_chw

    spec = get_spec(text)
    size = spec.input_size if pre.input_size is None else image_chw(pre.input_size, spec.input_size[0])
    if weights is not None:
        from edgezoo.models.weights import read_state_dict

        preset = preset_for_keys(spec, read_state_dict(weights).keys())
    else:
        preset = default_preset(spec)
    preset = _override(with_classes(preset, num_classes or spec.num_classes), pre)
    return ModelSource(spec.name, "zoo", SourceInput("input", _chw(size), ("batch",)), preset,
                       layout=pre.layout or "NCHW", spec=spec, family=spec.family,
                       weights=Path(weights) if weights is not None else None,
                       weights_described=str(weights) if weights is not None else "random init (no --weights)",
                       outputs=[SourceOutput("logits", ("batch", num_classes or spec.num_classes))])


def build_zoo_module(source: ModelSource, seed: int = 0) -> "nn.Module":
    """The zoo model of ``source``, built (seeded) and loaded: the zoo is built late, in the pipeline's own
    step, so that cheap checks come first."""
    import torch

    from edgezoo.models.registry import create_model

    torch.manual_seed(seed)
    spec = source.spec
    kwargs = {"num_classes": source.num_classes} if source.num_classes != spec.num_classes else {}
    return create_model(spec.name, weights=str(source.weights) if source.weights else None, **kwargs)


# ------------------------------------------------------------------------------------------------ ONNX

def _from_onnx(path: Path, pre: Preprocessing, name: str | None) -> ModelSource:
    import onnx

    from edgezoo.onnx_meta import get_metadata

    _check_file(path, "an fp32 .onnx file")
    try:
        graph = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: not an ONNX file
        raise InputError(f"{path} is not a readable ONNX file: {type(e).__name__}",
                         "give an fp32 model saved by onnx.save or torch.onnx.export") from None
    if not graph.graph.node:
        raise InputError(f"{path} holds no ONNX graph", "give an fp32 model saved by onnx.save or torch.onnx.export")
    load_external_data_inside(graph, path)
    _refuse_quantized(graph, path)
    meta = get_metadata(graph)
    inp, outputs = _graph_io(graph, path, pre, meta)
    _check_runs(graph, path)
    base = Preset(name="file metadata" if meta.mean else "default", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    notes: list[str] = []
    mean, std = pre.mean or (tuple(meta.mean) if meta.mean else None), pre.std or (tuple(meta.std) if meta.std else None)
    classes = next((o.shape[1] for o in outputs if o.is_class_scores), 0) if len(outputs) == 1 else 0
    labels = pre.labels or (list(meta.labels) if meta.labels else None)
    preset = replace(base, mean=mean or base.mean, std=std or base.std,
                     crop_pct=pre.crop_pct or meta.crop_pct or DEFAULT_CROP,
                     interpolation=pre.interpolation or meta.interpolation or "bilinear",
                     num_classes=int(classes or meta.num_classes or 0),
                     labels=tuple(labels) if labels else None,
                     source=f"{path.name}" + (f" ({meta.weights})" if meta.weights else ""))
    _check_channels(preset, inp.size[0])
    missing = [w for w, v in (("--mean", mean), ("--std", std)) if v is None]
    if missing:
        notes.append(_defaults_warning(missing, preset))
    stem = name or (meta.model if meta.model else path.stem)
    if inp.layout == "NHWC":
        how = "" if pre.layout else ", read off its shape"
        notes.append(f"{path.name}'s input '{inp.name}' is channels-last (N,H,W,C{how}); the bundle's files take "
                     "N,C,H,W (a Transpose is put in front of the graph)")
    return ModelSource(stem, "onnx", inp, preset, layout=inp.layout, graph=graph, path=path,
                       outputs=outputs, weights_described=f"inside {path.name}", family="onnx", notes=notes)


def load_external_data_inside(graph, path: Path) -> None:
    """Load the tensors an ONNX file keeps in side files, only from inside the file's own folder."""
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    external = [t for t in _all_tensors(graph) if uses_external_data(t)]
    if not external:
        return
    folder = path.resolve().parent
    for t in external:
        location = next((e.value for e in t.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if os.path.isabs(location) or not target.is_relative_to(folder):
            raise InputError(f"{path} keeps tensor '{t.name}' in {location}, outside the file's own folder "
                             "(refused)", "keep the external data file beside the .onnx file")
        if not target.is_file():
            raise InputError(f"{path} keeps tensor '{t.name}' in {location}, which does not exist",
                             "copy the external data file beside the .onnx file")
    try:
        load_external_data_for_model(graph, os.fspath(folder))
    except Exception as e:
        raise InputError(f"cannot read the external data of {path}: {type(e).__name__}: {e}") from None


def _all_tensors(model):
    from onnx.external_data_helper import _get_all_tensors  # noqa: PLC2701  (onnx's own walker)

    return list(_get_all_tensors(model))


def _refuse_quantized(graph, path: Path) -> None:
    ops = {n.op_type for n in graph.graph.node}
    q = ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger"}
    if q:
        raise InputError(f"{path} is already quantized ({', '.join(sorted(q))})",
                         "export takes the fp32 model; `edgezoo bench` / `serve` run this file as it is")


def _dim(d) -> int | str:
    return d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")


def _graph_io(graph, path: Path, pre: Preprocessing, meta) -> tuple[SourceInput, list[SourceOutput]]:
    from edgezoo.runtimes.inputs import image_chw

    inits = {i.name for i in graph.graph.initializer}
    inputs = [i for i in graph.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise InputError(f"{path} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)})",
                         "export takes single-image models: one NCHW input")
    vi = inputs[0]
    tt = vi.type.tensor_type
    if tt.elem_type != 1:  # onnx.TensorProto.FLOAT
        raise InputError(f"{path}: input '{vi.name}' is not float32", "export takes an fp32 model")
    dims = [_dim(d) for d in tt.shape.dim]
    if len(dims) != 4:
        raise InputError(f"{path}: input '{vi.name}' has rank {len(dims)}", "export takes one image input, N,C,H,W")
    layout = pre.layout or ("NHWC" if _channels_last(dims) else "NCHW")
    n, c, h, w = (dims[0], dims[3], dims[1], dims[2]) if layout == "NHWC" else dims
    if not isinstance(c, int):
        c = (pre.input_size[0] if pre.input_size and len(pre.input_size) == 3 else
             len(pre.mean) if pre.mean else (meta.input_size[0] if meta.input_size else 3))
    dynamic = tuple(k for k, v in (("batch", n), ("height", h), ("width", w)) if not isinstance(v, int))
    if pre.input_size is not None:
        size = image_chw(pre.input_size, c)
        for axis, want, have in (("height", size[1], h), ("width", size[2], w)):
            if isinstance(have, int) and have != want:
                raise InputError(f"--input-size {size[1]},{size[2]}: {path.name}'s input '{vi.name}' has a fixed "
                                 f"{axis} of {have}", f"leave --input-size out or give {h},{w}")
    elif isinstance(h, int) and isinstance(w, int):
        size = (c, h, w)
    elif meta.input_size:
        size = tuple(meta.input_size)
    else:
        raise InputError(f"{path.name}'s input '{vi.name}' has dynamic height and width "
                         f"({'x'.join(map(str, dims))}) and no size was given", "pass --input-size H,W")
    outputs = [SourceOutput(o.name, tuple(_dim(d) for d in o.type.tensor_type.shape.dim)) for o in graph.graph.output]
    return SourceInput(vi.name, _chw(size), dynamic, n if isinstance(n, int) else None, layout), outputs


def output_list(out) -> list:
    """A PyTorch source's outputs as a list, in the order torch.onnx writes them: a model returns one tensor
    or a flat tuple/list of them (``_from_module`` refuses anything else)."""
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _channels_last(dims: list) -> bool:
    """N,H,W,C read off the shape: 1 or 3 channels last, and a second dimension that is no channel count
    (TensorFlow-converted CNNs take NHWC)."""
    return dims[3] in (1, 3) and dims[1] not in (1, 3)


def _check_runs(graph, path: Path) -> None:
    """onnxruntime opens the graph: an op it has no kernel for is one line now, before anything is written."""
    from edgezoo.runtimes.onnxruntime import OrtRunner

    try:
        with OrtRunner(graph.SerializeToString(), threads=1):
            pass
    except Exception as e:
        from edgezoo.runtimes.base import first_line

        raise InputError(f"onnxruntime cannot run {path.name}: {first_line(e)[:300]}",
                         "export takes graphs of standard ONNX ops that onnxruntime runs") from None


# ----------------------------------------------------------------------------------------- PyTorch models

def _from_pt2(path: Path, pre: Preprocessing, weights, name: str | None) -> ModelSource:
    _check_file(path, "a .pt2 file written by torch.export.save")
    import torch

    try:
        program = torch.export.load(os.fspath(path))
    except Exception as e:
        from edgezoo.runtimes.base import first_line

        raise InputError(f"cannot read {path} as an ExportedProgram: {first_line(e)[:200]}",
                         "give a file written by torch.export.save") from None
    example = None
    specs = [s for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    if len(specs) == 1:
        node = next((n for n in program.graph.nodes if n.op == "placeholder" and n.name == specs[0].arg.name), None)
        val = node.meta.get("val") if node is not None else None
        if val is not None and len(val.shape) == 4:
            example = tuple(int(d) if str(d).isdigit() else None for d in val.shape)
    module = exported_module(program.module())
    src = _from_torch(module, "pt2", name or path.stem, pre, weights, example_shape=example, path=path,
                      origin=path.name)
    if example is not None and example[0] is not None:  # exported at a static batch: it runs no other
        src.input = replace(src.input, dynamic=(), fixed_batch=example[0])
    return src


def exported_module(graph_module) -> "nn.Module":
    """An ExportedProgram's module as a plain nn.Module: torch refuses ``.eval()``/``.train()`` on it (it is
    always in the mode it was exported in), and every pass calls ``.eval()``."""
    from torch import nn

    class ExportedModule(nn.Module):
        def __init__(self, program):
            super().__init__()
            self.program = program

        def forward(self, *args):
            return self.program(*args)

        def train(self, mode: bool = True):
            self.training = mode  # the program's own mode was fixed at export
            return self

    return ExportedModule(graph_module)


def _from_import_string(text: str, pre: Preprocessing, weights, example_inputs, name: str | None) -> ModelSource:
    from torch import nn

    module_name, _, attr = text.partition(":")
    if not module_name or not attr:
        raise InputError(f"'{text}' is not an import string", "write package.module:attr")
    cwd = os.getcwd()
    if cwd not in sys.path:  # as uvicorn does: the current folder's modules are importable
        sys.path.insert(0, cwd)
    try:
        mod = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise InputError(f"cannot import '{module_name}' for {text}: no module named '{e.name}'",
                         "run from the folder that holds it, or install the package") from None
    except Exception as e:
        from edgezoo.runtimes.base import first_line

        raise InputError(f"importing '{module_name}' failed: {type(e).__name__}: {first_line(e)[:200]}") from None
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(f"'{module_name}' has no attribute '{attr}'", f"check the name after ':' in {text}")
        obj = getattr(obj, part)
    if not isinstance(obj, nn.Module):
        if not callable(obj):
            raise InputError(f"{text} is a {type(obj).__name__}, not an nn.Module or a factory that returns one")
        try:
            obj = obj()
        except TypeError as e:
            raise InputError(f"{text}() cannot be called without arguments: {e}",
                             "point at a zero-argument factory or a module instance") from None
        if not isinstance(obj, nn.Module):
            raise InputError(f"{text}() returned a {type(obj).__name__}, not an nn.Module")
    return _from_torch(obj, "import", name or attr.split(".")[-1], pre, weights, example_inputs=example_inputs,
                       origin=text)


def torchvision_importable() -> None:
    """torchvision 0.28's C++ ops cannot load beside the CPU torch build; defining the two schemas its Python
    side registers fake kernels for makes its model code importable (timm imports torchvision too)."""
    import torch

    global _TORCHVISION_LIB
    if _TORCHVISION_LIB is not None:
        return
    try:
        torch.ops.torchvision.nms  # noqa: B018  (already loaded: nothing to do)
        return
    except (AttributeError, RuntimeError):
        pass
    _TORCHVISION_LIB = torch.library.Library("torchvision", "DEF")
    _TORCHVISION_LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_LIB.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")


_TORCHVISION_LIB = None  # the torch.library handle must stay alive, or the schemas vanish


def _from_library(lib: str, arch: str, pre: Preprocessing, weights, num_classes: int | None,
                  name: str | None) -> ModelSource:
    if not arch:
        raise InputError(f"'{lib}:' names no model", f"write {lib}:NAME, e.g. {lib}:mobilenet_v3_large")
    if weights is None:
        raise InputError(f"{lib}:{arch} would need its weights downloaded, and edgezoo downloads nothing",
                         "pass --weights FILE (a state_dict saved with torch.save)")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise MissingDependencyError("PyTorch", "pip install 'edgezoo[torch]'") from None
    torchvision_importable()
    kwargs = {"num_classes": num_classes} if num_classes else {}
    if lib == "timm":
        try:
            import timm
        except ImportError:
            raise MissingDependencyError("timm", "pip install timm", "timm:NAME sources need it") from None
        if not timm.is_model(arch):
            import difflib

            close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.6)
            raise InputError(f"timm has no model '{arch}'", f"did you mean {', '.join(close)}?" if close else
                             "see timm.list_models()")
        model = timm.create_model(arch, pretrained=False, **kwargs)
        cfg = getattr(model, "pretrained_cfg", None) or {}
        own = Preset(name=f"timm {cfg.get('tag') or 'default'}", mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
                     std=tuple(cfg.get("std", IMAGENET_STD)), crop_pct=float(cfg.get("crop_pct", DEFAULT_CROP)),
                     interpolation=cfg.get("interpolation") if cfg.get("interpolation") in
                     ("bilinear", "bicubic", "nearest") else "bilinear",
                     num_classes=int(getattr(model, "num_classes", 0) or 0), source=f"timm:{arch} + {weights}")
        size = tuple(cfg.get("input_size", (3, 224, 224)))
    else:
        try:
            import torchvision
        except ImportError:
            raise MissingDependencyError("torchvision", "pip install torchvision",
                                         "torchvision:NAME sources need it") from None
        try:
            model = torchvision.models.get_model(arch, weights=None, **kwargs)
        except ValueError:
            raise InputError(f"torchvision has no model '{arch}'", "see torchvision.models.list_models()") from None
        own, size = _torchvision_preset(torchvision, arch, model, weights)
    _load_state_dict(model, weights)
    return _from_torch(model, lib, name or arch, pre, weights=None, example_shape=(None, *size), own_preset=own,
                       origin=f"{lib}:{arch}", weights_file=Path(weights))


def _torchvision_preset(torchvision, arch: str, model, weights) -> tuple[Preset, tuple[int, int, int]]:
    """torchvision's weights records carry the transforms and class names offline (nothing is fetched)."""
    try:
        record = torchvision.models.get_model_weights(arch).DEFAULT
        t = record.transforms()
        crop = int(t.crop_size[0])
        interp = str(getattr(t.interpolation, "value", t.interpolation)).lower()
        classes = record.meta.get("categories")
        n = int(getattr(model, "num_classes", 0) or _last_linear_out(model) or 0)
        preset = Preset(name=f"torchvision {record.name}", mean=tuple(t.mean), std=tuple(t.std),
                        crop_pct=min(1.0, crop / int(t.resize_size[0])),
                        interpolation=interp if interp in ("bilinear", "bicubic", "nearest") else "bilinear",
                        num_classes=n, labels=tuple(classes) if classes and len(classes) == n else None,
                        source=f"torchvision:{arch} + {weights}")
        return preset, (3, crop, crop)
    except Exception:  # a model without a weights record: ImageNet's defaults, said in the warning
        return Preset(name="default", mean=IMAGENET_MEAN, std=IMAGENET_STD), (3, 224, 224)


def _last_linear_out(model) -> int | None:
    from torch import nn

    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else None


def _load_state_dict(model, weights) -> None:
    from edgezoo.models.weights import load_state_dict_checked, read_state_dict

    load_state_dict_checked(model, read_state_dict(weights), what=f"weights {weights}")


def _from_module_object(module, pre: Preprocessing, example_inputs, weights, name: str | None) -> ModelSource:
    try:
        from torch import nn
    except ImportError:
        raise InputError(f"cannot export a {type(module).__name__}", "give a zoo name, a file or an nn.Module") from None
    if not isinstance(module, nn.Module):
        raise InputError(f"cannot export a {type(module).__name__}",
                         "give a zoo name, FILE.onnx, FILE.pt2, package.module:attr, timm:NAME, torchvision:NAME "
                         "or an nn.Module")
    return _from_torch(module, "module", name or type(module).__name__, pre, weights, example_inputs=example_inputs,
                       origin=f"a {type(module).__name__} object")


def _example_shape(example_inputs) -> tuple | None:
    import torch

    if example_inputs is None:
        return None
    x = example_inputs
    if isinstance(x, (tuple, list)):
        if len(x) != 1:
            raise InputError(f"example_inputs holds {len(x)} tensors", "export takes single-image models")
        x = x[0]
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise InputError("example_inputs must be one (N, C, H, W) tensor")
    return tuple(int(d) for d in x.shape)


def _from_torch(module, kind: str, name: str, pre: Preprocessing, weights=None, *, example_inputs=None,
                example_shape=None, own_preset: Preset | None = None, path: Path | None = None, origin: str = "",
                weights_file: Path | None = None) -> ModelSource:
    import torch

    from edgezoo.runtimes.inputs import image_chw

    if weights is not None:
        _load_state_dict(module, weights)
        weights_file = Path(weights)
    module.eval()
    shape = _example_shape(example_inputs) or example_shape
    if pre.layout not in (None, "NCHW"):
        raise InputError(f"--layout {pre.layout}: export takes NCHW image inputs", "PyTorch models take NCHW")
    if pre.input_size is not None:
        channels = shape[1] if shape and shape[1] else (len(pre.mean) if pre.mean else 3)
        size = image_chw(pre.input_size, channels)
    elif shape and all(isinstance(d, int) for d in shape[1:]):
        size = tuple(shape[1:])
    else:
        raise InputError(f"{origin or name}: no input size is known", "pass --input-size H,W (or example_inputs)")
    size = _chw(size)
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, *size))
    except Exception as e:
        from edgezoo.runtimes.base import first_line

        raise InputError(f"{origin or name} does not run on a 1x{'x'.join(map(str, size))} input: "
                         f"{type(e).__name__}: {first_line(e)[:200]}", "check --input-size") from None
    outs = output_list(out)
    if not outs or not all(isinstance(o, torch.Tensor) for o in outs):
        raise InputError(f"{origin or name} returns {type(out).__name__}", "export takes models that return tensors")
    names = ["logits"] if len(outs) == 1 else [f"output_{i}" for i in range(len(outs))]
    outputs = [SourceOutput(n, ("batch", *(int(d) for d in o.shape[1:]))) for n, o in zip(names, outs)]
    classes = outputs[0].shape[1] if len(outputs) == 1 and outputs[0].is_class_scores else 0
    base = own_preset or Preset(name="default", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    notes = []
    missing = [w for w, v in (("--mean", pre.mean), ("--std", pre.std)) if v is None] if own_preset is None else []
    labels = pre.labels or (list(base.labels) if base.labels and len(base.labels) == classes else None)
    preset = replace(base, mean=pre.mean or base.mean, std=pre.std or base.std,
                     crop_pct=pre.crop_pct or base.crop_pct, interpolation=pre.interpolation or base.interpolation,
                     num_classes=int(classes), labels=tuple(labels) if labels else None,
                     source=base.source or origin)
    _check_channels(preset, size[0])
    if missing:
        notes.append(_defaults_warning(missing, preset))
    return ModelSource(name, kind, SourceInput("input", size, ("batch",)), preset, module=module, path=path,
                       outputs=outputs, weights=weights_file, family=kind,
                       weights_described=str(weights_file) if weights_file else f"as in {origin or name}",
                       notes=notes)


# ------------------------------------------------------------------------------------------------ helpers

def _override(preset: Preset, pre: Preprocessing) -> Preset:
    labels = pre.labels
    return replace(preset, mean=pre.mean or preset.mean, std=pre.std or preset.std,
                   labels=tuple(labels) if labels else preset.labels)


def _chw(size: Sequence[int]) -> tuple[int, int, int]:
    c, h, w = (int(v) for v in size)
    return c, h, w


def _check_channels(preset: Preset, channels: int) -> None:
    for what, v in (("mean", preset.mean), ("std", preset.std)):
        if len(v) != channels:
            raise InputError(f"--{what} has {len(v)} numbers but the model takes {channels} channels",
                             "give one number per channel")


def _defaults_warning(missing: list[str], preset: Preset) -> str:
    return (f"no {' or '.join(missing)} given and none in the model: assuming ImageNet's mean "
            f"{','.join(f'{v:g}' for v in preset.mean)} and std {','.join(f'{v:g}' for v in preset.std)} "
            f"(centre crop {preset.crop_pct:g}, {preset.interpolation}); pass --mean/--std if the model was "
            "trained otherwise")


def _check_file(path: Path, what: str) -> None:
    from edgezoo.fileio import check_model_path

    check_model_path(path, what)  # missing, a folder, a FIFO that would block, empty: one line each
