"""`edgezoo list` and `edgezoo info`: the zoo as the registry holds it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Table

from edgezoo.console import console, fmt_count
from edgezoo.errors import EdgezooError, InputError, require_torch


def register(app: typer.Typer) -> None:
    app.command("list")(list_command)
    app.command("info")(info_command)


def list_command(
    family: Optional[str] = typer.Option(None, help="Only this family (e.g. mobilenet_v3)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the list as JSON to this path."),
) -> None:
    """List the zoo: params and MACs as counted on the reference implementation beside the paper's printed
    figures, input size and the paper's top-1 (aliases: `edgezoo info NAME` or --json)."""
    require_torch()
    from edgezoo.fileio import check_writable, write_json
    from edgezoo.models.registry import list_specs

    specs = [s for s in list_specs() if family is None or s.family == family]
    if not specs:
        raise EdgezooError(f"no models in family '{family}'", "see `edgezoo list` for the families")
    if json_path is not None:
        check_writable(json_path)  # before printing anything: a failed write must not follow a printed table
    rows = [_spec_json(s) for s in specs]
    if json_path is not None:
        try:
            write_json(json_path, rows)
        except OSError as e:  # e.g. a read-only file system, which os.access does not see for root
            raise InputError(f"cannot write {json_path}: {e.strerror or e}") from None
    # short columns, so that the table fits an 80-column terminal without wrapping
    table = Table(title="edgezoo model zoo", caption="params, MACs: counted on the reference implementation; "
                  "paper: as the paper prints it; top-1: the paper's", header_style="bold", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    for col in ("name", "params", "paper", "MACs", "paper", "input", "top-1"):
        table.add_column(col, justify="left" if col == "name" else "right", no_wrap=True,
                         overflow="ellipsis")
    for s in specs:
        r, p = s.reference, s.paper
        table.add_row(s.name, fmt_count(r.params), _printed(p.params), fmt_count(r.macs), _printed(p.macs),
                      "x".join(map(str, s.input_size[1:])), f"{p.top1:.1f}" if p.top1 else "-")
    console.print(table)
    if json_path is not None:
        console.print(f"wrote {json_path}")


def _printed(n: float | None) -> str:
    """A printed figure as the paper rounds it (3 significant digits at most: 0.44B, 219M, 5.4M)."""
    if n is None:
        return "-"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.3g}"


def _spec_json(s) -> dict:
    r, p = s.reference, s.paper
    return {
        "name": s.name, "family": s.family, "aliases": list(s.aliases), "input_size": list(s.input_size),
        "mean": list(s.mean), "std": list(s.std), "num_classes": s.num_classes,
        # what the model has (counted on the reference implementation it matches)
        "params": r.params, "macs": r.macs,
        "computed": {"params": r.params, "macs": r.macs, "source": r.source},
        # what the paper prints (rounded as printed); None where it prints nothing
        "paper": {"params": p.params, "macs": p.macs, "top1": p.top1, "table": p.table},
        "weights": s.weights, "kwargs": dict(s.kwargs),
        "presets": [{"name": q.name, "mean": list(q.mean), "std": list(q.std), "crop_pct": q.crop_pct,
                     "interpolation": q.interpolation, "source": q.source} for q in s.presets],
    }


def info_command(
    name: str = typer.Argument(..., help="Model name or alias (see `edgezoo list`)."),
    input_size: Optional[int] = typer.Option(None, "--input-size", help="Square input side (default: the spec's)."),
) -> None:
    """Show a model's spec, its computed and printed figures side by side, and a per-stage summary."""
    require_torch()
    from edgezoo.models.counting import count_params, profile_model
    from edgezoo.models.presets import default_preset
    from edgezoo.models.registry import get_spec

    spec = get_spec(name)
    size = spec.input_size if input_size is None else (spec.input_size[0], input_size, input_size)
    model = spec.build()
    try:
        macs, stages = profile_model(model, size)
    except RuntimeError as e:
        raise EdgezooError(f"{spec.name} cannot take a {size[1]}x{size[2]} input: {str(e).splitlines()[0]}") from None
    r, p = spec.reference, spec.paper
    at = f"{spec.input_size[1]}x{spec.input_size[2]}"
    console.print(f"[bold]{spec.name}[/bold]  (family {spec.family}; aliases: {', '.join(spec.aliases) or '-'})")
    console.print(f"  input {size}, mean {spec.mean}, std {spec.std}, {spec.num_classes} classes")
    console.print(f"  computed: params {count_params(model):,}, MACs {fmt_count(macs)} at {size[1]}x{size[2]}"
                  + (f" (counted on {r.source})" if r.source else ""))
    if p.params or p.macs or p.top1:
        printed = [f"params {_printed(p.params)}" if p.params else "", f"MACs {_printed(p.macs)} at {at}"
                   if p.macs else "", f"top-1 {p.top1:g}%" if p.top1 else ""]
        console.print(f"  paper (as printed): {', '.join(x for x in printed if x)} ({p.table})")
    else:
        console.print(f"  paper: no figures printed{f' ({p.table})' if p.table else ''}")
    console.print(f"  weights: {spec.weights or '-'}")
    pre = default_preset(spec)
    console.print(f"  preset {pre.name}: crop {pre.crop_pct:g}, {pre.interpolation}"
                  + (f", {len(spec.presets)} presets" if len(spec.presets) > 1 else ""))
    table = Table(header_style="bold")
    for col in ("stage", "output", "params", "MACs"):
        table.add_column(col, justify="left" if col == "stage" else "right", no_wrap=True)
    for st in stages:
        table.add_row(st.name, "x".join(map(str, st.output_shape)), f"{st.params:,}", fmt_count(st.macs))
    console.print(table)
