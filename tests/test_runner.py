"""How a job's pieces reach the event loop (server/runner.py): in batches, never held back.

The worker thread wakes the loop at most every `WAKE_INTERVAL_S` for the pieces
between a job's first event and its last. A piece that comes sooner waits for
the end of the interval, not for the next event: an engine that pauses after it
(another slot reading a long prompt) must not hold back what was already said.
"""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace
from typing import Any, cast

from scheda.server.pool import ServedModel
from scheda.server.runner import BareJob, Event

ENTRY = cast(ServedModel, SimpleNamespace(id="test"))


async def _events_until(job: BareJob, kind: str) -> list[Event]:
    seen = [await job.next()]
    while seen[-1].kind != kind:
        seen.append(await asyncio.wait_for(job.next(), 10))
    return seen


def test_a_piece_that_comes_soon_after_another_arrives_before_the_engine_goes_on() -> None:
    """Two pieces at once, then the engine waits until the second has been read: it gets
    through within the interval, not at the job's end (which would never come)."""
    second_read = threading.Event()

    def work(on_text: Any, _cancel: threading.Event) -> str:
        on_text(0, "first")
        on_text(0, "second")  # within the interval of the first's wake-up
        return "in time" if second_read.wait(5) else "held back"

    async def run() -> list[Event]:
        job = BareJob(ENTRY, work)
        seen = [e for e in await _events_until(job, "text") if e.kind == "text"]
        if [e.text for e in seen] != ["first", "second"]:
            seen += await _events_until(job, "text")
        second_read.set()
        return [*seen, *await _events_until(job, "done")]

    events = asyncio.run(run())
    assert [e.text for e in events if e.kind == "text"] == ["first", "second"]
    assert events[-1].kind == "done" and events[-1].result == "in time"


def test_many_pieces_arrive_in_order_and_whole() -> None:
    pieces = [f"{i} " for i in range(500)]

    def work(on_text: Any, _cancel: threading.Event) -> int:
        for piece in pieces:
            on_text(0, piece)
        return len(pieces)

    async def run() -> list[Event]:
        job = BareJob(ENTRY, work)
        return await _events_until(job, "done")

    events = asyncio.run(run())
    assert "".join(e.text for e in events if e.kind == "text") == "".join(pieces)
    assert events[-1].result == 500


def test_the_last_event_is_not_held_for_a_wake_up_due_later(monkeypatch: Any) -> None:
    """The job ends while the wake-up for its last pieces is still an interval away: the
    end wakes the loop at once, with those pieces, rather than waiting for it (an answer
    held back at its end would keep its client, and at one client llama.cpp, idle)."""
    from scheda.server import runner

    monkeypatch.setattr(runner, "WAKE_INTERVAL_S", 60.0)  # a wake-up due later is a minute off

    first_read = threading.Event()

    def work(on_text: Any, _cancel: threading.Event) -> str:
        on_text(0, "first")  # wakes the loop at once
        first_read.wait(5)
        time.sleep(0.2)  # the reader is waiting for the loop to be woken by now
        on_text(0, "second")  # soon after that wake-up: its own is due a minute later
        return "ended"

    async def run() -> list[Event]:
        job = BareJob(ENTRY, work)
        first = await job.next()
        first_read.set()
        return [first, *await asyncio.wait_for(_events_until(job, "done"), 10)]

    events = asyncio.run(run())
    assert [e.text for e in events if e.kind == "text"] == ["first", "second"]
    assert events[-1].kind == "done" and events[-1].result == "ended"
