"""One engine call per request, in its own thread, its output delivered to the event loop.

The engines block (llama.cpp's handler returns when the answer is complete),
so each request runs in a thread of its own (a thread is kept for a later
request once its job ends); many such threads wait inside
llama.cpp at once, which is what lets its continuous batching decode them
together. scheda takes no lock around them.

Text reaches the event loop as events in the job's list. Waking the loop for
one (`call_soon_threadsafe`: a write to its pipe, a turn of the loop, the
stream's write through the ASGI layers and h11) costs the Python layer more
than the rest of a token's path, on cores that llama.cpp's threads need
(docs/benchmarks.md, "Where the time goes at one client"). So the worker thread
wakes the loop at once for a job's first event and its last (even when a
wake-up for earlier pieces is due later), and for the pieces between at most
every `WAKE_INTERVAL_S`: those that come sooner wait in the list for the
wake-up at the end of the interval, and a stream takes all that have come
(`ready`, `batches`) and writes them in one go, each still an event of its own.

Cancelling is the engine's own: a client that goes away sets the job's event,
and the engine sees it at the next token and frees the slot (or, waiting for
a slot, leaves the wait). A chat's tool calls stream as "call" events
(`ChatJob`), their pieces as the engine hands them on. A whole answer
(no stream) notices the client leave by watching the ASGI `receive` channel
for `http.disconnect` while the job runs, as Starlette's streamed responses
do; a stream's own generator sets the event when it is closed.

A request for a model not loaded waits for its load. A streamed one says so
at once: its first event is "loading", which the stream sends as an SSE
comment (`: loading MODEL`, which OpenAI's and Anthropic's clients skip) before
its first real event, so that a client sees a slower first token, not an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from scheda.engines.base import CallPiece
from scheda.server.pool import Loaded, ModelPool, ServedModel

OnText = Callable[[int, str], None] | None  # None when nobody reads the text as it comes
OnCall = Callable[[int, CallPiece], None] | None  # None when nobody reads the calls as they come
# (engine, on_text, cancel) -> result: the model's engine (or embedder) leased from the pool
Work = Callable[[Loaded, OnText, threading.Event], Any]
# (engine, on_text, on_call, cancel) -> result: a chat, whose tool calls may stream too
ChatWork = Callable[[Loaded, OnText, OnCall, threading.Event], Any]
# (on_text, cancel) -> result: work that takes what it needs from the pool itself (the scorer)
BareWork = Callable[[OnText, threading.Event], Any]


# The least time between two wake-ups of the loop for a stream's pieces (not its first or last
# event): a piece that comes sooner waits for the end of the interval, no longer. A token
# every 10 ms (one client on a small CPU) is then written about five at a time, 20 times a
# second, as smooth as reading needs; slower streams (many clients) wake the loop for every
# token. Against 25 ms, side by side: +4% and +6% tokens/s at one and two clients in one
# run, -1% and +1% in the next (docs/benchmarks.md, "Where the time goes at one client").
WAKE_INTERVAL_S = 0.05


class _Workers:
    """The threads the jobs run in, each kept for the next job once its own ends: starting a
    thread makes the event loop wait until the thread runs (a request's first token waited
    for it, and every stream with it), handing a job to an idle one does not."""

    def __init__(self, keep: int) -> None:
        self.keep = keep  # idle threads kept at most; a busier moment's extra ones end
        self._idle: list[queue.SimpleQueue[Callable[[], None]]] = []
        self._lock = threading.Lock()

    def run(self, task: Callable[[], None], name: str) -> None:
        """Run `task` (which handles its own errors) in an idle thread, or a new one."""
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox,), daemon=True).start()
        inbox.put(lambda: self._named(task, name))

    @staticmethod
    def _named(task: Callable[[], None], name: str) -> None:
        threading.current_thread().name = name  # what the thread does now, for a traceback
        task()

    def _serve(self, inbox: queue.SimpleQueue[Callable[[], None]]) -> None:
        while True:
            inbox.get()()
            with self._lock:
                if len(self._idle) >= self.keep:
                    return
                self._idle.append(inbox)


_workers = _Workers(keep=64)


# Every engine call running now, so that a stopping server can cancel what outlives its grace
# (server/stopping.py): each then ends as a cancelled answer does, its stream closed properly.
_running: set[Job] = set()
_running_lock = threading.Lock()


def cancel_all() -> int:
    """Cancel every engine call still running; how many there were."""
    with _running_lock:
        jobs = list(_running)
    for job in jobs:
        job.cancel.set()
    return len(jobs)


@dataclass
class Event:
    kind: str  # "text", "call" (a piece of a tool call), "loading" (the model), "done" or "error"
    index: int = 0
    text: str = ""
    result: Any = None
    error: BaseException | None = None
    call: CallPiece | None = None

    @property
    def streamed(self) -> bool:
        """A piece of the answer as it comes, not its end."""
        return self.kind in ("text", "call")


class Job:
    """An engine call running in a worker thread; read its events with `next()`."""

    def __init__(self, pool: ModelPool, entry: ServedModel, work: Work, texts: bool = True) -> None:
        """`texts=False`: a whole answer, whose pieces need not wake the event loop one by one."""
        self._begin(texts)
        self._spawn(entry, lambda: self._leased(pool, entry, work))

    def _begin(self, texts: bool) -> None:
        self.loop = asyncio.get_running_loop()
        self.on_text = self._on_text if texts else None
        self.cancel = threading.Event()
        # Events not yet taken, and whether a wake-up of the loop is on its way: a wake-up
        # is a write to the loop's pipe and a turn of the loop, paid once per batch rather
        # than once per token (the worker thread's side is under the lock).
        self._events: deque[Event] = deque()
        self._lock = threading.Lock()
        self._wake_due = False
        self._woken = -WAKE_INTERVAL_S  # when the worker thread last woke the loop (monotonic)
        self._waiter: asyncio.Future[None] | None = None

    def _spawn(self, entry: ServedModel, call: Callable[[], Any]) -> None:
        _workers.run(lambda: self._run(call), f"job-{entry.id}")

    def _leased(self, pool: ModelPool, entry: ServedModel, work: Work) -> Any:
        # Only a stream says that its model loads: a whole answer just takes longer.
        loading = (lambda: self._put(Event("loading", text=entry.id))) if self.on_text else None
        with pool.lease(entry, loading, self.cancel) as engine:
            return work(engine, self.on_text, self.cancel)

    def _run(self, call: Callable[[], Any]) -> None:
        with _running_lock:
            _running.add(self)
        try:
            self._put(Event("done", result=call()))
        except Exception as exc:  # handed to the request, which answers with it
            self._put(Event("error", error=exc))
        finally:
            with _running_lock:
                _running.discard(self)

    def _on_text(self, index: int, text: str) -> None:
        self._put(Event("text", index, text))

    def _on_call(self, index: int, piece: CallPiece) -> None:
        self._put(Event("call", index, call=piece))

    def _put(self, event: Event) -> None:
        at = time.monotonic()
        with self._lock:
            self._events.append(event)
            if self._wake_due and event.streamed:
                return  # a wake-up is on its way: it takes this event too
            # The job's last event (or "loading") wakes the loop now even when a wake-up is
            # on its way: that one may be most of an interval off, and an answer held back
            # at its end keeps its client (and, at one client, llama.cpp) waiting.
            delay = 0.0
            if event.streamed and at - self._woken < WAKE_INTERVAL_S:
                # Too soon after the last: woken at the end of the interval, with what else has
                # come by then, and not later even if nothing more comes (a pause between
                # tokens, while another slot reads a long prompt).
                delay = self._woken + WAKE_INTERVAL_S - at
            self._wake_due, self._woken = True, at + delay
        with contextlib.suppress(RuntimeError):  # the loop closed: the server is stopping
            if delay:
                self.loop.call_soon_threadsafe(self.loop.call_later, delay, self._wake)
            else:
                self.loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        """On the loop: the events that came are there to take."""
        with self._lock:
            self._wake_due = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next(self) -> Event:
        while True:
            with self._lock:
                if self._events:
                    return self._events.popleft()
            self._waiter = self.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def ready(self) -> list[Event]:
        """The events that have come and not been taken, without waiting: what a stream can
        write at once after `next`."""
        with self._lock:
            taken = list(self._events)
            self._events.clear()
        return taken

    async def batches(self, first: Event) -> AsyncIterator[list[Event]]:
        """The events from `first` on, each time all those that have come: a stream writes a
        batch at once. The last batch ends with the job's last event ("done" or "error")."""
        batch = [first]
        while True:
            batch += self.ready()
            yield batch
            if not batch[-1].streamed:
                return
            batch = [await self.next()]

    async def first(self, request: Request) -> Event:
        """The first event (text, done or error), cancelling the work if the client goes away
        before it comes (a queue, a long prompt)."""
        async with self._watching(request):
            return await self.next()

    async def finish(self, request: Request) -> Event:
        """The last event ("done" or "error"), cancelling the work if the client goes away."""
        async with self._watching(request):
            event = await self.next()
            while event.kind not in ("done", "error"):
                event = await self.next()
            return event

    @contextlib.asynccontextmanager
    async def _watching(self, request: Request) -> AsyncIterator[None]:
        """Set the cancel event the moment the client hangs up, for as long as this lasts.

        A task waits on `receive`, which gives nothing more after the body until the
        client disconnects; polling between events instead would never poll while
        tokens keep coming, and an abandoned answer would run to its end.
        """
        watcher = asyncio.ensure_future(self._hang_up(request))
        try:
            yield
        except BaseException:
            # The request itself was cancelled (a stopping server cancels what outlives its
            # grace): the engine call it waited for stops too.
            self.cancel.set()
            raise
        finally:
            watcher.cancel()

    async def _hang_up(self, request: Request) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        self.cancel.set()


async def after_loading(
    job: Job, first: Event, events: Callable[[Event], AsyncIterator[str]]
) -> AsyncIterator[str]:
    """A stream whose first event may be its model's load: `: loading MODEL` at once, then
    `events` from the first real event (an error then comes in the stream's own shape)."""
    try:
        if first.kind == "loading":
            yield f": loading {first.text}\n\n"
            first = await job.next()
        async for piece in events(first):
            yield piece
    finally:
        job.cancel.set()  # the client left during the load, or the stream ended


class ChatJob(Job):
    """A chat whose tool calls stream as well as its text: their pieces come as "call" events."""

    def __init__(
        self, pool: ModelPool, entry: ServedModel, work: ChatWork, texts: bool = True
    ) -> None:
        self._begin(texts)
        on_call = self._on_call if texts else None
        self._spawn(
            entry,
            lambda: self._leased(
                pool, entry, lambda engine, on_text, cancel: work(engine, on_text, on_call, cancel)
            ),
        )


class BareJob(Job):
    """Work that takes what it needs from the pool itself (the scorer): no engine is leased."""

    def __init__(self, entry: ServedModel, work: BareWork, texts: bool = True) -> None:
        self._begin(texts)
        self._spawn(entry, lambda: work(self.on_text, self.cancel))
