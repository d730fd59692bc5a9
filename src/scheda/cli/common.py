"""What the commands share: the options several take, one output format, opening a model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from scheda import settings
from scheda.errors import UsageError

if TYPE_CHECKING:  # loading the engines' records costs start-up time `card` never uses
    from scheda.engines.base import Engine

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print JSON (stable keys, see docs/json.md).")
]
MarkdownOpt = Annotated[bool, typer.Option("--markdown", help="Print a Markdown table.")]
FileOpt = Annotated[
    str | None,
    typer.Option(
        "--file", help="A GGUF file of the folder or Hub repository, by name (else :QUANT)."
    ),
]
ModelArg = Annotated[
    str,
    typer.Argument(
        help="A .gguf file, an HF folder, 'default', or org/name[:QUANT] in the HF cache."
    ),
]
EngineOpt = Annotated[
    str | None,
    typer.Option(
        "--engine", "-e", help="llama.cpp or transformers (default: from the model's format)."
    ),
]
ContextOpt = Annotated[
    int | None,
    typer.Option(
        "--context",
        "-c",
        min=16,
        help=f"Context length in tokens (default: {settings.DEFAULT_CONTEXT}, or less when "
        "the model was trained on less).",
    ),
]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", min=1, help="CPU threads (default: physical cores).")
]
DtypeOpt = Annotated[
    str | None,
    typer.Option("--dtype", help="transformers: auto, float32, float16 or bfloat16."),
]
QuantizeOpt = Annotated[
    str | None,
    typer.Option("--quantize", help="transformers on a GPU: 8bit or 4bit (bitsandbytes)."),
]


# What `--ray` with no address stands for once the command line is read (`scheda.cli.main`).
RAY_ALONE = "local"
WorkersOpt = Annotated[
    int | None,
    typer.Option("--workers", min=1, help="With --ray: workers (default one per node)."),
]


class Cluster:
    """Where `--ray` runs: an address (None for a cluster started for the command), workers."""

    def __init__(self, address: str, workers: int | None) -> None:
        self.address = None if address == RAY_ALONE else address
        self.workers = workers


def cluster_option(ray: str | None, workers: int | None) -> Cluster | None:
    """The cluster `--ray` and `--workers` name, or None without --ray."""
    if ray is None:
        if workers is not None:
            raise UsageError("--workers is for --ray: give --ray too, or leave --workers out")
        return None
    return Cluster(ray, workers)


def one_format(as_json: bool, markdown: bool) -> None:
    if as_json and markdown:
        raise UsageError("choose one of --json and --markdown")


def open_engine(
    model: str,
    engine: str | None,
    context: int | None,
    threads: int | None,
    dtype: str | None = None,
    quantize: str | None = None,
    parallel: int = 1,
) -> Engine:
    """The model loaded as the command's options say; options left out are the engine's."""
    from scheda.engines import open_model

    return open_model(
        model,
        engine,
        context=context,
        threads=threads,
        dtype=dtype,
        quantize=quantize,
        parallel=parallel,
    )


def print_list(title: str, columns: tuple[str, ...], rows: list[list[str]], empty: str) -> None:
    """A stored-things listing (`eval list`, `compare list`): a table, or what to do when empty.
    The rows are stored text (model and file names): cells of `Text`, never markup."""
    from rich.table import Table
    from rich.text import Text

    from scheda.display.terminal import console

    if not rows:
        console().print(empty)
        return
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(Text(c) for c in row))
    console().print(table)
