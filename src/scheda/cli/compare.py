"""`scheda compare REFERENCE CANDIDATE...`: what quantization costs; `list` and `show ID` too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from scheda import settings
from scheda.cli.common import (
    Cluster,
    JsonOpt,
    MarkdownOpt,
    ThreadsOpt,
    WorkersOpt,
    cluster_option,
    one_format,
    print_list,
)
from scheda.display.terminal import console, emit_json
from scheda.errors import UsageError

if TYPE_CHECKING:
    from scheda.evaluation.compare import Comparison


def compare(
    models: Annotated[
        list[str],
        typer.Argument(
            help="The reference, then the candidates (GGUF files or HF folders); or `list`, "
            "or `show ID`, for stored comparisons."
        ),
    ],
    text: Annotated[
        Path | None,
        typer.Option("--text", help="A UTF-8 text to score on (default: the text scheda ships)."),
    ] = None,
    context: Annotated[
        int,
        typer.Option(
            "--context", "-c", min=16, help="Chunk length in tokens (llama-perplexity's -c)."
        ),
    ] = settings.COMPARE_CHUNK,
    memory_context: Annotated[
        int, typer.Option("--memory-context", min=16, help="The context the memory column is for.")
    ] = settings.DEFAULT_CONTEXT,
    runs: Annotated[
        int, typer.Option("--runs", min=1, max=20, help="Bench rounds (each model once per round).")
    ] = 3,
    bench: Annotated[
        bool, typer.Option("--bench/--no-bench", help="Measure load, pp512 and tg128.")
    ] = True,
    tasks: Annotated[
        str | None,
        typer.Option("--tasks", help="Run these evals on every model first (e.g. mmlu)."),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="With --tasks: items per task (per subject)."),
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="With --tasks: the tasks' data folder.")
    ] = None,
    threads: ThreadsOpt = None,
    chart: Annotated[
        Path | None,
        typer.Option("--chart", help="Draw KLD and size against bits per weight (PNG)."),
    ] = None,
    as_json: JsonOpt = False,
    markdown: MarkdownOpt = False,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="[ADDRESS]",
            help="Measure the candidates side by side on Ray workers: alone, on a local "
            "cluster started for the command; with HOST:PORT (or RAY_ADDRESS), on that cluster.",
        ),
    ] = None,
    workers: WorkersOpt = None,
) -> None:
    """One table: size, memory, speed, perplexity, KL divergence, top token, accuracy."""
    from scheda.stores.comparisons import ComparisonStore
    from scheda.stores.evals import EvalStore

    one_format(as_json, markdown)
    cluster = cluster_option(ray, workers)
    with ComparisonStore() as comparisons:
        if models[0] == "list":
            _list(comparisons, as_json)
            return
        if models[0] == "show":
            if len(models) != 2:
                raise UsageError("give one id: scheda compare show ID (`compare list` shows them)")
            # The store gives back the JSON it was given: the record run_compare made.
            _show(cast("Comparison", comparisons.get(models[1])), as_json, markdown, chart)
            return
        if len(models) < 2:
            raise UsageError("give a reference and at least one candidate to compare with it")
        # The evaluation runs: `--tasks` adds them, the accuracy column reads them.
        with EvalStore() as store:
            record = _compare(
                store,
                models,
                text,
                context,
                memory_context,
                runs if bench else 0,
                tasks,
                limit,
                data,
                threads,
                cluster,
            )
        comparisons.add(cast(dict[str, Any], record))  # kept as JSON; its id set in it
        _show(record, as_json, markdown, chart)


def _compare(
    store: Any,
    models: list[str],
    text: Path | None,
    context: int,
    memory_context: int,
    runs: int,
    tasks: str | None,
    limit: int | None,
    data: Path | None,
    threads: int | None,
    cluster: Cluster | None = None,
) -> Comparison:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from scheda.evaluation.compare import load_text, run_compare
    from scheda.resolve import locate

    paths = []
    for ref in models:
        path = locate(ref)
        if path is None:
            raise UsageError(
                f"{ref!r} is a catalog entry, not a file: give a .gguf file or a folder"
            )
        paths.append(path)
    loaded = load_text(text)
    task_names = [t.strip() for t in (tasks or "").split(",") if t.strip()]
    if data is not None and not data.is_dir():
        raise UsageError(f"--data {data}: not a folder")
    columns = (
        TextColumn("{task.description}", markup=False),  # steps and bars name the files
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    err = Console(stderr=True)
    # Drawn on a terminal only: elsewhere Rich would leave a blank line on stderr.
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
        bars: dict[str, Any] = {}
        status = progress.add_task("", total=None)

        def moved(what: str, done: int, total: int) -> None:
            if what not in bars:
                bars[what] = progress.add_task(f"{what}: chunks", total=total)
            progress.update(bars[what], completed=done)

        def step(text: str) -> None:
            progress.update(status, description=text)

        def measured(ray: Any = None) -> Comparison:
            return run_compare(
                paths[0],
                paths[1:],
                loaded,
                context=context,
                memory_context=memory_context,
                bench_runs=runs,
                threads=threads,
                store=store,
                tasks=task_names,
                limit=limit,
                data=data,
                progress=moved,
                step=step,
                ray=ray,
                workers=None if cluster is None else cluster.workers,
            )

        if cluster is None:
            return measured()
        from scheda.engines.cluster import connected

        step("starting a local Ray cluster" if cluster.address is None else "joining Ray")
        with connected(cluster.address) as ray:
            return measured(ray)


def _show(record: Comparison, as_json: bool, markdown: bool, chart: Path | None) -> None:
    from scheda.display import render_compare

    if chart is not None:
        render_compare.compare_chart(record, chart)
        typer.echo(f"chart: {chart}", err=True)
    if as_json:
        typer.echo(json.dumps(record, indent=2, ensure_ascii=False, default=str))
    elif markdown:
        typer.echo(render_compare.compare_markdown(record), nl=False)
    else:
        console().print(render_compare.compare_view(record))


def _list(store: Any, as_json: bool) -> None:
    records = store.list()
    if as_json:
        emit_json(records)
        return
    from scheda.display.render_compare import list_rows

    print_list(
        "Comparisons",
        ("Id", "Reference", "Candidates", "Text", "Context", "Largest KLD", "When"),
        list_rows(records),
        "no comparisons yet: `scheda compare REFERENCE CANDIDATE` makes one",
    )
