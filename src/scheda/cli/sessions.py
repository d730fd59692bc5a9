"""`scheda sessions`: list, show, export and delete saved chat sessions.

A Typer sub-app, added to the `scheda` command by `cli.py`. Like every
command, each one opens the store, calls one method, renders; a bad id or a
damaged file is a `SchedaError` that `scheda.cli.main` prints on one line.
"""

from __future__ import annotations

import json
import unicodedata
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from scheda.display.terminal import console, emit_json
from scheda.errors import SchedaError

if TYPE_CHECKING:
    pass

sessions_app = typer.Typer(
    help="Saved chat sessions: list, show, export, delete. "
    "They live in one SQLite file in the user data folder (SCHEDA_DATA_DIR overrides it).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ROLE_STYLES = {"system": "bold magenta", "user": "bold cyan", "assistant": "bold green"}

IdArg = Annotated[
    str,
    typer.Argument(
        metavar="ID",
        help="A session id, or a unique start of one (`scheda sessions list` shows them).",
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print JSON (stable keys, see docs/json.md).")
]


class ExportFormat(StrEnum):
    markdown = "markdown"
    json = "json"


def _printable(text: str) -> str:
    """Stored text is untrusted (a model wrote half of it): keep lines, drop escape sequences."""
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")


def _described(title: str | None, messages: int) -> str:
    name = f'"{_printable(title)}"' if title else "(untitled)"
    return f"{name}, {messages} message{'' if messages == 1 else 's'}"


@sessions_app.command(name="list")
def list_command(as_json: JsonOpt = False) -> None:
    """Saved sessions, the most recently used first."""
    from rich.table import Table
    from rich.text import Text

    from scheda.stores.sessions import SessionStore, local_time

    with SessionStore() as store:
        summaries = store.list()
    if as_json:
        emit_json({"path": str(store.path), "sessions": [s.to_dict() for s in summaries]})
        return
    if not summaries:
        typer.echo(f"no saved sessions yet (they are kept in {store.path})")
        return
    table = Table(title="Sessions", title_justify="left", caption=Text(str(store.path)))
    table.add_column("id", no_wrap=True)
    table.add_column("title")
    table.add_column("model")
    table.add_column("messages", justify="right")
    table.add_column("updated", no_wrap=True)
    for s in summaries:
        table.add_row(
            s.id,
            Text(_printable(s.title)) if s.title else Text("(untitled)", style="dim"),
            Text(_printable(s.model)),  # Text, not a str: a "[" in a title is not Rich markup
            str(s.messages),
            local_time(s.updated),
        )
    console().print(table)


@sessions_app.command()
def show(session_id: IdArg) -> None:
    """A saved conversation, system prompt first, each message under its role."""
    from rich.text import Text

    from scheda.stores.sessions import SessionStore, local_time

    with SessionStore() as store:
        data = store.export_json(session_id)
    out = console()
    out.print(
        Text.assemble(
            ("session ", "dim"),
            (data["id"], "bold"),
            ("  model ", "dim"),
            _printable(data["model"]),
            ("  updated ", "dim"),
            local_time(data["updated"]),
        )
    )
    if data["title"]:
        out.print(Text(_printable(data["title"]), style="bold"))
    if data["params"]:
        out.print(Text("params " + json.dumps(data["params"], ensure_ascii=False), "dim"))
    turns = ([("system", data["system"], None)] if data["system"] else []) + [
        (m["role"], m["content"], m["created"]) for m in data["messages"]
    ]
    if not turns:
        out.print(Text("\n(no messages yet)", style="dim"))
    for role, content, created in turns:
        label = Text(f"\n{role}", style=ROLE_STYLES.get(role, "bold"))
        if created is not None:
            label.append(f"  {local_time(created)}", style="dim")
        out.print(label)
        out.print(Text(_printable(content)))  # Text: never read as Rich markup


@sessions_app.command()
def export(
    session_id: IdArg,
    fmt: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="markdown or json.")
    ] = ExportFormat.markdown,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", dir_okay=False, help="Write to this file, not stdout."),
    ] = None,
) -> None:
    """A whole session as Markdown or JSON, to stdout or a file."""
    from scheda.stores.sessions import SessionStore

    with SessionStore() as store:
        if fmt is ExportFormat.json:
            data = store.export_json(session_id)
            text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
            full_id = data["id"]
        else:
            text = store.export_markdown(session_id)
            full_id = store.get(session_id).id
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise SchedaError(f"cannot write {output}: {exc.strerror or exc}") from exc
    typer.echo(f"exported session {full_id} as {fmt.value} to {output}")


@sessions_app.command()
def delete(
    session_id: IdArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
) -> None:
    """Delete a session and its messages (asks first unless --yes)."""
    from scheda.stores.sessions import SessionStore

    with SessionStore() as store:
        found = store.summary(session_id)
        question = f"delete session {found.id} {_described(found.title, found.messages)}?"
        if not yes and not typer.confirm(question, default=False):
            typer.echo("nothing deleted", err=True)
            raise typer.Exit(1)
        gone = store.delete(found.id)
    typer.echo(f"deleted session {gone.id} {_described(gone.title, gone.messages)}")
