"""Where the time goes at one client: `scheda serve`'s request path, stage by stage, beside
llama.cpp's own server.

    .venv/bin/python benchmarks/serve_profile.py [--model PATH] [--requests 30]
        [--max-tokens 64] [--parallel 16] [--baseline SRC] [--cprofile N]
        [--out docs/serve_profile.json] [--markdown]

The servers are loaded at once (an idle one uses no CPU) and take turns: one streamed
chat request of `--max-tokens` tokens (`ignore_eos`) at a time, to each in turn (the
order turned every time), so that a slow spell of the machine falls on all alike; each
request's prompt is new, the same for every server. The client is the one
benchmarks/serve_concurrency.py uses, in this process; the servers run in their own.
With `--baseline SRC` (`git archive main src | tar -x -C SRC`) scheda is served and
clocked a second time from that source tree: a change and the code before it, side by side.

scheda's server runs in a worker process of this script (`_scheda_worker`), which clocks
its request path with `time.perf_counter_ns` around each stage before it starts
`scheda serve` (wrappers around the functions below: no profiler, whose cost per call
would swamp what is measured):

- read: uvicorn is handed the request's bytes (`H11Protocol.data_received`);
- arrival: the outermost ASGI layer sees the request (a probe layer put around the app);
- validation: FastAPI's `solve_dependencies` (pydantic reads the body into `ChatRequest`);
- route: `chat_job.start`, the route's call once the body is read;
- thread: the job's worker thread starts (`Job._run`), then the engine's `chat` is called;
- engine call: llama.cpp's `handle_chat_completions` is called (`LlamaCppEngine._run`'s
  handler), after the request body is built and a slot taken;
- per chunk, in the worker thread: the chunk's JSON parsed (the binding's own `json.loads`,
  done here on the text it passes), `_Gatherer.chunk` (with `on_text` and the hop's
  `call_soon_threadsafe`);
- per chunk, on the event loop: the event taken from the job's queue (the hop's latency),
  the chunk's dict made and encoded (`sse`), its `send` through the ASGI layers, and
  uvicorn's own write (the probe times the outermost `send`).

CPU time: the event loop's thread and the job's thread (`time.thread_time_ns`, read in each),
and each server process's whole (its threads, llama.cpp's included), per request; the
process's context switches; the garbage collector's pauses. llama.cpp's own timings (its
prompt and decode times) come from its server's stream and from scheda's engine.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import json
import os
import pstats
import resource
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serve_concurrency as sc  # the sibling benchmark: servers, client, machine

from scheda.display.terminal import console as terminal_console


def now() -> int:
    return time.perf_counter_ns()


# The worker: scheda serve, clocked ----------------------------------------------------------


@dataclass
class Chunk:
    """One chunk of llama.cpp's stream, as scheda's path handled it (ns)."""

    arrived: int  # the callback was called (the worker thread)
    parse: int  # json.loads of the chunk's text
    gather: int  # _Gatherer.chunk, with on_text and the hop's call_soon_threadsafe
    text: bool  # the chunk carried answer text
    handed: int = 0  # its event was handed to the job (`Job._put` called)
    put: int = 0  # `Job._put`'s time (the wake-up of the loop, its wait for the GIL after)
    taken: int = 0  # the event loop took the event from the job


@dataclass
class Trace:
    """One request through scheda's path (perf_counter_ns stamps; CPU in ns)."""

    arrival: int
    loop_cpu0: int
    received: int = 0  # uvicorn was handed the request's bytes
    validation0: int = 0
    validation1: int = 0
    route: int = 0
    thread: int = 0
    job_cpu0: int = 0
    chat: int = 0
    slots0: int = 0
    slots1: int = 0
    engine_call: int = 0
    engine_done: int = 0
    job_cpu: int = 0
    loop_cpu: int = 0
    end: int = 0
    switches0: int = 0  # the process's context switches (all threads) at arrival
    switches: int = 0  # ... during the request
    gc: list[tuple[int, int, int]] = field(default_factory=list)  # (generation, start, stop)
    chunks: list[Chunk] = field(default_factory=list)
    # (called, returned, bytes, carries answer text)
    sends: list[tuple[int, int, int, bool]] = field(default_factory=list)
    sse_ns: list[int] = field(default_factory=list)
    engine_timings: dict[str, float] = field(default_factory=dict)


class Recorder:
    """The one request in flight (the profile sends one at a time), and where traces go."""

    def __init__(self, path: Path, profile: bool = False) -> None:
        self.path = path
        self.trace: Trace | None = None
        self.received = 0  # when uvicorn last read a request's bytes
        # --cprofile: each thread's functions, the event loop's and the jobs' apart
        self.profiles: dict[str, cProfile.Profile] | None = None
        if profile:
            # CPU time, not wall time: the threads wait (epoll, the GIL), which costs nothing
            clock = time.thread_time
            self.profiles = {"loop": cProfile.Profile(clock), "job": cProfile.Profile(clock)}

    def begin(self) -> Trace:
        if self.profiles is not None:
            self.profiles["loop"].enable()
        self.trace = Trace(
            now(), time.thread_time_ns(), received=self.received, switches0=switches()
        )
        return self.trace

    def finish(self, trace: Trace) -> None:
        trace.loop_cpu = time.thread_time_ns() - trace.loop_cpu0
        trace.switches = switches() - trace.switches0
        trace.end = now()
        if self.profiles is not None:
            self.profiles["loop"].disable()
            for name, profile in self.profiles.items():
                profile.dump_stats(f"{self.path}.{name}.prof")
        with self.path.open("a") as out:
            out.write(json.dumps(asdict(trace)) + "\n")


def switches() -> int:
    """The context switches of this process's threads so far, the finished ones too."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nvcsw + usage.ru_nivcsw


def install_probes(recorder: Recorder) -> None:
    """Wrap the stages of scheda's request path with clocks (see the module's docstring)."""
    import fastapi.routing
    from uvicorn.protocols.http import h11_impl

    from scheda.engines import llamacpp
    from scheda.server import chat_job, main, openai_api, responses, runner

    def current() -> Trace | None:
        return recorder.trace

    # the garbage collector's pauses (it holds the GIL: every thread waits)
    started = [0]

    def collecting(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = now()
        elif (trace := current()) is not None:
            trace.gc.append((int(info["generation"]), started[0], now()))

    gc.callbacks.append(collecting)

    # the request's bytes read by uvicorn, before its parser and the app's task
    protocol = h11_impl.H11Protocol
    receive = protocol.data_received

    def data_received(self: Any, data: bytes) -> None:
        if recorder.trace is None:
            recorder.received = now()
        receive(self, data)

    protocol.data_received = data_received

    # arrival and the outermost send
    make_app = main.create_app

    def create_app(*args: Any, **kwargs: Any) -> Any:
        return Probe(make_app(*args, **kwargs), recorder)

    main.create_app = create_app

    # validation
    solve = fastapi.routing.solve_dependencies

    async def solve_dependencies(*args: Any, **kwargs: Any) -> Any:
        trace = current()
        if trace is not None and not trace.validation0:
            trace.validation0 = now()
        result = await solve(*args, **kwargs)
        if trace is not None and not trace.validation1:
            trace.validation1 = now()
        return result

    fastapi.routing.solve_dependencies = solve_dependencies

    # the route's call
    start = chat_job.start

    def route(*args: Any, **kwargs: Any) -> Any:
        if (trace := current()) is not None:
            trace.route = now()
        return start(*args, **kwargs)

    chat_job.start = route

    # the job's thread
    run = runner.Job._run

    def job_run(self: Any, call: Callable[[], Any]) -> None:
        trace = current()
        profile = recorder.profiles["job"] if recorder.profiles and trace else None
        if profile is not None:
            profile.enable()
        if trace is not None:
            trace.thread, trace.job_cpu0 = now(), time.thread_time_ns()

        def timed() -> Any:
            try:
                return call()
            finally:  # before the job's last event is put: the loop may end the trace then
                if trace is not None:
                    trace.job_cpu = time.thread_time_ns() - trace.job_cpu0
                if profile is not None:
                    profile.disable()

        run(self, timed)

    runner.Job._run = job_run

    chat = llamacpp.LlamaCppEngine.chat

    def engine_chat(self: Any, *args: Any, **kwargs: Any) -> Any:
        if (trace := current()) is not None:
            trace.chat = now()
        return chat(self, *args, **kwargs)

    llamacpp.LlamaCppEngine.chat = engine_chat

    take = llamacpp._Slots.take

    def slots_take(self: Any, *args: Any) -> bool:
        trace = current()
        if trace is not None:
            trace.slots0 = now()
        taken = take(self, *args)
        if trace is not None:
            trace.slots1 = now()
        return taken

    llamacpp._Slots.take = slots_take

    # the engine call, each chunk parsed here from the text the binding passes
    engine_run = llamacpp.LlamaCppEngine._run

    def run_clocked(self: Any, handler: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        trace = current()

        def clocked(body: Any, callback: Callable[[Any], bool]) -> Any:
            def on_chunk(raw: str) -> bool:
                arrived = now()
                data = json.loads(raw)
                parsed = now()
                chunk = Chunk(arrived, parsed - arrived, 0, _has_text(data))
                if trace is not None:
                    trace.chunks.append(chunk)
                stop = callback(data)
                chunk.gather = now() - parsed
                return bool(stop)

            if trace is not None:
                trace.engine_call = now()
            text = body if isinstance(body, str) else json.dumps(body)
            try:
                return handler(text, on_chunk)
            finally:
                if trace is not None:
                    trace.engine_done = now()

        return engine_run(self, clocked, *args, **kwargs)

    llamacpp.LlamaCppEngine._run = run_clocked

    gatherer_result = llamacpp._Gatherer.result

    def result(self: Any, *args: Any) -> Any:
        if (trace := current()) is not None:
            trace.engine_timings = dict(self.engine_timings)
        return gatherer_result(self, *args)

    llamacpp._Gatherer.result = result

    # the hop: put in the worker thread, taken on the loop
    put = runner.Job._put

    def job_put(self: Any, event: Any) -> None:
        trace = current()
        if trace is None or event.kind not in ("text", "call") or not trace.chunks:
            put(self, event)
            return
        chunk = trace.chunks[-1]
        event._chunk = chunk  # the chunk whose text this event carries
        before = now()
        chunk.handed = chunk.handed or before
        put(self, event)
        chunk.put += now() - before

    runner.Job._put = job_put

    take_next = runner.Job.next

    async def job_next(self: Any) -> Any:
        event = await take_next(self)
        chunk = getattr(event, "_chunk", None)
        if chunk is not None and not chunk.taken:
            chunk.taken = now()
        return event

    runner.Job.next = job_next

    if hasattr(runner.Job, "ready"):  # a stream takes what else has come at once
        take_ready = runner.Job.ready

        def job_ready(self: Any) -> Any:
            events = take_ready(self)
            taken = now()
            for event in events:
                chunk = getattr(event, "_chunk", None)
                if chunk is not None and not chunk.taken:
                    chunk.taken = taken
            return events

        runner.Job.ready = job_ready

    # the encoding: whole chunks (`sse`), and pieces of text from a template where there is one
    def clocked_encoder(encode: Callable[..., str]) -> Callable[..., str]:
        def encoder(*args: Any) -> str:
            before = now()
            text = encode(*args)
            if (trace := current()) is not None:
                trace.sse_ns.append(now() - before)
            return text

        return encoder

    openai_api.sse = clocked_encoder(openai_api.sse)
    if hasattr(responses.Shape, "text_events"):
        text_events = responses.Shape.text_events

        def shape_text_events(self: Any, *args: Any) -> Any:
            return clocked_encoder(text_events(self, *args))

        responses.Shape.text_events = shape_text_events


def _has_text(data: dict[str, Any]) -> bool:
    for choice in data.get("choices") or []:
        if (choice.get("delta") or {}).get("content") or choice.get("text"):
            return True
    return False


TEXT, EMPTY = b'"delta":{"content":"', b'"delta":{"content":""'  # a chunk with answer text


class Probe:
    """The outermost ASGI layer: a request's arrival, each `send`, its end."""

    def __init__(self, app: Any, recorder: Recorder) -> None:
        self.app = app
        self.recorder = recorder

    def __getattr__(self, name: str) -> Any:  # uvicorn and the server reach app.state
        return getattr(self.app, name)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") != "/v1/chat/completions":
            await self.app(scope, receive, send)
            return
        trace = self.recorder.begin()

        async def timed(message: Any) -> None:
            called = now()
            await send(message)
            body = message.get("body", b"") if message["type"] == "http.response.body" else b""
            text = TEXT in body and body.count(TEXT) > body.count(EMPTY)
            trace.sends.append((called, now(), len(body), text))

        try:
            await self.app(scope, receive, timed)
        finally:
            self.recorder.finish(trace)
            self.recorder.trace = None


def scheda_worker(records: str, port: str, parallel: str, model: str, profile: str) -> None:
    """`scheda serve`, its request path clocked; traces appended to `records`, one a line."""
    install_probes(Recorder(Path(records), profile == "cprofile"))
    from scheda.cli import main

    def orphaned() -> None:
        """Stop when the profile that started this server is gone (killed before it could
        stop it: a leftover would skew every later measurement)."""
        parent = os.getppid()
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=orphaned, daemon=True).start()

    sys.argv = ["scheda", "serve", model, "--port", port, "--parallel", parallel]
    sys.argv += ["--context", str(sc.CONTEXT)]
    main()


# The client ----------------------------------------------------------------------------------


@dataclass
class Seen:
    """One streamed answer as the client saw it, and what the server spent on it."""

    server: str
    ttft_ms: float
    total_ms: float
    tokens: int
    itl_ms: float  # time per token after the first (from the first text chunk to the last)
    server_cpu_ms: float
    client_cpu_ms: float
    others_share: float  # other programs' share of the machine meanwhile
    timings: dict[str, float]  # llama.cpp's own, from its server's stream
    switches: int  # the server's context switches, from /proc (scheda's: from its traces)


def proc_switches(pid: int) -> int:
    """Context switches of a process's threads, from /proc (threads that ended not counted:
    llama.cpp's server keeps its threads)."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            for line in status.read_text().splitlines():
                if "ctxt_switches:" in line:  # voluntary and nonvoluntary
                    total += int(line.split()[-1])
        except OSError:
            continue
    return total


def one(server: sc.Running, max_tokens: int, text: str) -> Seen:
    payload = sc.body(server.model_id, text, max_tokens)
    switched = proc_switches(server.process.pid)
    before = sc.counters(server)
    conn = sc.http.client.HTTPConnection(sc.HOST, server.port, timeout=sc.REQUEST_TIMEOUT_S)
    try:
        sent = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", payload, {"Content-Type": "application/json"})
        answer = conn.getresponse()
        if answer.status != 200:
            raise RuntimeError(f"HTTP {answer.status}: {answer.read()[:300]!r}")
        stamps: list[float] = []
        usage: dict[str, Any] | None = None
        timings: dict[str, float] = {}
        for event in sc.events(answer):
            if any((c.get("delta") or {}).get("content") for c in event.get("choices") or []):
                stamps.append(time.perf_counter())
            usage = event.get("usage") or usage
            timings = event.get("timings") or timings
        end = time.perf_counter()
    finally:
        conn.close()
    after = sc.counters(server)
    switched = proc_switches(server.process.pid) - switched
    server_cpu, client_cpu, busy, _steal = (b - a for a, b in zip(before, after, strict=True))
    wall = end - sent
    others = max(0.0, busy - server_cpu - client_cpu) / (wall * (psutil.cpu_count() or 1))
    # Time per token after the first, over the answer: scheda writes pieces that came together
    # in one go, so the gaps between chunks say less than their sum.
    per_token = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else float("nan")
    return Seen(
        server.name,
        1000 * (stamps[0] - sent) if stamps else float("nan"),
        1000 * wall,
        int(usage["completion_tokens"]) if usage else len(stamps),
        1000 * per_token,
        1000 * server_cpu,
        1000 * client_cpu,
        others,
        timings,
        switched,
    )


SCHEDAS = ("scheda", "scheda-baseline")  # the servers whose path is clocked


@contextmanager
def started(config: argparse.Namespace, logs: Path) -> Iterator[dict[str, sc.Running]]:
    """llama.cpp's server and scheda's (clocked; with --baseline, the other tree's too), all
    loaded and idle."""
    names = ["llamacpp", "scheda"] + (["scheda-baseline"] if config.baseline else [])
    original = sc.server_command

    def command(name: str, model: str, path: Path, port: int, parallel: int) -> list[str]:
        if name not in SCHEDAS:
            return original(name, model, path, port, parallel)
        profile = "cprofile" if config.cprofile else "-"
        records = str(logs / f"{name}.jsonl")
        worker = [sys.executable, str(Path(__file__).resolve()), "_scheda_worker", records]
        return [*worker, str(port), str(parallel), model, profile]

    sc.server_command = command
    sc.BASELINE = config.baseline.resolve() if config.baseline else None
    with contextlib.ExitStack() as stack:
        yield {
            name: stack.enter_context(
                sc.serving(name, config.model, config.path, config.parallel, logs)
            )
            for name in names
        }


def measure(config: argparse.Namespace) -> tuple[list[Seen], dict[str, list[Trace]]]:
    """Every server, a request each in turn (the order turned each time); scheda's traces."""
    with tempfile.TemporaryDirectory() as folder:
        logs = Path(folder)
        seen: list[Seen] = []
        with started(config, logs) as servers:
            for s in servers.values():  # warm up: the first answer of each pays for its start
                one(s, config.max_tokens, sc.WARM_UP)
            time.sleep(0.5)  # the warm-up's trace written
            for name in servers:
                (logs / f"{name}.jsonl").write_text("")
            order = list(servers)
            for i in range(config.requests):
                # A prompt of its own per request, the same for every server: no prompt cache
                # helps one more than another.
                text = sc.prompt(i)
                shift = i % len(order)
                for name in order[shift:] + order[:shift]:
                    time.sleep(0.2)  # let the last answer's stream close on both sides
                    seen.append(one(servers[name], config.max_tokens, text))
                    print(f"{i + 1}/{config.requests} {name}: {seen[-1].ttft_ms:.0f} ms", end="\r")
            time.sleep(0.5)
        traces = {}
        for name in servers:
            if name in SCHEDAS:
                lines = (logs / f"{name}.jsonl").read_text().splitlines()
                traces[name] = [_trace(json.loads(line)) for line in lines[-config.requests :]]
        if config.cprofile:
            for name in traces:
                for thread in ("loop", "job"):
                    print(f"\n-- cProfile, {name}, the {thread} thread(s), CPU time --")
                    stats = pstats.Stats(str(logs / f"{name}.jsonl.{thread}.prof"))
                    stats.sort_stats(config.cprofile_sort).print_stats(config.cprofile)
    print()
    return seen, traces


def _trace(data: dict[str, Any]) -> Trace:
    chunks = [Chunk(**c) for c in data.pop("chunks")]
    sends = [tuple(s) for s in data.pop("sends")]
    collections = [tuple(c) for c in data.pop("gc")]
    return Trace(**data, chunks=chunks, sends=sends, gc=collections)


# The figures ---------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms(ns: float) -> float:
    return ns / 1e6


def _first_text(t: Trace) -> Chunk | None:
    return next((c for c in t.chunks if c.text), None)


def _sent_after(t: Trace, stamp: int) -> int | None:
    """When the first send of text after `stamp` returned (the text is in uvicorn's hands)."""
    for called, returned, _size, text in t.sends:
        if called >= stamp and text:
            return returned
    return None


def _texts(t: Trace) -> int:
    return sum(c.text for c in t.chunks)


REQUEST_STAGES = (
    "uvicorn: request parsed, the app's task started",
    "ASGI layers, FastAPI, the body read and parsed",
    "validation (pydantic)",
    "route: messages, sampling, job made",
    "job thread started, model leased",
    "engine: request built, slot taken",
    "llama.cpp: prompt to first text chunk",
    "first chunk: parsed, gathered, handed over",
    "hop to the event loop (the GIL waited for)",
    "stream opened, first text encoded and written",
)


def request_stages(t: Trace) -> list[float]:
    """Per request: read to the first text on the wire, stage by stage (ms)."""
    first = _first_text(t)
    if first is None or not first.taken:
        return [float("nan")] * len(REQUEST_STAGES)
    written = _sent_after(t, first.taken) or first.taken
    return [
        ms(t.arrival - t.received) if t.received else float("nan"),
        ms(t.validation0 - t.arrival),
        ms(t.validation1 - t.validation0),
        ms(t.route - t.validation1),
        ms(t.chat - t.route),
        ms(t.engine_call - t.chat),
        ms(first.arrived - t.engine_call),
        ms(first.handed - first.arrived),
        ms(first.taken - first.handed),
        ms(written - first.taken),
    ]


TOKEN_STAGES = (
    "JSON parse of the chunk (the binding's json.loads)",
    "_Gatherer.chunk and on_text, less the hop",
    "the hop in the thread (the loop woken; the GIL waited for)",
    "hop latency: handed over to taken on the loop",
    "loop: taken to written (encoded, through the ASGI layers)",
    "  of which the text's SSE encoding",
    "uvicorn's write (h11, the socket)",
)


def token_stages(traces: list[Trace]) -> list[float]:
    """Per text chunk after the first (µs, medians over every chunk of every request)."""
    parse, gather, put, hop, loop, write = [], [], [], [], [], []
    for t in traces:
        for c in [c for c in t.chunks if c.text][1:]:
            parse.append(c.parse / 1e3)
            gather.append((c.gather - c.put) / 1e3)
            put.append(c.put / 1e3)
            if not c.taken:
                continue
            hop.append((c.taken - c.handed) / 1e3)
            sent = next(((a, b) for a, b, _n, text in t.sends if a >= c.taken and text), None)
            if sent is not None:
                loop.append((sent[0] - c.taken) / 1e3)
                write.append((sent[1] - sent[0]) / 1e3)
    encode = [n / 1e3 for t in traces for n in t.sse_ns]
    return [med(parse), med(gather), med(put), med(hop), med(loop), med(encode), med(write)]


def collections(traces: list[Trace]) -> dict[str, float]:
    """The garbage collector's pauses (every thread waits): per request, before the first text."""
    per_request, before_first = [], []
    for t in traces:
        per_request.append(sum(stop - start for _g, start, stop in t.gc))
        first = _first_text(t)
        limit = (_sent_after(t, first.taken) if first and first.taken else None) or t.end
        before_first.append(sum(stop - start for _g, start, stop in t.gc if start < limit))
    pauses = [stop - start for t in traces for _g, start, stop in t.gc]
    return {
        "collections_per_request": med([len(t.gc) for t in traces]),
        "full_collections": sum(g == 2 for t in traces for g, _s, _e in t.gc),
        "ms_per_request": ms(med(per_request)),
        "ms_before_first_text": ms(med(before_first)),
        "longest_pause_ms": ms(max(pauses, default=0)),
    }


def summary(seen: list[Seen], traces: dict[str, list[Trace]]) -> dict[str, Any]:
    by = {
        name: [s for s in seen if s.server == name]
        for name in dict.fromkeys(s.server for s in seen)
    }
    client = {}
    for name, rows in by.items():
        mine = traces.get(name)
        switched = (
            [t.switches / max(1, _texts(t)) for t in mine]  # its job threads end: /proc forgets
            if mine is not None
            else [s.switches / max(1, s.tokens) for s in rows]
        )
        client[name] = {
            "ttft_ms": med([s.ttft_ms for s in rows]),
            "total_ms": med([s.total_ms for s in rows]),
            "itl_ms": med([s.itl_ms for s in rows]),
            "tokens_per_s": med([1000 * s.tokens / s.total_ms for s in rows]),
            "server_cpu_ms_per_token": med([s.server_cpu_ms / s.tokens for s in rows]),
            "switches_per_token": med(switched),
            "others_share": med([s.others_share for s in rows]),
            "prompt_ms": med(
                [t.engine_timings.get("prompt_ms", float("nan")) for t in mine]
                if mine is not None
                else [s.timings.get("prompt_ms", float("nan")) for s in rows]
            ),
            "decode_ms_per_token": med(
                [_decode_ms(t.engine_timings) for t in mine]
                if mine is not None
                else [_decode_ms(s.timings) for s in rows]
            ),
        }
    llama = by["llamacpp"]
    paired = {
        name: {
            "ttft_added_ms": med(
                [a.ttft_ms - b.ttft_ms for a, b in zip(by[name], llama, strict=True)]
            ),
            "tokens_per_s_ratio": med(
                [b.total_ms / a.total_ms for a, b in zip(by[name], llama, strict=True)]
            ),
            "itl_added_ms": med(
                [a.itl_ms - b.itl_ms for a, b in zip(by[name], llama, strict=True)]
            ),
        }
        for name in traces
    }
    stages = {}
    for name, mine in traces.items():
        rows = [request_stages(t) for t in mine]
        first_written = [
            ms(written - (t.received or t.arrival))
            for t in mine
            if (first := _first_text(t))
            and first.taken
            and (written := _sent_after(t, first.taken))
        ]
        stages[name] = {
            "request_ms": dict(
                zip(REQUEST_STAGES, [med(list(c)) for c in zip(*rows, strict=True)], strict=True)
            ),
            "read_to_first_text_written_ms": med(first_written),
            "token_us": dict(zip(TOKEN_STAGES, token_stages(mine), strict=True)),
            "cpu_us_per_token": {
                "event loop thread": med([t.loop_cpu / 1e3 / max(1, _texts(t)) for t in mine]),
                "job thread (llama.cpp's result wait and JSON, the callback)": med(
                    [t.job_cpu / 1e3 / max(1, _texts(t)) for t in mine]
                ),
            },
            "gc": collections(mine),
        }
    return {
        "requests": len(llama),
        "tokens_per_answer": {name: med([s.tokens for s in rows]) for name, rows in by.items()},
        "client": client,
        "paired": paired,
        "scheda": stages,
    }


def _decode_ms(timings: dict[str, float]) -> float:
    """llama.cpp's own time per generated token, from its timings."""
    if not timings.get("predicted_ms"):
        return float("nan")
    return timings["predicted_ms"] / max(1, timings.get("predicted_n", 1))


LABELS = {
    "scheda": "scheda",
    "scheda-baseline": "scheda (baseline)",
    "llamacpp": "llama.cpp server",
}


def tables(s: dict[str, Any]) -> list[Table]:
    client, names, schedas = s["client"], list(s["client"]), list(s["scheda"])
    head = Table(title=f"One client, {s['requests']} requests to each server (medians)")
    head.add_column("")
    for name in names:
        head.add_column(LABELS[name], justify="right")
    for key, label, fmt in (
        ("ttft_ms", "time to first token, ms", "{:.1f}"),
        ("itl_ms", "time between tokens, ms", "{:.2f}"),
        ("tokens_per_s", "tokens/s (one answer, first token included)", "{:.1f}"),
        ("prompt_ms", "llama.cpp's own prompt time, ms", "{:.1f}"),
        ("decode_ms_per_token", "llama.cpp's own decode time per token, ms", "{:.2f}"),
        ("server_cpu_ms_per_token", "server CPU per token (all threads), ms", "{:.2f}"),
        ("switches_per_token", "server context switches per token", "{:.1f}"),
        ("others_share", "other programs' share of the CPU", "{:.0%}"),
    ):
        head.add_row(label, *[fmt.format(client[name][key]) for name in names])
    for key, label, fmt in (
        ("ttft_added_ms", "TTFT added, paired with llama.cpp's, ms", "{:+.1f}"),
        ("tokens_per_s_ratio", "tokens/s over llama.cpp's, paired", "{:.3f}"),
        ("itl_added_ms", "time between tokens added, paired, ms", "{:+.2f}"),
    ):
        head.add_row(
            label, *[fmt.format(s["paired"][n][key]) if n in schedas else "" for n in names]
        )

    request = Table(title="scheda: a request, read to its first text written (median ms)")
    request.add_column("stage")
    for name in schedas:
        request.add_column(LABELS[name], justify="right")
    for stage in REQUEST_STAGES:
        request.add_row(stage, *[f"{s['scheda'][n]['request_ms'][stage]:.2f}" for n in schedas])
    request.add_row(
        "request read to first text written",
        *[f"{s['scheda'][n]['read_to_first_text_written_ms']:.2f}" for n in schedas],
    )

    token = Table(title="scheda: each text chunk after the first (median µs)")
    token.add_column("stage")
    for name in schedas:
        token.add_column(LABELS[name], justify="right")
    for stage in TOKEN_STAGES:
        token.add_row(stage, *[f"{s['scheda'][n]['token_us'][stage]:.1f}" for n in schedas])
    for thread in s["scheda"][schedas[0]]["cpu_us_per_token"]:
        token.add_row(
            f"CPU per token: {thread}",
            *[f"{s['scheda'][n]['cpu_us_per_token'][thread]:.0f}" for n in schedas],
        )
    for key, label in (
        ("collections_per_request", "garbage collections per request"),
        ("ms_per_request", "  their pauses per request, ms"),
        ("longest_pause_ms", "  the longest, ms"),
    ):
        token.add_row(label, *[f"{s['scheda'][n]['gc'][key]:.1f}" for n in schedas])
    return [head, request, token]


def markdown(table: Table) -> str:
    """A rich table as Markdown, for docs/benchmarks.md."""
    columns = [str(c.header) for c in table.columns]
    rows = list(zip(*[list(c.cells) for c in table.columns], strict=True))
    lines = [f"**{table.title}**", "", "| " + " | ".join(columns) + " |"]
    lines.append("|" + "".join(" --- |" if i == 0 else " ---: |" for i in range(len(columns))))
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if argv[:1] == ["_scheda_worker"]:
        scheda_worker(*argv[1:6])
        return
    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    cli.add_argument("--model", help="a GGUF file (default: the embedded model)")
    cli.add_argument("--requests", type=int, default=30, help="requests to each server")
    cli.add_argument("--max-tokens", type=int, default=64)
    cli.add_argument("--parallel", type=int, default=16, help="slots of every server")
    cli.add_argument("--baseline", type=Path, help="another source tree, profiled alongside")
    cli.add_argument("--out", type=Path, default=Path("docs/serve_profile.json"))
    cli.add_argument("--markdown", action="store_true", help="print the tables for the docs too")
    cli.add_argument(
        "--cprofile",
        type=int,
        default=0,
        metavar="N",
        help="also profile scheda's threads with cProfile and print their N costliest "
        "functions (its own cost inflates every call: the clocks' figures are not comparable)",
    )
    cli.add_argument(
        "--cprofile-sort",
        choices=("tottime", "cumulative"),
        default="tottime",
        help="cProfile's order: a function's own time, or with what it calls",
    )
    config = cli.parse_args(argv)
    # Stopped from outside: leave through the `finally`s, which stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if config.baseline and not (config.baseline / "src").is_dir():
        cli.error("--baseline: give a source tree with src/")
    if config.model:
        config.path = Path(config.model)
    else:
        from scheda.resolve import default_model_path

        config.model, config.path = "default", default_model_path()
    seen, traces = measure(config)
    figures = summary(seen, traces)
    console = terminal_console()
    shown = tables(figures)
    for t in shown:
        console.print(t)
    if config.markdown:
        for t in shown:
            print()
            print(markdown(t))
    data = {
        "model_file": config.path.name,
        "setup": {"requests": config.requests, "max_tokens": config.max_tokens,
                  "parallel_slots": config.parallel, "threads": sc.physical_cores(),
                  "baseline": bool(config.baseline)},
        "machine": sc.machine(),
        "summary": figures,
        "seen": [asdict(s) for s in seen],
        "traces": {name: [asdict(t) for t in mine] for name, mine in traces.items()},
    }  # fmt: skip
    config.out.parent.mkdir(parents=True, exist_ok=True)
    config.out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    console.print(f"Wrote {config.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
