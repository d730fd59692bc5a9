"""One evaluation run dealt out to Ray workers; the driver alone writes the run's store.

Each worker is a Ray actor that opens the model on its own node (the path that node
sees, or the catalog name or Hub repository it resolves and pulls itself) and scores
items with the task's own code and the same scorer and engine as a local run. The
driver opens the run exactly as a local run does (`open_run`: same identity, same
resume), so a run interrupted locally finishes on a cluster and the other way round.

How items travel:

- The items not yet scored are cut into shards of consecutive items, balanced by the
  tokens they hold (estimated from their text: the driver may not have the model to
  tokenize with). Consecutive items share their few-shot prefix, so a worker that
  scores a shard in order evaluates that prefix once and reuses its cache, as a local
  run does.
- A worker owns one shard at a time and is sent its items one call at a time (a
  batch of `parallel` for generated answers, so that its slots decode together), with
  the next call already queued on it so that it never waits for the driver.
- A worker that is done takes the next shard; when there is none, it takes the back
  half of the unsent items of the worker with the most left: a slow worker's items go
  to a faster one, and no item is sent twice.
- A worker that dies (its node lost, the actor killed) gives back everything it held:
  the calls in flight and the unsent rest of its shard are dealt again. A result that
  still arrives twice is stored once.

The driver stores each result as it arrives; the summary is computed from the store,
as for a local run.

A comparison's candidates are dealt out by `compare.candidates_on_ray`.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheda.errors import EngineError, SchedaError
from scheda.evaluation.base import EvalModel, Item, ItemResult, Task
from scheda.evaluation.runner import close_run, open_run
from scheda.stores.evals import EvalStore, Run

BYTES_PER_TOKEN = 4  # English text in a 50k BPE vocabulary: about four bytes a token
SHARDS_PER_WORKER = 4  # enough to even out the estimate's errors; few cold prefixes
IN_FLIGHT = 2  # calls queued on each worker: the next is there the moment one ends

# Called with each worker's name and its items per second so far.
OnRates = Callable[[dict[str, float]], None]


def item_tokens(item: Item) -> int:
    """The tokens an item holds, estimated from the text of its fields."""
    return max(1, _text_bytes(item.data) // BYTES_PER_TOKEN)


def _text_bytes(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, dict):
        return sum(_text_bytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(_text_bytes(v) for v in value)
    return 0


def shards(items: list[Item], count: int) -> list[list[Item]]:
    """Consecutive items cut into at most `count` shards of about equal estimated tokens:
    each item goes to the shard its middle token falls in."""
    tokens = [item_tokens(i) for i in items]
    total = sum(tokens)
    cut: list[list[Item]] = [[] for _ in range(max(1, count))]
    position = 0
    for item, n in zip(items, tokens, strict=True):
        cut[min(len(cut) - 1, int((position + n / 2) / total * len(cut)))].append(item)
        position += n
    return [shard for shard in cut if shard]


class Worker:
    """A Ray actor's body: one model, opened on the worker's node, and the task's scoring.

    An error while resolving the model is kept and raised by `ready()`, as a task error
    that carries the original exception, where a failing constructor would only kill
    the actor.
    """

    def __init__(self, task: Task, model: str, settings: dict[str, Any]) -> None:
        self.task = task
        self.error: Exception | None = None
        self.model: EvalModel | None = None
        try:
            from scheda.engines import choose

            _, path = choose(model)
            self.model = EvalModel(path, **settings)
        except SchedaError as exc:
            self.error = exc

    def ready(self) -> str:
        """Where this worker runs, once its model is found there."""
        if self.error is not None:
            raise self.error
        return socket.gethostname()

    def score(self, items: list[Item]) -> list[ItemResult]:
        assert self.model is not None  # ready() has said so
        return list(self.task.run(items, self.model))


@dataclass
class Lane:
    """One worker as the driver sees it: the shard it owns and its calls in flight."""

    name: str
    actor: Any
    unsent: deque[Item] = field(default_factory=deque)
    sent: dict[Any, list[Item]] = field(default_factory=dict)  # call -> its items
    scored: int = 0
    since: float = 0.0

    def rate(self, now: float) -> float:
        return self.scored / (now - self.since) if self.since and now > self.since else 0.0


def worker_reference(model: str) -> str:
    """What a worker opens: a path as an absolute path; a catalog name or repository as given."""
    local = Path(model).expanduser()
    return str(local.resolve()) if local.exists() else model


def run_on_ray(
    ray: Any,
    task: Task,
    model: str,
    evaluator: EvalModel,
    store: EvalStore,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_rates: OnRates | None = None,
) -> tuple[Run, dict[str, Any]]:
    """Score the run's missing items on `workers` Ray actors (one per node when None)."""
    run, items, todo = open_run(task, store, model, evaluator.path, evaluator.parallel)
    count = len(items) - len(todo)
    if on_progress is not None:
        on_progress(count, len(items))
    if todo:
        lanes = _start(ray, task, model, evaluator, run, workers or _nodes(ray))
        try:
            deal = _Deal(ray, task, lanes, shards(todo, len(lanes) * SHARDS_PER_WORKER))
            for result in deal.results(evaluator.parallel if task.output == "generate" else 1):
                store.add(run.id, result)
                count += 1
                if on_progress is not None:
                    on_progress(count, len(items))
                if on_rates is not None:
                    on_rates(deal.rates())
        finally:
            for lane in lanes:
                ray.kill(lane.actor)
    return run, close_run(task, store, run)


def _nodes(ray: Any) -> int:
    return max(1, sum(1 for node in ray.nodes() if node.get("Alive")))


def _start(
    ray: Any, task: Task, model: str, evaluator: EvalModel, run: Run, count: int
) -> list[Lane]:
    """`count` workers, spread over the nodes, each with a CPU per llama.cpp thread."""
    settings = {
        "context": evaluator.context,
        "parallel": evaluator.parallel,
        "threads": evaluator.threads,
        "engine": evaluator.engine_name,
    }
    remote = ray.remote(Worker)
    cpus = evaluator.threads or 1
    reference = worker_reference(model)
    lanes = [
        Lane(
            name,
            remote.options(
                name=name, num_cpus=cpus, scheduling_strategy="SPREAD", max_restarts=0
            ).remote(task, reference, settings),
        )
        for name in (f"scheda-eval-{run.id}-{i + 1}" for i in range(count))
    ]
    try:
        ray.get([lane.actor.ready.remote() for lane in lanes])
    except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as exc:
        for lane in lanes:
            ray.kill(lane.actor)
        raise worker_error(exc) from None
    return lanes


def worker_error(exc: Any) -> Exception:
    """A worker's own error as the driver raises it: scheda's errors as they were."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, SchedaError):
        return cause
    what = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc).splitlines()[0]
    return EngineError(f"a Ray worker failed ({what})")


class _Deal:
    """The driver's loop: shards to lanes, calls to workers, results back as they come."""

    def __init__(self, ray: Any, task: Task, lanes: list[Lane], cut: list[list[Item]]) -> None:
        self.ray = ray
        self.task = task
        self.lanes = list(lanes)
        self.queue: deque[list[Item]] = deque(cut)
        self.stored: set[str] = set()

    def rates(self) -> dict[str, float]:
        now = time.monotonic()
        return {lane.name.rsplit("-", 1)[-1]: lane.rate(now) for lane in self.lanes}

    def results(self, batch: int) -> Iterable[ItemResult]:
        """Every item's result once, in the order they arrive."""
        while True:
            for lane in self.lanes:
                self._fill(lane, batch)
            calls = {call: lane for lane in self.lanes for call in lane.sent}
            if not calls:
                return
            [ready], _ = self.ray.wait(list(calls), num_returns=1)
            lane = calls[ready]
            items = lane.sent.pop(ready)
            try:
                results = self.ray.get(ready)
            except self.ray.exceptions.RayActorError:
                self._lost(lane, items)
                continue
            except self.ray.exceptions.RayTaskError as exc:
                raise worker_error(exc) from None
            lane.scored += len(results)
            for result in results:
                if result.key not in self.stored:
                    self.stored.add(result.key)
                    yield result

    def _fill(self, lane: Lane, batch: int) -> None:
        """Keep IN_FLIGHT calls queued on the worker, from its shard, a new one, or a steal."""
        while len(lane.sent) < IN_FLIGHT:
            if not lane.unsent and not self._take(lane):
                return
            items = [lane.unsent.popleft() for _ in range(min(batch, len(lane.unsent)))]
            lane.sent[lane.actor.score.remote(items)] = items
            lane.since = lane.since or time.monotonic()

    def _take(self, lane: Lane) -> bool:
        """A shard from the queue, or the back half of the unsent items of the busiest lane."""
        if self.queue:
            lane.unsent.extend(self.queue.popleft())
            return True
        busiest = max(self.lanes, key=lambda other: len(other.unsent))
        if len(busiest.unsent) < 2:
            return False
        half = len(busiest.unsent) // 2
        stolen = [busiest.unsent.pop() for _ in range(half)]
        lane.unsent.extend(reversed(stolen))
        return True

    def _lost(self, lane: Lane, items: list[Item]) -> None:
        """A dead worker's items, in flight or not yet sent, go back to the front of the queue."""
        self.lanes.remove(lane)
        back = [*items, *(i for held in lane.sent.values() for i in held), *lane.unsent]
        lane.sent.clear()
        lane.unsent.clear()
        missing = [i for i in back if i.key not in self.stored]
        if missing:
            self.queue.appendleft(missing)
        if not self.lanes:
            raise EngineError(
                "every Ray worker was lost before the run finished: the same command "
                "again scores only the items still missing"
            )
