"""`servectl convert SPEC --to onnx`: export a model and write the spec that serves it (`convert`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

if TYPE_CHECKING:
    pass

from servectl.cli.common import Overrides, console, load_deployment_args


def convert(
    spec: Annotated[Path, typer.Argument(help="The deployment spec (YAML) whose model to convert.")],
    overrides: Overrides = None,
    to: Annotated[str, typer.Option("--to", help="The format to convert to: onnx (the only one).")] = "onnx",
    out: Annotated[Path, typer.Option(help="The ONNX file to write, e.g. model.onnx.")] = Path("model.onnx"),
    model: Annotated[str | None, typer.Option(help="The model to convert, by name, when the spec has several.")] = None,
    atol: Annotated[
        float, typer.Option(min=0, help="Largest absolute difference allowed between the two models' outputs.")
    ] = 1e-4,
    write_spec: Annotated[
        Path | None, typer.Option(help="Also write a spec serving the ONNX file (backend: onnx) to this path.")
    ] = None,
) -> None:
    """Export SPEC's PyTorch or transformers model to ONNX (dynamic batch and sequence axes), run
    the same sample inputs through both, and fail when they differ by more than --atol."""
    from servectl.convert import ConvertError
    from servectl.convert import convert as run

    if to.lower() != "onnx":
        console.print(f"[bold red]convert:[/] --to {escape(to)}: only onnx is supported", highlight=False)
        raise typer.Exit(1)
    deployment = load_deployment_args(spec, overrides)
    names = [m.name for m in deployment.models]
    if model is None and len(names) > 1:
        console.print(
            f"[bold red]convert:[/] {len(names)} models in the spec: pick one with --model ({', '.join(names)})"
        )
        raise typer.Exit(1)
    if model is not None and model not in names:
        console.print(f"[bold red]convert:[/] no model {escape(model)!r} in the spec (models: {', '.join(names)})")
        raise typer.Exit(1)
    chosen = deployment.model(model) if model else deployment.models[0]
    try:
        result = run(chosen, out, atol, write_spec)
    except ConvertError as exc:
        console.print(f"[bold red]convert {escape(chosen.name)}:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"[green]wrote[/] {escape(str(out))} ({escape(result.exporter)})", highlight=False)
    console.print(f"  inputs:  {escape('; '.join(result.inputs))}", highlight=False)
    console.print(f"  outputs: {escape('; '.join(result.outputs))}", highlight=False)
    console.print(f"  checked on: {escape('; '.join(result.samples))}", highlight=False)
    verdict = "[green]ok[/]" if result.ok else "[bold red]too large[/]"
    console.print(
        f"  largest absolute difference: {result.max_diff:.3g} ({escape(result.worst)}), atol {atol:g}: {verdict}",
        highlight=False,
    )
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    if not result.ok:
        console.print(
            f"[bold red]convert {escape(chosen.name)}:[/] the ONNX model's outputs differ from the source model's by "
            f"{result.max_diff:.3g} > atol {atol:g}; {escape(str(out))} is left for inspection"
            + (", no spec written" if write_spec else ""),
            highlight=False,
        )
        raise typer.Exit(1)
    if result.spec_path is not None:
        shown = escape(str(result.spec_path))
        console.print(f"[green]wrote[/] {shown}: servectl serve {shown}", highlight=False)
