"""One engine call per request, in its own thread, its output delivered to the event loop.

The engines block (llama.cpp's handler returns when the answer is complete),
so each request runs in a thread of its own; many such threads wait inside
llama.cpp at once, which is what lets its continuous batching decode them
together. scheda takes no lock around them. Text reaches the event loop
through `call_soon_threadsafe`, one queue item per piece.

Cancelling is the engine's own: a client that goes away sets the job's event,
llama.cpp sees it at the next token and frees the slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from scheda.server.pool import ModelPool, ServedModel

DISCONNECT_POLL_S = 0.25

# (engine, on_text, cancel) -> result
Work = Callable[[Any, Callable[[int, str], None], threading.Event], Any]


@dataclass
class Event:
    kind: str  # "text", "done" or "error"
    index: int = 0
    text: str = ""
    result: Any = None
    error: BaseException | None = None


class Job:
    """An engine call running in a worker thread; read its events with `next()`."""

    def __init__(
        self, pool: ModelPool, entry: ServedModel, work: Work, engine: bool = True
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.cancel = threading.Event()
        self._pending: asyncio.Task[Event] | None = None
        target = self._run if engine else self._run_bare
        thread = threading.Thread(
            target=target, args=(pool, entry, work), name=f"job-{entry.id}", daemon=True
        )
        thread.start()

    def _run(self, pool: ModelPool, entry: ServedModel, work: Work) -> None:
        try:
            with pool.lease(entry) as engine:
                result = work(engine, self._on_text, self.cancel)
            self._put(Event("done", result=result))
        except Exception as exc:  # handed to the request, which answers with it
            self._put(Event("error", error=exc))

    def _run_bare(self, _pool: ModelPool, _entry: ServedModel, work: Work) -> None:
        """Work that takes what it needs from the pool itself (the scorer)."""
        try:
            self._put(Event("done", result=work(None, self._on_text, self.cancel)))
        except Exception as exc:
            self._put(Event("error", error=exc))

    def _on_text(self, index: int, text: str) -> None:
        self._put(Event("text", index, text))

    def _put(self, event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: the server is stopping
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    async def next(self) -> Event:
        return await self.events.get()

    async def finish(self, request: Request) -> Event:
        """The last event ("done" or "error"), cancelling the work if the client goes away."""
        while True:
            if self._pending is None:
                self._pending = asyncio.ensure_future(self.events.get())
            done, _ = await asyncio.wait({self._pending}, timeout=DISCONNECT_POLL_S)
            if done:
                event = self._pending.result()
                self._pending = None
                if event.kind != "text":
                    return event
            elif await request.is_disconnected():
                self.cancel.set()
