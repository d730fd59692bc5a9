"""Saved chat sessions: one SQLite file that the CLI and the server share.

A session survives the process, so `scheda sessions` can list it later; the
file is opened, locked and migrated as every store's is (stores/sqlite.py),
and every message is committed in its own short transaction.

The system prompt is a column of the session, not a message, so it is sent at
every turn and survives `reset`. A session id is 8 random hex characters; any
unique start of one is accepted, as git accepts a short commit id.
"""

from __future__ import annotations

import builtins
import json
import secrets
import sqlite3
import time
import unicodedata
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from scheda import settings
from scheda.engines.base import Message
from scheda.errors import SessionNotFoundError, SessionStoreError
from scheda.stores.sqlite import Schema, Store, statements

FILENAME = "sessions.sqlite3"
ROLES = ("system", "user", "assistant")
TITLE_LEN = 60
ID_BYTES = 4  # 8 hex characters: short to type, and a store holds few enough sessions

# The file's migrations, oldest first: the first is the schema scheda has always written
# (version 1), unchanged, so that every sessions file on a user's disk is read as it is.
MIGRATIONS = (
    statements(
        """
    CREATE TABLE sessions (
        id      TEXT PRIMARY KEY,
        model   TEXT NOT NULL,
        system  TEXT,
        params  TEXT NOT NULL DEFAULT '{}',
        title   TEXT,
        created REAL NOT NULL,
        updated REAL NOT NULL
    )
    """,
        """
    CREATE TABLE messages (
        id         INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        role       TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
        content    TEXT NOT NULL,
        created    REAL NOT NULL,
        tokens     INTEGER
    )
    """,
        "CREATE INDEX messages_by_session ON messages(session_id, id)",
        "CREATE INDEX sessions_by_updated ON sessions(updated)",
    ),
)
# Sessions files were versioned from the start: an unversioned file with tables is not one.
SCHEMA = Schema(FILENAME, "sessions file", MIGRATIONS)


def default_path() -> Path:
    """Where the sessions file lives unless a `path` is given."""
    return settings.data_dir() / FILENAME


def make_title(text: str) -> str | None:
    """A one-line title from a user message: control characters gone, spaces collapsed, capped.

    None for a message with no visible text, so a later user message names the session.
    """
    line = " ".join("".join(map(_visible, text)).split())
    if not line:
        return None
    return line if len(line) <= TITLE_LEN else line[: TITLE_LEN - 1].rstrip() + "…"


def _visible(ch: str) -> str:
    """A control character (newline, escape) becomes a space; other invisible ones go."""
    category = unicodedata.category(ch)
    return ch if category[0] != "C" else " " if category == "Cc" else ""


def local_time(ts: float, seconds: bool = False) -> str:
    """A stored timestamp (seconds since the epoch) as the user's local wall-clock time."""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


@dataclass
class Session:
    """One conversation's settings; its messages are read with `SessionStore.messages`."""

    id: str
    model: str
    system: str | None
    params: dict[str, Any] = field(default_factory=dict)
    title: str | None = None
    created: float = 0.0
    updated: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SessionSummary:
    """A row of `scheda sessions list`: what a session is, without its messages."""

    id: str
    title: str | None
    model: str
    created: float
    updated: float
    messages: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_role(role: str) -> None:
    if role not in ROLES:
        # A bug, not a user's mistake: scheda's callers pass the role themselves, never a user.
        raise ValueError(f"a message role is one of {', '.join(ROLES)}, not {role!r}")


def _params_json(params: dict[str, Any] | None) -> str:
    if params is None:
        return "{}"
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict, not {type(params).__name__}")
    return json.dumps(params, sort_keys=True, ensure_ascii=False)


def _session(row: sqlite3.Row) -> Session:
    return Session(
        id=row["id"],
        model=row["model"],
        system=row["system"],
        params=json.loads(row["params"]),
        title=row["title"],
        created=row["created"],
        updated=row["updated"],
    )


class SessionStore(Store):
    """The sessions file, opened (and set up or migrated on first use) by the constructor.

    Every method that takes a session id also takes a unique start of one.
    Use it as a context manager, or call `close()`.
    """

    schema = SCHEMA
    error = SessionStoreError

    @staticmethod
    def _resolve(conn: sqlite3.Connection, ref: str) -> str:
        """The full id for an id or a unique start of one."""
        ref = ref.strip().lower()
        hint = "`scheda sessions list` shows the ids"
        if not ref:
            raise SessionNotFoundError(f"give a session id: {hint}")
        if conn.execute("SELECT 1 FROM sessions WHERE id = ?", (ref,)).fetchone():
            return ref
        ids: list[str] = [
            row[0]
            for row in conn.execute(
                "SELECT id FROM sessions WHERE substr(id, 1, ?) = ? ORDER BY id LIMIT 6",
                (len(ref), ref),
            )
        ]
        if not ids:
            raise SessionNotFoundError(f"no session {ref!r}: {hint}")
        if len(ids) > 1:
            shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
            raise SessionNotFoundError(
                f"session id {ref!r} is ambiguous ({shown}): give more characters; {hint}"
            )
        return ids[0]

    @staticmethod
    def _insert(
        conn: sqlite3.Connection,
        session_id: str,
        role: str,
        content: str,
        tokens: int | None,
        now: float,
    ) -> None:
        conn.execute(
            "INSERT INTO messages (session_id, role, content, created, tokens) "
            "VALUES (?, ?, ?, ?, ?)",
            (session_id, role, content, now, tokens),
        )
        conn.execute(
            "UPDATE sessions SET updated = max(updated, ?), title = coalesce(title, ?) "
            "WHERE id = ?",
            (now, make_title(content) if role == "user" else None, session_id),
        )

    @staticmethod
    def _summary(conn: sqlite3.Connection, session_id: str) -> SessionSummary:
        row = conn.execute(
            "SELECT id, title, model, created, updated, "
            "(SELECT count(*) FROM messages WHERE session_id = sessions.id) AS n "
            "FROM sessions WHERE id = ?",
            (session_id,),
        ).fetchone()
        return SessionSummary(
            row["id"], row["title"], row["model"], row["created"], row["updated"], row["n"]
        )

    # --- sessions -----------------------------------------------------------------------

    def create(
        self, model: str, system: str | None = None, params: dict[str, Any] | None = None
    ) -> Session:
        """Start a session for a model; the system prompt and sampling params are kept with it."""
        encoded = _params_json(params)
        now = time.time()
        with self._transaction(write=True) as conn:
            # Under the write lock no other process can take the id between check and insert.
            while True:
                session_id = secrets.token_hex(ID_BYTES)
                if not conn.execute(
                    "SELECT 1 FROM sessions WHERE id = ?", (session_id,)
                ).fetchone():
                    break
            conn.execute(
                "INSERT INTO sessions (id, model, system, params, title, created, updated) "
                "VALUES (?, ?, ?, ?, NULL, ?, ?)",
                (session_id, model, system, encoded, now, now),
            )
        return Session(session_id, model, system, json.loads(encoded), None, now, now)

    def get(self, session_id: str) -> Session:
        """A session by id or unique id prefix; `SessionNotFoundError` if none or several match."""
        with self._transaction(write=False) as conn:
            full = self._resolve(conn, session_id)
            row = conn.execute("SELECT * FROM sessions WHERE id = ?", (full,)).fetchone()
        return _session(row)

    def summary(self, session_id: str) -> SessionSummary:
        """What `list` shows for one session (a delete confirmation needs the message count)."""
        with self._transaction(write=False) as conn:
            return self._summary(conn, self._resolve(conn, session_id))

    def set_system(self, session_id: str, text: str | None) -> None:
        """Replace the system prompt (None or "" removes it); the messages stay."""
        with self._transaction(write=True) as conn:
            full = self._resolve(conn, session_id)
            conn.execute(
                "UPDATE sessions SET system = ?, updated = max(updated, ?) WHERE id = ?",
                (text or None, time.time(), full),
            )

    def set_params(self, session_id: str, params: dict[str, Any]) -> None:
        """Replace the session's params (sampling options, engine settings) as a whole."""
        encoded = _params_json(params)
        with self._transaction(write=True) as conn:
            full = self._resolve(conn, session_id)
            conn.execute(
                "UPDATE sessions SET params = ?, updated = max(updated, ?) WHERE id = ?",
                (encoded, time.time(), full),
            )

    def rename(self, session_id: str, title: str | None) -> None:
        """Give the session a title of the user's choosing (None or "" clears it)."""
        with self._transaction(write=True) as conn:
            full = self._resolve(conn, session_id)
            conn.execute(
                "UPDATE sessions SET title = ?, updated = max(updated, ?) WHERE id = ?",
                (make_title(title or ""), time.time(), full),
            )

    def set_model(self, session_id: str, model: str) -> None:
        """Go on with another model; the conversation stays."""
        with self._transaction(write=True) as conn:
            full = self._resolve(conn, session_id)
            conn.execute(
                "UPDATE sessions SET model = ?, updated = max(updated, ?) WHERE id = ?",
                (model, time.time(), full),
            )

    def reset(self, session_id: str) -> int:
        """Forget the conversation but keep the session, its model, params and system prompt.

        The title goes too, so the next first question names the session again.
        Returns how many messages were deleted.
        """
        with self._transaction(write=True) as conn:
            full = self._resolve(conn, session_id)
            deleted = conn.execute("DELETE FROM messages WHERE session_id = ?", (full,)).rowcount
            conn.execute(
                "UPDATE sessions SET title = NULL, updated = max(updated, ?) WHERE id = ?",
                (time.time(), full),
            )
        return deleted

    def delete(self, session_id: str) -> SessionSummary:
        """Delete a session and, by the foreign key's cascade, its messages; returns what went."""
        with self._transaction(write=True) as conn:
            full = self._resolve(conn, session_id)
            gone = self._summary(conn, full)
            conn.execute("DELETE FROM sessions WHERE id = ?", (full,))
        return gone

    # --- messages -----------------------------------------------------------------------

    def add_message(
        self, session_id: str, role: str, content: str, tokens: int | None = None
    ) -> None:
        """Append one message in its own committed transaction.

        Committing each message means a crash or Ctrl-C loses at most the answer
        being generated, never the question. The first user message names the session.
        """
        _check_role(role)
        now = time.time()
        with self._transaction(write=True) as conn:
            self._insert(conn, self._resolve(conn, session_id), role, content, tokens, now)

    def add_turn(
        self,
        session_id: str,
        user: str,
        assistant: str,
        user_tokens: int | None = None,
        assistant_tokens: int | None = None,
    ) -> None:
        """Append a question and its answer in one transaction: both are saved, or neither."""
        now = time.time()
        with self._transaction(write=True) as conn:
            full = self._resolve(conn, session_id)
            self._insert(conn, full, "user", user, user_tokens, now)
            self._insert(conn, full, "assistant", assistant, assistant_tokens, now)

    def messages(self, session_id: str) -> builtins.list[Message]:
        """The stored messages, oldest first, without the session's system prompt."""
        with self._transaction(write=False) as conn:
            full = self._resolve(conn, session_id)
            rows = conn.execute(
                "SELECT role, content FROM messages WHERE session_id = ? ORDER BY id", (full,)
            ).fetchall()
        return [Message(row["role"], row["content"]) for row in rows]

    def conversation(self, session_id: str) -> builtins.list[Message]:
        """What to send an engine for the next turn: the system prompt, then the messages."""
        with self._transaction(write=False) as conn:
            full = self._resolve(conn, session_id)
            system = conn.execute("SELECT system FROM sessions WHERE id = ?", (full,)).fetchone()[0]
            rows = conn.execute(
                "SELECT role, content FROM messages WHERE session_id = ? ORDER BY id", (full,)
            ).fetchall()
        return ([Message("system", system)] if system else []) + [
            Message(row["role"], row["content"]) for row in rows
        ]

    # --- reading it all -----------------------------------------------------------------

    def export_json(self, session_id: str) -> dict[str, Any]:
        """The whole session as plain JSON data; times are seconds since the epoch."""
        with self._transaction(write=False) as conn:
            full = self._resolve(conn, session_id)
            session = _session(
                conn.execute("SELECT * FROM sessions WHERE id = ?", (full,)).fetchone()
            )
            rows = conn.execute(
                "SELECT role, content, created FROM messages WHERE session_id = ? ORDER BY id",
                (full,),
            ).fetchall()
        return {
            "id": session.id,
            "model": session.model,
            "title": session.title,
            "system": session.system,
            "params": session.params,
            "created": session.created,
            "updated": session.updated,
            "messages": [
                {"role": r["role"], "content": r["content"], "created": r["created"]} for r in rows
            ],
        }

    def export_markdown(self, session_id: str) -> str:
        """The conversation as a Markdown document: a heading per message, system prompt first."""
        data = self.export_json(session_id)
        lines = [
            f"# {data['title'] or 'Session ' + data['id']}",
            "",
            f"- session: `{data['id']}`",
            f"- model: `{data['model']}`",
            f"- created: {local_time(data['created'], seconds=True)}",
            f"- updated: {local_time(data['updated'], seconds=True)}",
        ]
        if data["params"]:
            lines.append(f"- params: `{json.dumps(data['params'], ensure_ascii=False)}`")
        turns = ([("system", data["system"])] if data["system"] else []) + [
            (m["role"], m["content"]) for m in data["messages"]
        ]
        for role, content in turns:
            lines += ["", f"## {role.capitalize()}", "", content.rstrip("\n")]
        return "\n".join(lines) + "\n"

    def list(self) -> builtins.list[SessionSummary]:
        """Every session, the most recently used (last message or change) first."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT id, title, model, created, updated, "
                "(SELECT count(*) FROM messages WHERE session_id = sessions.id) AS n "
                "FROM sessions ORDER BY updated DESC, created DESC, rowid DESC"
            ).fetchall()
        return [
            SessionSummary(r["id"], r["title"], r["model"], r["created"], r["updated"], r["n"])
            for r in rows
        ]
