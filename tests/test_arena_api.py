"""The arena's routes, end to end: blind battles streamed, the vote, the leaderboard, the export.

The real app (`create_app` over a pool of real models and real stores) is served by
uvicorn on loopback in this process. The two contenders are the embedded model under
two names (hard links of its GGUF, named so that no answer can contain the name by
chance), which is what a battle between a model and its own copy is; MiniLM is served
beside them, a model that makes embeddings and cannot battle.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from scheda.files.digest import sha256
from scheda.server.app import create_app
from scheda.server.main import build_pool
from scheda.stores.arena import ArenaStore, Side
from scheda.stores.evals import EvalStore
from scheda.stores.sessions import SessionStore
from tests.conftest import minilm_folder
from tests.serving import free_port, http_request, wait_for

KEY = "sk-arena"
ALPHA, BETA = "zqxalpha", "zqxbeta"  # names no answer of the model will say by chance
# Long enough answers that the two columns overlap in time, short enough for a small CPU.
COUNTING = "Count from 1 to 60, separated by commas."


@dataclass
class Served:
    port: int
    arena: ArenaStore
    folder: Path

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
        return http_request(self.port, method, path, data, headers, timeout=120)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.request(method, path, body)
        assert status == 200, (method, path, status, answer)
        return answer

    def battle(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        """A battle's raw answer: status, headers and every byte of the stream."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=180)
        try:
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
            conn.request("POST", "/api/arena/battles", json.dumps(body).encode(), headers)
            answer = conn.getresponse()
            return answer.status, dict(answer.getheaders()), answer.read()
        finally:
            conn.close()


def events(raw: bytes) -> list[dict[str, Any]]:
    return [
        json.loads(line[len("data: ") :])
        for line in raw.decode("utf-8").splitlines()
        if line.startswith("data: ")
    ]


def contenders(folder: Path, smollm_path: Path, *names: str) -> list[Path]:
    """The embedded GGUF under other names: hard links where the file system allows."""
    paths = []
    for name in names:
        path = folder / f"{name}.gguf"
        try:
            os.link(smollm_path, path)
        except OSError:
            path.write_bytes(smollm_path.read_bytes())
        paths.append(path)
    return paths


@contextlib.contextmanager
def serve(folder: Path, refs: list[str]) -> Iterator[Served]:
    pool = build_pool(refs, parallel=2)
    store = SessionStore(folder / "sessions.sqlite3")
    evals = EvalStore(folder / "evals.sqlite3")
    arena = ArenaStore(folder / "arena.sqlite3")
    app = create_app(pool, store, api_key=KEY, evals=evals, arena=arena)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", http="h11")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started, within=60), "the app did not start"
    try:
        yield Served(port, arena, folder)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        pool.close()
        for closing in (store, evals, arena):
            closing.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, smollm_path: Path) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("arena")
    refs = [str(p) for p in contenders(folder, smollm_path, ALPHA, BETA)]
    with serve(folder, [*refs, str(minilm_folder())]) as served:
        yield served


def secrets_of(served: Served) -> list[str]:
    """Every string that would say which model answered."""
    digest = sha256(served.folder / f"{ALPHA}.gguf")
    return [ALPHA, BETA, str(served.folder), digest, digest[:8]]


def test_a_blind_battle_streams_both_answers_at_once_and_names_no_model(served: Served) -> None:
    # The first battle loads both models; the second one is timed for overlap.
    warm = {"models": [ALPHA, BETA], "prompt": "Say hi.", "params": {"max_tokens": 4}}
    assert served.battle(warm)[0] == 200
    body = {
        "models": [BETA, ALPHA],
        "prompt": COUNTING,
        "tag": "counting",
        "params": {"max_tokens": 48, "temperature": 0},
    }
    status, headers, raw = served.battle(body)
    assert status == 200, raw
    assert headers["content-type"].startswith("text/event-stream")
    whole = raw.decode() + json.dumps(headers)
    for secret in secrets_of(served):
        assert secret not in whole, f"{secret!r} leaked before the vote"

    got = events(raw)
    head = got[0]["battle"]
    assert head["blind"] is True and head["columns"] == ["a", "b"]
    assert "a" not in head and "b" not in head
    order = [(e.get("side"), "text" if "text" in e else "end") for e in got if "side" in e]
    first_text = {s: order.index((s, "text")) for s in ("a", "b")}
    ends = {s: order.index((s, "end")) for s in ("a", "b")}
    # Both stream at the same time: each column begins before the other one ends.
    assert first_text["a"] < ends["b"] and first_text["b"] < ends["a"], order

    battle = got[-1]["battle"]
    assert got[-1]["end"] is True and battle["state"] == "answered"
    for side in ("a", "b"):
        said = "".join(e["text"] for e in got if e.get("side") == side and "text" in e)
        assert said and battle[side]["answer"] == said
        assert battle[side]["tokens_per_s"] > 0 and "model" not in battle[side]
    # Reading it back, listing it, exporting it: still nothing that names a model.
    for path in (f"/api/arena/battles/{battle['id']}", "/api/arena/battles"):
        text = json.dumps(served.ok("GET", path))
        assert all(secret not in text for secret in secrets_of(served)), path
    exported = served.request("GET", "/api/arena/export")[1]
    assert all(secret not in exported for secret in secrets_of(served))

    # The vote reveals both, with their files' hashes; a second vote is refused.
    revealed = served.ok("POST", f"/api/arena/battles/{battle['id']}/vote", {"outcome": "a"})
    assert revealed["state"] == "voted" and revealed["vote"] == "a"
    assert {revealed["a"]["model"], revealed["b"]["model"]} == {ALPHA, BETA}
    assert revealed["a"]["sha256"] == sha256(served.folder / f"{ALPHA}.gguf")
    assert revealed["machine"]["physical_cores"] >= 1
    status, again = served.request(
        "POST", f"/api/arena/battles/{battle['id']}/vote", {"outcome": "b"}
    )
    assert status == 409 and "voted already" in again["error"]["message"]
    assert served.arena.get(battle["id"]).vote == "a"  # the first vote stands, stored once

    board = served.ok("GET", "/api/arena/leaderboard?tag=counting")
    rows = {row["model"]: row for row in board["standings"]}
    winner = revealed["a"]["model"]
    assert rows[winner]["wins"] == 1 and rows[winner]["games"] == 1
    assert board["battles"] == 1 and "counting" in board["tags"]


def test_any_two_and_an_open_battle_name_their_models_from_the_start(served: Served) -> None:
    body = {"prompt": "Say hi.", "params": {"max_tokens": 3}, "blind": False}
    status, _, raw = served.battle(body)
    assert status == 200, raw
    head = events(raw)[0]["battle"]
    assert {head["a"]["model"], head["b"]["model"]} == {ALPHA, BETA}  # MiniLM cannot chat


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"models": [ALPHA, ALPHA], "prompt": "x"}, 400, "two different models"),
        ({"models": [ALPHA, "nothing"], "prompt": "x"}, 404, "not served here"),
        ({"models": [ALPHA, "model"], "prompt": "x"}, 400, "embeddings"),
        ({"models": [ALPHA, BETA], "prompt": ""}, 400, "prompt"),
        ({"models": [ALPHA], "prompt": "x"}, 400, "models"),
    ],
)
def test_a_battle_that_cannot_be_fought_is_refused_before_anything_is_stored(
    served: Served, body: dict[str, Any], status: int, says: str
) -> None:
    before = len(served.arena.battles())
    got, answer = served.request("POST", "/api/arena/battles", body)
    assert got == status, answer
    assert says in json.dumps(answer)
    assert len(served.arena.battles()) == before


def test_bad_votes_get_their_status_and_change_nothing(served: Served) -> None:
    status, answer = served.request(
        "POST", "/api/arena/battles/ffffffffffff/vote", {"outcome": "a"}
    )
    assert status == 404 and "no battle" in answer["error"]["message"]
    battle = served.arena.start(
        "q", Side(ALPHA, "x", "llama.cpp"), Side(BETA, "y", "llama.cpp"), {}, {}
    )
    status, answer = served.request(
        "POST", f"/api/arena/battles/{battle.id}/vote", {"outcome": "c"}
    )
    assert status == 400 and answer["error"]["param"] == "outcome"
    status, answer = served.request(
        "POST", f"/api/arena/battles/{battle.id}/vote", {"outcome": "a"}
    )
    assert status == 409 and "still answering" in answer["error"]["message"]
    assert served.arena.get(battle.id).vote is None


def test_a_model_that_vanishes_fails_its_column_names_no_one_and_cannot_be_voted(
    tmp_path: Path, smollm_path: Path
) -> None:
    kept, gone = contenders(tmp_path, smollm_path, ALPHA, "zqxgone")
    with serve(tmp_path, [str(kept), str(gone)]) as served:
        gone.unlink()  # served, not loaded yet: its load fails mid-battle
        status, _, raw = served.battle(
            {"models": [ALPHA, "zqxgone"], "prompt": "Say hi.", "params": {"max_tokens": 3}}
        )
        assert status == 200
        assert "zqxgone" not in raw.decode() and str(tmp_path) not in raw.decode()
        got = events(raw)
        failed = [e for e in got if e.get("error")]
        assert len(failed) == 1 and "model" in failed[0]["error"]["message"]
        battle = got[-1]["battle"]
        assert battle["state"] == "failed"
        status, answer = served.request(
            "POST", f"/api/arena/battles/{battle['id']}/vote", {"outcome": "a"}
        )
        assert status == 409 and "failed" in answer["error"]["message"]
        assert served.ok("GET", "/api/arena/leaderboard")["battles"] == 0


def test_prompts_are_shipped_with_tags(served: Served) -> None:
    prompts = served.ok("GET", "/api/arena/prompts")
    assert len(prompts) >= 30 and all(p["prompt"] and p["tag"] for p in prompts)


def test_battles_survive_a_process_killed_mid_battle(tmp_path: Path) -> None:
    """A battle started and half answered by a process that then dies by SIGKILL is there."""
    path = tmp_path / "arena.sqlite3"
    script = (
        "import os, signal, sys\n"
        "from scheda.stores.arena import ArenaStore, Side\n"
        "s = ArenaStore(sys.argv[1])\n"
        "b = s.start('why?', Side('m1', 'p1', 'llama.cpp'), Side('m2', 'p2', 'llama.cpp'), "
        "{'temperature': 0.7}, {'cpu': 'x'}, tag='t')\n"
        "s.finish(b.id, 'a', Side('m1', 'p1', 'llama.cpp', answer='because'))\n"
        "print(b.id, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    with ArenaStore(path) as arena:
        battle = arena.get(run.stdout.strip())
        assert battle.prompt == "why?" and battle.a.answer == "because"
        assert battle.state == "answering" and battle.sampling == {"temperature": 0.7}


def test_a_client_that_leaves_stops_both_answers_and_keeps_what_they_said(
    served: Served,
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=120)
    body = {"models": [ALPHA, BETA], "prompt": COUNTING, "params": {"max_tokens": 2000}}
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    conn.request("POST", "/api/arena/battles", json.dumps(body).encode(), headers)
    answer = conn.getresponse()
    battle_id = json.loads(answer.readline().decode()[len("data: ") :])["battle"]["id"]
    while b'"text"' not in answer.readline():
        pass  # until the first piece of an answer
    conn.close()  # the page is closed mid-answer

    def stored() -> bool:
        return served.arena.get(battle_id).state == "answered"

    assert wait_for(stored, within=60), "the answers did not stop when the client left"
    battle = served.arena.get(battle_id)
    for side in (battle.a, battle.b):
        assert side.finish_reason == "cancelled", side
        assert side.completion_tokens is not None and side.completion_tokens < 2000
    assert battle.a.answer or battle.b.answer  # what was said before the page closed is kept
