"""What is it: `scheda card` (the spec sheet) and `scheda catalog` (the families known by name)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from scheda.cli.common import FileOpt, JsonOpt, MarkdownOpt, one_format
from scheda.display.terminal import console, emit_json
from scheda.errors import UsageError
from scheda.spec import ModelSpec

if TYPE_CHECKING:  # `card` on a file loads neither fit nor the devices
    from scheda.formulas.fit_report import FileFit
    from scheda.formulas.hardware import Device


def card(
    models: Annotated[
        list[str],
        typer.Argument(
            help="Model references: a .gguf file, an HF folder, a catalog name, 'default', "
            "or a Hub repository org/name[:QUANT] (the cache's, else read on the Hub)."
        ),
    ],
    file: FileOpt = None,
    as_json: JsonOpt = False,
    markdown: MarkdownOpt = False,
) -> None:
    """The spec sheet, read from the file itself; several models side by side."""
    from scheda.display import render
    from scheda.resolve import resolve

    one_format(as_json, markdown)
    if file is not None and len(models) != 1:
        raise UsageError("--file picks a file of one model: give one model with it")
    specs = [resolve(m, file) for m in models]
    if as_json:
        emit_json({"models": [s.to_dict() for s in specs]})
    elif markdown:
        parts = [render.card_markdown(specs)]
        parts += [render.files_markdown(*_files(s)) for s in specs if _is_gguf_repo(s)]
        typer.echo("\n\n".join(parts))
    else:
        console().print(render.card_table(specs))
        for s in specs:
            if _is_gguf_repo(s):
                console().print(render.files_table(*_files(s)))


def _is_gguf_repo(spec: ModelSpec) -> bool:
    return spec.remote is not None and bool(spec.remote.ggufs)


def _files(spec: ModelSpec) -> tuple[str, list[FileFit], list[Device], int]:
    """A GGUF repository's files with a verdict for this host at the engines' context."""
    from scheda import settings
    from scheda.formulas import hardware
    from scheda.formulas.fit_report import file_fits

    assert spec.remote is not None
    context = settings.context_for(None, spec.context)
    devices = [hardware.host()]
    fits = file_fits(spec, spec.remote.ggufs, context, 1, devices)
    return spec.remote.repo, fits, devices, context


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
