"""How `scheda serve` stops: SIGTERM drains (new requests get 503, the answers in flight go
on for `--grace` seconds), then cancels what is left, saves what sessions hold, and exits 0;
a second SIGTERM ends the grace at once. A real server in a subprocess, the embedded model.
"""

from __future__ import annotations

import http.client
import json
import signal
import time
from pathlib import Path
from typing import Any

from scheda.stores.sessions import SessionStore
from tests.serving import Server, wait_for

COUNT = "Count from 1 to 500, separated by commas."


def chat(max_tokens: int) -> dict[str, Any]:
    return {
        "model": "default",
        "messages": [{"role": "user", "content": COUNT}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }


def first_text(answer: http.client.HTTPResponse) -> None:
    """Read the stream until the model has said something: the answer is being generated."""
    while True:
        line = answer.readline()
        assert line, "the stream ended before any text"
        if line.startswith(b"data: {") and b'"content":"' in line:
            return


def turned_away(server: Server) -> tuple[int, str | None, Any]:
    """A new request's status, its Retry-After and its body."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(chat(4)), server.headers())
        answer = conn.getresponse()
        return answer.status, answer.getheader("Retry-After"), json.loads(answer.read())
    finally:
        conn.close()


def test_sigterm_lets_the_answer_in_flight_finish_and_turns_new_requests_away(
    tmp_path: Path,
) -> None:
    server = Server(["default", "--grace", "60"], tmp_path)
    try:
        conn = server.send("/v1/chat/completions", chat(80))
        answer = conn.getresponse()
        first_text(answer)
        server.process.send_signal(signal.SIGTERM)
        assert wait_for(lambda: turned_away(server)[0] == 503, within=10)
        status, retry_after, body = turned_away(server)
        assert status == 503 and retry_after == "1"
        assert "stopping" in body["error"]["message"]
        rest = answer.read().decode()  # the answer in flight goes on to its end
        conn.close()
        assert '"finish_reason":"length"' in rest and rest.rstrip().endswith("data: [DONE]")
        assert server.process.wait(timeout=30) == 0
    finally:
        server.stop()


def test_after_the_grace_what_is_left_is_cancelled_and_the_session_keeps_its_part(
    tmp_path: Path,
) -> None:
    server = Server(["default", "--grace", "1"], tmp_path)
    try:
        session = server.request("POST", "/api/sessions", {"model": "default"})[1]["id"]
        conn = server.send(
            f"/api/sessions/{session}/chat", {"content": COUNT, "params": {"max_tokens": 4000}}
        )
        answer = conn.getresponse()
        while b'"text"' not in answer.readline():
            pass
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        answer.read()  # the stream is cut once the grace is over
        conn.close()
        assert server.process.wait(timeout=30) == 0
        assert time.monotonic() - signalled < 20, "4,000 tokens were not cut after the grace"
    finally:
        server.stop()
    with SessionStore(tmp_path / "sessions.sqlite3") as store:
        said = store.messages(session)
    assert [m.role for m in said] == ["user", "assistant"]
    assert 0 < len(said[1].content) < len(COUNT) * 50  # what it had said, not 4,000 tokens


def test_a_second_sigterm_stops_at_once(tmp_path: Path) -> None:
    server = Server(["default", "--grace", "120"], tmp_path)
    try:
        conn = server.send("/v1/chat/completions", chat(4000))
        answer = conn.getresponse()
        first_text(answer)
        server.process.send_signal(signal.SIGTERM)
        assert wait_for(lambda: turned_away(server)[0] == 503, within=10)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
        assert time.monotonic() - signalled < 15  # not the 120 s of the grace
        answer.read()
        conn.close()
    finally:
        server.stop()
