"""`scheda eval MODEL --tasks ...`: benchmarks on your own model; `--card [NAME]`: the spec
sheet's table, measured; `scheda eval list`: saved runs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from scheda.cli.common import Cluster, WorkersOpt, cluster_option, print_list
from scheda.display.terminal import console, emit_json
from scheda.errors import UsageError

if TYPE_CHECKING:
    from rich.table import Table


def _percent(value: float | None) -> str:
    return (
        "—"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{100 * value:.1f}"
    )


def report_table(model: str, summaries: list[dict[str, Any]], published: dict[str, float]) -> Table:
    """The published spec sheets' shape: benchmark, shots, metric, score ± standard error."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from scheda.evaluation.runner import published_label

    table = Table(title=escape(f"{model}: measured here"), title_justify="left")
    for column in ("Benchmark", "Shots", "Metric", "Score", "± stderr", "Items", "Published"):
        table.add_column(column, justify="left" if column in ("Benchmark", "Metric") else "right")
    for s in summaries:
        figures = list(s["metrics"].items())
        if "macro" in s:
            figures.append(("acc (macro)", s["macro"]))
        for i, (metric, f) in enumerate(figures):
            label = published_label(s["task"])
            row_published = published.get(label) if i == 0 and label else None
            table.add_row(
                Text(s["task"] if i == 0 else ""),  # a JSONL task is named after its file
                str(s["shots"]) if i == 0 else "",
                Text(metric),
                _percent(f["value"]),
                _percent(f["stderr"]),
                f"{f['n']:,}",
                f"{row_published:.1f}" if row_published is not None else "—",
            )
    return table


def eval_command(
    model: Annotated[str, typer.Argument(help="The model to evaluate, or `list` for saved runs.")],
    tasks: Annotated[
        str | None,
        typer.Option(
            "--tasks", "-t", help="Comma-separated: mmlu, gsm8k, humaneval, FILE.jsonl (mmlu)."
        ),
    ] = None,
    card: Annotated[
        str | None,
        typer.Option(
            "--card",
            metavar="[NAME]",
            help="The spec sheet's table, measured: the card of the model's family (or the "
            "catalog card NAME), each benchmark run with the card's shots beside its figure.",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Items per task (per subject for MMLU).")
    ] = None,
    shots: Annotated[
        int | None, typer.Option("--shots", min=0, help="Few-shot examples (task default).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Folder with the tasks' data (mmlu/, gsm8k/ ...).")
    ] = None,
    samples: Annotated[
        int, typer.Option("--samples", min=1, help="HumanEval: samples per problem, for pass@k.")
    ] = 1,
    parallel: Annotated[
        int, typer.Option("--parallel", min=1, max=64, help="Generations decoded together.")
    ] = 4,
    context: Annotated[int | None, typer.Option("--context", "-c", min=64)] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="[ADDRESS]",
            help="Deal the items out to Ray workers: alone, on a local cluster started for "
            "the run; with HOST:PORT (or RAY_ADDRESS), on that cluster.",
        ),
    ] = None,
    workers: WorkersOpt = None,
) -> None:
    """Run the spec sheet's benchmarks on a model; a run interrupted resumes where it stopped."""
    from scheda.stores.evals import EvalStore

    cluster = cluster_option(ray, workers)
    store = EvalStore()
    try:
        if model == "list":
            _list(store, as_json)
            return
        if card is not None:
            if tasks is not None:
                raise UsageError("--card runs the card's own tasks: leave --tasks out")
            if shots is not None:
                raise UsageError("--card runs each task with the card's shots: leave --shots out")
            _evaluate_card(
                store,
                model,
                None if card == CARD_ALONE else card,
                limit,
                data,
                samples,
                parallel,
                context,
                threads,
                as_json,
                cluster,
            )
            return
        _evaluate(
            store,
            model,
            tasks or "mmlu",
            limit,
            shots,
            data,
            samples,
            parallel,
            context,
            threads,
            as_json,
            cluster,
        )
    finally:
        store.close()


def _evaluate(
    store: Any,
    model: str,
    tasks: str,
    limit: int | None,
    shots: int | None,
    data: Path | None,
    samples: int,
    parallel: int,
    context: int | None,
    threads: int | None,
    as_json: bool,
    cluster: Cluster | None = None,
) -> None:
    from scheda.engines import choose
    from scheda.evaluation.base import EvalModel
    from scheda.evaluation.runner import make_task, task_names
    from scheda.resolve import resolve

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise UsageError(f"--tasks is empty: give {task_names()} or a .jsonl file")
    if data is not None and not data.is_dir():
        raise UsageError(f"--data {data}: not a folder")
    _, path = choose(model)
    # Bad task names and data fail here, before the model loads.
    built = [make_task(n, shots, limit, data, samples) for n in names]
    spec = resolve(model)
    evaluator = EvalModel(path, context, parallel, threads)
    summaries = _run_all(built, evaluator, store, model, cluster)
    if as_json:
        emit_json({"model": model, "path": str(path), "results": summaries})
        return
    console().print(report_table(spec.name, summaries, spec.benchmarks))


def _evaluate_card(
    store: Any,
    model: str,
    name: str | None,
    limit: int | None,
    data: Path | None,
    samples: int,
    parallel: int,
    context: int | None,
    threads: int | None,
    as_json: bool,
    cluster: Cluster | None,
) -> None:
    """The card's tasks, each a run of its own in the store, and the card's table: published
    beside measured. A task already measured (a finished run on this file with the same
    configuration) is not measured again; an interrupted one resumes."""
    from scheda.display.render_card import card_view
    from scheda.engines import choose
    from scheda.evaluation.base import EvalModel
    from scheda.evaluation.card import card_for, card_rows, make_card_tasks, stored_summary
    from scheda.resolve import resolve

    if data is not None and not data.is_dir():
        raise UsageError(f"--data {data}: not a folder")
    _, path = choose(model)
    spec = resolve(model)
    card = card_for(spec, name)
    # Before the model loads: a task whose data is nowhere here becomes a row saying where
    # its data would come from, and the others still run.
    built, why = make_card_tasks(card, limit, data, samples)
    stored = {t.name: stored_summary(t, store, path, parallel) for t in built}
    todo = [t for t in built if stored[t.name] is None]
    measured = _run_all(todo, EvalModel(path, context, parallel, threads), store, model, cluster)
    stored.update((t.name, s) for t, s in zip(todo, measured, strict=True))
    results: dict[str, dict[str, Any] | str] = {**why}
    for task in built:
        results[task.name] = {**(stored[task.name] or {}), "limit": task.limit}
    rows = card_rows(card.benchmarks, results)
    if as_json:
        emit_json(
            {
                "model": model,
                "path": str(path),
                "card": card.label,
                "instruct": card.instruct,
                "limit": limit,
                "rows": [r.to_dict() for r in rows],
            }
        )
        return
    console().print(card_view(spec.name, card.label, rows, limit))


def _run_all(
    built: list[Any], evaluator: Any, store: Any, model: str, cluster: Cluster | None
) -> list[dict[str, Any]]:
    """Each task's summary, here or dealt out on Ray; the model is closed after."""
    if not built:
        return []
    try:
        if cluster is None:
            return [_run_one(task, evaluator, store, model) for task in built]
        return _run_on_ray(built, evaluator, store, model, cluster)
    finally:
        evaluator.close()


# What `--card` with no NAME after it stands for once the command line is read (`card_alone`).
CARD_ALONE = ""


def card_alone(args: list[str]) -> list[str]:
    """`scheda eval ... --card` with no NAME after it (last, before another option, or before
    a model: a path, `default`, an org/name) stands for the model's own card: the option
    takes a value, so it is given one."""
    if not args or args[0] != "eval":
        return args
    given: list[str] = []
    for i, arg in enumerate(args):
        given.append(arg)
        if arg == "--card" and (i + 1 == len(args) or not _card_name(args[i + 1])):
            given.append(CARD_ALONE)
    return given


def _card_name(arg: str) -> bool:
    """Whether a word after --card can only be a card's name: no option, no model reference."""
    from scheda.resolve import DEFAULT

    return not (
        arg.startswith("-")
        or arg in (DEFAULT, "list")
        or "/" in arg
        or "\\" in arg
        or arg.endswith(".gguf")
        or Path(arg).expanduser().exists()
    )


def _progress() -> Any:
    """One bar on stderr: the task (and, on Ray, each worker's items per second), done, ETA."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}", markup=False),  # the task's name, from outside
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    return Progress(*columns, console=Console(stderr=True), transient=True)


def _run_one(task: Any, evaluator: Any, store: Any, model: str) -> dict[str, Any]:
    from scheda.evaluation.runner import run_task

    with _progress() as progress:
        bar = progress.add_task(task.name, total=None)

        def moved(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        run, summary = run_task(task, evaluator, store, model, moved)
    summary["run"] = run.id
    return summary


def _run_on_ray(
    built: list[Any], evaluator: Any, store: Any, model: str, cluster: Cluster
) -> list[dict[str, Any]]:
    """Every task on one Ray cluster, joined (or started) once for all of them."""
    from scheda.engines.cluster import connected

    with connected(cluster.address) as ray:
        return [_one_on_ray(ray, task, evaluator, store, model, cluster) for task in built]


def _one_on_ray(
    ray: Any, task: Any, evaluator: Any, store: Any, model: str, cluster: Cluster
) -> dict[str, Any]:
    from scheda.evaluation.distributed import run_on_ray

    with _progress() as progress:
        bar = progress.add_task(task.name, total=None)

        def moved(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        def rates(per_worker: dict[str, float]) -> None:
            shown = " ".join(f"w{w} {r:.1f}/s" for w, r in per_worker.items())
            progress.update(bar, description=f"{task.name} · {shown}")

        run, summary = run_on_ray(ray, task, model, evaluator, store, cluster.workers, moved, rates)
    summary["run"] = run.id
    return summary


def _list(store: Any, as_json: bool) -> None:
    runs = store.runs()
    if as_json:
        emit_json([r.to_dict() for r in runs])
        return
    from scheda.stores.sessions import local_time

    rows = []
    for r in runs:
        metrics = (r.summary or {}).get("metrics") or {}
        first = next(iter(metrics.values()), None)
        score = _percent(first["value"]) if first else "unfinished"
        config = str(r.config.get("shots", ""))
        rows.append([r.id, r.model, r.task, config, f"{r.items:,}", score, local_time(r.created)])
    print_list(
        "Evaluation runs",
        ("Run", "Model", "Task", "Shots", "Items", "Score", "When"),
        rows,
        "no evaluation runs yet: `scheda eval MODEL --tasks mmlu` starts one",
    )
