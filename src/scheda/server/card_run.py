"""A card run started from the studio: the card's tasks one after another, in a thread.

It makes the runs `scheda eval --card` makes: each task made with the card's
shots (the registry's defaults), `limit` and `data`; taken from the evaluation
store when a finished run of the same identity is there, else opened in it (an
unfinished run of the same identity is resumed where it stopped), every result
stored as it is scored, then summarised and finished, through
`evaluation/runner` as the command does. A task whose data is nowhere here
does not stop the others: its progress says where its data would come from.

One run at a time per server: the model under evaluation is opened apart
from the served one (its scorer and, for generated answers, an engine with the
server's slot count), as `scheda eval` in another terminal would open it, and a
second run would open it again. Its memory is not in the pool's budget.

Cancelling takes effect at the next scored item (a generated task's answers in
flight are cut then); what was scored stays stored, and starting the same run
again goes on from there.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scheda.errors import APIError, UsageError
from scheda.evaluation.base import EvalModel, Task
from scheda.evaluation.card import missing_module, stored_summary
from scheda.evaluation.runner import close_run, make_task, open_run
from scheda.evaluation.tasks import TASKS, TaskInfo
from scheda.stores.evals import EvalStore

log = logging.getLogger("scheda.server")

# A task's states: waiting, then running, then where it ended (measured before: a finished
# run with the same identity is in the store already); or, when it cannot be made here, no
# data (the message says where its data would come from) or unavailable (its module is not
# in this build).
WAITING, RUNNING, FINISHED, FAILED = "waiting", "running", "finished", "failed"
CANCELLED, NO_DATA, UNAVAILABLE = "cancelled", "no data", "unavailable"
MEASURED = "measured before"
# How long a stopping server waits for the item in progress before it lets the run go.
STOP_WAIT_S = 30.0


@dataclass
class TaskProgress:
    task: str  # the registry's name
    benchmark: str  # the card's row label
    state: str = WAITING
    done: int = 0  # items scored (those of an earlier, resumed run included)
    total: int | None = None  # known once the task is made
    run: str | None = None  # the evaluation store's run id, once opened
    why: str | None = None  # no data: where its data would come from; failed: the error


@dataclass
class CardRun:
    """One card run: what it runs, where each task stands, how to stop it."""

    model: str  # the served model's id
    path: Path  # its file or folder (what the store's runs are matched on)
    card: str  # the card's label
    limit: int | None
    data: Path | None
    tasks: list[TaskProgress]
    id: str = field(default_factory=lambda: secrets.token_hex(4))
    state: str = RUNNING  # then finished, cancelled or failed
    started: float = field(default_factory=time.time)
    ended: float | None = None
    error: str | None = None
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _scored_at: list[float] = field(default_factory=list, repr=False)  # this run's items
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.ended is None

    def cancel(self) -> None:
        self._cancel.set()

    def to_dict(self) -> dict[str, Any]:
        tasks = [asdict(t) for t in self.tasks]
        current = next((t["task"] for t in tasks if t["state"] == RUNNING), None)
        return {
            "id": self.id,
            "model": self.model,
            "card": self.card,
            "limit": self.limit,
            "data": None if self.data is None else str(self.data),
            "state": "cancelling" if self.running and self._cancel.is_set() else self.state,
            "started": self.started,
            "ended": self.ended,
            "error": self.error,
            "task": current,
            "done": sum(t["done"] for t in tasks),
            "total": sum(t["total"] or 0 for t in tasks),
            "eta_s": self.eta(),
            "tasks": tasks,
        }

    def eta(self) -> float | None:
        """Seconds left at the pace of the items this run scored (None until two are)."""
        if not self.running:
            return None
        left = sum((t.total or 0) - t.done for t in self.tasks if t.state in (WAITING, RUNNING))
        return eta_seconds(self._scored_at, left, time.time())

    # -- the thread ----------------------------------------------------------------------

    def start(self, store: EvalStore, open_model: Callable[[], EvalModel]) -> None:
        self._thread = threading.Thread(
            target=self._work, args=(store, open_model), name=f"card-{self.id}", daemon=True
        )
        self._thread.start()

    def wait(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _work(self, store: EvalStore, open_model: Callable[[], EvalModel]) -> None:
        try:
            made = [(p, task) for p in self.tasks if (task := self._make(p)) is not None]
            if made and not self._cancel.is_set():
                model = open_model()
                try:
                    for progress, task in made:
                        self._run(progress, task, model, store)
                finally:
                    model.close()
            self.state = CANCELLED if self._cancel.is_set() else FINISHED
        except Exception as exc:  # a task that would not make, a model that would not open
            log.exception("card run %s failed", self.id)
            self.state, self.error = FAILED, _one_line(exc)
        finally:
            for progress in self.tasks:
                if progress.state in (WAITING, RUNNING):
                    progress.state = CANCELLED if self._cancel.is_set() else FAILED
            self.ended = time.time()

    def _make(self, progress: TaskProgress) -> Task | None:
        """The task as `scheda eval --card` makes it, its items counted; None if it cannot
        run here (its data is nowhere here, or its module is not in this build)."""
        if self._cancel.is_set():
            return None
        info = TASKS[progress.task]
        absent = missing_module(info)
        if absent is not None:
            progress.state, progress.why = UNAVAILABLE, absent
            return None
        try:
            task = make_task(info.name, None, self.limit, self.data)
            progress.total = len(task.items())
        except UsageError as exc:  # the message says where its data would come from
            progress.state, progress.why = NO_DATA, _one_line(exc)
            return None
        return task

    def _run(self, progress: TaskProgress, task: Task, model: EvalModel, store: EvalStore) -> None:
        """Score the items the task's run lacks, as `runner.run_task` does, between two items
        looking whether the run was cancelled."""
        if self._cancel.is_set():
            return
        progress.state = RUNNING
        try:
            # As `scheda eval --card` does: a task measured before is taken, not measured again.
            stored = stored_summary(task, store, self.path, model.parallel)
            if stored is not None:
                progress.state, progress.run = MEASURED, stored["run"]
                progress.done = progress.total = stored["items"]
                return
            run, items, todo = open_run(task, store, self.model, model.path, model.parallel)
            progress.run, progress.total = run.id, len(items)
            progress.done = len(items) - len(todo)
            results = task.run(todo, model)
            try:
                for result in results:
                    store.add(run.id, result)
                    progress.done += 1
                    self._scored_at.append(time.time())
                    if self._cancel.is_set():
                        progress.state = CANCELLED
                        return
            finally:
                # A generated task's answers in flight are cut when its iterator closes.
                getattr(results, "close", lambda: None)()
            close_run(task, store, run)
        except Exception as exc:
            log.exception("card run %s: %s failed", self.id, progress.task)
            progress.state, progress.why = FAILED, _one_line(exc)
            return
        progress.state = FINISHED


def eta_seconds(scored_at: list[float], left: int, now: float) -> float | None:
    """The items left at the mean pace between the first and the last item scored, less the
    time since the last; None until two items give a pace. The first item's own time is left
    out: it includes opening the model."""
    if len(scored_at) < 2:
        return None
    pace = (scored_at[-1] - scored_at[0]) / (len(scored_at) - 1)
    return round(max(0.0, left * pace - (now - scored_at[-1])), 1)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class CardRuns:
    """The server's card run: one at a time, the last one kept to be read after it ends."""

    def __init__(self) -> None:
        self.last: CardRun | None = None
        self._lock = threading.Lock()

    def start(self, run: CardRun, store: EvalStore, open_model: Callable[[], EvalModel]) -> None:
        with self._lock:
            if self.last is not None and self.last.running:
                raise APIError(
                    f"a card run is going ({self.last.card} on {self.last.model}): wait for it "
                    "to end, or cancel it with DELETE /api/evals/card/run",
                    None,
                    409,
                )
            self.last = run
            run.start(store, open_model)

    def stop(self) -> None:
        """The server is stopping: cancel the run and give its item in progress a moment."""
        run = self.last
        if run is not None and run.running:
            run.cancel()
            run.wait(STOP_WAIT_S)


def card_progress(infos: list[TaskInfo]) -> list[TaskProgress]:
    """Each task of a card, waiting, labelled with its row."""
    return [TaskProgress(info.name, info.published or info.name) for info in infos]
