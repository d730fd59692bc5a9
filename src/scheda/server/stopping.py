"""How the server stops: drain on the first SIGTERM (or Ctrl-C), stop now on the second.

The first signal turns the server away from new work without dropping what it
is doing: every new request, on a new or a kept-alive connection, gets a 503
with `Retry-After` (a load balancer sends it elsewhere, a client retries), and
the answers in flight go on. When the last one ends, or when the grace period
(`scheda serve --grace`) is over, every engine call still running is cancelled:
it stops at its next token and its answer ends as a cancelled one does (finish
reason "cancelled", the stream closed properly, a studio chat turn saving the
part already written); then uvicorn's own shutdown runs. A second signal ends
the grace at once. Either way the process exits 0: a stop that was asked for is
not a failure, and uvicorn's habit of raising the signal again after its
shutdown (which would end the process by SIGTERM) is left out.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import uvicorn

# Once the grace is over: how long the cancelled answers may take to end their streams (they
# stop at their next token; a loaded machine may take a while), then how long uvicorn waits
# for the connections before it cancels what remains.
CANCEL_S = 3.0
CLOSE_S = 2  # uvicorn takes whole seconds
POLL_S = 0.05


@dataclass
class Stopping:
    """Shared by the drain layer and the server: whether the server is stopping."""

    draining: bool = False
    hurry: threading.Event = field(default_factory=threading.Event)


def in_flight(pool: Any) -> int:
    """The requests the pool has admitted and not finished (0 if it cannot say)."""
    try:
        active = pool.health().get("active") or {}
    except Exception:  # a pool that cannot answer has nothing to wait for
        return 0
    return int(sum(v for v in active.values() if isinstance(v, int)))


class GracefulServer(uvicorn.Server):
    """uvicorn's server, stopped as this module's docstring says."""

    def __init__(self, config: uvicorn.Config, pool: Any, stopping: Stopping, grace: float):
        super().__init__(config)
        self.pool = pool
        self.stopping = stopping
        self.grace = grace

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.stopping.draining:
            self.stopping.hurry.set()  # the second signal: the grace is over
            return
        self.stopping.draining = True
        threading.Thread(target=self._drain, name="drain", daemon=True).start()

    def _drain(self) -> None:
        from scheda.server.runner import cancel_all

        deadline = time.monotonic() + self.grace
        while in_flight(self.pool) and time.monotonic() < deadline:
            if self.stopping.hurry.wait(POLL_S):
                break
        if cancel_all():
            # Each answer left stops at its next token and its stream ends as a cancelled
            # answer's does (a studio chat turn saves what it said); give them that moment.
            wait_idle(self.pool, CANCEL_S)
        # uvicorn now closes its sockets, waits this long for the connections still open, and
        # cancels what remains; nothing is left to wait for after the grace.
        self.config.timeout_graceful_shutdown = CLOSE_S
        self.should_exit = True


def wait_idle(pool: Any, within: float) -> None:
    """Let the engine calls that were cancelled notice it before the engines close."""
    deadline = time.monotonic() + within
    while in_flight(pool) and time.monotonic() < deadline:
        time.sleep(POLL_S)
