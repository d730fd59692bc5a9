"""A conversation's fifth turn, warm from its earlier turns, against the same prompt sent cold.

    .venv/bin/python benchmarks/multiturn_cache.py [--model default] [--repeats 5]
        [--prompt-tokens 2000] [--turns 5] [--answer-tokens 32] [--parallel 4]
        [--text FILE ...] [--out docs/multiturn_cache.json]

Two `scheda serve` processes on loopback, the same model and settings, both
started before anything is measured and each warmed up by one short request:

- **warm**: a conversation of `--turns` turns is sent turn by turn, each turn
  the whole conversation so far (as a chat client sends it) plus a new user
  message of real text, each answered in at most `--answer-tokens` tokens,
  greedy; the last turn's prompt is about `--prompt-tokens` tokens. Its time to
  the first token is the warm figure: llama.cpp reads the earlier turns from
  the slot's cache and evaluates only the new message (and the previous
  answer's last tokens).
- **cold**: the very same last-turn request (the same messages, the answers the
  warm server gave included) is sent to the other server, which has never seen
  any of this conversation: nothing of it is in its slots or its prompt cache
  but the chat template's head, which every conversation shares. Its time to
  the first token is the cold figure.

The cold server is a second server started alike rather than the warm one
with its cache refused: scheda's API has no switch for llama.cpp's
`cache_prompt`, and a fresh server is what a conversation meets the first time
anyway. Each repeat is a new conversation, from its own stretch of the text
(the repository's docs by default; `--text` names other files), so no repeat
finds another's prompts; the warm and cold requests of a repeat are sent one
after the other, so a slow spell of the machine falls on both alike. One
request is in flight at a time. The figures are medians over the repeats;
the ratio is the warm median over the cold one, the target at most 0.3.
Each turn's `usage.prompt_tokens_details.cached_tokens` is recorded too.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 180
REQUEST_TIMEOUT_S = 600
TARGET = 0.3  # the warm fifth turn's time to first token, at most this share of the cold one
TEMPLATE_TOKENS = 8  # a turn's own tokens in the template (role markers), roughly
HEAD_TOKENS = 30  # the template's head (the embedded model's default system prompt), roughly
WARM_UP = "Say hello."


# Servers -------------------------------------------------------------------------------------


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(model: str, parallel: int, context: int, logs: Path) -> Iterator[Server]:
    """`scheda serve` in a session of its own, ready to answer; stopped on the way out."""
    port = free_port()
    log = logs / f"serve-{port}.log"
    command = [sys.executable, "-m", "scheda", "serve", model, "--port", str(port)]
    command += ["--parallel", str(parallel), "--context", str(context)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_ready(process, port, log)
        yield Server(port, process, log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_ready(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"scheda serve exited:\n{log.read_text(errors='replace')}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"scheda serve did not answer in {START_TIMEOUT_S} s")


def post(port: int, path: str, body: dict[str, Any]) -> Any:
    conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        answer = conn.getresponse()
        data = answer.read()
    finally:
        conn.close()
    if answer.status != 200:
        raise RuntimeError(f"{path}: HTTP {answer.status}: {data[:300]!r}")
    return json.loads(data)


# A turn ------------------------------------------------------------------------------------


@dataclass
class Turn:
    """One streamed chat request, as its client saw it."""

    prompt_tokens: int
    cached_tokens: int
    first_token_s: float
    answer: str


def turn(port: int, messages: list[dict[str, str]], answer_tokens: int) -> Turn:
    """Stream one chat answer; its time to the first text and its usage."""
    body = {
        "messages": messages,
        "max_tokens": answer_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
    try:
        conn.connect()  # the connection is not what is measured
        sent = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", json.dumps(body), HEADERS)
        answer = conn.getresponse()
        if answer.status != 200:
            raise RuntimeError(f"HTTP {answer.status}: {answer.read()[:300]!r}")
        first, text, usage = None, [], None
        for event in events(answer):
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    first = first or time.perf_counter()
                    text.append(piece)
            usage = event.get("usage") or usage
    finally:
        conn.close()
    if first is None or usage is None:
        raise RuntimeError("an answer came with no text or no usage")
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    if cached is None:
        raise RuntimeError("the server does not report cached tokens: is it scheda on llama.cpp?")
    return Turn(int(usage["prompt_tokens"]), int(cached), first - sent, "".join(text))


HEADERS = {"Content-Type": "application/json"}


def events(answer: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
    for raw in answer:
        line = raw.strip()
        if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
            event = json.loads(line[5:])
            if "error" in event:
                raise RuntimeError(f"error event: {event['error']}")
            yield event


# The text ----------------------------------------------------------------------------------


def read_text(files: list[Path]) -> list[str]:
    """The words of the files, one after another (read now, so the text is the repository's
    as it is)."""
    return [w for f in files for w in f.read_text(encoding="utf-8", errors="replace").split()]


class Passages:
    """Consecutive stretches of the text, each about `tokens` tokens by the model's own count,
    never one twice."""

    def __init__(self, words: list[str], port: int) -> None:
        self.words = words
        self.port = port
        self.at = 0
        self.tokens_per_word = count(port, " ".join(words[:2000])) / len(words[:2000])

    def next(self, tokens: int) -> str:
        size = max(1, round(tokens / self.tokens_per_word))
        for _ in range(2):  # sized by the rate so far, then by this stretch's own
            if self.at + size > len(self.words):
                raise SystemExit("the text ran out: give a longer --text or fewer --repeats")
            piece = " ".join(self.words[self.at : self.at + size])
            size = max(1, round(size * tokens / count(self.port, piece)))
        self.at += len(piece.split())
        return piece


def count(port: int, text: str) -> int:
    return int(post(port, "/tokenize", {"prompt": text, "add_special_tokens": False})["count"])


# Measuring -----------------------------------------------------------------------------------


@dataclass
class Repeat:
    warm: list[Turn]  # every turn of the conversation on the warm server
    cold: Turn  # the last turn alone on the cold server


def repeat(warm: Server, cold: Server, passages: Passages, config: argparse.Namespace) -> Repeat:
    answers = (config.turns - 1) * config.answer_tokens
    per_turn = (config.prompt_tokens - HEAD_TOKENS - answers) // config.turns - TEMPLATE_TOKENS
    messages: list[dict[str, str]] = []
    turns = []
    for _ in range(config.turns):
        messages.append({"role": "user", "content": passages.next(per_turn)})
        done = turn(warm.port, messages, config.answer_tokens)
        turns.append(done)
        messages.append({"role": "assistant", "content": done.answer})
    last = messages[:-1]  # the last turn's request, without its answer
    return Repeat(turns, turn(cold.port, last, config.answer_tokens))


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def summary(repeats: list[Repeat], turns: int) -> dict[str, Any]:
    rows = []
    for i in range(turns):
        at = [r.warm[i] for r in repeats]
        rows.append(
            {
                "turn": i + 1,
                "prompt_tokens": median([t.prompt_tokens for t in at]),
                "cached_tokens": median([t.cached_tokens for t in at]),
                "first_token_s": median([t.first_token_s for t in at]),
            }
        )
    cold = [r.cold for r in repeats]
    cold_row = {
        "turn": f"{turns} cold",
        "prompt_tokens": median([t.prompt_tokens for t in cold]),
        "cached_tokens": median([t.cached_tokens for t in cold]),
        "first_token_s": median([t.first_token_s for t in cold]),
    }
    ratio = rows[-1]["first_token_s"] / cold_row["first_token_s"]
    return {"rows": [*rows, cold_row], "ratio": ratio, "met": ratio <= TARGET}


def table(result: dict[str, Any], repeats: int) -> str:
    lines = [
        "| turn | prompt tokens | cached tokens | first token s |",
        "|---|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['turn']} | {row['prompt_tokens']:,.0f} | {row['cached_tokens']:,.0f} "
            f"| {row['first_token_s']:.3f} |"
        )
    verdict = "met" if result["met"] else "NOT met"
    lines += [
        "",
        f"Warm ÷ cold time to first token at the last turn: **{result['ratio']:.3f}** "
        f"(target ≤ {TARGET}: {verdict}); medians over {repeats} repeats.",
    ]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the figures were measured on (no host names, no paths)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version()}
    for package in ("scheda", "xllamacpp", "fastapi", "uvicorn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "system": platform.system(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "versions": versions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--prompt-tokens", type=int, default=2000, help="the last turn's prompt")
    parser.add_argument("--answer-tokens", type=int, default=32)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--context", type=int, default=4096, help="per slot")
    parser.add_argument("--text", type=Path, nargs="+", default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "multiturn_cache.json")
    config = parser.parse_args()
    files = config.text or sorted((ROOT / "docs").glob("*.md"))
    words = read_text(files)
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory() as logs,
        serving(config.model, config.parallel, config.context, Path(logs)) as warm,
        serving(config.model, config.parallel, config.context, Path(logs)) as cold,
    ):
        for server in (warm, cold):  # a first request's one-time costs, out of the way
            turn(server.port, [{"role": "user", "content": WARM_UP}], 4)
        passages = Passages(words, warm.port)
        repeats = []
        for i in range(config.repeats):
            repeats.append(repeat(warm, cold, passages, config))
            last = repeats[-1]
            print(
                f"repeat {i + 1}: warm {last.warm[-1].first_token_s:.3f} s, "
                f"cold {last.cold.first_token_s:.3f} s",
                file=sys.stderr,
            )
    result = summary(repeats, config.turns)
    print(table(result, config.repeats))
    report = {
        "config": {
            **{k: v for k, v in vars(config).items() if k not in ("text", "out")},
            "text": [str(f.relative_to(ROOT)) if f.is_relative_to(ROOT) else f.name for f in files],
        },
        "machine": machine(),
        "wall_s": round(time.monotonic() - started, 1),
        "summary": result,
        "repeats": [asdict(r) for r in repeats],
    }
    config.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {config.out} ({report['wall_s']} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
