"""What is it: `scheda card` (the spec sheet) and `scheda catalog` (the families known by name)."""

from __future__ import annotations

from typing import Annotated

import typer

from scheda.cli.common import JsonOpt, MarkdownOpt, one_format
from scheda.terminal import console, emit_json


def card(
    models: Annotated[
        list[str],
        typer.Argument(
            help="Model references: a .gguf file, an HF folder, "
            "a catalog name, 'default', or org/name in the HF cache."
        ),
    ],
    as_json: JsonOpt = False,
    markdown: MarkdownOpt = False,
) -> None:
    """The spec sheet, read from the file itself; several models side by side."""
    from scheda import render
    from scheda.resolve import resolve

    one_format(as_json, markdown)
    specs = [resolve(m) for m in models]
    if as_json:
        emit_json({"models": [s.to_dict() for s in specs]})
    elif markdown:
        typer.echo(render.card_markdown(specs))
    else:
        console().print(render.card_table(specs))


def catalog_command(as_json: JsonOpt = False) -> None:
    """The model families scheda knows by name (for `card` and `fit` without a file)."""
    from rich.table import Table

    from scheda import catalog
    from scheda.units import count

    if as_json:
        emit_json(
            {
                "models": [
                    {
                        "name": m.name,
                        "family": m.family.name,
                        "parameters": catalog.decoder_parameters(m),
                        "context": m.context,
                    }
                    for m in catalog.MODELS
                ]
            }
        )
        return
    table = Table(title="Catalog", title_justify="left")
    for h in ("name", "family", "parameters", "context"):
        table.add_column(h)
    for m in catalog.MODELS:
        table.add_row(m.name, m.family.name, count(catalog.decoder_parameters(m)), f"{m.context:,}")
    console().print(table)
