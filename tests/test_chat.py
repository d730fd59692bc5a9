"""The terminal chat on the embedded model, with its sessions in a real SQLite file."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.console import Console

from scheda.engines import open_model
from scheda.engines.base import Engine
from scheda.sampling import Sampling
from scheda.stores.sessions import SessionStore
from scheda.talk.chat import ChatLoop

SCHEDA = Path(sys.executable).parent / "scheda"


@pytest.fixture(scope="module")
def engine(smollm_path: Path) -> Iterator[Engine]:
    with open_model(smollm_path, "llama.cpp", context=512) as loaded:
        yield loaded


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SessionStore]:
    with SessionStore(tmp_path / "sessions.sqlite3") as opened:
        yield opened


def chat_loop(engine: Engine, store: SessionStore, system: str | None = None) -> ChatLoop:
    session = store.create("default", system)
    console = Console(file=io.StringIO(), width=120)
    return ChatLoop(engine, store, session, Sampling(max_tokens=12, temperature=0), console)


def output(loop: ChatLoop) -> str:
    file = loop.console.file
    assert isinstance(file, io.StringIO)  # chat_loop's console writes to one
    return file.getvalue()


def lines(*typed: str) -> Callable[[], str]:
    queue = list(typed)

    def read() -> str:
        if not queue:
            raise EOFError
        return queue.pop(0)

    return read


def test_turns_are_answered_streamed_and_saved(engine: Engine, store: SessionStore) -> None:
    loop = chat_loop(engine, store, system="You are terse.")
    loop.run(lines("Hello!", "What is the capital of France?"))
    saved = store.messages(loop.session.id)
    assert [m.role for m in saved] == ["user", "assistant", "user", "assistant"]
    assert "Paris" in saved[3].content
    assert saved[1].content in output(loop) and saved[3].content in output(loop)
    # The system prompt travels with every turn, at the head of the prompt.
    prompt = loop.prompt_messages()
    assert prompt[0].role == "system" and prompt[0].content == "You are terse."


def test_history_beyond_the_context_drops_the_oldest_turns_never_the_system(
    smollm_path: Path, store: SessionStore
) -> None:
    with open_model(smollm_path, "llama.cpp", context=128) as small:
        loop = chat_loop(small, store, system="Keep this system prompt.")
        long_turn = "Tell me about rivers and mountains and the sea. " * 3
        for _ in range(4):
            store.add_message(loop.session.id, "user", long_turn)
            store.add_message(loop.session.id, "assistant", "Rivers run to the sea. " * 3)
        store.add_message(loop.session.id, "user", "And the last question?")
        messages = loop.prompt_messages()
        assert messages[0].content == "Keep this system prompt."
        assert messages[-1].content == "And the last question?"
        assert len(messages) < 10  # some turns were left out...
        assert messages[1].role == "user"  # ...whole turns, starting at a question
        assert "no longer fit the 128-token context" in output(loop)
        assert len(store.messages(loop.session.id)) == 9  # ...and all are still saved


def test_slash_commands(engine: Engine, store: SessionStore, tmp_path: Path) -> None:
    loop = chat_loop(engine, store)
    saved = tmp_path / "out.md"
    loop.run(
        lines(
            "/params temperature=0.5 max_tokens=7",
            "/system Answer in French.",
            "Hi",
            "/history",
            f"/save {saved}",
            "/params temperature=hot",
            "/nonsense",
            "/reset",
            "/history",
            "/system",
            "/exit",
            "Never read",
        )
    )
    shown = output(loop)
    assert loop.sampling.temperature == 0.5 and loop.sampling.max_tokens == 7
    assert store.get(loop.session.id).params["max_tokens"] == 7  # kept with the session
    assert store.get(loop.session.id).system == "Answer in French."
    assert "user: Hi" in shown.replace("\n", " ")
    assert "Hi" in saved.read_text()
    assert "temperature='hot': not a number" in shown
    assert "unknown command /nonsense" in shown
    assert "no turns yet" in shown  # /reset emptied the history...
    assert "Answer in French." in shown.split("no turns yet")[1]  # ...the system prompt stayed
    assert all(m.content != "Never read" for m in store.messages(loop.session.id))


def scheda_chat(data_dir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(SCHEDA), "chat", "default", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SCHEDA_DATA_DIR": str(data_dir), "COLUMNS": "120"},
    )


def session_id(first_line: str) -> str:
    return first_line.split("session ")[1].split()[0]


@pytest.mark.slow
def test_chat_command_saves_and_resumes_a_session(tmp_path: Path) -> None:
    child = scheda_chat(tmp_path, "--system", "Be brief.", "-t", "0", "-m", "10")
    out, err = child.communicate("Hello!\nWhat is 2+2?\n", timeout=120)
    assert child.returncode == 0, err
    sid = session_id(out)
    with SessionStore(tmp_path / "sessions.sqlite3") as store:
        assert len(store.messages(sid)) == 4
        assert store.get(sid).system == "Be brief."
    child = scheda_chat(tmp_path, "--resume", sid[:5], "-m", "10")
    out, err = child.communicate("And 3+3?\n/exit\n", timeout=120)
    assert child.returncode == 0, err
    assert session_id(out) == sid and "4 messages so far" in out
    shown = subprocess.run(
        [str(SCHEDA), "sessions", "show", sid],
        capture_output=True,
        text=True,
        env={**os.environ, "SCHEDA_DATA_DIR": str(tmp_path)},
        check=True,
    ).stdout
    assert "Be brief." in shown and "And 3+3?" in shown and "What is 2+2?" in shown


@pytest.mark.slow
def test_sigkill_mid_answer_loses_only_that_answer(tmp_path: Path) -> None:
    """A chat killed while it writes an answer keeps every earlier turn and the question."""
    child = scheda_chat(tmp_path, "-t", "0", "-m", "8")
    assert child.stdin is not None and child.stdout is not None
    stdout = child.stdout
    seen: list[str] = []
    reader = threading.Thread(
        target=lambda: seen.extend(iter(lambda: stdout.read(1), "")),
        daemon=True,
    )
    reader.start()
    child.stdin.write("Hello!\n/params max_tokens=4000\nTell me a long story about a dragon.\n")
    child.stdin.flush()

    def wait_for(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 120
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {''.join(seen)}"
            time.sleep(0.05)

    wait_for(lambda: "max_tokens=4000" in "".join(seen), "the first answer")
    after_params = len("".join(seen))
    wait_for(lambda: len("".join(seen)) > after_params + 40, "the second answer to stream")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    reader.join(timeout=10)
    for pipe in (child.stdin, child.stdout, child.stderr):
        assert pipe is not None
        pipe.close()
    assert child.returncode == -signal.SIGKILL

    database = tmp_path / "sessions.sqlite3"
    check = sqlite3.connect(database)
    try:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        check.close()
    with SessionStore(database) as store:
        (summary,) = store.list()
        saved = store.messages(summary.id)
        assert [m.role for m in saved] == ["user", "assistant", "user"]
        assert saved[0].content == "Hello!" and saved[1].content.strip()
        assert saved[2].content == "Tell me a long story about a dragon."  # the question is kept
        assert store.get(summary.id).params["max_tokens"] == 4000
