"""`scheda arena A B`: two models answer the same prompts side by side, blind, and you vote.

`arena leaderboard` ranks every model voted on, `arena export [FILE]` writes every battle
as JSON lines, `arena list` shows the recent ones. The battles live in the arena's store
(stores/arena.py), the same file the server's arena routes and the studio's tab use, so a
vote cast here counts on the same leaderboard.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from scheda import sampling as options
from scheda.cli.common import ContextOpt, EngineOpt, JsonOpt, open_engine
from scheda.cli.options import with_sampling
from scheda.errors import UsageError
from scheda.sampling import Sampling

if TYPE_CHECKING:  # the store and the engines load when a battle starts, not at `--help`
    from rich.console import Console, RenderableType

    from scheda.engines.base import Engine, Generation
    from scheda.stores.arena import ArenaStore, Battle, Side

SUBCOMMANDS = ("leaderboard", "export", "list")
COLUMNS = ("a", "b")
# The keys a vote is typed with, and the outcome each stores (stores/arena.py's OUTCOMES).
VOTES = {"a": "a", "b": "b", "t": "tie", "x": "bad"}
SKIP, QUIT = "s", "q"
VOTE_HELP = "vote: a (A is better), b (B is better), t (tie), x (both bad), s (skip), q (quit)"
# `arena list` shows this many battles, newest first; `arena export` has them all.
LISTED = 50
PROMPT_SHOWN = 60  # characters of a prompt in `arena list`
ROUNDS = 1000  # the leaderboard's bootstrap rounds unless --rounds says otherwise
SAMPLING_DEFAULTS = Sampling()  # replaced by the declared flags (`with_sampling`)


@with_sampling(only=options.chat_options(), defaults=options.CHAT_DEFAULTS)
def arena(
    models: Annotated[
        list[str],
        typer.Argument(
            help="Two models to battle (GGUF files, HF folders, 'default', org/name); or "
            "`leaderboard`, `export [FILE]` or `list`.",
            show_default=False,
        ),
    ],
    prompts: Annotated[
        Path | None,
        typer.Option(
            "--prompts",
            help='The prompts: a .jsonl file of {"prompt": ..., "tag": ...} lines, or a text '
            "file of one prompt a line (default: typed at `prompt>`).",
        ),
    ] = None,
    tag: Annotated[
        str | None,
        typer.Option(
            "--tag",
            help="The battles' tag (a prompt's own tag wins); with leaderboard or list, only "
            "that tag's battles.",
        ),
    ] = None,
    system: Annotated[
        str | None, typer.Option("--system", help="A system prompt both models get.")
    ] = None,
    not_blind: Annotated[
        bool,
        typer.Option("--open", help="Name the models from the start (the battle is not blind)."),
    ] = False,
    as_json: JsonOpt = False,
    rounds: Annotated[
        int | None,
        typer.Option(
            "--rounds", min=1, help="leaderboard: bootstrap rounds of the 95% intervals [1000]."
        ),
    ] = None,
    engine: EngineOpt = None,
    context: ContextOpt = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads", min=1, help="CPU threads per model (default: half the physical cores)."
        ),
    ] = None,
    sampling: Sampling = SAMPLING_DEFAULTS,
) -> None:
    """Two models answer the same prompts side by side, blind; you vote, and a leaderboard
    ranks them."""
    from scheda.stores.arena import ArenaStore

    command = models[0]
    if command in SUBCOMMANDS:
        _only_for_battles(prompts=prompts, system=system, open=not_blind)
    else:
        _only_for(("leaderboard", "list"), json=as_json)
        _only_for(("leaderboard",), rounds=rounds)
    with ArenaStore() as store:
        if command == "leaderboard":
            _arguments(models, 1, "scheda arena leaderboard [--tag T] [--json]")
            _leaderboard(store, tag, rounds or ROUNDS, as_json)
        elif command == "export":
            _arguments(models, 2, "scheda arena export [FILE]")
            _export(store, Path(models[1]) if len(models) == 2 else None)
        elif command == "list":
            _arguments(models, 1, "scheda arena list [--tag T] [--json]")
            _list(store, tag, as_json)
        else:
            if len(models) != 2:
                raise UsageError(
                    "give two models to battle (scheda arena A B), or one of "
                    f"{', '.join(SUBCOMMANDS)}"
                )
            duel = Duel(store, sampling, system or "", tag or "", blind=not not_blind)
            duel.run(models, prompts, engine, context, threads)


def _arguments(given: list[str], most: int, usage: str) -> None:
    if len(given) > most:
        raise UsageError(f"too many arguments: {usage}")


def _only_for_battles(**given: object) -> None:
    for name, value in given.items():
        if value not in (None, False):
            raise UsageError(f"--{name} is for a battle (scheda arena A B --{name} ...)")


def _only_for(commands: tuple[str, ...], **given: object) -> None:
    for name, value in given.items():
        if value not in (None, False):
            where = " and ".join(f"`arena {c}`" for c in commands)
            raise UsageError(f"--{name} is for {where}, not for a battle")


# -- the prompts ------------------------------------------------------------------------------


def read_prompts(path: Path, tag: str) -> list[tuple[str, str]]:
    """(prompt, tag) for each prompt of a .jsonl file or a text file of one a line; a line
    that is no prompt is an error naming the file and the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--prompts {path}: no such file") from None
    except UnicodeDecodeError:
        raise UsageError(f"--prompts {path}: not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"--prompts {path}: cannot read it ({exc.strerror})") from None
    lines = enumerate(text.splitlines(), 1)
    if path.suffix.lower() == ".jsonl":
        found = [_json_prompt(path, n, line, tag) for n, line in lines if line.strip()]
    else:
        found = [(line.strip(), tag) for _, line in lines if line.strip()]
    if not found:
        raise UsageError(f"--prompts {path}: no prompts in it")
    return found


def _json_prompt(path: Path, number: int, line: str, tag: str) -> tuple[str, str]:
    shape = 'each line is {"prompt": "...", "tag": "..."} (the tag may be left out)'
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{number}: not JSON ({exc.msg}): {shape}") from None
    if not isinstance(row, dict):
        raise UsageError(f"{path}:{number}: not a JSON object: {shape}")
    prompt, own_tag = row.get("prompt"), row.get("tag", "")
    if not isinstance(prompt, str) or not prompt.strip():
        raise UsageError(f'{path}:{number}: no "prompt" text: {shape}')
    if not isinstance(own_tag, str):
        raise UsageError(f'{path}:{number}: "tag" is not text: {shape}')
    return prompt, own_tag.strip() or tag


def _typed_prompts(out: Console, tag: str) -> Iterator[tuple[str, str]]:
    """Prompts typed at `prompt>` (or piped, a line each) until an empty line or the end."""
    while True:
        line = _read_line(out, "[bold cyan]prompt>[/bold cyan] ")
        if line is None or not line.strip():
            return
        yield line.strip(), tag


def _read_line(out: Console, prompt: str) -> str | None:
    """A line from a person at a terminal, or from a pipe without a prompt; None at the end."""
    if sys.stdin.isatty():
        try:
            return out.input(prompt)
        except EOFError:
            return None
    line = sys.stdin.readline()
    return line if line else None


# -- a battle ---------------------------------------------------------------------------------


@dataclass
class Contender:
    """A model loaded for the arena, under the name the store and the leaderboard know it by."""

    model: str  # as the server names it: a file or folder's name, or the reference as typed
    path: Path
    engine: Engine

    def side(self) -> Side:
        from scheda.stores.arena import Side

        return Side(model=self.model, path=str(self.path.resolve()), engine=self.engine.name)


@dataclass
class Column:
    """One column while it answers: the text so far, then how it ended."""

    contender: Contender
    text: list[str] = field(default_factory=list)
    result: Generation | None = None
    error: str | None = None

    def status(self) -> str:
        if self.error is not None:
            return "failed"
        if self.result is None:
            return "answering..."
        t = self.result.timings
        return (
            f"{self.result.finish_reason} · {self.result.completion_tokens} tokens · "
            f"{t.tokens_per_s:.1f} tok/s"
        )


class Duel:
    """Battles between two loaded models, one prompt at a time, each stored as it goes."""

    def __init__(
        self, store: ArenaStore, sampling: Sampling, system: str, tag: str, blind: bool
    ) -> None:
        from scheda.display.terminal import console

        self.store = store
        self.sampling = sampling
        self.system = system
        self.tag = tag
        self.blind = blind
        self.out = console()
        self.fought = self.voted = 0

    def run(
        self,
        refs: list[str],
        prompts: Path | None,
        engine: str | None,
        context: int | None,
        threads: int | None,
    ) -> None:
        from rich.text import Text

        from scheda.measurement.bench import machine

        names = [_model_name(ref, engine) for ref in refs]
        if names[0][0] == names[1][0]:
            raise UsageError(
                f"a battle needs two different models, not {names[0][0]} twice: give another"
            )
        # Read before loading: a bad line is found in a second, not after two models load.
        listed = read_prompts(prompts, self.tag) if prompts is not None else None
        with self._loaded(refs, names, engine, context, threads) as contenders:
            self.machine = dict(machine())
            if listed is None and sys.stdin.isatty():
                self.out.print("[dim]a prompt a line; an empty line ends the arena[/dim]")
            for prompt, tag in listed if listed is not None else _typed_prompts(self.out, self.tag):
                if listed is not None:  # a typed prompt is on the screen already
                    self.out.print(Text(prompt, style="bold"))
                if not self._battle(contenders, prompt, tag):
                    break
        self.out.print(
            f"[dim]{self.fought} battles, {self.voted} voted: "
            "`scheda arena leaderboard` ranks the models[/dim]",
            highlight=False,
        )

    @contextlib.contextmanager
    def _loaded(
        self,
        refs: list[str],
        names: list[tuple[str, Path]],
        engine: str | None,
        context: int | None,
        threads: int | None,
    ) -> Iterator[list[Contender]]:
        from scheda.formulas.hardware import physical_cores

        # Both answer at once: each gets half the cores, so neither waits on the other's threads.
        each = threads or max(1, physical_cores() // 2)
        with contextlib.ExitStack() as stack:
            contenders = []
            for ref, (model, path) in zip(refs, names, strict=True):
                with _status(self.out, f"loading {model}..."):
                    loaded = stack.enter_context(open_engine(ref, engine, context, each))
                if "chat" not in loaded.capabilities:
                    raise UsageError(f"{ref} has no chat template: the arena chats")
                contenders.append(Contender(model, path, loaded))
            yield contenders

    def _battle(self, contenders: list[Contender], prompt: str, tag: str) -> bool:
        """One prompt, both answers, the vote; False when the person quits."""
        from scheda.display.terminal import ctrl_c_cancels

        a, b = random.sample(contenders, 2)  # which model is A is chance, every battle
        battle = self.store.start(
            prompt,
            a.side(),
            b.side(),
            self.sampling.to_dict(),
            self.machine,
            system=self.system,
            tag=tag,
            blind=self.blind,
        )
        self.fought += 1
        columns = {"a": Column(a), "b": Column(b)}
        with ctrl_c_cancels() as cancel:
            self._answer(battle, columns, cancel)
        for name, column in columns.items():
            self.store.finish(battle.id, name, self._ended(column))
        if cancel.is_set():
            self.out.print(f"[dim](stopped: battle {battle.id} kept what was said, unvoted)[/dim]")
            raise typer.Exit(130)
        return self._vote(battle.id, columns)

    def _answer(self, battle: Battle, columns: dict[str, Column], cancel: threading.Event) -> None:
        """Both answers at once, a thread each, drawn as they come (or printed whole after)."""
        from scheda.engines.base import Message

        messages = [Message("system", self.system)] if self.system else []
        messages.append(Message("user", battle.prompt))
        workers = [
            threading.Thread(
                target=self._one, args=(column, messages, cancel), daemon=True, name=f"arena-{n}"
            )
            for n, column in columns.items()
        ]
        if not self.out.is_terminal:
            _run(workers)
            self._print_whole(columns)
            return
        from rich.live import Live

        # Drawn from before the first word, so that the columns show each answer as it grows.
        with Live(
            get_renderable=lambda: self._columns(columns),
            console=self.out,
            refresh_per_second=8,
            vertical_overflow="visible",
        ):
            _run(workers)

    def _one(self, column: Column, messages: list[Any], cancel: threading.Event) -> None:
        """One column's answer, in its own thread; what goes wrong becomes its error."""
        from scheda.talk.prompt_fit import fit_user_message

        engine = column.contender.engine
        try:
            fit_user_message(engine, messages, self.sampling.max_tokens, truncate=False)
            column.result = engine.chat(
                messages, self.sampling, lambda _, text: column.text.append(text), cancel
            )
        except Exception as exc:  # a column that fails is stored, not raised
            column.error = self._secret(str(exc), column.contender)

    def _secret(self, message: str, contender: Contender) -> str:
        """An error as a blind battle may show it: naming neither the model nor its file."""
        if not self.blind:
            return message
        for name in (str(contender.path), contender.path.name, contender.model):
            message = message.replace(name, "the model")
        return message

    def _ended(self, column: Column) -> Side:
        from scheda.files.digest import sha256

        side = column.contender.side()
        side.sha256 = sha256(column.contender.path)
        if column.result is None:
            side.error, side.finish_reason = column.error or "no answer", "error"
            return side
        timings = column.result.timings
        side.answer = column.result.text
        side.finish_reason = column.result.finish_reason
        side.completion_tokens = column.result.completion_tokens
        side.tokens_per_s = round(timings.tokens_per_s, 2)
        side.first_token_s = round(timings.first_token_s, 3)
        return side

    def _title(self, name: str, column: Column) -> str:
        if self.blind:
            return name.upper()
        return f"{name.upper()} · {column.contender.model}"

    def _columns(self, columns: dict[str, Column]) -> RenderableType:
        from rich.table import Table
        from rich.text import Text

        table = Table(expand=True, show_footer=True)
        for name, column in columns.items():
            table.add_column(
                Text(self._title(name, column), style="bold"),
                footer=Text(column.status(), style="dim"),
                ratio=1,
                overflow="fold",
            )
        table.add_row(*(_shown(column) for column in columns.values()))
        return table

    def _print_whole(self, columns: dict[str, Column]) -> None:
        from rich.text import Text

        for name, column in columns.items():
            self.out.rule(Text(f"{self._title(name, column)} · {column.status()}"), align="left")
            self.out.print(_shown(column))

    def _vote(self, battle_id: str, columns: dict[str, Column]) -> bool:
        failed = [n.upper() for n, c in columns.items() if c.error is not None]
        if failed:
            self.out.print(f"[yellow]{' and '.join(failed)} failed: no vote on this one[/yellow]")
            return True
        self.out.print(f"[dim]{VOTE_HELP}[/dim]", highlight=False)
        while True:
            line = _read_line(self.out, "[bold cyan]vote>[/bold cyan] ")
            key = (line or QUIT).strip().lower()
            if key in VOTES:
                self._reveal(self.store.vote(battle_id, VOTES[key]))
                self.voted += 1
                return True
            if key in (SKIP, QUIT):
                return key == SKIP
            self.out.print(f"[yellow]{key!r} is no vote: {VOTE_HELP}[/yellow]", highlight=False)

    def _reveal(self, battle: Battle) -> None:
        from rich.text import Text

        for name in COLUMNS:
            side = battle.side(name)
            self.out.print(
                Text(
                    f"{name.upper()} was {side.model} ({Path(side.path).name}, {side.engine}, "
                    f"sha256 {side.sha256[:8]})"
                )
            )
        winner = battle.winner()
        verdict = {"tie": "a tie", "bad": "both bad"}.get(battle.vote or "", f"{winner} wins")
        self.out.print(Text(f"your vote: {verdict}", style="bold"))


def _model_name(ref: str, engine: str | None) -> tuple[str, Path]:
    """The name a model is stored under (the server's for the same reference) and its path."""
    from scheda.engines import choose
    from scheda.server.pool import model_id

    _, path = choose(ref, engine)
    return model_id(ref, path), path


def _shown(column: Column) -> RenderableType:
    from rich.text import Text

    if column.error is not None:
        return Text(column.error, style="red")
    return Text("".join(column.text))  # a model's words, never read as markup


def _run(workers: list[threading.Thread]) -> None:
    """Start the answers and join them in short steps, so that Ctrl-C reaches the main thread
    (where Python runs signal handlers) between them."""
    for worker in workers:
        worker.start()
    for worker in workers:
        while worker.is_alive():
            worker.join(0.1)


def _status(out: Console, text: str) -> Any:
    from rich.markup import escape

    if not out.is_terminal:
        return contextlib.nullcontext()
    return out.status(escape(text))


# -- what is stored -----------------------------------------------------------------------------


def _leaderboard(store: ArenaStore, tag: str | None, rounds: int, as_json: bool) -> None:
    from scheda.arena.standings import standings
    from scheda.display.terminal import console, emit_json
    from scheda.stores.comparisons import ComparisonStore
    from scheda.stores.evals import EvalStore

    # Beside each rating, what `scheda compare` and `scheda eval` stored for the same file.
    with EvalStore() as evals, ComparisonStore() as comparisons:
        board = standings(store, tag=tag, rounds=rounds, evals=evals, comparisons=comparisons)
    if as_json:
        emit_json(board)
        return
    if not board.get("standings"):
        tagged = f" tagged {tag}" if tag else ""
        console().print(
            f"no voted battles{tagged} yet: `scheda arena A B` starts one (or the studio's "
            "Arena tab)",
            highlight=False,
        )
        return
    console().print(leaderboard_table(board))


def leaderboard_table(board: dict[str, Any]) -> RenderableType:
    """The standings as a table: a row per model, best first."""
    from rich.table import Table
    from rich.text import Text

    tag = f" · tag {board['tag']}" if board.get("tag") else ""
    title = (
        f"Arena leaderboard{tag} · {board.get('battles', 0)} battles · 95% intervals from "
        f"{board.get('rounds', 0)} bootstrap rounds"
    )
    table = Table(title=Text(title), title_justify="left")
    for name, right in (
        ("#", True),
        ("Model", False),
        ("Rating", True),
        ("95% CI", True),
        ("Games", True),
        ("W-T-L", True),
        ("Both bad", True),
        ("KLD", True),
        ("Accuracy", False),
    ):
        table.add_column(name, justify="right" if right else "left")
    for rank, row in enumerate(board["standings"], 1):
        table.add_row(*(Text(cell) for cell in standing_cells(rank, row)))
    return table


def standing_cells(rank: int, row: dict[str, Any]) -> list[str]:
    """One model's cells; ties count the both-bad votes too (half a point each alike)."""
    kld = row.get("kld") or {}
    accuracy = row.get("accuracy") or {}
    return [
        str(rank),
        str(row["model"]),
        f"{row['rating']:.0f}",
        f"{row['lower']:.0f} to {row['upper']:.0f}",
        str(row["games"]),
        f"{row['wins']}-{row['ties']}-{row['losses']}",
        str(row["both_bad"]),
        "—" if kld.get("mean") is None else f"{kld['mean']:.4f}",
        ", ".join(_figure(task, shown) for task, shown in accuracy.items()) or "—",
    ]


def _figure(task: str, shown: dict[str, Any]) -> str:
    """A task's headline figure in points, as `scheda eval`'s table shows it."""
    value = shown.get("value")
    figure = "—" if value is None else f"{100 * value:.1f}"
    return " ".join(str(part) for part in (task, shown.get("metric"), figure) if part)


def _export(store: ArenaStore, path: Path | None) -> None:
    lines = [json.dumps(record, ensure_ascii=False) + "\n" for record in store.export()]
    if path is None:
        sys.stdout.write("".join(lines))
        return
    try:
        path.write_text("".join(lines), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    typer.echo(f"{len(lines)} battles written to {path}", err=True)


def _list(store: ArenaStore, tag: str | None, as_json: bool) -> None:
    from scheda.cli.common import print_list
    from scheda.display.terminal import console, emit_json

    battles = store.battles(tag=tag)
    if as_json:
        emit_json([b.view() for b in battles[:LISTED]])
        return
    print_list(
        "Battles",
        ("Id", "When", "Tag", "State", "Vote", "A", "B", "Prompt"),
        [_list_row(b) for b in battles[:LISTED]],
        "no battles yet: `scheda arena A B` starts one",
    )
    if len(battles) > LISTED:
        older = len(battles) - LISTED
        console().print(f"[dim]({older} older: `scheda arena export` has them all)[/dim]")


def _list_row(battle: Battle) -> list[str]:
    from scheda.stores.sessions import local_time

    view = battle.view()
    prompt = " ".join(battle.prompt.split())
    if len(prompt) > PROMPT_SHOWN:
        prompt = prompt[: PROMPT_SHOWN - 1] + "…"
    return [
        battle.id,
        local_time(battle.created),
        battle.tag,
        battle.state,
        battle.vote or "",
        *(view[name].get("model", "?") for name in COLUMNS),  # blind and unvoted: no names
        prompt,
    ]
