"""The `scheda` command. Each command parses, calls one library function, renders.

Errors a user can cause are `SchedaError`s: printed as one line on stderr
with a non-zero exit, never a traceback (set SCHEDA_DEBUG=1 to see one).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from scheda.errors import SchedaError, UsageError
from scheda.spec import ModelSpec
from scheda.terminal import console, emit_json

app = typer.Typer(
    help="Read, fit, run and measure open LLMs on your own hardware.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print JSON (stable keys, see docs/json.md).")
]
MarkdownOpt = Annotated[bool, typer.Option("--markdown", help="Print a Markdown table.")]


def _one_format(as_json: bool, markdown: bool) -> None:
    if as_json and markdown:
        raise UsageError("choose one of --json and --markdown")


@app.command()
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

    _one_format(as_json, markdown)
    specs = [resolve(m) for m in models]
    if as_json:
        emit_json({"models": [s.to_dict() for s in specs]})
    elif markdown:
        typer.echo(render.card_markdown(specs))
    else:
        console().print(render.card_table(specs))


@app.command()
def fit(
    model: Annotated[
        str, typer.Argument(help="A model reference (file, folder, catalog name, default).")
    ],
    context: Annotated[
        int | None,
        typer.Option("--context", "-c", min=1, help="Context length (default: the model's own)."),
    ] = None,
    batch: Annotated[
        int, typer.Option("--batch", "-b", min=1, help="Sequences decoded together.")
    ] = 1,
    gpu: Annotated[
        str | None,
        typer.Option(
            "--gpu", help="Only this device: t4, l4, rtx-4090, a100, h100, apple-32, host..."
        ),
    ] = None,
    memory: Annotated[
        float | None, typer.Option("--memory", help="Only a budget of this many GB.")
    ] = None,
    measure: Annotated[
        bool,
        typer.Option(
            "--measure",
            help="Load it through llama.cpp and measure the real memory beside the estimate.",
        ),
    ] = False,
    as_json: JsonOpt = False,
    markdown: MarkdownOpt = False,
) -> None:
    """The memory a model needs at each precision, and where it fits."""
    from scheda import hardware, render
    from scheda.fit_report import fit_report
    from scheda.resolve import resolve

    _one_format(as_json, markdown)
    if gpu and memory:
        raise UsageError("give --gpu or --memory, not both")
    devices = (
        hardware.find(gpu)
        if gpu
        else [hardware.custom(memory)]
        if memory is not None
        else hardware.all_devices()
    )
    spec = resolve(model)
    report = fit_report(spec, context, batch, devices)
    measured = _measure(spec, context) if measure else None
    if as_json:
        data = report.to_dict()
        if measured:
            data["measured"] = [
                {"context": c, "estimate": e, "measured": m} for c, e, m in measured
            ]
        emit_json(data)
    elif markdown:
        typer.echo(render.fit_markdown(report, measured, chosen=bool(gpu or memory)))
    else:
        console().print(render.fit_view(report, measured, chosen=bool(gpu or memory)))


MEASURE_CONTEXTS = (512, 2048)


def _measure(spec: ModelSpec, context: int | None) -> list[tuple[int, int, int]]:
    """(context, estimate, measured) at the asked context, or at 512, 2048 and the model's own."""
    from pathlib import Path

    from scheda.fit import estimate
    from scheda.measure import measure

    if spec.source != "gguf":
        raise UsageError("--measure loads the model through llama.cpp: it needs a .gguf file")
    top = spec.context or 4096
    contexts = [context] if context else sorted({c for c in (*MEASURE_CONTEXTS, top) if c <= top})
    with console().status("measuring (one fresh process per context)..."):
        return [(c, estimate(spec, "file", c).total, measure(Path(spec.path), c)) for c in contexts]


@app.command()
def tokens(
    args: Annotated[
        list[str],
        typer.Argument(metavar="MODEL... TEXT", help="One or more models, then the text to split."),
    ],
    as_json: JsonOpt = False,
    markdown: MarkdownOpt = False,
) -> None:
    """How each model's tokenizer splits a text: pieces, ids and the count."""
    from scheda import render
    from scheda.resolve import resolve
    from scheda.tokens import tokenize

    _one_format(as_json, markdown)
    if len(args) < 2:
        raise UsageError(
            'give at least one model and a text: scheda tokens default "ChatGPT è incredibile!"'
        )
    *models, text = args
    results = [tokenize(resolve(m), text) for m in models]
    if as_json:
        emit_json({"text": text, "models": [r.to_dict() for r in results]})
    elif markdown:
        typer.echo(render.tokens_markdown(results))
    else:
        console().print(render.tokens_view(results))


@app.command(name="catalog")
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


def _register_run_commands() -> None:
    """The commands that run a model live in cli_run; sessions in cli_sessions."""
    from scheda import cli_run
    from scheda.cli_eval import eval_command
    from scheda.cli_sessions import sessions_app

    app.command()(cli_run.generate)
    app.command()(cli_run.chat)
    app.command()(cli_run.convert)
    app.command()(cli_run.bench)
    app.command()(cli_run.serve)
    app.command(name="eval")(eval_command)
    app.add_typer(sessions_app, name="sessions")


_register_run_commands()


def main() -> None:
    """Entry point: click reports its own usage errors; ours become one line and an exit code."""
    try:
        app()
    except SchedaError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # anything unforeseen: still one line, unless debugging
        if os.environ.get("SCHEDA_DEBUG"):
            raise
        typer.echo(
            f"error: unexpected {type(exc).__name__}: {exc} (SCHEDA_DEBUG=1 shows the traceback)",
            err=True,
        )
        sys.exit(70)
