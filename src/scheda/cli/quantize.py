"""`scheda quantize MODEL --to TYPE[,TYPE...]`: llama.cpp's own quantizer, a bar per tensor."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from scheda.cli.common import JsonOpt, ModelArg, ThreadsOpt
from scheda.display.terminal import console, emit_json
from scheda.errors import UsageError


def quantize(
    model: ModelArg,
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="llama-quantize's type names, comma-separated: F16, BF16, Q8_0, Q6_K, "
            "Q5_K_M, Q4_K_M, Q4_0, Q3_K_M, Q2_K, IQ4_XS... (--to list shows them all).",
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="The folder to write into (default: the input's)."),
    ] = None,
    imatrix: Annotated[
        Path | None,
        typer.Option("--imatrix", help="An importance matrix (llama-imatrix's file)."),
    ] = None,
    allow_requantize: Annotated[
        bool,
        typer.Option("--allow-requantize", help="Quantize an input that is already quantized."),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an output file that exists.")
    ] = False,
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Quantize a GGUF (or an HF folder) with llama.cpp's quantizer, its recipes unchanged."""
    from scheda.files import quantize as quantizer
    from scheda.resolve import locate

    if to.strip().lower() == "list":
        _list_types()
        return
    types = quantizer.parse_types(to)
    path = locate(model)
    if path is None:
        raise UsageError(f"{model!r} is a catalog entry, not a file: give a .gguf file or a folder")
    written = _run(quantizer, path, types, output, imatrix, allow_requantize, force, threads)
    if as_json:
        emit_json({"input": str(path), "written": [w.to_dict() for w in written]})
        return
    _report(written)


def _run(
    quantizer: Any,
    path: Path,
    types: list[str],
    output: Path | None,
    imatrix: Path | None,
    allow_requantize: bool,
    force: bool,
    threads: int | None,
) -> list[Any]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    # Steps name the files and the last column shows tensor names read from the file:
    # plain text, never markup.
    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[tensor]}", style="dim", markup=False),
    )
    err = Console(stderr=True)
    # Drawn on a terminal only: elsewhere Rich would leave a blank line on stderr.
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
        bars: dict[str, Any] = {}
        status = progress.add_task("", total=None, tensor="")

        def on_step(text: str) -> None:
            progress.update(status, description=text)

        def on_tensor(type_: str, done: int, total: int, name: str) -> None:
            if type_ not in bars:
                progress.update(status, visible=False)
                bars[type_] = progress.add_task(type_, total=total, tensor="")
            progress.update(bars[type_], completed=done, total=total, tensor=name)

        return list(
            quantizer.quantize(
                path,
                types,
                output=output,
                imatrix=imatrix,
                allow_requantize=allow_requantize,
                force=force,
                threads=threads,
                on_step=on_step,
                on_tensor=on_tensor,
            )
        )


def _report(written: list[Any]) -> None:
    """Each file's card, then its size and bits per weight."""
    from scheda.display import render
    from scheda.units import size

    out = console()
    for w in written:
        out.print(render.card_table([w.spec]))
        bpw = f"{w.bits_per_weight:.2f} bits per weight" if w.bits_per_weight else ""
        line = f"wrote {w.path}: {size(w.size)}, {bpw}, {w.tensors} tensors in {w.seconds:.1f} s"
        if w.fallbacks:
            line += (
                f"; {w.fallbacks} tensors kept another type (their rows do not divide into "
                f"{w.type}'s blocks)"
            )
        out.print(line, highlight=False, markup=False)
        for note in w.notes:
            out.print(f"note: {note}", highlight=False, markup=False)


def _list_types() -> None:
    from rich.table import Table

    from scheda.files.quantize import ALIASES, TYPES

    table = Table(title="Types (llama-quantize's)", title_justify="left")
    table.add_column("type")
    table.add_column("llama-quantize says")
    for name, (_, what) in TYPES.items():
        table.add_row(name, what)
    console().print(table)
    aliases = ", ".join(f"{a} = {t}" for a, t in ALIASES.items())
    console().print(f"aliases: {aliases}", highlight=False)
