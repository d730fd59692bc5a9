"""`scheda generate` as a user runs it: a real process on the embedded model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from scheda.engines import Message, open_model
from scheda.errors import UsageError
from scheda.talk.prompt_fit import (
    MIN_ANSWER_ROOM,
    answer_room,
    fit_history,
    fit_prompt,
    fit_user_message,
    prompt_tokens,
)

SCHEDA = Path(sys.executable).parent / "scheda"


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCHEDA), *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=180,
        env={**os.environ, "COLUMNS": "120"},
    )


def as_json(*args: str) -> dict[str, Any]:
    done = run("generate", *args, "--json")
    assert done.returncode == 0, done.stderr
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


@pytest.mark.slow
def test_greedy_generation_streams_the_answer() -> None:
    done = run("generate", "default", "The capital of France is", "-t", "0", "-m", "6")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(" Paris")
    assert done.stderr == ""


def test_json_has_text_counts_finish_reason_and_timings() -> None:
    data = as_json("default", "The capital of France is", "-t", "0", "-m", "5")
    assert data["text"].startswith(" Paris")
    assert data["finish_reason"] == "length"
    assert data["completion_tokens"] == 5
    assert data["prompt_tokens"] > 0
    timings = data["timings"]
    for key in ("load_s", "first_token_s", "tokens_per_s", "prompt_tokens_per_s", "total_s"):
        assert timings[key] > 0, key
    assert data["engine"] == "llama.cpp"
    assert data["sampling"]["temperature"] == 0


@pytest.mark.slow
def test_the_same_seed_gives_the_same_text_across_processes() -> None:
    args = ("default", "Write a story about a cat.", "--seed", "42", "-t", "1.0", "-m", "20")
    first, second = as_json(*args), as_json(*args)
    other = as_json(*args[:3], "43", *args[4:])
    assert first["text"] == second["text"]
    assert first["text"] != other["text"]


@pytest.mark.slow
def test_n_samples_are_printed_one_after_the_other() -> None:
    done = run("generate", "default", "Once upon a time", "-n", "2", "-m", "8", "--seed", "1")
    assert done.returncode == 0, done.stderr
    assert "sample 1" in done.stdout and "sample 2" in done.stdout
    data = as_json("default", "Once upon a time", "-n", "2", "-m", "8")
    assert len(data["samples"]) == 2


@pytest.mark.slow
def test_sampling_options_reach_the_engine() -> None:
    data = as_json(
        "default",
        "List three colours:",
        "--top-k",
        "5",
        "--top-p",
        "0.5",
        "--min-p",
        "0.1",
        "--repeat-penalty",
        "1.3",
        "--stop",
        "\n",
        "-m",
        "30",
        "--logprobs",
        "2",
    )
    assert data["sampling"]["top_k"] == 5 and data["sampling"]["repeat_penalty"] == 1.3
    assert "\n" not in data["text"]
    logprobs = data["samples"][0]["logprobs"]
    assert logprobs and len(logprobs[0]["top"]) == 2


@pytest.mark.slow
def test_chat_applies_the_template_and_the_system_prompt() -> None:
    data = as_json(
        "default", "What is 2+2?", "--chat", "--system", "Be terse.", "-t", "0", "-m", "16"
    )
    plain = as_json("default", "What is 2+2?", "-t", "0", "-m", "16")
    assert data["prompt_tokens"] > plain["prompt_tokens"] + 10  # the template's own tokens
    assert data["text"] != plain["text"]


@pytest.mark.slow
def test_prompt_from_stdin() -> None:
    done = run("generate", "default", "-", "-t", "0", "-m", "4", stdin="The capital of France is")
    assert done.returncode == 0 and done.stdout.startswith(" Paris")


def test_a_prompt_longer_than_the_context_says_both_counts() -> None:
    done = run("generate", "default", "word " * 400, "--context", "128", "-m", "4")
    assert done.returncode == 2
    line = done.stderr.strip()
    assert line.startswith("error: the prompt is 40") and "the context holds 128" in line
    assert "--truncate" in line and len(line.splitlines()) == 1


def test_truncate_cuts_the_start_and_says_so() -> None:
    done = run(
        "generate",
        "default",
        "word " * 400 + "The capital of France is",
        "--context",
        "128",
        "-m",
        "4",
        "-t",
        "0",
        "--truncate",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["truncated_tokens"] > 270
    assert data["prompt_tokens"] < 128
    assert "cut the first" in done.stderr and "128-token context" in done.stderr


def test_bad_options_are_one_line_errors() -> None:
    for args, expected in (
        (("default", "hi", "--dtype", "float16"), "--dtype is for the transformers engine"),
        (("default", "hi", "--system", "x"), "--system applies to --chat"),
        (("default", "  "), "the prompt is empty"),
        (("nothing.gguf", "hi"), "no such file"),
        (("default", "hi", "--engine", "vllm-next"), "unknown engine"),
    ):
        done = run("generate", *args)
        assert done.returncode == 2, args
        assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


# Greedy, with the chat template, the embedded model answers this with more than 300 tokens.
LONG_STORY = "Tell me a long story about a dragon."


@pytest.mark.slow
def test_ctrl_c_stops_the_answer_and_keeps_what_was_written() -> None:
    child = subprocess.Popen(
        [str(SCHEDA), "generate", "default", LONG_STORY, "--chat", "-t", "0", "-m", "2000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert child.stdout is not None
    first = child.stdout.read(20)  # the answer has started
    time.sleep(0.3)
    child.send_signal(signal.SIGINT)
    rest, err = child.communicate(timeout=60)
    assert child.returncode == 130
    assert len(first + rest) > 20
    assert "stopped" in err and "Traceback" not in err


def test_fit_prompt_cuts_the_oldest_tokens(smollm_path: Path) -> None:
    with open_model(smollm_path, "llama.cpp", context=64) as engine:
        long = " ".join(str(i) for i in range(200)) + " end"
        with pytest.raises(UsageError, match="the context holds 64"):
            fit_prompt(engine, long, max_tokens=8, truncate=False)
        fitted = fit_prompt(engine, long, max_tokens=8, truncate=True)
        assert fitted.prompt.endswith(" end") and fitted.tokens <= 64 - 8
        assert fitted.cut_tokens > 0
        messages, chat_fit = fit_user_message(
            engine, [Message("system", "Be brief."), Message("user", long)], 8, truncate=True
        )
        assert messages[0].content == "Be brief."  # the system prompt is never cut
        assert messages[1].content.endswith(" end") and chat_fit.tokens <= 64 - 8


def test_every_fit_leaves_the_answer_the_same_room(smollm_path: Path) -> None:
    """A prompt, a chat's last message and a chat's history are cut by one rule (answer_room):
    a limited answer keeps its own room, an unlimited one (max_tokens 0) half the context."""
    assert [answer_room(64, m) for m in (0, 4, 20, 100)] == [32, MIN_ANSWER_ROOM, 20, 32]
    long = " ".join(str(i) for i in range(200)) + " end"
    turns = [Message(role, f"{role} {i}") for i in range(8) for role in ("user", "assistant")]
    user = Message("user", "hi")
    with open_model(smollm_path, "llama.cpp", context=128) as engine:
        dropped: dict[int, int] = {}
        for max_tokens in (0, 20, 100):
            most = 128 - answer_room(128, max_tokens)
            fitted = fit_prompt(engine, long, max_tokens, truncate=True)
            _, chat_fit = fit_user_message(engine, [Message("user", long)], max_tokens, True)
            kept, dropped[max_tokens] = fit_history(engine, None, [*turns, user], max_tokens)
            history = prompt_tokens(engine, engine.chat_prompt(kept), chat=True)
            assert max(fitted.tokens, chat_fit.tokens, history) <= most
    assert 0 < dropped[20] < dropped[0] == dropped[100]  # more room for the answer, fewer turns
