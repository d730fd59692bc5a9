"""The chat session store and `scheda sessions`: real SQLite files, real processes, no mocks."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scheda.cli.sessions import sessions_app
from scheda.engines.base import Message
from scheda.errors import SchedaError, SessionNotFoundError, SessionStoreError
from scheda.stores.sessions import FILENAME, TITLE_LEN, SessionStore, default_path


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "data" / "scheda"  # missing: the store must create it
    monkeypatch.setenv("SCHEDA_DATA_DIR", str(folder))
    return folder


@pytest.fixture
def store(data_dir: Path) -> Iterator[SessionStore]:
    with SessionStore() as s:
        yield s


def raw(path: Path) -> contextlib.closing[sqlite3.Connection]:
    """A plain sqlite3 connection, closed on leaving the block (sqlite3's own `with` does not)."""
    return contextlib.closing(sqlite3.connect(path))


def scalar(path: Path, sql: str, *args: object) -> object:
    with raw(path) as conn:
        return conn.execute(sql, args).fetchone()[0]


# --- the file ---------------------------------------------------------------------------


def test_file_is_created_in_the_data_dir_in_wal_mode(data_dir: Path) -> None:
    assert not data_dir.exists()
    with SessionStore() as store:
        assert store.path == default_path() == data_dir / FILENAME
        assert store.journal_mode == "wal"
        store.create("default")
        # WAL is a property of the file: another connection sees it too.
        assert scalar(store.path, "PRAGMA journal_mode") == "wal"
        assert scalar(store.path, "PRAGMA user_version") == 1
    assert scalar(data_dir / FILENAME, "SELECT count(*) FROM sessions") == 1


def test_path_argument_overrides_the_data_dir(data_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "chats.sqlite3"
    with SessionStore(elsewhere) as store:
        store.create("default")
    assert elsewhere.is_file()
    assert not (data_dir / FILENAME).exists()


def test_a_file_that_is_not_sqlite_is_a_one_line_error(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    path = data_dir / FILENAME
    garbage = b"these are my notes, not a database\n" * 50
    path.write_bytes(garbage)
    with pytest.raises(SessionStoreError) as caught:
        SessionStore()
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    assert "not a usable SQLite database" in message
    assert "move it away" in message
    assert path.read_bytes() == garbage  # never overwritten


def test_another_programs_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    with raw(path) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
        conn.commit()
    with pytest.raises(SessionStoreError, match="not a scheda sessions file"):
        SessionStore(path)
    assert scalar(path, "SELECT count(*) FROM sqlite_master") == 1  # left as it was


# --- sessions and messages --------------------------------------------------------------


def test_messages_come_back_in_order_and_the_system_prompt_stays_apart(
    store: SessionStore,
) -> None:
    s = store.create("default", system="Answer in one sentence.", params={"temperature": 0.2})
    assert len(s.id) == 8 and int(s.id, 16) >= 0
    store.add_message(s.id, "user", "What is the capital of Italy?", tokens=9)
    store.add_message(s.id, "assistant", "Rome.", tokens=3)
    store.add_turn(s.id, "And of France?", "Paris.")
    assert store.messages(s.id) == [
        Message("user", "What is the capital of Italy?"),
        Message("assistant", "Rome."),
        Message("user", "And of France?"),
        Message("assistant", "Paris."),
    ]
    assert store.conversation(s.id)[0] == Message("system", "Answer in one sentence.")
    assert store.conversation(s.id)[1:] == store.messages(s.id)
    got = store.get(s.id)
    assert (got.model, got.system, got.params) == (
        "default",
        "Answer in one sentence.",
        {"temperature": 0.2},
    )
    assert scalar(store.path, "SELECT sum(tokens) FROM messages") == 12

    store.set_system(s.id, "Answer in French.")
    store.set_params(s.id, {"temperature": 0.0, "seed": 7})
    got = store.get(s.id)
    assert got.system == "Answer in French."
    assert got.params == {"temperature": 0.0, "seed": 7}
    store.set_system(s.id, None)
    assert store.get(s.id).system is None
    assert store.conversation(s.id) == store.messages(s.id)


def test_a_bad_role_is_refused_and_nothing_is_written(store: SessionStore) -> None:
    s = store.create("default")
    with pytest.raises(ValueError, match="role"):
        store.add_message(s.id, "tool", "x")
    assert store.messages(s.id) == []


def test_the_title_is_the_first_user_message_on_one_line(store: SessionStore) -> None:
    s = store.create("default")
    assert store.get(s.id).title is None
    store.add_message(s.id, "assistant", "Hello! How can I help?")
    assert store.get(s.id).title is None  # not named by the assistant
    store.add_message(s.id, "user", "   \n ")
    assert store.get(s.id).title is None  # nor by an empty question
    question = (
        "  Explain\nthe   KV cache\tof a [bold]transformer[/bold] \x1b[31m" + "in detail " * 20
    )
    store.add_message(s.id, "user", question)
    title = store.get(s.id).title
    assert title is not None
    assert title.startswith("Explain the KV cache of a [bold]transformer[/bold] ")
    assert len(title) <= TITLE_LEN and title.endswith("…")
    assert "\n" not in title and "\t" not in title and "\x1b" not in title
    store.add_message(s.id, "user", "A second question")
    assert store.get(s.id).title == title


def test_an_id_prefix_finds_its_session_and_an_ambiguous_one_says_so(
    store: SessionStore,
) -> None:
    ids = [store.create("default").id for _ in range(17)]  # 17 > 16 hex digits: two share one
    for full in ids:
        assert store.get(full).id == full
        assert store.get(full.upper()).id == full
        shortest = next(
            full[:n] for n in range(1, 9) if sum(i.startswith(full[:n]) for i in ids) == 1
        )
        assert store.get(shortest).id == full
    shared = next(i[0] for i in ids if sum(j.startswith(i[0]) for j in ids) > 1)
    with pytest.raises(SessionNotFoundError) as caught:
        store.get(shared)
    assert "ambiguous" in str(caught.value)
    assert "scheda sessions list" in str(caught.value)
    assert "\n" not in str(caught.value)
    for unknown in ("zzzz", "0123456789", ""):
        with pytest.raises(SessionNotFoundError) as caught:
            store.add_message(unknown, "user", "hi")
        assert "scheda sessions list" in str(caught.value)
        assert "\n" not in str(caught.value)
    assert isinstance(caught.value, SchedaError)


def test_reset_forgets_the_messages_but_keeps_the_session_and_system_prompt(
    store: SessionStore,
) -> None:
    s = store.create("default", system="Be brief.", params={"top_k": 20})
    store.add_turn(s.id, "first question", "first answer")
    assert store.reset(s.id[:5]) == 2
    assert store.messages(s.id) == []
    kept = store.get(s.id)
    assert (kept.system, kept.params, kept.model, kept.title) == (
        "Be brief.",
        {"top_k": 20},
        "default",
        None,
    )
    assert store.conversation(s.id) == [Message("system", "Be brief.")]
    store.add_message(s.id, "user", "a new start")
    assert store.get(s.id).title == "a new start"


def test_delete_cascades_to_the_messages(store: SessionStore) -> None:
    gone = store.create("default")
    kept = store.create("default")
    store.add_turn(gone.id, "q", "a")
    store.add_turn(kept.id, "q2", "a2")
    summary = store.delete(gone.id)
    assert (summary.id, summary.messages, summary.title) == (gone.id, 2, "q")
    with pytest.raises(SessionNotFoundError):
        store.get(gone.id)
    assert scalar(store.path, "SELECT count(*) FROM messages WHERE session_id = ?", gone.id) == 0
    assert store.messages(kept.id) == [Message("user", "q2"), Message("assistant", "a2")]


def test_list_puts_the_most_recently_used_first(store: SessionStore) -> None:
    assert store.list() == []
    a = store.create("model-a")
    time.sleep(0.002)
    b = store.create("model-b")
    time.sleep(0.002)
    c = store.create("model-c")
    assert [s.id for s in store.list()] == [c.id, b.id, a.id]
    time.sleep(0.002)
    store.add_turn(a.id, "hello", "hi")
    listed = store.list()
    assert [s.id for s in listed] == [a.id, c.id, b.id]
    assert [(s.model, s.messages, s.title) for s in listed] == [
        ("model-a", 2, "hello"),
        ("model-c", 0, None),
        ("model-b", 0, None),
    ]
    assert listed[0].updated > listed[0].created


def test_exports_hold_every_turn(store: SessionStore) -> None:
    s = store.create("default", system="You are terse.", params={"temperature": 0.5})
    store.add_turn(s.id, "Name a prime.", "Seven.")
    store.add_turn(s.id, "Another?", "Eleven.\n")
    md = store.export_markdown(s.id)
    assert md.startswith("# Name a prime.\n")
    assert f"`{s.id}`" in md and "`default`" in md and '"temperature": 0.5' in md
    order = [
        "## System\n\nYou are terse.",
        "## User\n\nName a prime.",
        "## Assistant\n\nSeven.",
        "## User\n\nAnother?",
        "## Assistant\n\nEleven.",
    ]
    positions = [md.index(part) for part in order]
    assert positions == sorted(positions)

    data = store.export_json(s.id[:4])
    assert json.loads(json.dumps(data)) == data
    assert {k: data[k] for k in ("id", "model", "system", "params", "title")} == {
        "id": s.id,
        "model": "default",
        "system": "You are terse.",
        "params": {"temperature": 0.5},
        "title": "Name a prime.",
    }
    assert [(m["role"], m["content"]) for m in data["messages"]] == [
        ("user", "Name a prime."),
        ("assistant", "Seven."),
        ("user", "Another?"),
        ("assistant", "Eleven.\n"),
    ]
    assert all(data["created"] <= m["created"] <= data["updated"] for m in data["messages"])


# --- several connections, several processes ---------------------------------------------


def test_two_stores_on_one_file_see_each_others_writes(data_dir: Path) -> None:
    with SessionStore() as one, SessionStore() as two:
        s = one.create("default", system="shared")
        assert two.get(s.id).system == "shared"
        two.add_message(s.id, "user", "from two")
        assert one.messages(s.id) == [Message("user", "from two")]
        one.set_system(s.id, "changed by one")
        assert two.get(s.id).system == "changed by one"

        # Writers on both connections, from threads, at once: none is lost.
        def write(store: SessionStore, name: str) -> None:
            for i in range(40):
                store.add_message(s.id, "assistant", f"{name} {i}")

        threads = [
            threading.Thread(target=write, args=(st, n)) for st, n in ((one, "a"), (two, "b"))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        texts = [m.content for m in two.messages(s.id)]
        assert len(texts) == 81
        assert [t for t in texts if t.startswith("a ")] == [f"a {i}" for i in range(40)]
        assert [t for t in texts if t.startswith("b ")] == [f"b {i}" for i in range(40)]
        two.delete(s.id)
        with pytest.raises(SessionNotFoundError):
            one.get(s.id)


KILLED_MID_TRANSACTION = textwrap.dedent(
    """
    import os, signal, sqlite3
    from scheda.stores.sessions import SessionStore

    store = SessionStore()
    s = store.create("default", system="be brief")
    store.add_message(s.id, "user", "committed question")
    store.add_message(s.id, "assistant", "committed answer")
    print(s.id, flush=True)

    # Another writer opens a transaction, writes far more than the page cache
    # holds (so SQLite spills uncommitted pages into the WAL), and dies.
    conn = sqlite3.connect(store.path, isolation_level=None)
    conn.execute("PRAGMA cache_size = 10")
    conn.execute("BEGIN IMMEDIATE")
    for i in range(400):
        conn.execute(
            "INSERT INTO messages (session_id, role, content, created) VALUES (?, ?, ?, 0)",
            (s.id, "assistant", "uncommitted " + "x" * 4000),
        )
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_a_process_killed_mid_transaction_loses_only_the_uncommitted_write(
    data_dir: Path,
) -> None:
    child = subprocess.run(
        [sys.executable, "-c", KILLED_MID_TRANSACTION], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    session_id = child.stdout.strip()
    path = data_dir / FILENAME
    wal = path.with_name(FILENAME + "-wal")
    assert wal.stat().st_size > 1_000_000  # the uncommitted pages did reach the WAL

    with SessionStore() as store:
        assert store.messages(session_id) == [
            Message("user", "committed question"),
            Message("assistant", "committed answer"),
        ]
        assert store.get(session_id).system == "be brief"
        store.add_message(session_id, "user", "after the crash")  # still writable
        assert scalar(path, "PRAGMA integrity_check") == "ok"
        assert scalar(path, "SELECT count(*) FROM messages WHERE content LIKE 'uncommitted%'") == 0
    assert scalar(path, "SELECT count(*) FROM messages") == 3


# --- the `scheda sessions` commands -----------------------------------------------------


@pytest.fixture
def filled(store: SessionStore) -> tuple[str, str]:
    """Two sessions: an old one with a conversation, a newer empty one."""
    chat = store.create("default", system="You answer in Italian.", params={"temperature": 0.1})
    store.add_message(chat.id, "user", "What is a [bold]scheda[/bold]?")
    store.add_message(chat.id, "assistant", "Una scheda tecnica.\nA spec sheet.")
    time.sleep(0.002)
    empty = store.create("llama-3-8b")
    return chat.id, empty.id


runner = CliRunner()


def test_cli_list(filled: tuple[str, str]) -> None:
    chat, empty = filled
    table = runner.invoke(sessions_app, ["list"])
    assert table.exit_code == 0, table.output
    assert chat in table.stdout and empty in table.stdout
    assert "What is a [bold]scheda[/bold]?" in table.stdout  # shown literally, not as markup
    assert "(untitled)" in table.stdout and "llama-3-8b" in table.stdout
    assert table.stdout.index(empty) < table.stdout.index(chat)  # newest first

    as_json = runner.invoke(sessions_app, ["list", "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert [(s["id"], s["messages"], s["model"]) for s in data["sessions"]] == [
        (empty, 0, "llama-3-8b"),
        (chat, 2, "default"),
    ]
    assert data["sessions"][1]["title"] == "What is a [bold]scheda[/bold]?"
    assert Path(data["path"]).name == FILENAME


def test_cli_list_with_no_sessions(data_dir: Path) -> None:
    result = runner.invoke(sessions_app, ["list"])
    assert result.exit_code == 0
    assert "no saved sessions yet" in result.stdout
    assert json.loads(runner.invoke(sessions_app, ["list", "--json"]).stdout)["sessions"] == []


def test_cli_show(filled: tuple[str, str]) -> None:
    chat, _ = filled
    result = runner.invoke(sessions_app, ["show", chat[:5]])
    assert result.exit_code == 0, result.output
    head, _, body = result.stdout.partition("\nsystem\n")
    assert chat in head and "default" in head and '"temperature": 0.1' in head
    lines = [line.rstrip() for line in body.splitlines() if line.strip()]
    assert [line.split("  ")[0] for line in lines] == [
        "You answer in Italian.",
        "user",
        "What is a [bold]scheda[/bold]?",  # literally, not read as Rich markup
        "assistant",
        "Una scheda tecnica.",
        "A spec sheet.",
    ]

    missing = runner.invoke(sessions_app, ["show", "zzzzzz"])
    assert missing.exit_code != 0
    assert isinstance(missing.exception, SessionNotFoundError)


def test_cli_export(filled: tuple[str, str], store: SessionStore, tmp_path: Path) -> None:
    chat, _ = filled
    md = runner.invoke(sessions_app, ["export", chat])
    assert md.exit_code == 0, md.output
    assert md.stdout == store.export_markdown(chat)

    js = runner.invoke(sessions_app, ["export", chat[:4], "--format", "json"])
    assert js.exit_code == 0, js.output
    assert json.loads(js.stdout) == store.export_json(chat)

    target = tmp_path / "out" / "chat.md"
    target.parent.mkdir()
    to_file = runner.invoke(sessions_app, ["export", chat, "--output", str(target)])
    assert to_file.exit_code == 0, to_file.output
    assert target.read_text(encoding="utf-8") == store.export_markdown(chat)
    assert f"exported session {chat}" in to_file.stdout

    bad = runner.invoke(sessions_app, ["export", chat, "--format", "pdf"])
    assert bad.exit_code == 2


def test_cli_delete_asks_first(filled: tuple[str, str], store: SessionStore) -> None:
    chat, empty = filled
    declined = runner.invoke(sessions_app, ["delete", chat], input="n\n")
    assert declined.exit_code == 1
    assert "delete session" in declined.stdout and "2 messages" in declined.stdout
    assert "nothing deleted" in declined.stderr
    assert len(store.messages(chat)) == 2

    accepted = runner.invoke(sessions_app, ["delete", chat[:6]], input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert f"deleted session {chat}" in accepted.stdout
    with pytest.raises(SessionNotFoundError):
        store.get(chat)

    forced = runner.invoke(sessions_app, ["delete", empty, "--yes"])
    assert forced.exit_code == 0, forced.output
    assert f"deleted session {empty} (untitled), 0 messages" in forced.stdout
    assert store.list() == []


# --- through the real `scheda` command --------------------------------------------------


def scheda(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheda", "sessions", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_scheda_sessions_commands(filled: tuple[str, str]) -> None:
    chat, empty = filled
    listed = scheda("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [s["id"] for s in json.loads(listed.stdout)["sessions"]] == [empty, chat]

    missing = scheda("show", "zzzzzz")
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: no session 'zzzzzz'")
    assert missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr

    deleted = scheda("delete", chat, "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert [s["id"] for s in json.loads(scheda("list", "--json").stdout)["sessions"]] == [empty]


def test_scheda_sessions_on_a_damaged_file_prints_one_line(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    (data_dir / FILENAME).write_bytes(b"\x00garbage" * 100)
    result = scheda("list")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
    assert str(data_dir / FILENAME) in result.stderr and "move it away" in result.stderr
