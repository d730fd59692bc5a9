"""`scheda convert`: a GGUF as an HF safetensors folder, so that both engines can run it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scheda.cli.common import ModelArg
from scheda.errors import UsageError


def convert(
    model: ModelArg,
    out: Annotated[Path, typer.Argument(help="The HF folder to write (new or empty).")],
    dtype: Annotated[
        str,
        typer.Option(
            "--dtype", help="Saved precision: float16, bfloat16 or float32 (exact, twice the size)."
        ),
    ] = "float16",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Write into OUT even when it holds files.")
    ] = False,
) -> None:
    """A GGUF to an HF safetensors folder (through transformers), to run on both engines."""
    from scheda.files.convert import convert as convert_gguf
    from scheda.resolve import locate

    path = locate(model)
    if path is None:
        raise UsageError(f"{model!r} is a catalog entry, not a file: give a .gguf file")
    written = convert_gguf(path, out, dtype=dtype, overwrite=overwrite, progress=True)
    typer.echo(f"wrote {written} (scheda card {written} shows its spec sheet)")
