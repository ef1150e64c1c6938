"""PyTorch -> ONNX: dynamic batch, explicit opset, simplified, checked, metadata inside, verified numerically."""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from edgezoo import __version__
from edgezoo.errors import EdgezooError, VerificationError
from edgezoo.fileio import atomic_write_bytes
from edgezoo.onnx_meta import ModelMetadata, set_metadata

DEFAULT_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass
class ParityCheck:
    """ONNX Runtime vs PyTorch on the same random input."""

    batch: int
    max_abs_diff: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance


@dataclass
class ExportResult:
    path: Path
    opset: int
    dynamic_batch: bool
    simplified: bool
    checks: list[ParityCheck] = field(default_factory=list)
    size_bytes: int = 0


def to_onnx_proto(
    model: torch.nn.Module,
    input_size: tuple[int, int, int],
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    batch: int = 1,
    simplify: bool = True,
    output_names: list[str] | None = None,
) -> tuple[onnx.ModelProto, bool]:
    """Export with the TorchScript exporter (it can write opset 17; the dynamo one goes to 18 and a side file).

    Returns the model and whether onnxsim simplified it.
    """
    model = model.eval()
    dummy = torch.zeros(batch, *input_size)
    outputs = list(output_names or [OUTPUT_NAME])
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (dummy,), buf, dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=outputs,
            dynamic_axes={INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in outputs}} if dynamic_batch else None,
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buf.getvalue())
    simplified = False
    if simplify:
        proto, simplified = simplify_keep_batch(proto)
    return proto, simplified


def simplify_keep_batch(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """onnxsim, then confirm that the batch dimension is still symbolic (simplifiers have lost it before)."""
    try:
        import onnxsim
    except ImportError:
        return proto, False
    before = _batch_dims(proto)
    try:
        simplified, ok = onnxsim.simplify(proto)
    except Exception:  # onnxsim fails on some graphs; the unsimplified model is still correct
        return proto, False
    if not ok or _batch_dims(simplified) != before:
        return proto, False
    return simplified, True


def _batch_dims(proto: onnx.ModelProto) -> list[str | int]:
    dims = []
    for vi in list(proto.graph.input) + list(proto.graph.output):
        d = vi.type.tensor_type.shape.dim
        dims.append(d[0].dim_param or d[0].dim_value if len(d) else None)
    return dims


def export_onnx(
    model: torch.nn.Module,
    path: str | os.PathLike,
    input_size: tuple[int, int, int],
    metadata: ModelMetadata | None = None,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    batch: int = 1,
    simplify: bool = True,
    verify: bool = True,
    tolerance: float = 1e-4,
    output_names: list[str] | None = None,
) -> ExportResult:
    """Export, check and verify; the file is written only when every check passes.

    ``tolerance`` is on max |onnxruntime - PyTorch|, relative to the largest logit when that exceeds 1.
    """
    proto, simplified = to_onnx_proto(model, input_size, opset, dynamic_batch, batch, simplify, output_names)
    meta = metadata or ModelMetadata()
    meta.version = meta.version or __version__
    if meta.input_size is None:
        meta.input_size = tuple(input_size)
    set_metadata(proto, meta)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise EdgezooError(f"exported ONNX fails onnx.checker: {str(e).splitlines()[0]}") from None
    data = proto.SerializeToString()
    checks = []
    if verify:
        batches = (1, 4) if dynamic_batch else (batch,)
        checks = [check_parity(model, data, input_size, b, tolerance) for b in batches]
        bad = [c for c in checks if not c.ok]
        if bad:
            raise VerificationError(
                f"ONNX Runtime disagrees with PyTorch at batch {bad[0].batch}: "
                f"max |diff| {bad[0].max_abs_diff:.3g} > {bad[0].tolerance:g}"
            )
    atomic_write_bytes(path, data)
    return ExportResult(Path(path), opset, dynamic_batch, simplified, checks, len(data))


def check_parity(model: torch.nn.Module, onnx_bytes: bytes, input_size, batch: int, tolerance: float,
                 seed: int = 0) -> ParityCheck:
    from edgezoo.runtimes.onnxruntime import OrtRunner

    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((batch, *input_size), dtype=np.float32))
    with torch.no_grad():
        ref = model.eval()(x)
    refs = [t.numpy() for t in ref] if isinstance(ref, (tuple, list)) else [ref.numpy()]
    with OrtRunner(onnx_bytes) as runner:
        outs = runner.infer({runner.inputs[0].name: x.numpy()})
    return _parity(batch, refs, outs, tolerance)


def _parity(batch: int, refs, outs, tolerance: float) -> ParityCheck:
    # float32 error grows with the magnitude of the outputs (a trained model's logits can reach hundreds)
    scaled = tolerance * max(1.0, max(float(np.max(np.abs(r))) for r in refs))
    return ParityCheck(batch, max(float(np.max(np.abs(o - r))) for r, o in zip(refs, outs)), scaled)


def write_graph(graph: onnx.ModelProto, original: onnx.ModelProto, path: str | os.PathLike,
                input_size: tuple[int, int, int], metadata: ModelMetadata, tolerance: float = 1e-4,
                original_layout: str = "NCHW") -> ExportResult:
    """An ONNX source's fp32 file: ``graph`` (after the graph passes) simplified, its metadata stamped, checked
    and verified against the user's ``original`` through onnxruntime (fed N,H,W,C when ``original_layout``
    says so; the file takes N,C,H,W); written only when every check passes."""
    from edgezoo.export.agreement import fixed_batch, run_model

    proto, simplified = simplify_keep_batch(graph)
    meta = metadata
    meta.version = meta.version or __version__
    set_metadata(proto, meta)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise EdgezooError(f"the fp32 ONNX fails onnx.checker: {str(e).splitlines()[0]}") from None
    data = proto.SerializeToString()
    fixed = fixed_batch(original)
    checks = []
    for b in ((fixed,) if fixed > 1 else (1, 4)):
        x = np.random.default_rng(0).standard_normal((b, *input_size), dtype=np.float32)
        given = x.transpose(0, 2, 3, 1) if original_layout == "NHWC" else x
        checks.append(_parity(b, run_model(original, given), run_model(data, x), tolerance))
    bad = [c for c in checks if not c.ok]
    if bad:
        raise VerificationError(f"the fp32 ONNX disagrees with the source graph at batch {bad[0].batch}: "
                                f"max |diff| {bad[0].max_abs_diff:.3g} > {bad[0].tolerance:g}")
    atomic_write_bytes(path, data)
    return ExportResult(Path(path), next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0),
                        fixed <= 1, simplified, checks, len(data))
