"""The Python API of the export: ``edgezoo.export(source, ...)``, the same pipeline as ``edgezoo export``.

    import edgezoo
    result = edgezoo.export("my_model.onnx", int8=True, calib="photos/", input_size=224,
                            mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), out="bundle")
    result.files["int8"], result.rows[0].agreement["sqnr_db"]

``source`` is anything edgezoo.sources.resolve_source takes, an ``nn.Module`` object included (give
``example_inputs`` or ``input_size``). Bad input raises edgezoo.errors.EdgezooError with a one-line message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence


@dataclass(frozen=True)
class TargetRow:
    """One (runtime, precision) file of the bundle and how it was verified."""

    target: str
    precision: str
    status: str  # ok | failed | missing | skipped
    file: str | None = None
    agreement: dict[str, Any] | None = None  # against the fp32 model on held-out inputs
    error: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # the rest of the report's row

    @classmethod
    def from_row(cls, row: dict) -> "TargetRow":
        known = {"target", "precision", "status", "file", "agreement", "error"}
        return cls(row["target"], row.get("precision", "-"), row.get("status", "?"), row.get("file"),
                   row.get("agreement"), row.get("error"), {k: v for k, v in row.items() if k not in known})


@dataclass
class ExportResult:
    out_dir: Path
    files: dict[str, Path]  # "fp32", "int8", "fp16", "openvino.int8", ... -> path in out_dir
    report: dict[str, Any]  # what report.json holds
    rows: list[TargetRow]  # one per target and precision
    warnings: list[str]


def export(source: Any, *, int8: bool = False, fp16: bool = False, calib: str | os.PathLike | None = None,
           targets: str | Sequence[str] = ("onnxruntime",), out: str | os.PathLike | None = None,
           weights: str | os.PathLike | None = None, input_size: Any = None, mean: Any = None, std: Any = None,
           layout: str | None = None, labels: Any = None, example_inputs: Any = None,
           progress: Callable[[str], None] | None = None, **options: Any) -> ExportResult:
    """Export ``source`` to a verified bundle; other keyword arguments are ExportOptions fields
    (calib_count, per_tensor, method, opset, batch, triton, bench, bf16, num_classes, ...)."""
    from edgezoo.errors import InputError
    from edgezoo.export.options import ExportOptions
    from edgezoo.export.targets import parse_targets

    allowed = set(ExportOptions.__dataclass_fields__)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InputError(f"edgezoo.export() got unknown options: {', '.join(unknown)}",
                         "see edgezoo.export.options.ExportOptions for the names")
    opts = ExportOptions(name=source, weights=Path(weights) if weights is not None else None, int8=int8, fp16=fp16,
                         calib=Path(calib) if calib is not None else None, out=Path(out) if out is not None else None,
                         input_size=input_size, mean=mean, std=std, layout=layout, labels=labels,
                         example_inputs=example_inputs, targets=tuple(parse_targets(targets)), **options)
    return run(opts, progress)


def run(options, progress: Callable[[str], None] | None = None) -> ExportResult:
    """Run the export of ``options`` (an ExportOptions, or what ``validate`` returned for it: the CLI checks
    first, prints the warnings, then calls this) and type its outcome."""
    from edgezoo.export.pipeline import run_export

    outcome = run_export(options, progress=progress)
    rows = [TargetRow.from_row(r) for r in outcome.report.get("targets", [])]
    return ExportResult(outcome.out_dir, dict(outcome.files), outcome.report, rows, list(outcome.warnings))
