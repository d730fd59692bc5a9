"""The arena's battles: a prompt, two models' answers, the person's vote, in a file of their own.

A battle is stored when it starts (the prompt, the sampling, which model is in
which column, the models' files and the machine), each answer when it ends
(however it ends: a client that leaves keeps what was said), and the vote once.
A process killed at any point leaves the rows it had committed (stores/sqlite.py:
WAL, one short transaction per write), so a restart finds every battle.

The vote is taken once: the update only matches a battle that has none, so two
votes racing from two clients store one. A battle whose answer failed (a model
that could not load, or vanished mid-answer) cannot be voted: it is not a game.

What a blind battle shows before its vote is `Battle.view()`'s business: no
model, file or engine of either column, and nothing derived from them.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from scheda.errors import ArenaStoreError, BattleNotFoundError, BattleStateError, UsageError
from scheda.stores.sqlite import Schema, Store, statements

FILENAME = "arena.sqlite3"
SIDES = ("a", "b")
# A is better, B is better, a tie, both bad: the four answers Chatbot Arena asks for.
OUTCOMES = ("a", "b", "tie", "bad")

MIGRATIONS = (
    statements(
        """
    CREATE TABLE battles (
        id       TEXT PRIMARY KEY,
        created  REAL NOT NULL,
        prompt   TEXT NOT NULL,
        system   TEXT NOT NULL DEFAULT '',
        tag      TEXT NOT NULL DEFAULT '',
        blind    INTEGER NOT NULL,
        sampling TEXT NOT NULL,
        machine  TEXT NOT NULL,
        side_a   TEXT NOT NULL,
        side_b   TEXT NOT NULL,
        vote     TEXT,
        voted    REAL
    )
    """,
        "CREATE INDEX battles_by_tag ON battles(tag, created)",
    ),
)
SCHEMA = Schema(FILENAME, "arena file", MIGRATIONS)


@dataclass
class Side:
    """One column of a battle: the model that answers in it and, once it ends, its answer."""

    model: str  # the id it is served or opened as
    path: str
    engine: str
    sha256: str = ""  # the file's (or the folder's weights'), filled when the answer ends
    answer: str | None = None  # None until the answer ends
    finish_reason: str | None = None  # "stop", "length", "cancelled", or "error"
    error: str | None = None
    completion_tokens: int | None = None
    tokens_per_s: float | None = None
    first_token_s: float | None = None

    @property
    def ended(self) -> bool:
        return self.answer is not None or self.error is not None

    def result(self) -> dict[str, Any]:
        """What the answer was, with nothing that names the model."""
        return {
            "answer": self.answer,
            "finish_reason": self.finish_reason,
            "error": self.error,
            "completion_tokens": self.completion_tokens,
            "tokens_per_s": self.tokens_per_s,
            "first_token_s": self.first_token_s,
        }

    def identity(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "path": self.path,
            "engine": self.engine,
            "sha256": self.sha256,
        }


@dataclass
class Battle:
    id: str
    created: float
    prompt: str
    a: Side
    b: Side
    sampling: dict[str, Any]
    machine: dict[str, Any]
    system: str = ""
    tag: str = ""
    blind: bool = True
    vote: str | None = None
    voted: float | None = None

    def side(self, name: str) -> Side:
        return self.a if name == "a" else self.b

    @property
    def state(self) -> str:
        """answering, failed (an answer could not be made), answered, or voted."""
        if self.vote is not None:
            return "voted"
        if self.a.error is not None or self.b.error is not None:
            return "failed"
        return "answered" if self.a.ended and self.b.ended else "answering"

    @property
    def revealed(self) -> bool:
        """Whether the page may know who answered: after the vote, or in a battle not blind."""
        return not self.blind or self.vote is not None

    def view(self) -> dict[str, Any]:
        """The battle as the API and the terminal show it: models named only once revealed."""
        shown: dict[str, Any] = {
            "id": self.id,
            "created": self.created,
            "prompt": self.prompt,
            "system": self.system,
            "tag": self.tag,
            "blind": self.blind,
            "state": self.state,
            "vote": self.vote,
            "voted": self.voted,
            "sampling": self.sampling,
        }
        for name in SIDES:
            side = self.side(name)
            shown[name] = {**side.result(), **(side.identity() if self.revealed else {})}
        if self.revealed:
            shown["machine"] = self.machine
        return shown

    def record(self) -> dict[str, Any]:
        """Everything stored, for the export (a blind battle not yet voted keeps its secret)."""
        whole = self.view()
        if self.revealed:
            whole["winner"] = self.winner()
        return whole

    def winner(self) -> str | None:
        """The model the vote chose, if it chose one."""
        if self.vote in SIDES:
            return self.side(self.vote).model
        return None


def _side(text: str) -> Side:
    return Side(**json.loads(text))


def _battle(row: Any) -> Battle:
    return Battle(
        id=row["id"],
        created=row["created"],
        prompt=row["prompt"],
        system=row["system"],
        tag=row["tag"],
        blind=bool(row["blind"]),
        sampling=json.loads(row["sampling"]),
        machine=json.loads(row["machine"]),
        a=_side(row["side_a"]),
        b=_side(row["side_b"]),
        vote=row["vote"],
        voted=row["voted"],
    )


class ArenaStore(Store):
    """The battles file; `close()` when done."""

    schema = SCHEMA
    error = ArenaStoreError

    def start(
        self,
        prompt: str,
        a: Side,
        b: Side,
        sampling: dict[str, Any],
        machine: dict[str, Any],
        system: str = "",
        tag: str = "",
        blind: bool = True,
    ) -> Battle:
        """A new battle, stored before either model says a word."""
        if a.model == b.model:
            raise UsageError(f"a battle needs two different models, not {a.model} twice")
        battle = Battle(
            id=secrets.token_hex(6),
            created=time.time(),
            prompt=prompt,
            system=system,
            tag=tag.strip(),
            blind=blind,
            sampling=sampling,
            machine=machine,
            a=a,
            b=b,
        )
        with self._transaction(write=True) as conn:
            conn.execute(
                "INSERT INTO battles (id, created, prompt, system, tag, blind, sampling, machine, "
                "side_a, side_b) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    battle.id,
                    battle.created,
                    prompt,
                    system,
                    battle.tag,
                    int(blind),
                    json.dumps(sampling),
                    json.dumps(machine),
                    json.dumps(asdict(a)),
                    json.dumps(asdict(b)),
                ),
            )
        return battle

    def finish(self, battle_id: str, name: str, side: Side) -> None:
        """Store one column's answer (or its error) as it ended."""
        if name not in SIDES:
            raise ValueError(f"no side {name!r}")
        with self._transaction(write=True) as conn:
            conn.execute(
                f"UPDATE battles SET side_{name} = ? WHERE id = ?",  # name is one of SIDES
                (json.dumps(asdict(side)), battle_id),
            )

    def vote(self, battle_id: str, outcome: str) -> Battle:
        """The person's verdict, stored once; the battle, revealed."""
        if outcome not in OUTCOMES:
            raise UsageError(f"the vote {outcome!r} is none of {', '.join(OUTCOMES)}")
        with self._transaction(write=True) as conn:
            battle = self._one(conn, battle_id)
            if battle.vote is not None:
                raise BattleStateError(f"battle {battle.id} was voted already ({battle.vote})")
            if battle.state == "failed":
                raise BattleStateError(
                    f"battle {battle.id} cannot be voted: an answer failed; start another"
                )
            if battle.state == "answering":
                raise BattleStateError(
                    f"battle {battle.id} is still answering: vote when both answers end"
                )
            battle.vote, battle.voted = outcome, time.time()
            conn.execute(
                "UPDATE battles SET vote = ?, voted = ? WHERE id = ? AND vote IS NULL",
                (outcome, battle.voted, battle.id),
            )
        return battle

    def get(self, battle_id: str) -> Battle:
        """A battle by id or unique id prefix."""
        with self._transaction(write=False) as conn:
            return self._one(conn, battle_id)

    def _one(self, conn: Any, battle_id: str) -> Battle:
        escaped = battle_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = conn.execute(
            "SELECT * FROM battles WHERE id = ? OR id LIKE ? ESCAPE '\\' LIMIT 2",
            (battle_id, escaped + "%"),
        ).fetchall()
        exact = [r for r in rows if r["id"] == battle_id]
        if exact:
            return _battle(exact[0])
        if len(rows) != 1 or not battle_id:
            what = "no battle" if not rows else "several battles"
            raise BattleNotFoundError(f"{what} with id {battle_id!r}: the arena's list shows them")
        return _battle(rows[0])

    def battles(self, tag: str | None = None, voted: bool = False) -> list[Battle]:
        """Every battle (with `tag`, that tag's; `voted`, the voted ones), newest first."""
        return list(self._select(tag, voted, newest_first=True))

    def _select(self, tag: str | None, voted: bool, newest_first: bool) -> Iterator[Battle]:
        sql, args = "SELECT * FROM battles WHERE 1", []
        if tag:
            sql += " AND tag = ?"
            args.append(tag.strip())
        if voted:
            sql += " AND vote IS NOT NULL"
        sql += " ORDER BY created " + ("DESC" if newest_first else "ASC")
        with self._transaction(write=False) as conn:
            rows = conn.execute(sql, args).fetchall()
        return (_battle(r) for r in rows)

    def games(self, tag: str | None = None) -> list[tuple[str, str, str]]:
        """The voted battles as (model in A, model in B, vote), oldest first, for the ratings."""
        return [(b.a.model, b.b.model, b.vote or "") for b in self._select(tag, True, False)]

    def export(self) -> Iterator[dict[str, Any]]:
        """Every battle, oldest first, as a JSON-ready record."""
        return (b.record() for b in self._select(None, False, newest_first=False))

    def tags(self) -> list[str]:
        with self._transaction(write=False) as conn:
            rows = conn.execute("SELECT DISTINCT tag FROM battles WHERE tag != '' ORDER BY tag")
            return [r[0] for r in rows.fetchall()]
