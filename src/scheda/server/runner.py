"""One engine call per request, in its own thread, its output delivered to the event loop.

The engines block (llama.cpp's handler returns when the answer is complete),
so each request runs in a thread of its own; many such threads wait inside
llama.cpp at once, which is what lets its continuous batching decode them
together. scheda takes no lock around them. Text reaches the event loop
through `call_soon_threadsafe`, one queue item per piece.

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
import threading
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
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.cancel = threading.Event()

    def _spawn(self, entry: ServedModel, call: Callable[[], Any]) -> None:
        thread = threading.Thread(
            target=self._run, args=(call,), name=f"job-{entry.id}", daemon=True
        )
        thread.start()

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
        with contextlib.suppress(RuntimeError):  # the loop closed: the server is stopping
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    async def next(self) -> Event:
        return await self.events.get()

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
