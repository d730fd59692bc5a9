"""Run tasks on a model: resume from the store, show progress, summarise.

Every result is stored the moment it is known; the summary is computed from
the stored results, so a resumed run and an uninterrupted one report the same
figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scheda.errors import UsageError
from scheda.evaluation.base import Aggregate, EvalModel, Item, ItemResult, Task, aggregate
from scheda.evaluation.generation_llamacpp import SHARED_PREFIX, decoding
from scheda.evaluation.tasks import TASKS
from scheda.stores.evals import EvalStore, Run


def published_label(task: str) -> str | None:
    """The catalog's benchmark row a task's figures are set beside (None: a task of a file)."""
    info = TASKS.get(task)
    return info.published if info is not None else None


def task_names() -> str:
    """The names `--tasks` takes, for help and errors."""
    return ", ".join(TASKS)


def _data_for(data: Path | None, name: str) -> Path | None:
    """DIR/<task> when it exists, else DIR itself (or None: the task's own source)."""
    if data is None:
        return None
    return data / name if (data / name).is_dir() else data


def make_task(
    name: str, shots: int | None, limit: int | None, data: Path | None, samples: int = 1
) -> Task:
    """A task from its name (one of TASKS) or a .jsonl file of multiple choice."""
    if name.endswith(".jsonl"):
        from scheda.evaluation.multiple_choice import JsonlChoice

        return JsonlChoice(Path(name).expanduser(), shots or 0, limit)
    info = TASKS.get(name)
    if info is None:
        raise UsageError(
            f"unknown task {name!r}: known are {task_names()}, or a path to a .jsonl file"
        )
    return info.make(shots, limit, _data_for(data, name), samples)


def run_task(
    task: Task,
    model: EvalModel,
    store: EvalStore,
    model_name: str,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[Run, dict[str, Any]]:
    """Score the items this run has not scored yet; the summary over all of them."""
    run, items, todo = open_run(task, store, model_name, model.path, model.parallel)
    count = len(items) - len(todo)
    if on_progress is not None:
        on_progress(count, len(items))
    for result in task.run(todo, model):
        store.add(run.id, result)
        count += 1
        if on_progress is not None:
            on_progress(count, len(items))
    return run, close_run(task, store, run)


def open_run(
    task: Task, store: EvalStore, model_name: str, path: Path, parallel: int
) -> tuple[Run, list[Item], list[Item]]:
    """The run (the unfinished one with this identity, or a new one), its items, and
    those it has not scored yet: the same wherever the items are then scored."""
    items = task.items()
    if not items:
        raise UsageError(f"{task.name}: no items to score")
    run = store.start(model_name, path, task.name, run_config(task, parallel, path), len(items))
    done = store.done(run.id)
    return run, items, [i for i in items if i.key not in done]


def run_config(task: Task, parallel: int, path: Path) -> dict[str, Any]:
    """The configuration that, with the model file and the task, makes a run's identity."""
    config = task.config()
    if task.version > 1:  # the first version adds nothing: runs stored before versions resume
        config["version"] = task.version
    if task.output == "generate":
        # Slots decoding together are not bit-identical to one at a time (llama.cpp batches
        # them into one computation), so the slot count is part of what makes a run.
        config["parallel"] = parallel
        # Likewise the prefix shared in one batch against the engine's slots.
        if decoding(path) == SHARED_PREFIX:
            config["decoding"] = SHARED_PREFIX
    return config


def close_run(task: Task, store: EvalStore, run: Run) -> dict[str, Any]:
    """The summary over every stored result, kept with the run, which is now finished."""
    summary = summarize(task, store.results(run.id))
    store.finish(run.id, summary)
    return summary


def summarize(task: Task, results: list[ItemResult]) -> dict[str, Any]:
    metrics = {
        m: _figure(aggregate((r.metrics[m] for r in results if m in r.metrics), m))
        for m in task.metrics
    }
    summary: dict[str, Any] = {
        "task": task.name,
        "shots": task.shots,
        "items": len(results),
        "metrics": metrics,
    }
    groups: dict[str, list[float]] = {}
    for r in results:
        if r.group:
            groups.setdefault(r.group, []).append(r.metrics[task.metrics[0]])
    if groups:
        per_group = {g: aggregate(v, task.metrics[0]) for g, v in sorted(groups.items())}
        summary["groups"] = {g: _figure(a) for g, a in per_group.items()}
        summary["macro"] = _figure(_macro(list(per_group.values()), task.metrics[0]))
    return summary


def _macro(groups: list[Aggregate], metric: str) -> Aggregate:
    """The mean of the group means; its error from the groups' errors, taken as independent."""
    value = math.fsum(g.value for g in groups) / len(groups)
    errors = [g.stderr for g in groups if not math.isnan(g.stderr)]
    stderr = math.sqrt(math.fsum(e * e for e in errors)) / len(groups) if errors else float("nan")
    return Aggregate(metric, value, stderr, sum(g.n for g in groups))


def _figure(a: Aggregate) -> dict[str, Any]:
    return {
        "value": a.value,
        "stderr": None if math.isnan(a.stderr) else a.stderr,
        "n": a.n,
    }
