"""The terminal chat: turns, slash commands, a history that fits the context, saved as it goes.

Every message is written to the session store the moment it exists: the
question before the model answers, the answer when it ends (or is stopped
with Ctrl-C). A process killed mid-answer loses only that unfinished answer.

When the history outgrows the context, the oldest turns leave the prompt
first (they stay in the store); the system prompt is always kept, and the
user is told what was left out.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape

from scheda import sampling as options
from scheda.display.terminal import ctrl_c_cancels
from scheda.engines.base import Engine, Message
from scheda.errors import SchedaError, UsageError
from scheda.sampling import Sampling
from scheda.stores.sessions import Session, SessionStore
from scheda.talk.prompt_fit import fit_history

HELP = """\
/system TEXT   set the system prompt (no TEXT: show it; /system - removes it)
/params K=V    set sampling options, e.g. /params temperature=0.2 max_tokens=128 (none: show)
/reset         forget the turns of this session (the system prompt stays)
/history       show the turns so far
/save [FILE]   write the session as Markdown (default: <id>.md)
/exit          leave (Ctrl-D too); Ctrl-C stops an answer in progress
"""

# The options /params sets: those the declarations mark settable in a chat (scheda/sampling.py).
SETTABLE = options.chat_options()


class ChatLoop:
    """One conversation between a user and an engine, kept in a session."""

    def __init__(
        self,
        engine: Engine,
        store: SessionStore,
        session: Session,
        sampling: Sampling,
        console: Console,
    ) -> None:
        self.engine = engine
        self.store = store
        self.session = session
        self.sampling = sampling
        self.console = console

    # The loop ---------------------------------------------------------------------------

    def run(self, read: Callable[[], str]) -> None:
        """Read lines until /exit or end of input; `read` raises EOFError at the end."""
        while True:
            try:
                line = read()
            except EOFError:
                return
            except KeyboardInterrupt:
                self.console.print("[dim](Ctrl-C stops an answer; /exit or Ctrl-D leaves)[/dim]")
                continue
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not self.command(line):
                    return
                continue
            self.turn(line)

    def turn(self, question: str) -> str:
        """Ask, stream the answer, save both; returns the answer."""
        self.store.add_message(self.session.id, "user", question)
        messages = self.prompt_messages()
        answer: list[str] = []

        def show(_: int, text: str) -> None:
            answer.append(text)
            self.console.out(text, end="", highlight=False)
            self.console.file.flush()

        with ctrl_c_cancels() as cancel:
            try:
                result = self.engine.chat(messages, self.sampling, show, cancel)
            except SchedaError as exc:
                self.console.print(f"\n[red]error:[/red] {escape(str(exc))}")
                return ""
        self.console.out("")
        if result.finish_reason == "cancelled":
            self.console.print("[dim](stopped; the answer so far is kept)[/dim]")
        self.store.add_message(self.session.id, "assistant", result.text, result.completion_tokens)
        return result.text

    # The history ------------------------------------------------------------------------

    def prompt_messages(self) -> list[Message]:
        """System prompt + as many of the latest turns as fit, leaving room for the answer."""
        history = self.store.messages(self.session.id)
        messages, dropped = fit_history(
            self.engine, self.session.system, history, self.sampling.max_tokens
        )
        if dropped:
            self.console.print(
                f"[yellow](the {dropped} oldest turn{'s' if dropped != 1 else ''} no longer fit "
                f"the {self.engine.context:,}-token context: left out of the prompt, kept in the "
                "session)[/yellow]"
            )
        return messages

    # Slash commands ---------------------------------------------------------------------

    def command(self, line: str) -> bool:
        """Run one slash command; False means leave."""
        name, _, rest = line.partition(" ")
        rest = rest.strip()
        if name in ("/exit", "/quit", "/bye"):
            return False
        handlers: dict[str, Callable[[str], None]] = {
            "/system": self._system,
            "/params": self._params,
            "/reset": self._reset,
            "/history": self._history,
            "/save": self._save,
            "/help": lambda _: self.console.print(HELP, highlight=False),
        }
        handler = handlers.get(name)
        if handler is None:
            self.console.print(f"[red]unknown command {escape(name)}[/red]: /help lists them")
            return True
        try:
            handler(rest)
        except SchedaError as exc:
            self.console.print(f"[red]error:[/red] {escape(str(exc))}")
        return True

    def _system(self, text: str) -> None:
        if not text:
            if self.session.system:
                self.console.out(self.session.system, highlight=False)
            else:
                self.console.print("[dim](no system prompt)[/dim]")
            return
        system = None if text == "-" else text
        self.store.set_system(self.session.id, system)
        self.session = self.store.get(self.session.id)
        self.console.print("[dim](system prompt set)[/dim]" if system else "[dim](removed)[/dim]")

    def _params(self, text: str) -> None:
        if text:
            for item in shlex.split(text):
                key, sep, value = item.partition("=")
                if not sep or key not in SETTABLE:
                    keys = ", ".join(SETTABLE)
                    raise UsageError(f"{item!r}: write KEY=VALUE with KEY one of {keys}")
                setattr(self.sampling, key, options.parse(key, value))
            self.store.set_params(self.session.id, self.sampling.to_dict())
        shown = ", ".join(f"{k}={getattr(self.sampling, k)}" for k in SETTABLE)
        self.console.print(shown, highlight=False, markup=False)  # stop strings are the user's

    def _reset(self, _: str) -> None:
        self.store.reset(self.session.id)
        self.console.print("[dim](history cleared; the system prompt stays)[/dim]")

    def _history(self, _: str) -> None:
        messages = self.store.messages(self.session.id)
        if not messages:
            self.console.print("[dim](no turns yet)[/dim]")
        for m in messages:
            colour = "cyan" if m.role == "user" else "green"
            self.console.print(f"[{colour}]{escape(m.role)}:[/{colour}] ", end="")
            self.console.out(m.content, highlight=False)

    def _save(self, name: str) -> None:
        from pathlib import Path

        path = Path(name or f"{self.session.id}.md").expanduser()
        path.write_text(self.store.export_markdown(self.session.id), encoding="utf-8")
        self.console.print(f"[dim](saved to {escape(str(path))})[/dim]")
