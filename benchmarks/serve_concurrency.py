"""Concurrent clients against `scheda serve`, llama.cpp's own server and llama-cpp-python's.

    .venv/bin/python benchmarks/serve_concurrency.py [--model PATH] [--levels 1,2,4,8,16]
        [--rounds 3] [--parallel N] [--max-tokens 64] [--answers 4]
        [--servers scheda,llamacpp,llama-cpp-python,scheda-baseline,scheda-ray]
        [--baseline SRC] [--replicas 2]
        [--quiet-wait 600] [--interleave]
        [--out docs/serve_concurrency.json] [--png docs/serve_concurrency.png]

For each concurrency level, that many clients start together, each streaming one
chat answer of `--max-tokens` tokens (`ignore_eos`) for a prompt of its own. The
figures per level: aggregate tokens/s (all completion tokens over the wall time
of the whole batch) and time to first token (TTFT, the first chunk with text).

The servers:

- `scheda`: `scheda serve MODEL --parallel N`, with the same context per slot.
- `llamacpp`: llama.cpp's server as `xllamacpp` embeds it, with nothing in front,
  started by this script in a process of its own (the same parameters scheda's
  engine sets: N slots, `n_ctx = context × N`, one thread per physical core).
- `llama-cpp-python`: `python -m llama_cpp.server` (one request at a time).
- `scheda-baseline`: `scheda serve` again, from another source tree (`--baseline
  SRC`, a checkout whose `src/` is put first on the path), to measure a change
  side by side with the code before it (`git archive main src | tar -x -C SRC`).
- `scheda-ray`: `scheda serve MODEL --ray --replicas R` (`--replicas`, 2 by default) on a
  local Ray cluster it starts itself, the same slots and cores in all as `scheda`'s one
  engine: each replica gets N / R slots and cores / R threads. So the figures show what
  Ray Serve costs in front of llama.cpp, and what R smaller engines give against one.
  Its CPU time counts the cluster's processes too (they are the server's children).

One server runs at a time, warmed up by one request, and is stopped before the
next starts: on a small machine two servers would share the cores. Every round
runs every server over every level (the order of servers rotates each round),
so a slow spell of the machine falls on all of them alike; a level of fewer
clients than `--answers` (4) runs its batch again, each time with new prompts,
so that every level has at least that many answers a round. The figures are the
medians over the batches of every round. Each server's CPU time per level is recorded too: it
shows where a server spends time beyond llama.cpp's decoding. Before each server
and batch the script waits (up to `--quiet-wait` seconds) for other programs to
leave the CPU, and measures a batch again when they took it meanwhile.

`--interleave` serves every server at once instead (an idle one uses no CPU) and
sends each batch to every server in turn, the order turned every time: each of
scheda's batches has a twin on every other server, the same prompts seconds apart.
It is the way to measure a small difference (a few percent at one or two clients),
which the spread between one start of a server and the next would hide.

Either way the report pairs scheda with each other server (`paired`): per round
(per batch with `--interleave`) the ratio of tokens/s and the time to first token
added, then their medians over the rounds with a 90% bootstrap interval.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from scheda.display.terminal import console as terminal_console
from scheda.formulas.hardware import physical_cores

HOST = "127.0.0.1"
SERVERS = ("scheda", "llamacpp", "llama-cpp-python", "scheda-baseline", "scheda-ray")
LABELS = {
    "scheda": "scheda serve",
    "scheda-baseline": "scheda serve (baseline)",
    "scheda-ray": "scheda serve --ray",
    "llamacpp": "llama.cpp server (xllamacpp)",
    "llama-cpp-python": "llama-cpp-python server",
}
CONTEXT = 2048  # tokens per slot, for every server
# The llama.cpp listener's HTTP threads: one per client at the highest level, and spare.
HTTP_THREADS = 32
START_TIMEOUT_S = 180
# A local Ray cluster, Serve's controller and the replicas start in minutes on a busy small
# machine; stopping them cleanly (replicas, then the cluster) takes a while too.
RAY_START_TIMEOUT_S = 600
RAY_STOP_TIMEOUT_S = 90
REPLICAS = 2  # scheda-ray's replicas (--replicas)
# Answers per level and round at least (--answers): one answer of 64 tokens is under a second,
# and a single one per round leaves one and two clients' figures to the machine's noise.
ANSWERS = 4
# Other programs' share of the machine above which a server is not started yet: the figures
# would measure them too. How long to wait for it to go quiet before going on regardless.
QUIET_SHARE = 0.15
QUIET_WAIT_S = 600
TRIES = 3
REQUEST_TIMEOUT_S = 600
# The targets the figures are judged by: (server compared, level, least ratio of scheda's).
TARGETS = (("llamacpp", 8, 0.9), ("llamacpp", 16, 0.9), ("llama-cpp-python", 8, 2.5))
# At one and two clients, on the pairs (a few percent, which only pairs can tell): at least this
# share of llama.cpp's server's tokens/s, and at most this much added to the first token.
PAIRED_TARGETS = ((1, 0.97, 0.010), (2, 0.97, 0.010))

# Prompts: form × adjective × subject (then numbered, `prompt`), so that no two requests in a
# server's run share a prompt and a slot's prompt cache cannot answer one from another's.
FORMS = ("Write a short poem about", "Write a haiku about", "Write four lines of verse about")
ADJECTIVES = ("quiet", "stormy", "ancient", "bright", "lonely", "frozen", "golden", "hidden")
SUBJECTS = (
    "sea", "mountain", "city", "forest", "river", "desert", "library", "garden",
    "train", "lighthouse", "market", "comet", "bridge", "island", "harbour", "orchard",
)  # fmt: skip


WARM_UP = "Say hello."


def prompt(index: int) -> str:
    """A prompt of its own for every index: one that came back would be answered from the
    server's prompt cache (llama.cpp keeps the prompts its slots gave up, up to a bound), and
    a long run would measure how much of it each server keeps, not the serving."""
    subject = SUBJECTS[index % len(SUBJECTS)]
    adjective = ADJECTIVES[(index // len(SUBJECTS)) % len(ADJECTIVES)]
    kinds = len(SUBJECTS) * len(ADJECTIVES)
    form = FORMS[(index // kinds) % len(FORMS)]
    told = index // (kinds * len(FORMS))  # past the combinations: numbered, still new
    return f"{form} a {adjective} {subject}." + (f" Story {told + 1}." if told else "")


# Servers -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def scheda_command(model: str, port: int, parallel: int) -> list[str]:
    command = [sys.executable, "-m", "scheda", "serve", model, "--port", str(port)]
    command += ["--parallel", str(parallel)]
    if "--context" in scheda_serve_help():
        command += ["--context", str(CONTEXT)]
    return command


def scheda_serve_help() -> str:
    done = subprocess.run(
        [sys.executable, "-m", "scheda", "serve", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    return done.stdout


def llamacpp_command(path: Path, port: int, parallel: int) -> list[str]:
    # This same file, in its worker mode (`_llamacpp_worker`, at the end).
    worker = [str(path), str(port), str(parallel)]
    return [sys.executable, str(Path(__file__).resolve()), "_llamacpp_worker", *worker]


def llama_cpp_python_command(path: Path, port: int) -> list[str]:
    cores = str(physical_cores())
    return [
        sys.executable, "-m", "llama_cpp.server", "--model", str(path),
        "--n_ctx", str(CONTEXT), "--n_threads", cores, "--n_threads_batch", cores,
        "--host", HOST, "--port", str(port),
        # By default a new request interrupts the one being answered: queue them instead.
        "--interrupt_requests", "False",
    ]  # fmt: skip


# The other scheda source tree `scheda-baseline` runs (--baseline).
BASELINE: Path | None = None


def server_env(name: str) -> dict[str, str] | None:
    """The baseline's `src/` first on the path: the installed scheda is the one measured."""
    if name != "scheda-baseline" or BASELINE is None:
        return None
    return {**os.environ, "PYTHONPATH": str(BASELINE / "src")}


def scheda_ray_command(model: str, port: int, parallel: int) -> list[str]:
    """The same slots and threads as `scheda`'s one engine, shared out over the replicas."""
    slots = max(1, parallel // REPLICAS)
    threads = max(1, physical_cores() // REPLICAS)
    command = scheda_command(model, port, slots)
    return [*command, "--ray", "--replicas", str(REPLICAS), "--threads", str(threads)]


def server_command(name: str, model: str, path: Path, port: int, parallel: int) -> list[str]:
    if name in ("scheda", "scheda-baseline"):
        return scheda_command(model, port, parallel)
    if name == "scheda-ray":
        return scheda_ray_command(model, port, parallel)
    if name == "llamacpp":
        return llamacpp_command(path, port, parallel)
    return llama_cpp_python_command(path, port)


@dataclass
class Running:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    model_id: str
    log: Path

    def cpu_seconds(self) -> float:
        """CPU time of the server and its children so far (user + system)."""
        total = 0.0
        try:
            root = psutil.Process(self.process.pid)
            for p in [root, *root.children(recursive=True)]:
                times = p.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            pass
        return total


@contextmanager
def serving(name: str, model: str, path: Path, parallel: int, logs: Path) -> Iterator[Running]:
    """One server in a session of its own, ready to answer; stopped on the way out."""
    port = free_port()
    log = logs / f"{name}-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            server_command(name, model, path, port, parallel),
            env=server_env(name),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so that stopping it stops its children too
        )
    on_ray = name == "scheda-ray"
    try:
        model_id = wait_ready(
            process, port, log, RAY_START_TIMEOUT_S if on_ray else START_TIMEOUT_S
        )
        yield Running(name, process, port, model_id, log)
    finally:
        stop(process, RAY_STOP_TIMEOUT_S if on_ray else 20)


def wait_ready(
    process: subprocess.Popen[bytes], port: int, log: Path, within: float = START_TIMEOUT_S
) -> str:
    """Poll `/v1/models` until the server answers; its first model's id."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}):\n{tail(log)}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            conn.request("GET", "/v1/models")
            answer = conn.getresponse()
            if answer.status == 200:
                return str(json.loads(answer.read())["data"][0]["id"])
        except (OSError, http.client.HTTPException, ValueError, KeyError, IndexError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the server did not answer in {within:.0f} s:\n{tail(log)}")


def stop(process: subprocess.Popen[bytes], within: float = 20) -> None:
    """SIGTERM, then SIGKILL after `within` s (`scheda serve --ray` stops its cluster on
    SIGTERM; killed, it would leave the cluster running)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=within)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


# Clients -------------------------------------------------------------------------------------


@dataclass
class Answer:
    """One streamed answer, as its client saw it."""

    sent: float  # perf_counter when the request went out
    first: float | None  # when the first chunk with text came
    end: float
    tokens: int  # from the final usage chunk, else the chunks with text
    chunks: int  # chunks with text
    from_usage: bool


def body(model_id: str, text: str, max_tokens: int) -> bytes:
    return json.dumps(
        {
            "model": model_id,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
            "ignore_eos": True,  # llama.cpp's: every answer is max_tokens long
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()


def events(answer: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
    """The JSON events of a server-sent-events stream, up to `[DONE]`."""
    for raw in answer:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return
        yield json.loads(data)


def stream(conn: http.client.HTTPConnection, payload: bytes) -> Answer:
    sent = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", payload, {"Content-Type": "application/json"})
    answer = conn.getresponse()
    if answer.status != 200:
        raise RuntimeError(f"HTTP {answer.status}: {answer.read()[:500]!r}")
    first, chunks, usage = None, 0, None
    for event in events(answer):
        if "error" in event:
            raise RuntimeError(f"error event: {event['error']}")
        if any((c.get("delta") or {}).get("content") for c in event.get("choices") or []):
            chunks += 1
            first = first or time.perf_counter()
        usage = event.get("usage") or usage
    end = time.perf_counter()
    tokens = int(usage["completion_tokens"]) if usage else chunks
    return Answer(sent, first, end, tokens, chunks, usage is not None)


def batch(port: int, payloads: list[bytes]) -> list[Answer]:
    """Send every payload at once, one client thread and connection each."""
    answers: list[Answer | None] = [None] * len(payloads)
    errors: list[BaseException] = []
    # Connections are opened first and the requests released together by the barrier.
    conns = [http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S) for _ in payloads]
    for conn in conns:
        conn.connect()
    go = threading.Barrier(len(payloads))

    def client(i: int) -> None:
        go.wait()
        try:
            answers[i] = stream(conns[i], payloads[i])
        except BaseException as exc:
            errors.append(exc)
        finally:
            conns[i].close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(payloads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(payloads)} requests failed: {errors[0]}")
    return [a for a in answers if a is not None]


# Measuring -----------------------------------------------------------------------------------


@dataclass
class Level:
    """One batch: `clients` requests at once, on one server, in one round."""

    clients: int
    tokens: int
    short_answers: int  # answers with fewer than max_tokens tokens (a server that stops at EOS)
    wall_s: float
    tokens_per_s: float
    ttft_s: list[float]
    itl_s: float | None  # median time between tokens within an answer, after its first
    server_cpu_s: float
    client_cpu_s: float
    others_cpu_s: float  # the rest of the machine's busy time meanwhile: others' programs
    others_share: float  # others_cpu_s over the machine's capacity in the wall time
    steal_share: float  # time the hypervisor gave the cores to other machines, the same way
    tokens_from_usage: bool
    attempts: int = 1  # measured again when other programs took the CPU


def measure_level(server: Running, clients: int, first_index: int, max_tokens: int) -> Level:
    texts = [prompt(first_index + i) for i in range(clients)]
    payloads = [body(server.model_id, text, max_tokens) for text in texts]
    before = counters(server)
    answers = batch(server.port, payloads)
    after = counters(server)
    server_cpu, client_cpu, busy, steal = (b - a for a, b in zip(before, after, strict=True))
    tokens = sum(a.tokens for a in answers)
    wall = max(a.end for a in answers) - min(a.sent for a in answers)
    capacity = wall * (psutil.cpu_count() or 1)  # CPU seconds the machine had meanwhile
    others = max(0.0, busy - server_cpu - client_cpu)
    gaps = [(a.end - a.first) / (a.chunks - 1) for a in answers if a.first and a.chunks > 1]
    return Level(
        clients=clients,
        tokens=tokens,
        short_answers=sum(a.tokens < max_tokens for a in answers),
        wall_s=wall,
        tokens_per_s=tokens / wall,
        ttft_s=[a.first - a.sent for a in answers if a.first is not None],
        itl_s=statistics.median(gaps) if gaps else None,
        server_cpu_s=server_cpu,
        client_cpu_s=client_cpu,
        others_cpu_s=others,
        others_share=others / capacity,
        steal_share=steal / capacity,
        tokens_from_usage=all(a.from_usage for a in answers),
    )


def busy_s() -> float:
    """CPU seconds the whole machine has been busy (all programs, all cores)."""
    t = psutil.cpu_times()
    return float(sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq")))


def counters(server: Running) -> tuple[float, float, float, float]:
    """CPU seconds so far: the server's, this process's, the machine's busy and stolen time."""
    stolen = float(getattr(psutil.cpu_times(), "steal", 0.0))
    return server.cpu_seconds(), time.process_time(), busy_s(), stolen


def others_share(own_cpu_s: Callable[[], float], seconds: float = 1.0) -> float:
    """Share of the machine that programs other than ours use, over the next `seconds`."""
    busy, own = busy_s(), own_cpu_s() + time.process_time()
    time.sleep(seconds)
    others = busy_s() - busy - (own_cpu_s() + time.process_time() - own)
    return max(0.0, others) / (seconds * (psutil.cpu_count() or 1))


def wait_quiet(own_cpu_s: Callable[[], float], on_wait: Callable[[], None]) -> None:
    """Wait (up to QUIET_WAIT_S) until other programs leave the machine alone."""
    start = time.monotonic()
    while time.monotonic() - start < QUIET_WAIT_S:
        if others_share(own_cpu_s) <= QUIET_SHARE:
            return
        on_wait()


@dataclass
class Config:
    model: str
    path: Path
    levels: list[int]
    rounds: int
    parallel: int
    max_tokens: int
    servers: list[str]
    answers: int
    out: Path
    png: Path
    markdown: bool
    interleave: bool = False


Raw = dict[str, dict[int, list[Level]]]  # server → clients → one Level per round


def progress(console: Console) -> Progress:
    """The run's bar: what it measures now, how many batches of how many, and its ETA."""
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
    )  # fmt: skip
    return Progress(*columns, console=console)


def empty(config: Config) -> tuple[Raw, int]:
    """The run's figures, none yet, and how many batches it will measure."""
    raw: Raw = {name: {n: [] for n in config.levels} for name in config.servers}
    batches = sum(repeats(clients, config.answers) for clients in config.levels)
    return raw, config.rounds * len(config.servers) * batches


def run(config: Config, console: Console) -> Raw:
    """Every round: every server (rotated each round), every level."""
    if config.interleave:
        return run_interleaved(config, console)
    raw, steps = empty(config)
    with tempfile.TemporaryDirectory() as logs, progress(console) as bar:
        task = bar.add_task("starting", total=steps)

        def show(text: str) -> None:
            bar.update(task, description=text)

        for round_ in range(config.rounds):
            shift = round_ % len(config.servers)
            for name in config.servers[shift:] + config.servers[:shift]:
                where = f"round {round_ + 1}/{config.rounds} · {name}"
                busy = f"{where} · waiting: other programs are using the CPU"
                wait_quiet(lambda: 0.0, functools.partial(show, busy))
                show(f"{where} · starting")
                with serving(name, config.model, config.path, config.parallel, Path(logs)) as s:
                    batch(s.port, [body(s.model_id, WARM_UP, config.max_tokens)])
                    for clients, index in prompt_indexes(config.levels, round_, config.answers):
                        show(f"{where} · {clients} clients")
                        busy = f"{where} · {clients} clients · waiting: the CPU is busy"
                        level = measure_quietly(
                            s, clients, index, config.max_tokens, functools.partial(show, busy)
                        )
                        raw[name][clients].append(level)
                        bar.advance(task)
    return raw


def run_interleaved(config: Config, console: Console) -> Raw:
    """Every server loaded at once; every batch sent to each in turn (the order turned each
    time), so that the batches of two servers pair one to one."""
    raw, steps = empty(config)
    with (
        tempfile.TemporaryDirectory() as logs,
        contextlib.ExitStack() as stack,
        progress(console) as bar,
    ):
        task = bar.add_task("starting every server", total=steps)
        servers = [
            stack.enter_context(serving(n, config.model, config.path, config.parallel, Path(logs)))
            for n in config.servers
        ]
        for s in servers:
            batch(s.port, [body(s.model_id, WARM_UP, config.max_tokens)])
        turn = 0
        for round_ in range(config.rounds):
            for clients, index in prompt_indexes(config.levels, round_, config.answers):
                shift = turn % len(servers)
                turn += 1
                for s in servers[shift:] + servers[:shift]:
                    where = f"round {round_ + 1}/{config.rounds} · {s.name} · {clients} clients"
                    bar.update(task, description=where)
                    busy = f"{where} · waiting: the CPU is busy"
                    waiting = functools.partial(bar.update, task, description=busy)
                    level = measure_quietly(s, clients, index, config.max_tokens, waiting)
                    raw[s.name][clients].append(level)
                    bar.advance(task)
    return raw


def measure_quietly(
    server: Running, clients: int, index: int, max_tokens: int, on_wait: Callable[[], None]
) -> Level:
    """One level, measured again (up to TRIES times) if other programs took the CPU meanwhile.

    On two cores llama.cpp's threads spin while they wait for each other: another
    program on the CPU does not just take its share, it stalls the decoding.
    """
    for attempt in range(1, TRIES + 1):
        time.sleep(0.2)  # let the server release its slots between batches
        level = measure_level(server, clients, index, max_tokens)
        level.attempts = attempt
        if level.others_share <= QUIET_SHARE or attempt == TRIES:
            break
        wait_quiet(server.cpu_seconds, on_wait)
    return level


def repeats(clients: int, answers: int) -> int:
    """Batches of `clients` a round measures for at least `answers` answers (--answers)."""
    return max(1, -(-answers // clients))


def prompt_indexes(levels: list[int], round_: int, answers: int) -> Iterator[tuple[int, int]]:
    """Each batch's level and first prompt: the same for every server in a round, a new one
    for every batch, new each round."""
    index = round_ * sum(clients * repeats(clients, answers) for clients in levels)
    for clients in levels:
        for _ in range(repeats(clients, answers)):
            yield clients, index
            index += clients


# Results -------------------------------------------------------------------------------------


def p90(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def summarize(levels: list[Level]) -> dict[str, Any]:
    """One level of one server over its rounds: medians, and TTFT over all its answers."""
    ttfts = [t for level in levels for t in level.ttft_s]
    itls = [level.itl_s for level in levels if level.itl_s is not None]
    return {
        "tokens_per_s": statistics.median(level.tokens_per_s for level in levels),
        "ttft_median_s": statistics.median(ttfts),
        "ttft_p90_s": p90(ttfts),
        "itl_median_s": statistics.median(itls) if itls else None,
        # Server CPU time per token generated: llama.cpp's decoding plus whatever the
        # server does around it (HTTP, JSON, Python); on 2 cores it competes with decoding.
        "server_cpu_ms_per_token": statistics.median(
            1000 * level.server_cpu_s / level.tokens for level in levels
        ),
        "tokens_per_answer": statistics.median(level.tokens / level.clients for level in levels),
        "short_answers": sum(level.short_answers for level in levels),
        "others_share_max": max(level.others_share for level in levels),
        "steal_share_max": max(level.steal_share for level in levels),
        "batches": len(levels),
    }


Summary = dict[str, dict[int, dict[str, Any]]]  # server → clients → figures


def ratio(summary: Summary, over: str, clients: int) -> float | None:
    mine = summary.get("scheda", {}).get(clients)
    theirs = summary.get(over, {}).get(clients)
    if not mine or not theirs:
        return None
    return float(mine["tokens_per_s"] / theirs["tokens_per_s"])


def paired(raw: Raw, over: str, clients: int, per: int) -> dict[str, Any] | None:
    """scheda against `over` round by round: both served in the same round, minutes apart at
    most, so a slow spell of the machine that spans a round falls on both. Per round, the
    ratio of their median tokens/s and the difference of their median times to first token;
    over the rounds, the median of each and a 90% interval for it (bootstrap over rounds)."""
    mine, theirs = raw.get("scheda", {}).get(clients), raw.get(over, {}).get(clients)
    if not mine or not theirs:
        return None
    # `per`: the batches that pair as one (a round's of a level, or one when interleaved)
    rounds = min(len(mine), len(theirs)) // per
    ratios, added = [], []
    for r in range(rounds):
        a, b = mine[r * per : (r + 1) * per], theirs[r * per : (r + 1) * per]
        ratios.append(
            statistics.median(x.tokens_per_s for x in a)
            / statistics.median(x.tokens_per_s for x in b)
        )
        added.append(
            statistics.median(t for x in a for t in x.ttft_s)
            - statistics.median(t for x in b for t in x.ttft_s)
        )
    return {
        "rounds": rounds,
        "ratio": statistics.median(ratios),
        "ratio_interval_90": interval(ratios),
        "ttft_added_s": statistics.median(added),
        "ttft_added_interval_90_s": interval(added),
        "ratios": ratios,
        "ttft_added_per_round_s": added,
    }


def pairing(config: Config, clients: int) -> int:
    """How many of a level's batches pair as one: a round's, or each alone when interleaved."""
    return 1 if config.interleave else repeats(clients, config.answers)


def interval(values: list[float], draws: int = 2000) -> list[float]:
    """A 90% bootstrap interval for the median of `values` (seeded: the same report twice)."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    return [medians[int(0.05 * draws)], medians[int(0.95 * draws) - 1]]


def targets(summary: Summary) -> list[dict[str, Any]]:
    out = []
    for over, clients, least in TARGETS:
        r = ratio(summary, over, clients)
        verdict = "not measured" if r is None else ("PASS" if r >= least else "FAIL")
        out.append(
            {
                "target": f"scheda ≥ {least} × {LABELS[over]} at {clients} clients",
                "ratio": r,
                "least": least,
                "verdict": verdict,
            }
        )
    return out


Pairs = dict[str, dict[int, dict[str, Any] | None]]  # other server → clients → `paired`


def all_pairs(raw: Raw, config: Config) -> Pairs:
    """scheda paired with every other server it was measured beside, at every level."""
    if "scheda" not in config.servers:
        return {}
    return {
        over: {n: paired(raw, over, n, pairing(config, n)) for n in config.levels}
        for over in config.servers
        if over != "scheda"
    }


def paired_targets(pairs: Pairs) -> list[dict[str, Any]]:
    """PAIRED_TARGETS against llama.cpp's server, on the medians of the pairs."""
    out = []
    for clients, least, most_s in PAIRED_TARGETS:
        p = pairs.get("llamacpp", {}).get(clients)
        met = p is not None and p["ratio"] >= least and p["ttft_added_s"] <= most_s
        out.append(
            {
                "target": f"scheda ≥ {least} × {LABELS['llamacpp']} and ≤ {1000 * most_s:.0f} ms "
                f"added to the first token at {clients} clients (paired medians)",
                "ratio": None if p is None else p["ratio"],
                "ttft_added_s": None if p is None else p["ttft_added_s"],
                "verdict": "not measured" if p is None else ("PASS" if met else "FAIL"),
            }
        )
    return out


def warnings(summary: Summary) -> list[str]:
    """What makes figures doubtful: other programs on the CPU, answers cut short."""
    out = []
    for name, levels in summary.items():
        for clients, f in levels.items():
            if f["others_share_max"] > QUIET_SHARE:
                share = f"{f['others_share_max']:.0%}"
                out.append(f"{name}, {clients} clients: other programs took {share} of the CPU")
            if f["short_answers"]:
                out.append(
                    f"{name}, {clients} clients: {f['short_answers']} answers shorter than "
                    "max_tokens (the server stopped at the end of text)"
                )
    return out


def table(summary: Summary, levels: list[int]) -> Table:
    servers = list(summary)
    others = [s for s in SERVERS[1:] if s in summary and "scheda" in summary]
    t = Table(title="Aggregate tokens/s and time to first token (median, p90)")
    t.add_column("clients", justify="right")
    for name in servers:
        t.add_column(f"{LABELS[name]}\ntok/s", justify="right")
        t.add_column(f"{LABELS[name]}\nTTFT s", justify="right")
    for other in others:
        t.add_column(f"scheda ÷\n{LABELS[other]}", justify="right")
    for clients in levels:
        row = [str(clients)]
        for name in servers:
            f = summary[name][clients]
            row += [f"{f['tokens_per_s']:.1f}", f"{f['ttft_median_s']:.2f} ({f['ttft_p90_s']:.2f})"]
        row += [f"{ratio(summary, o, clients):.2f}×" for o in others]
        t.add_row(*row)
    return t


def markdown(summary: Summary, levels: list[int]) -> str:
    """The same table for docs/benchmarks.md."""
    servers = list(summary)
    others = [s for s in SERVERS[1:] if s in summary and "scheda" in summary]
    head = ["clients"]
    for name in servers:
        head += [f"{LABELS[name]} tok/s", f"{LABELS[name]} TTFT median (p90)"]
    head += [f"scheda ÷ {LABELS[o]}" for o in others]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for clients in levels:
        row = [str(clients)]
        for name in servers:
            f = summary[name][clients]
            row += [
                f"{f['tokens_per_s']:.1f}",
                f"{f['ttft_median_s']:.2f} s ({f['ttft_p90_s']:.2f} s)",
            ]
        row += [f"{ratio(summary, o, clients):.2f}×" for o in others]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def chart(summary: Summary, levels: list[int], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, figures in summary.items():
        rates = [figures[n]["tokens_per_s"] for n in levels]
        left.plot(levels, rates, marker="o", label=LABELS[name])
        medians = [figures[n]["ttft_median_s"] for n in levels]
        line = right.plot(levels, medians, marker="o", label=f"{LABELS[name]} (median)")
        p90s = [figures[n]["ttft_p90_s"] for n in levels]
        right.plot(levels, p90s, linestyle="--", color=line[0].get_color(), alpha=0.6)
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(levels, [str(n) for n in levels])
        axis.set_xlabel("concurrent clients")
        axis.grid(alpha=0.3)
    left.set_ylabel("aggregate tokens/s")
    left.set_ylim(bottom=0)
    left.legend(fontsize=8)
    right.set_ylabel("time to first token, s (dashed: p90)")
    right.set_yscale("log")
    right.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)


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
    for package in ("scheda", "xllamacpp", "llama_cpp_python", "fastapi", "uvicorn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu": cpu,
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "system": platform.system(),
        "versions": versions,
    }


def report(config: Config, raw: Raw, summary: Summary, pairs: Pairs) -> dict[str, Any]:
    return {
        "model_file": config.path.name,
        "setup": {
            "levels": config.levels,
            "rounds": config.rounds,
            "parallel_slots": config.parallel,
            "context_per_slot": CONTEXT,
            "threads": physical_cores(),
            "max_tokens": config.max_tokens,
            "servers": {name: LABELS[name] for name in config.servers},
            "interleaved": config.interleave,
            "answers_per_level_and_round": config.answers,
        },
        "machine": machine(),
        "summary": {
            name: {str(n): f for n, f in levels.items()} for name, levels in summary.items()
        },
        "ratios": {
            over: {str(n): ratio(summary, over, n) for n in config.levels}
            for over in config.servers
            if over != "scheda" and "scheda" in config.servers
        },
        "paired": {over: {str(n): p for n, p in by.items()} for over, by in pairs.items()},
        "targets": targets(summary) + paired_targets(pairs),
        "warnings": warnings(summary),
        "raw": {
            name: {str(n): [asdict(level) for level in rounds] for n, rounds in levels.items()}
            for name, levels in raw.items()
        },
    }


# The llama.cpp server alone, in a process of its own -----------------------------------------


def llamacpp_worker(path: str, port: str, parallel: str) -> None:
    """llama.cpp's server as xllamacpp embeds it, set up as scheda's engine sets it up."""
    import xllamacpp

    cores = physical_cores()
    params = xllamacpp.CommonParams()
    params.model.path = path
    params.n_parallel = int(parallel)
    params.n_ctx = CONTEXT * int(parallel)  # llama.cpp splits n_ctx over the slots
    params.cpuparams.n_threads = cores
    params.cpuparams_batch.n_threads = cores
    params.hostnames = [HOST]
    params.port = int(port)
    params.n_threads_http = HTTP_THREADS
    params.fit_params = False
    params.verbosity = -1
    server = xllamacpp.Server(params)
    print(f"listening on {server.listening_address}", flush=True)
    # Serve until stopped, or until the benchmark that started it is gone (killed before
    # it could stop this process: a leftover would skew every later measurement).
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(1)
    del server


# Command line --------------------------------------------------------------------------------


def parse(argv: list[str]) -> Config:
    global BASELINE, REPLICAS, QUIET_WAIT_S
    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    cli.add_argument("--model", help="a GGUF file (default: the embedded model)")
    cli.add_argument("--levels", default="1,2,4,8,16", help="concurrent clients per batch")
    cli.add_argument("--rounds", type=int, default=3)
    cli.add_argument("--parallel", type=int, default=16, help="slots of llama.cpp and scheda")
    cli.add_argument("--max-tokens", type=int, default=64)
    cli.add_argument(
        "--answers",
        type=int,
        default=ANSWERS,
        metavar="N",
        help="answers per level and round at least: a level of fewer clients repeats its batch",
    )
    cli.add_argument("--servers", default=",".join(SERVERS[:3]))
    cli.add_argument("--baseline", type=Path, help="the source tree scheda-baseline serves")
    cli.add_argument("--replicas", type=int, default=REPLICAS, help="scheda-ray's replicas")
    cli.add_argument("--out", type=Path, default=Path("docs/serve_concurrency.json"))
    cli.add_argument("--png", type=Path, default=Path("docs/serve_concurrency.png"))
    cli.add_argument("--markdown", action="store_true", help="print the table for the docs too")
    cli.add_argument(
        "--interleave",
        action="store_true",
        help="every server loaded at once, each batch sent to each in turn (pairs batches)",
    )
    cli.add_argument(
        "--quiet-wait",
        type=float,
        default=QUIET_WAIT_S,
        metavar="S",
        help="wait at most S seconds for other programs to leave the CPU before each server "
        "and batch (0: never wait; on a shared machine the ratios within a run still hold)",
    )
    args = cli.parse_args(argv)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(servers) - set(SERVERS)
    if unknown:
        cli.error(f"--servers: unknown {', '.join(sorted(unknown))}; choose from {SERVERS}")
    if "scheda-baseline" in servers and not (args.baseline and (args.baseline / "src").is_dir()):
        cli.error("--servers scheda-baseline: give --baseline SRC, a source tree with src/")
    BASELINE = args.baseline.resolve() if args.baseline else None
    REPLICAS = max(1, args.replicas)
    QUIET_WAIT_S = max(0.0, args.quiet_wait)
    if args.model:
        model, path = args.model, Path(args.model)
    else:
        from scheda.resolve import default_model_path

        model, path = "default", default_model_path()
    levels = sorted({int(n) for n in args.levels.split(",")})
    return Config(
        model, path, levels, args.rounds, args.parallel, args.max_tokens, servers,
        max(1, args.answers), args.out, args.png, args.markdown, args.interleave,
    )  # fmt: skip


def main(argv: list[str]) -> None:
    if argv[:1] == ["_llamacpp_worker"]:
        llamacpp_worker(*argv[1:4])
        return
    config = parse(argv)
    # Stopped from outside: leave through the `finally`s, which stop the running server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    console = terminal_console()  # wide enough for the table when the output is a file
    raw = run(config, console)
    summary = {name: {n: summarize(r) for n, r in levels.items()} for name, levels in raw.items()}
    console.print(table(summary, config.levels))
    pairs = all_pairs(raw, config)
    for t in targets(summary) + paired_targets(pairs):
        shown = "–" if t["ratio"] is None else f"{t['ratio']:.2f}×"
        if t.get("ttft_added_s") is not None:
            shown += f", {1000 * t['ttft_added_s']:+.1f} ms"
        console.print(f"{t['target']}: {shown} → {t['verdict']}")
    for over, by in pairs.items():
        for n, p in by.items():
            if p is not None:
                lo, hi = p["ratio_interval_90"]
                tlo, thi = (1000 * t for t in p["ttft_added_interval_90_s"])
                console.print(
                    f"paired with {LABELS[over]}, {n} clients, {p['rounds']} rounds: "
                    f"{p['ratio']:.3f}× (90%: {lo:.3f}-{hi:.3f}), TTFT "
                    f"{1000 * p['ttft_added_s']:+.1f} ms ({tlo:+.1f} to {thi:+.1f})"
                )
    for warning in warnings(summary):
        console.print(f"[yellow]{warning}[/]")
    if config.markdown:
        print()
        print(markdown(summary, config.levels))
    data = report(config, raw, summary, pairs)
    config.out.parent.mkdir(parents=True, exist_ok=True)
    config.out.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    title = (
        f"{config.path.name}: {config.max_tokens}-token streamed chat answers, "
        f"{config.parallel} slots, {data['machine']['physical_cores']} cores"
    )
    chart(summary, config.levels, config.png, title)
    console.print(f"Wrote {config.out} and {config.png}")


if __name__ == "__main__":
    main(sys.argv[1:])
