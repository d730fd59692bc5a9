"""`scheda arena` as a person runs it: the embedded model under two names answers real
prompts side by side, votes are piped in, and the battles land in a real SQLite file.

Each run is `python -m scheda` in a process of its own, with its own data and cache folders.
The answers are a few tokens long: what is tested is the arena, not the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from scheda.resolve import default_model_path
from scheda.stores.arena import ArenaStore, Battle, Side

MAX_TOKENS = "6"
PROMPTS = [
    {"prompt": "What is two plus two?", "tag": "maths"},
    {"prompt": "Name a colour."},  # no tag of its own: --tag gives it one
]
REVEAL = re.compile(r"^([AB]) was (\w+) \((\w+)\.gguf, llama\.cpp, sha256 ([0-9a-f]{8})\)$", re.M)


def arena(
    *args: str, data: Path, stdin: str = "", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheda", "arena", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environment(data),
        timeout=timeout,
    )


def environment(data: Path) -> dict[str, str]:
    """The arena's file in `data`, the remembered digests beside it, and no Hub."""
    return {
        **os.environ,
        "SCHEDA_DATA_DIR": str(data),
        "SCHEDA_CACHE_DIR": str(data / "cache"),
        "HF_HOME": str(data / "hf-home"),
        "HF_HUB_OFFLINE": "1",
    }


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The embedded GGUF under two names: two models for the arena, one file's bytes."""
    folder = tmp_path_factory.mktemp("models")
    named = (folder / "left.gguf", folder / "right.gguf")
    for path in named:
        try:
            os.link(default_model_path(), path)
        except OSError:  # another file system: a copy does as well
            shutil.copyfile(default_model_path(), path)
    return named


@dataclass
class Duel:
    data: Path
    done: subprocess.CompletedProcess[str]
    battles: list[Battle]  # oldest first


@pytest.fixture(scope="module")
def duel(pair: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Duel:
    """Two battles over a JSONL prompts file; the votes `a` then `t` piped in."""
    data = tmp_path_factory.mktemp("duel")
    prompts = data / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS), encoding="utf-8")
    left, right = pair
    done = arena(
        str(left), str(right), "--prompts", str(prompts), "--tag", "smoke",
        "-m", MAX_TOKENS, "--seed", "7", data=data, stdin="a\nt\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with ArenaStore(data / "arena.sqlite3") as store:
        battles = list(reversed(store.battles()))
    return Duel(data, done, battles)


def test_a_duel_stores_each_battle_with_its_answers_and_its_vote(duel: Duel) -> None:
    assert [b.prompt for b in duel.battles] == [p["prompt"] for p in PROMPTS]
    assert [b.vote for b in duel.battles] == ["a", "tie"]
    assert [b.tag for b in duel.battles] == ["maths", "smoke"]
    digest = hashlib.sha256(default_model_path().read_bytes()).hexdigest()
    for battle in duel.battles:
        assert battle.blind and battle.state == "voted"
        assert {battle.a.model, battle.b.model} == {"left", "right"}
        assert battle.sampling["max_tokens"] == int(MAX_TOKENS) and battle.sampling["seed"] == 7
        assert battle.machine["versions"]["scheda"]
        for side in (battle.a, battle.b):
            assert side.answer and side.finish_reason in ("stop", "length")
            assert 0 < (side.completion_tokens or 0) <= int(MAX_TOKENS)
            assert (side.tokens_per_s or 0) > 0 and side.engine == "llama.cpp"
            assert side.sha256 == digest and Path(side.path).name == f"{side.model}.gguf"
    assert duel.battles[0].winner() == duel.battles[0].a.model


def test_a_duel_prints_both_answers_then_reveals_who_was_who(duel: Duel) -> None:
    out = duel.done.stdout
    revealed = REVEAL.findall(out)
    # After each vote, A then B by name: the names the store holds, in the battles' order.
    assert [(column, model) for column, model, _, _ in revealed] == [
        (column, battle.side(column.lower()).model)
        for battle in duel.battles
        for column in ("A", "B")
    ]
    assert all(stem == model and len(sha) == 8 for _, model, stem, sha in revealed)
    assert f"your vote: {duel.battles[0].a.model} wins" in out and "your vote: a tie" in out
    at = 0
    for battle in duel.battles:  # the prompt, then each answer whole under its column's rule
        at = out.index(battle.prompt, at)
        for name in ("a", "b"):
            at = out.index(f"{name.upper()} · ", at)
            at = out.index(battle.side(name).answer or "?", at)
    assert out.count("tok/s") == 4
    assert "2 battles, 2 voted" in out


def test_the_leaderboard_ranks_both_models_on_their_two_games(
    duel: Duel, pair: tuple[Path, Path], science_jsonl: Path
) -> None:
    # An evaluation of one of the two files: its accuracy stands beside its rating.
    evaluated = subprocess.run(
        [sys.executable, "-m", "scheda", "eval", str(pair[0]), "--tasks", str(science_jsonl)],
        capture_output=True, text=True, env=environment(duel.data), timeout=120,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    done = arena("leaderboard", "--json", "--rounds", "20", data=duel.data)
    assert done.returncode == 0, done.stderr
    board = json.loads(done.stdout)
    rows = {row["model"]: row for row in board["standings"]}
    assert set(rows) == {"left", "right"} and board["battles"] == 2
    winner = duel.battles[0].a.model
    loser = ({"left", "right"} - {winner}).pop()
    assert rows[winner]["games"] == rows[loser]["games"] == 2
    assert (rows[winner]["wins"], rows[winner]["ties"], rows[winner]["losses"]) == (1, 1, 0)
    assert (rows[loser]["wins"], rows[loser]["ties"], rows[loser]["losses"]) == (0, 1, 1)
    assert board["standings"][0]["model"] == winner
    assert rows["left"]["accuracy"]["science"]["metric"] == "acc"
    assert rows["right"]["accuracy"] == {}
    table = arena("leaderboard", "--rounds", "20", data=duel.data)
    assert table.returncode == 0, table.stderr
    assert "Arena leaderboard" in table.stdout and "1-1-0" in table.stdout
    science = 100 * rows["left"]["accuracy"]["science"]["value"]
    assert f"science acc {science:.1f}" in table.stdout
    assert table.stdout.index(winner) < table.stdout.index(loser)
    tagged = arena("leaderboard", "--tag", "maths", "--json", "--rounds", "20", data=duel.data)
    assert json.loads(tagged.stdout)["battles"] == 1


def test_export_writes_every_battle_as_a_json_line(duel: Duel, tmp_path: Path) -> None:
    out = tmp_path / "battles.jsonl"
    done = arena("export", str(out), data=duel.data)
    assert done.returncode == 0, done.stderr
    assert "2 battles written" in done.stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == [b.id for b in duel.battles]
    for record, battle in zip(records, duel.battles, strict=True):
        assert record["prompt"] == battle.prompt and record["vote"] == battle.vote
        assert record["sampling"]["max_tokens"] == int(MAX_TOKENS)
        assert record["machine"]["physical_cores"] >= 1
        for name in ("a", "b"):
            assert record[name]["answer"] == battle.side(name).answer
            assert re.fullmatch("[0-9a-f]{64}", record[name]["sha256"])
    to_stdout = arena("export", data=duel.data)
    assert to_stdout.stdout.splitlines() == lines


def test_the_list_names_no_model_of_a_blind_battle_not_yet_voted(
    duel: Duel, tmp_path: Path
) -> None:
    shown = arena("list", data=duel.data)
    assert shown.returncode == 0, shown.stderr
    assert all(b.id in shown.stdout for b in duel.battles) and "left" in shown.stdout
    with ArenaStore(tmp_path / "arena.sqlite3") as store:
        hidden = store.start(
            "A secret?",
            Side("hidden-one", "/models/hidden-one.gguf", "llama.cpp"),
            Side("hidden-two", "/models/hidden-two.gguf", "llama.cpp"),
            {},
            {},
        )
    listed = arena("list", data=tmp_path)
    assert hidden.id in listed.stdout and "hidden" not in listed.stdout
    as_json = arena("list", "--json", data=tmp_path)
    assert "hidden" not in as_json.stdout and json.loads(as_json.stdout)[0]["id"] == hidden.id


def test_the_leaderboard_of_no_battles_says_how_to_start_one(tmp_path: Path) -> None:
    done = arena("leaderboard", data=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "no voted battles yet" in done.stdout and "scheda arena A B" in done.stdout


def test_the_same_model_twice_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = arena("default", "default", data=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: a battle needs two different models, not default twice: give another"
    ]
    with ArenaStore(tmp_path / "arena.sqlite3") as store:
        assert store.battles() == []


@pytest.mark.parametrize(
    ("second_line", "said"),
    [
        ('{"prompt": "Name a colour."', "not JSON"),
        ('{"tag": "maths"}', 'no "prompt" text'),
        ('["Name a colour."]', "not a JSON object"),
    ],
)
def test_a_bad_prompts_line_is_one_line_naming_the_file_and_line(
    pair: tuple[Path, Path], tmp_path: Path, second_line: str, said: str
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps(PROMPTS[0]) + "\n" + second_line + "\n", encoding="utf-8")
    started = time.perf_counter()
    done = arena(str(pair[0]), str(pair[1]), "--prompts", str(prompts), data=tmp_path)
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: {prompts}:2: {said}")
    assert time.perf_counter() - started < 20  # found before either model loads


def test_options_of_another_subcommand_are_refused(tmp_path: Path) -> None:
    done = arena("left", "right", "--rounds", "5", data=tmp_path)
    assert done.returncode == 2 and "--rounds is for `arena leaderboard`" in done.stderr
    done = arena("leaderboard", "--open", data=tmp_path)
    assert done.returncode == 2 and "--open is for a battle" in done.stderr


def _battle_started(data: Path, timeout: float) -> bool:
    path = data / "arena.sqlite3"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            with sqlite3.connect(path) as conn:
                try:
                    if conn.execute("SELECT count(*) FROM battles").fetchone()[0]:
                        return True
                except sqlite3.OperationalError:  # the table is being made
                    pass
        time.sleep(0.05)
    return False


def test_ctrl_c_during_the_answers_stops_both_and_keeps_what_was_said(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Tell a long story about a dragon who counts to one hundred.\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "scheda", "arena", str(pair[0]), str(pair[1]),
         "--prompts", str(prompts), "-m", "2000", "--context", "2048"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=environment(tmp_path),
    )  # fmt: skip
    try:
        assert _battle_started(tmp_path, timeout=60)
        time.sleep(3)  # a few words from each, far from 2,000 tokens
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    with ArenaStore(tmp_path / "arena.sqlite3") as store:
        [battle] = store.battles()
    assert battle.state == "answered" and battle.vote is None
    assert [battle.a.finish_reason, battle.b.finish_reason] == ["cancelled", "cancelled"]
    said = [side.answer or "" for side in (battle.a, battle.b)]
    assert any(said) and all(len(s) < 4000 for s in said)
    assert f"battle {battle.id} kept what was said" in out


def test_a_terminal_sees_both_columns_grow_named_when_open(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """stdout a real terminal (a pty): the two columns drawn live. No prompts file: prompts
    and votes come a line each from stdin, a pipe."""
    main, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "scheda", "arena", str(pair[0]), str(pair[1]),
         "--open", "-m", MAX_TOKENS],
        stdin=subprocess.PIPE, stdout=secondary, stderr=secondary,
        env={**environment(tmp_path), "COLUMNS": "100"},
    )  # fmt: skip
    os.close(secondary)
    assert process.stdin is not None
    # A prompt; not a vote, then B; a second prompt, then quit; a third never asked.
    process.stdin.write(b"Say hello.\nz\nb\nName a fruit.\nq\nName a tree.\n")
    process.stdin.close()
    seen = b""
    while True:
        try:
            chunk = os.read(main, 1 << 16)
        except OSError:  # the terminal's other end closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(main)
    assert process.wait(timeout=60) == 0
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode("utf-8", "replace"))
    with ArenaStore(tmp_path / "arena.sqlite3") as store:
        battles = list(reversed(store.battles()))
    assert [(b.prompt, b.vote) for b in battles] == [("Say hello.", "b"), ("Name a fruit.", None)]
    assert not battles[0].blind and battles[1].state == "answered"
    first = battles[0]
    assert f"A · {first.a.model}" in shown and f"B · {first.b.model}" in shown
    assert "answering..." in shown and "tok/s" in shown  # drawn before the end, and after
    assert "'z' is no vote" in shown
    assert f"your vote: {first.b.model} wins" in shown
