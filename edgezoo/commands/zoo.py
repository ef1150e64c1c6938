"""`edgezoo list` and `edgezoo info`: the zoo as the registry holds it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from edgezoo.console import console, fmt_count
from edgezoo.errors import EdgezooError, require_torch
from edgezoo.runtimes.inputs import image_chw, input_size_option, parse_input_size


def register(app: typer.Typer) -> None:
    app.command("list")(list_command)
    app.command("info")(info_command)


def list_command(
    family: Optional[str] = typer.Option(None, help="Only this family (e.g. mobilenet_v3)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the list as JSON to this path."),
) -> None:
    """List the zoo: names, aliases, params, MACs, input size and the paper's top-1."""
    require_torch()
    from edgezoo.fileio import write_json
    from edgezoo.models.registry import list_specs

    specs = [s for s in list_specs() if family is None or s.family == family]
    if not specs:
        raise EdgezooError(f"no models in family '{family}'", "see `edgezoo list` for the families")
    table = Table(title="edgezoo model zoo", header_style="bold")
    for col, justify in (("name", "left"), ("aliases", "left"), ("params", "right"), ("MACs", "right"),
                         ("input", "right"), ("top-1 %", "right")):
        table.add_column(col, justify=justify, no_wrap=col != "aliases")
    rows = []
    for s in specs:
        p = s.reference
        table.add_row(s.name, ", ".join(s.aliases[:3]), f"{p.params:,}" if p.params else "-",
                      fmt_count(p.macs), "x".join(map(str, s.input_size[1:])),
                      f"{p.top1:.1f}" if p.top1 else "-")
        rows.append(_spec_json(s))
    console.print(table)
    if json_path is not None:
        write_json(json_path, rows)
        console.print(f"wrote {json_path}")


def _spec_json(s) -> dict:
    return {
        "name": s.name, "family": s.family, "aliases": list(s.aliases), "input_size": list(s.input_size),
        "mean": list(s.mean), "std": list(s.std), "num_classes": s.num_classes,
        "params": s.reference.params, "macs": s.reference.macs, "top1": s.reference.top1, "source": s.reference.source,
        "weights": s.weights, "kwargs": dict(s.kwargs),
    }


def info_command(
    name: str = typer.Argument(..., help="Model name or alias (see `edgezoo list`)."),
    input_size: Optional[str] = input_size_option("the spec's"),
) -> None:
    """Show a model's spec and a per-stage summary (output shape, params, MACs)."""
    require_torch()
    from edgezoo.models.counting import count_params, profile_model
    from edgezoo.models.registry import get_spec

    spec = get_spec(name)
    parsed = parse_input_size(input_size)
    size = spec.input_size if parsed is None else image_chw(parsed, spec.input_size[0])
    model = spec.build()
    try:
        macs, stages = profile_model(model, size)
    except RuntimeError as e:
        raise EdgezooError(f"{spec.name} cannot take a {size[1]}x{size[2]} input: {str(e).splitlines()[0]}") from None
    p = spec.reference
    console.print(f"[bold]{spec.name}[/bold]  (family {spec.family}; aliases: {', '.join(spec.aliases) or '-'})")
    console.print(f"  input {size}, mean {spec.mean}, std {spec.std}, {spec.num_classes} classes")
    console.print(f"  params {count_params(model):,} (published {p.params:,})" if p.params
                  else f"  params {count_params(model):,}")
    console.print(f"  MACs {fmt_count(macs)} at {size[1]}x{size[2]} (published {fmt_count(p.macs)} at "
                  f"{spec.input_size[1]}x{spec.input_size[2]})")
    if p.top1:
        console.print(f"  top-1 {p.top1}% ({p.source})")
    console.print(f"  weights: {spec.weights or '-'}")
    table = Table(header_style="bold")
    for col in ("stage", "output", "params", "MACs"):
        table.add_column(col, justify="left" if col == "stage" else "right", no_wrap=True)
    for st in stages:
        table.add_row(st.name, "x".join(map(str, st.output_shape)), f"{st.params:,}", fmt_count(st.macs))
    console.print(table)
