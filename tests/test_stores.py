"""The SQLite base every store stands on: files written before schema versions are read whole,
a newer file is refused, a failed migration changes nothing, and writers in two processes
share a file. Real SQLite files, real processes, no mocks."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from scheda.errors import (
    ComparisonStoreError,
    EvalStoreError,
    SessionStoreError,
    StoreError,
)
from scheda.evaluation.base import ItemResult
from scheda.stores import evals_file, sessions
from scheda.stores.comparisons import ComparisonStore
from scheda.stores.evals import EvalStore, identity
from scheda.stores.sessions import SessionStore
from scheda.stores.sqlite import Schema, Store, statements

# --- the files as scheda wrote them before stores had a base (commit 485ac8c) -----------------
# The statements below are that commit's own, copied word for word: its CREATE statements,
# the pragmas it set, and the INSERTs its store methods ran (with the values they left).

SESSIONS_DDL_485AC8C = (
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
)

EVALS_DDL_485AC8C = (
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

SESSION_ROWS = [
    ("0a1b2c3d", "default", "Answer in Italian.", '{"temperature": 0.2}', "Capital?", 100.0, 105.0),
    ("9f8e7d6c", "llama-3-8b", None, "{}", None, 200.0, 200.0),
]
MESSAGE_ROWS = [
    ("0a1b2c3d", "user", "Capital of Italy?", 101.0, 7),
    ("0a1b2c3d", "assistant", "Roma.", 102.0, 3),
    ("0a1b2c3d", "user", "And of France?\nBriefly.", 104.0, None),
    ("0a1b2c3d", "assistant", "Parigi.", 105.0, None),
]


def _raw(path: Path) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(path, isolation_level=None))


def _scalar(path: Path, sql: str) -> Any:
    with _raw(path) as conn:
        return conn.execute(sql).fetchone()[0]


def _dump(path: Path) -> list[str]:
    """Every statement that rebuilds the file (schema and rows), and its version: a fingerprint."""
    with _raw(path) as conn:
        return [
            *conn.iterdump(),
            f"user_version {conn.execute('PRAGMA user_version').fetchone()[0]}",
        ]


def write_old_sessions(path: Path) -> None:
    """A sessions file as 485ac8c's SessionStore left it: version 1, WAL, its rows."""
    with _raw(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        for statement in SESSIONS_DDL_485AC8C:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        conn.executemany(
            "INSERT INTO sessions (id, model, system, params, title, created, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            SESSION_ROWS,
        )
        conn.executemany(
            "INSERT INTO messages (session_id, role, content, created, tokens) "
            "VALUES (?, ?, ?, ?, ?)",
            MESSAGE_ROWS,
        )
        conn.execute("COMMIT")


COMPARISON = {
    "reference": "/models/m-F16.gguf",
    "rows": [{"role": "reference", "path": "/models/m-F16.gguf"}, {"role": "candidate"}],
    "text": {"name": "wiki.test", "sha256": "ab"},
    "created": 300.0,
    "context": 512,
}


def write_old_evals(path: Path, model: Path, ddl: tuple[str, ...] = EVALS_DDL_485AC8C) -> None:
    """An evaluation file as 485ac8c's EvalStore left it: no version, WAL, a finished run,
    an unfinished one, their results and a comparison."""
    with _raw(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("BEGIN")
        for statement in ddl:
            conn.execute(statement)
        for run_id, config, created, finished, summary in (
            ("aaaa0001", {"shots": 5}, 10.0, 20.0, json.dumps({"items": 2, "metrics": {}})),
            ("bbbb0002", {"shots": 0}, 30.0, None, None),
        ):
            conn.execute(
                "INSERT INTO runs (id, identity, model, path, task, config, items, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    identity(model, "mmlu", config),
                    "default",
                    str(model),
                    "mmlu",
                    json.dumps(config),
                    2,
                    created,
                ),
            )
            if finished is not None:
                conn.execute(
                    "UPDATE runs SET finished = ?, summary = ? WHERE id = ?",
                    (finished, summary, run_id),
                )
            for key, acc, grp in (("q1", 1.0, "astronomy"), ("q2", 0.0, "")):
                conn.execute(
                    "INSERT OR REPLACE INTO results (run_id, key, grp, metrics, detail) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (run_id, key, grp, json.dumps({"acc": acc}), json.dumps({"pred": 1})),
                )
        if any("comparisons" in statement for statement in ddl):
            record = {**COMPARISON, "id": "cccc0003"}
            conn.execute(
                "INSERT INTO comparisons (id, reference, models, text, created, record) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                ("cccc0003", record["reference"], 2, "wiki.test", 300.0, json.dumps(record)),
            )
        conn.execute("COMMIT")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + bytes(60))
    return path


# --- files written before: read whole ---------------------------------------------------------


def test_an_old_sessions_file_is_version_1_and_read_whole(tmp_path: Path) -> None:
    path = tmp_path / sessions.FILENAME
    write_old_sessions(path)
    before = _dump(path)
    with SessionStore(path) as store:
        listed = [(s.id, s.title, s.model, s.created, s.updated, s.messages) for s in store.list()]
        assert listed == [
            ("9f8e7d6c", None, "llama-3-8b", 200.0, 200.0, 0),
            ("0a1b2c3d", "Capital?", "default", 100.0, 105.0, 4),
        ]
        whole = store.export_json("0a1b")
        assert (whole["system"], whole["params"]) == ("Answer in Italian.", {"temperature": 0.2})
        assert [(m["role"], m["content"], m["created"]) for m in whole["messages"]] == [
            (role, content, created) for _, role, content, created, _ in MESSAGE_ROWS
        ]
        assert store.get("9f8e").system is None
    assert _dump(path) == before  # recognised as it is: nothing rewritten


def test_an_unversioned_evaluation_file_is_migrated_with_nothing_lost(
    tmp_path: Path, model: Path
) -> None:
    path = tmp_path / evals_file.FILENAME
    write_old_evals(path, model)
    assert _scalar(path, "PRAGMA user_version") == 0
    rows_before = [line for line in _dump(path) if line.startswith("INSERT")]
    with EvalStore(path) as store:
        runs = {r.id: r for r in store.runs()}
        assert [r.id for r in store.runs()] == ["bbbb0002", "aaaa0001"]  # newest first
        done = runs["aaaa0001"]
        assert (done.model, done.path, done.task, done.config, done.items) == (
            "default",
            str(model),
            "mmlu",
            {"shots": 5},
            2,
        )
        assert (done.created, done.finished, done.summary) == (
            10.0,
            20.0,
            {"items": 2, "metrics": {}},
        )
        assert runs["bbbb0002"].finished is None and runs["bbbb0002"].summary is None
        for run_id in runs:
            assert store.results(run_id) == [
                ItemResult("q1", {"acc": 1.0}, {"pred": 1}, "astronomy"),
                ItemResult("q2", {"acc": 0.0}, {"pred": 1}, ""),
            ]
        # The unfinished run is found again by its identity and goes on.
        assert store.start("default", model, "mmlu", {"shots": 0}, 2).id == "bbbb0002"
        assert store.done("bbbb0002") == {"q1", "q2"}
    with ComparisonStore(path) as comparisons:
        assert comparisons.list() == [{**COMPARISON, "id": "cccc0003"}]
        assert comparisons.get("cccc")["text"] == COMPARISON["text"]
    assert _scalar(path, "PRAGMA user_version") == evals_file.SCHEMA.version == 1
    assert [line for line in _dump(path) if line.startswith("INSERT")] == rows_before


def test_an_evaluation_file_from_before_comparisons_gains_their_table(
    tmp_path: Path, model: Path
) -> None:
    path = tmp_path / evals_file.FILENAME
    write_old_evals(path, model, EVALS_DDL_485AC8C[:3])
    with ComparisonStore(path) as comparisons:
        assert comparisons.list() == []
        new_id = comparisons.add(json.loads(json.dumps(COMPARISON)))
        assert comparisons.get(new_id)["id"] == new_id
    with EvalStore(path) as store:
        assert len(store.runs()) == 2


def test_a_new_file_has_the_schema_485ac8c_wrote(tmp_path: Path) -> None:
    """Migration 1 is the old schema word for word: a new file and an old one are alike."""
    old, new = tmp_path / "old.sqlite3", tmp_path / "new.sqlite3"
    with _raw(old) as conn:
        for statement in EVALS_DDL_485AC8C:
            conn.execute(statement)
    EvalStore(new).close()
    assert _dump(new) == [*_dump(old)[:-1], "user_version 1"]
    old, new = tmp_path / "old-sessions.sqlite3", tmp_path / "new-sessions.sqlite3"
    with _raw(old) as conn:
        for statement in SESSIONS_DDL_485AC8C:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
    SessionStore(new).close()
    assert _dump(new) == _dump(old)


# --- files this scheda must not touch ---------------------------------------------------------


@pytest.mark.parametrize(
    ("store", "error"),
    [
        (SessionStore, SessionStoreError),
        (EvalStore, EvalStoreError),
        (ComparisonStore, ComparisonStoreError),
    ],
)
def test_a_file_of_a_newer_version_is_refused_in_one_line(
    tmp_path: Path, model: Path, store: type[Store], error: type[StoreError]
) -> None:
    path = tmp_path / "store.sqlite3"
    if store is SessionStore:
        write_old_sessions(path)
    else:
        write_old_evals(path, model)
    with _raw(path) as conn:
        conn.execute("PRAGMA user_version = 7")
    before = _dump(path)
    with pytest.raises(error) as caught:
        store(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert "newer scheda (schema 7, this one reads 1)" in message and "upgrade scheda" in message
    assert _dump(path) == before


def test_another_programs_file_at_the_evaluation_path_is_refused(tmp_path: Path) -> None:
    path = tmp_path / evals_file.FILENAME
    with _raw(path) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    with pytest.raises(EvalStoreError, match="not a scheda evaluation file: move it away"):
        EvalStore(path)
    assert _dump(path) == [
        "BEGIN TRANSACTION;",
        "CREATE TABLE notes (text TEXT);",
        "COMMIT;",
        "user_version 0",
    ]


def test_a_damaged_evaluation_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / evals_file.FILENAME
    path.write_bytes(b"not a database\n" * 100)
    with pytest.raises(EvalStoreError, match="is not a usable SQLite database") as caught:
        EvalStore(path)
    assert "\n" not in str(caught.value)


# --- migrations -------------------------------------------------------------------------------

# A second version of the sessions file, as a later scheda might declare it: a column with a
# value computed from the rows, and a log that shows how often the migration ran.
PINNED = statements(
    "ALTER TABLE sessions ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0",
    "UPDATE sessions SET pinned = 1 WHERE system IS NOT NULL",
    "CREATE TABLE migrated (at INTEGER)",
    "INSERT INTO migrated VALUES (2)",
)


class SessionsV2(SessionStore):
    schema = Schema(sessions.FILENAME, "sessions file", (*sessions.MIGRATIONS, PINNED))


def _fails(conn: sqlite3.Connection) -> None:
    """A migration that breaks half way, after changing the schema and the rows."""
    conn.execute("DELETE FROM messages")
    conn.execute("INSERT INTO no_such_table VALUES (1)")


class SessionsV3Broken(SessionStore):
    schema = Schema(sessions.FILENAME, "sessions file", (*sessions.MIGRATIONS, PINNED, _fails))


def test_migrations_run_in_order_once(tmp_path: Path) -> None:
    path = tmp_path / sessions.FILENAME
    write_old_sessions(path)
    for _ in range(2):
        with SessionsV2(path) as store:
            assert len(store.messages("0a1b")) == 4
    assert _scalar(path, "PRAGMA user_version") == 2
    assert _scalar(path, "SELECT count(*) FROM migrated") == 1
    with _raw(path) as conn:
        pinned = conn.execute("SELECT id, pinned FROM sessions ORDER BY id").fetchall()
    assert pinned == [("0a1b2c3d", 1), ("9f8e7d6c", 0)]
    with pytest.raises(SessionStoreError, match="newer scheda"):
        SessionStore(path)  # this scheda's sessions store knows version 1 only


def test_a_migration_that_fails_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / sessions.FILENAME
    write_old_sessions(path)
    before = _dump(path)
    with pytest.raises(SessionStoreError) as caught:
        SessionsV3Broken(path)
    assert "no such table: no_such_table" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert _dump(path) == before  # neither version 2's column nor the deleted messages
    with SessionStore(path) as store:
        assert len(store.messages("0a1b")) == 4


# --- two processes at once --------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from scheda.evaluation.base import ItemResult
    from scheda.stores.comparisons import ComparisonStore
    from scheda.stores.evals import EvalStore
    from scheda.stores.sessions import SessionStore

    name, folder, model = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    sys.stdin.readline()  # both processes open the new files together
    with SessionStore(folder / "sessions.sqlite3") as chats, EvalStore(
        folder / "evals.sqlite3"
    ) as evals, ComparisonStore(folder / "evals.sqlite3") as comparisons:
        session = chats.create("default", system=name)
        run = evals.start("default", model, "t-" + name, {}, 30)
        for i in range(30):
            chats.add_turn(session.id, f"{name} {i}", "ok")
            evals.add(run.id, ItemResult(f"{name}-{i}", {"acc": 1.0}, {}, ""))
        evals.finish(run.id, {"items": 30})
        comparisons.add(
            {"reference": name, "rows": [], "text": {"name": "t"}, "created": 1.0}
        )
    """
)


def test_two_processes_open_new_files_and_write_at_once(tmp_path: Path, model: Path) -> None:
    folder = tmp_path / "data"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, name, str(folder), str(model)],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
    with SessionStore(folder / "sessions.sqlite3") as chats:
        assert sorted(s.messages for s in chats.list()) == [60, 60]
    with EvalStore(folder / "evals.sqlite3") as evals:
        runs = evals.runs()
        assert sorted(r.task for r in runs) == ["t-a", "t-b"]
        assert all(len(evals.results(r.id)) == 30 and r.finished for r in runs)
    with ComparisonStore(folder / "evals.sqlite3") as comparisons:
        assert sorted(c["reference"] for c in comparisons.list()) == ["a", "b"]
