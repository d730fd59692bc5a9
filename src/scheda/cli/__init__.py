"""The `scheda` command: a module per question the product answers.

    card      what is it                        card, catalog
    fit       can I run it                      fit
    search    which one fits here               search
    pull      get it, if it fits                pull
    tokens    how does it split my text         tokens
    talk      let me talk to it                 generate, chat
    convert   the same model on both engines    convert
    quantize  make it smaller                   quantize
    compare   what does quantization cost       compare, compare list
    arena     which answers better, blind       arena, arena leaderboard, arena export
    bench     how fast is it here               bench
    serve     the API and the web studio        serve
    eval      how good is it really             eval
    sessions  saved chats                       sessions ...

Each command parses its options, calls one library function and renders the result.
Errors a user can cause are `SchedaError`s: printed as one line on stderr with a
non-zero exit, never a traceback (SCHEDA_DEBUG=1 shows one for an unexpected error).
"""

from __future__ import annotations

import sys

import typer

from scheda import settings
from scheda.cli import (
    arena,
    bench,
    card,
    common,
    compare,
    convert,
    fit,
    pull,
    quantize,
    search,
    serve,
    sessions,
    talk,
    tokens,
)
from scheda.cli import eval as evaluate
from scheda.errors import SchedaError

app = typer.Typer(
    help="Read, fit, run and measure open LLMs on your own hardware.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(card.card)
app.command()(fit.fit)
app.command()(search.search)
app.command()(pull.pull)
app.command()(tokens.tokens)
app.command(name="catalog")(card.catalog_command)
app.command()(talk.generate)
app.command()(talk.chat)
app.command()(convert.convert)
app.command()(quantize.quantize)
app.command()(compare.compare)
app.command()(arena.arena)
app.command()(bench.bench)
app.command()(serve.serve)
app.command(name="eval")(evaluate.eval_command)
app.add_typer(sessions.sessions_app, name="sessions")


def ray_alone(args: list[str]) -> list[str]:
    """`--ray` with no address after it (last, before another option, or before a model:
    a word that is no `HOST:PORT` nor Ray's `auto`) stands for a cluster started for the
    run: the option takes a value, so it is given one."""
    given: list[str] = []
    for i, arg in enumerate(args):
        given.append(arg)
        if arg == "--ray" and (i + 1 == len(args) or not _ray_address(args[i + 1])):
            given.append(common.RAY_ALONE)
    return given


def _ray_address(arg: str) -> bool:
    return not arg.startswith("-") and (":" in arg or arg == "auto")


def main() -> None:
    """Entry point: click reports its own usage errors; ours become one line and an exit code."""
    try:
        app(args=evaluate.card_alone(ray_alone(sys.argv[1:])))
    except SchedaError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # anything unforeseen: still one line, unless debugging
        if settings.debug():
            raise
        typer.echo(
            f"error: unexpected {type(exc).__name__}: {exc} (SCHEDA_DEBUG=1 shows the traceback)",
            err=True,
        )
        sys.exit(70)
