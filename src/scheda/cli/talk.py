"""Let me talk to it: `scheda generate` (one prompt) and `scheda chat` (a saved conversation).

Each builds an engine from the model reference (or `--engine`), then hands the work
to a library module; this file only parses options and prints.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from scheda import sampling as options
from scheda.cli.common import (
    ContextOpt,
    DtypeOpt,
    EngineOpt,
    ModelArg,
    QuantizeOpt,
    ThreadsOpt,
    open_engine,
)
from scheda.cli.options import with_sampling
from scheda.display.terminal import console
from scheda.engines.base import Engine, Generation, Message
from scheda.errors import UsageError
from scheda.sampling import Sampling

if TYPE_CHECKING:
    from scheda.talk.chat import ChatLoop

# Replaced by the declared sampling flags (`with_sampling`); never used as a default itself.
SAMPLING_DEFAULTS = Sampling()
# The options a chat takes from the command line: those the declarations mark settable
# in a chat (the rest make no sense there: n, stop, logprobs, ignore_eos).
CHAT_OPTIONS = options.chat_options()


@with_sampling()
def generate(
    model: ModelArg,
    prompt: Annotated[str, typer.Argument(help="The prompt; '-' reads it from stdin.")],
    chat: Annotated[bool, typer.Option("--chat", help="Apply the model's chat template.")] = False,
    system: Annotated[
        str | None, typer.Option("--system", help="System prompt (with --chat).")
    ] = None,
    truncate: Annotated[
        bool, typer.Option("--truncate", help="Cut the start of a prompt too long for the context.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Text, token counts, finish reason and timings as JSON.")
    ] = False,
    engine: EngineOpt = None,
    context: ContextOpt = None,
    threads: ThreadsOpt = None,
    dtype: DtypeOpt = None,
    quantize: QuantizeOpt = None,
    sampling: Sampling = SAMPLING_DEFAULTS,
) -> None:
    """Continue a prompt, streamed to the terminal as it is written."""
    from scheda.display.terminal import ctrl_c_cancels
    from scheda.talk.prompt_fit import fit_prompt, fit_user_message

    if system and not chat:
        raise UsageError("--system applies to --chat")
    if prompt == "-":
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise UsageError("the prompt is empty")
    err = Console(stderr=True)
    n, max_tokens = sampling.n, sampling.max_tokens
    with open_engine(model, engine, context, threads, dtype, quantize, parallel=n) as loaded:
        if chat:
            messages = [Message("system", system)] if system else []
            messages, fitted = fit_user_message(
                loaded, [*messages, Message("user", prompt)], max_tokens, truncate
            )
        else:
            fitted = fit_prompt(loaded, prompt, max_tokens, truncate)
        if fitted.cut_tokens:
            err.print(
                f"[yellow]cut the first {fitted.cut_tokens:,} tokens of the prompt to fit the "
                f"{loaded.context:,}-token context ({fitted.tokens:,} tokens left)[/yellow]"
            )
        stream = not as_json and n == 1
        out = console()

        def show(_: int, text: str) -> None:
            out.out(text, end="", highlight=False)
            out.file.flush()

        with ctrl_c_cancels() as cancel:
            on_text = show if stream else None
            if chat:
                result = loaded.chat(messages, sampling, on_text, cancel)
            else:
                result = loaded.generate(fitted.prompt, sampling, on_text, cancel)
        _print_generation(result, loaded, sampling, fitted.cut_tokens, as_json, stream, out)
        if result.finish_reason == "cancelled":
            err.print("[dim](stopped)[/dim]")
            raise typer.Exit(130)


def _print_generation(
    result: Generation,
    loaded: Engine,
    sampling: Sampling,
    cut_tokens: int,
    as_json: bool,
    streamed: bool,
    out: Console,
) -> None:
    if as_json:
        data = result.to_dict()
        data.update(
            engine=loaded.name,
            context=loaded.context,
            truncated_tokens=cut_tokens,
            sampling=sampling.to_dict(),
        )
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    if streamed:
        out.out("")
        return
    for i, sample in enumerate(result.samples, 1):
        out.rule(f"sample {i} ({sample.finish_reason}, {sample.completion_tokens} tokens)")
        out.out(sample.text, highlight=False)


@with_sampling(only=CHAT_OPTIONS, defaults=options.CHAT_DEFAULTS)
def chat(
    model: ModelArg,
    system: Annotated[str | None, typer.Option("--system", help="The system prompt.")] = None,
    resume: Annotated[
        str | None, typer.Option("--resume", help="Go on with a saved session (its id).")
    ] = None,
    engine: EngineOpt = None,
    context: ContextOpt = None,
    threads: ThreadsOpt = None,
    dtype: DtypeOpt = None,
    quantize: QuantizeOpt = None,
    sampling: Sampling = SAMPLING_DEFAULTS,
) -> None:
    """Talk to a model in the terminal; every turn is saved (see `scheda sessions`)."""
    from scheda.stores.sessions import SessionStore
    from scheda.talk.chat import ChatLoop

    out = console()
    with SessionStore() as store:
        if resume:
            session = store.get(resume)
            if system is not None:
                store.set_system(session.id, system)
                session = store.get(session.id)
            if session.params:
                known = sampling.to_dict()
                sampling = options.chat_sampling(
                    {k: v for k, v in session.params.items() if k in known}
                )
        else:
            session = store.create(model, system, sampling.to_dict())
        with out.status("loading the model..."):
            loaded = open_engine(model, engine, context, threads, dtype, quantize)
        with loaded:
            if "chat" not in loaded.capabilities:
                raise UsageError(f"{model} has no chat template: use `scheda generate`")
            out.print(  # the model's reference is a path or a repository: escaped
                f"[bold]session {session.id}[/bold] · {escape(loaded.name)} · context "
                f"{loaded.context:,} · /help for commands, /exit to leave\n"
                f"[dim]go on later with: scheda chat {escape(model)} --resume {session.id}[/dim]"
            )
            loop = ChatLoop(loaded, store, session, sampling, out)
            if resume:
                _recap(loop)
            loop.run(_reader(out))


def _recap(loop: ChatLoop) -> None:
    turns = loop.store.messages(loop.session.id)
    if turns:
        loop.console.print(f"[dim]({len(turns)} messages so far; /history shows them)[/dim]")


def _reader(out: Console) -> Any:
    """Read a line with a prompt on a terminal, plainly from a pipe."""
    if sys.stdin.isatty():
        return lambda: out.input("[bold cyan]>>> [/bold cyan]")

    def read() -> str:
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line

    return read
