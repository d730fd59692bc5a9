"""Evaluation runs and their per-item results, in one SQLite file beside the sessions.

The same file keeps `scheda compare`'s comparisons (stores/comparisons.py); its
schema and migrations are in stores/evals_file.py, its opening and locking in
stores/sqlite.py.

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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheda.errors import EvalStoreError
from scheda.evaluation.base import ItemResult
from scheda.stores.evals_file import FILENAME, SCHEMA
from scheda.stores.sqlite import Store

__all__ = ["FILENAME", "EvalStore", "Run", "identity"]


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


class EvalStore(Store):
    """The runs in the evaluation file; `close()` when done."""

    schema = SCHEMA
    error = EvalStoreError

    def start(self, model: str, path: Path, task: str, config: dict[str, Any], items: int) -> Run:
        """The unfinished run with this identity, or a new one."""
        ident = identity(path, task, config)
        with self._transaction(write=True) as conn:
            row = conn.execute(
                "SELECT * FROM runs WHERE identity = ? AND finished IS NULL "
                "ORDER BY created DESC LIMIT 1",
                (ident,),
            ).fetchone()
            if row is not None:
                return _run(row)
            run_id = secrets.token_hex(4)
            now = time.time()
            conn.execute(
                "INSERT INTO runs (id, identity, model, path, task, config, items, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, ident, model, str(path), task, json.dumps(config), items, now),
            )
        return Run(run_id, model, str(path), task, config, items, now, None, None)

    def finished_run(self, path: Path, task: str, config: dict[str, Any]) -> Run | None:
        """The latest finished run with this identity, if there is one."""
        with self._transaction(write=False) as conn:
            row = conn.execute(
                "SELECT * FROM runs WHERE identity = ? AND finished IS NOT NULL "
                "ORDER BY finished DESC LIMIT 1",
                (identity(path, task, config),),
            ).fetchone()
        return None if row is None else _run(row)

    def done(self, run_id: str) -> set[str]:
        with self._transaction(write=False) as conn:
            rows = conn.execute("SELECT key FROM results WHERE run_id = ?", (run_id,))
            return {r["key"] for r in rows}

    def add(self, run_id: str, result: ItemResult) -> None:
        """One item's result, committed now."""
        with self._transaction(write=True) as conn:
            conn.execute(
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
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT * FROM results WHERE run_id = ? ORDER BY rowid", (run_id,)
            ).fetchall()
        return [
            ItemResult(r["key"], json.loads(r["metrics"]), json.loads(r["detail"]), r["grp"])
            for r in rows
        ]

    def finish(self, run_id: str, summary: dict[str, Any]) -> None:
        with self._transaction(write=True) as conn:
            conn.execute(
                "UPDATE runs SET finished = ?, summary = ? WHERE id = ?",
                (time.time(), json.dumps(summary), run_id),
            )

    def runs(self) -> list[Run]:
        with self._transaction(write=False) as conn:
            rows = conn.execute("SELECT * FROM runs ORDER BY created DESC").fetchall()
        return [_run(r) for r in rows]

    def get(self, run_id: str) -> Run:
        with self._transaction(write=False) as conn:
            rows = conn.execute("SELECT * FROM runs WHERE id LIKE ?", (run_id + "%",)).fetchall()
        if len(rows) != 1:
            what = "no run" if not rows else f"{len(rows)} runs"
            raise EvalStoreError(f"{what} with id {run_id!r}: `scheda eval list` shows them")
        return _run(rows[0])
