"""Evaluation runs and their per-item results, in one SQLite file beside the sessions.

The same file keeps `scheda compare`'s comparisons, one row each, whole.

A run is one task on one model with one configuration. Each item's result is
committed as soon as it is known, so an interrupted run loses at most the
item in progress; running the same command again finds the unfinished run
(same model file, task and configuration) and goes on from there.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheda import settings
from scheda.errors import SessionStoreError
from scheda.evaluation.base import ItemResult

FILENAME = "evals.sqlite3"

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS runs (
        id        TEXT PRIMARY KEY,
        identity  TEXT NOT NULL,
        model     TEXT NOT NULL,
        path      TEXT NOT NULL,
        task      TEXT NOT NULL,
        config    TEXT NOT NULL,
        items     INTEGER NOT NULL,
        created   REAL NOT NULL,
        finished  REAL,
        summary   TEXT
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS results (
        run_id  TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        key     TEXT NOT NULL,
        grp     TEXT NOT NULL DEFAULT '',
        metrics TEXT NOT NULL,
        detail  TEXT NOT NULL,
        PRIMARY KEY (run_id, key)
    )
    """,
    "CREATE INDEX IF NOT EXISTS runs_by_identity ON runs(identity, finished)",
    # `scheda compare`'s tables, each kept whole: the figures, how they were obtained, the
    # machine and versions.
    """
    CREATE TABLE IF NOT EXISTS comparisons (
        id        TEXT PRIMARY KEY,
        reference TEXT NOT NULL,
        models    INTEGER NOT NULL,
        text      TEXT NOT NULL,
        created   REAL NOT NULL,
        record    TEXT NOT NULL
    )
    """,
)


@dataclass
class Run:
    id: str
    model: str
    path: str
    task: str
    config: dict[str, Any]
    items: int
    created: float
    finished: float | None
    summary: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def identity(path: Path, task: str, config: dict[str, Any]) -> str:
    """What makes two runs the same run: the model file (and its size), the task, the config."""
    size = path.stat().st_size if path.is_file() else 0
    text = json.dumps([str(path.resolve()), size, task, config], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _run(row: sqlite3.Row) -> Run:
    return Run(
        id=row["id"],
        model=row["model"],
        path=row["path"],
        task=row["task"],
        config=json.loads(row["config"]),
        items=row["items"],
        created=row["created"],
        finished=row["finished"],
        summary=json.loads(row["summary"]) if row["summary"] else None,
    )


class EvalStore:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or settings.data_dir() / FILENAME
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            with self._conn:
                for statement in SCHEMA:
                    self._conn.execute(statement)
        except sqlite3.Error as exc:
            raise SessionStoreError(
                f"{self.path}: cannot use the evaluation store ({exc})"
            ) from exc
        self._lock = threading.Lock()

    def start(self, model: str, path: Path, task: str, config: dict[str, Any], items: int) -> Run:
        """The unfinished run with this identity, or a new one."""
        ident = identity(path, task, config)
        with self._lock, self._conn:
            row = self._conn.execute(
                "SELECT * FROM runs WHERE identity = ? AND finished IS NULL "
                "ORDER BY created DESC LIMIT 1",
                (ident,),
            ).fetchone()
            if row is not None:
                return _run(row)
            run_id = secrets.token_hex(4)
            now = time.time()
            self._conn.execute(
                "INSERT INTO runs (id, identity, model, path, task, config, items, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, ident, model, str(path), task, json.dumps(config), items, now),
            )
        return Run(run_id, model, str(path), task, config, items, now, None, None)

    def done(self, run_id: str) -> set[str]:
        with self._lock:
            rows = self._conn.execute("SELECT key FROM results WHERE run_id = ?", (run_id,))
            return {r["key"] for r in rows}

    def add(self, run_id: str, result: ItemResult) -> None:
        """One item's result, committed now."""
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO results (run_id, key, grp, metrics, detail) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    run_id,
                    result.key,
                    result.group,
                    json.dumps(result.metrics),
                    json.dumps(result.detail, default=str),
                ),
            )

    def results(self, run_id: str) -> list[ItemResult]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM results WHERE run_id = ? ORDER BY rowid", (run_id,)
            ).fetchall()
        return [
            ItemResult(r["key"], json.loads(r["metrics"]), json.loads(r["detail"]), r["grp"])
            for r in rows
        ]

    def finish(self, run_id: str, summary: dict[str, Any]) -> None:
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE runs SET finished = ?, summary = ? WHERE id = ?",
                (time.time(), json.dumps(summary), run_id),
            )

    def runs(self) -> list[Run]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM runs ORDER BY created DESC").fetchall()
        return [_run(r) for r in rows]

    def get(self, run_id: str) -> Run:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM runs WHERE id LIKE ?", (run_id + "%",)
            ).fetchall()
        if len(rows) != 1:
            what = "no run" if not rows else f"{len(rows)} runs"
            raise SessionStoreError(f"{what} with id {run_id!r}: `scheda eval list` shows them")
        return _run(rows[0])

    def add_comparison(self, record: dict[str, Any]) -> str:
        """Store one comparison; its id (also set in the record)."""
        comparison_id = secrets.token_hex(4)
        record["id"] = comparison_id
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT INTO comparisons (id, reference, models, text, created, record) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    comparison_id,
                    record["reference"],
                    len(record["rows"]),
                    record["text"]["name"],
                    record["created"],
                    json.dumps(record, default=str),
                ),
            )
        return comparison_id

    def comparisons(self) -> list[dict[str, Any]]:
        """Every stored comparison, newest first, whole."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT record FROM comparisons ORDER BY created DESC"
            ).fetchall()
        return [json.loads(r["record"]) for r in rows]

    def comparison(self, comparison_id: str) -> dict[str, Any]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT record FROM comparisons WHERE id LIKE ?", (comparison_id + "%",)
            ).fetchall()
        if len(rows) != 1:
            what = "no comparison" if not rows else f"{len(rows)} comparisons"
            raise SessionStoreError(
                f"{what} with id {comparison_id!r}: `scheda compare list` shows them"
            )
        record: dict[str, Any] = json.loads(rows[0]["record"])
        return record

    def close(self) -> None:
        self._conn.close()
