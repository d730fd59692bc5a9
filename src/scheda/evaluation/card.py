"""`scheda eval --card`: a catalog card's benchmark rows, each beside the figure measured here.

A card is one row of the catalog (`scheda.catalog`): the base model's published
figures, or the instruct model's, as the model is. `card_for` finds it from the
model's own spec (the family its architecture numbers match, instruct when its
name says so) or from a name the user gives; `card_rows` sets each benchmark's
published figure beside the summary of the task that measures it (the registry's
`TaskInfo.metric`), with the difference in points and whether it lies inside the
noise of the measurement: within 1.96 standard errors, the two-sided 95% interval
of the mean, so a difference inside it is one a re-run on another sample of the
same size could give. A row whose task could not run says why instead.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from scheda import catalog
from scheda.errors import UsageError
from scheda.evaluation.tasks import TASKS, TaskInfo, card_tasks
from scheda.spec import ModelSpec

if TYPE_CHECKING:
    from scheda.evaluation.base import Task
    from scheda.stores.evals import EvalStore

# The standard normal's two-sided 95% point: |difference| <= Z95 x stderr is "inside the noise".
Z95 = 1.96
# Words in a model's name that say it was tuned to follow instructions (Meta's "Instruct",
# Llama 2's and Qwen's "chat", Gemma's "it"): its card is the instruct one.
INSTRUCT_WORDS = frozenset({"instruct", "chat", "it"})


class Card(NamedTuple):
    """A catalog card: its name (`llama-3-8b`, `llama-3-70b-instruct`), its published
    figures by the spec sheet's row label, and whether it is the instruct model's."""

    label: str
    benchmarks: dict[str, float]
    instruct: bool


@dataclass(frozen=True)
class CardRow:
    """One benchmark of the card: the published figure and yours, in points (percent).

    `yours`, `stderr` and `n` are None when the row has no figure, and `why` says why
    (where the task's data would come from, or that no task measures the row).
    `difference` is yours - published; `within_noise` is |difference| <= 1.96 x stderr,
    None when there is no stderr (one item, or no figure). `limit` is the items per task
    (per subject or subtask) of a `--limit` quick look, None for the whole test set.
    """

    benchmark: str
    published: float
    task: str | None
    shots: int | None
    metric: str | None
    yours: float | None
    stderr: float | None
    n: int | None
    difference: float | None
    within_noise: bool | None
    method: str
    differs: str
    limit: int | None
    run: str | None  # the stored run the figure comes from
    why: str | None

    @property
    def quick_look(self) -> bool:
        return self.limit is not None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "quick_look": self.quick_look}


def cards() -> list[str]:
    """The catalog's cards that have published figures: the base models', then the
    instruct models' (named with their family's suffix, as `--card` takes them)."""
    base = [m.name for m in catalog.MODELS if m.benchmarks]
    instruct = [
        f"{m.name}-{m.family.instruct_suffix}" for m in catalog.MODELS if m.instruct_benchmarks
    ]
    return base + instruct


def choices() -> str:
    """What --card and --tasks take, for a message."""
    return (
        f"the catalog's cards are {', '.join(cards())} (`--card NAME`); "
        f"`--tasks` runs any of {', '.join(TASKS)}"
    )


def card_for(spec: ModelSpec | None, name: str | None) -> Card:
    """The card named (a catalog name, `-instruct`/`-chat` for the instruct figures), or
    the one of the family the model's spec matched, base or instruct as the model is."""
    if name is not None:
        found = catalog.lookup(name)
        if found is None:
            raise UsageError(f"no card {name!r}: {choices()}")
        return _card(*found)
    if spec is None or spec.catalog_name is None:
        what = spec.name if spec is not None else "the model"
        raise UsageError(
            f"{what}: the catalog knows no family with its architecture numbers, so it has "
            f"no card of its own; {choices()}"
        )
    found = catalog.lookup(spec.catalog_name)
    assert found is not None  # the catalog named it
    row, instruct = found
    return _card(row, instruct or says_instruct(spec))


def _card(row: catalog.CatalogModel, instruct: bool) -> Card:
    label = row.name + (f"-{row.family.instruct_suffix}" if instruct else "")
    benchmarks = row.instruct_benchmarks if instruct else row.benchmarks
    if not benchmarks:
        raise UsageError(f"{label}: the catalog has no published figures for it; {choices()}")
    return Card(label, dict(benchmarks), instruct)


def says_instruct(spec: ModelSpec) -> bool:
    """Whether the model's name or file name calls it an instruct (chat) model."""
    names = [spec.name, Path(spec.path).name if spec.path else ""]
    return any(
        word in INSTRUCT_WORDS for text in names for word in re.split(r"[^a-z0-9]+", text.lower())
    )


def missing_module(info: TaskInfo) -> str | None:
    """Why a registered task cannot be made in this build (its module is absent), or None.

    Only the module's absence is answered here: an import error inside a module that
    is present is a fault, and is raised where the task is made."""
    module = info.runs.partition(":")[0]
    if importlib.util.find_spec(module) is None:
        return f"its module ({module}) is not in this build of scheda"
    return None


def make_card_tasks(
    card: Card, limit: int | None, data: Path | None, samples: int = 1
) -> tuple[list[Task], dict[str, str]]:
    """The card's tasks with their default shots, and why each task that cannot run here
    cannot (its data is nowhere here: where it would come from). Bad data for one task
    does not stop the others."""
    from scheda.evaluation.runner import make_task

    built: list[Task] = []
    why: dict[str, str] = {}
    for info in card_tasks(card.benchmarks):
        absent = missing_module(info)
        if absent is not None:
            why[info.name] = absent
            continue
        try:
            built.append(make_task(info.name, None, limit, data, samples))
        except UsageError as exc:
            why[info.name] = str(exc)
    return built, why


def stored_summary(
    task: Task, store: EvalStore, path: Path, parallel: int
) -> dict[str, Any] | None:
    """The summary of the task's finished run on this model file with this configuration,
    if there is one: running a card again measures only what it has not measured yet."""
    from scheda.evaluation.runner import run_config

    run = store.finished_run(path, task.name, run_config(task, parallel, path))
    if run is None or run.summary is None:
        return None
    return {**run.summary, "run": run.id}


def card_rows(
    benchmarks: dict[str, float], results: Mapping[str, Mapping[str, Any] | str]
) -> list[CardRow]:
    """A row per benchmark of the card, in the card's order.

    `results` maps a task's name to its summary (`runner.summarize`'s dict, with the run's
    id under "run" and its `limit` under "limit", as `scheda eval` adds them) or to why it
    has no figure."""
    by_label = {info.published: info for info in card_tasks(benchmarks)}
    rows = []
    for label, published in benchmarks.items():
        info = by_label.get(label)
        if info is None:
            rows.append(_without(label, published, None, "no task in scheda measures this row"))
            continue
        result = results.get(info.name, "not run")
        if isinstance(result, str):
            rows.append(_without(label, published, info, result))
        else:
            rows.append(_measured(label, published, info, result))
    return rows


def _without(label: str, published: float, info: TaskInfo | None, why: str) -> CardRow:
    return CardRow(
        benchmark=label,
        published=published,
        task=info.name if info else None,
        shots=info.shots if info else None,
        metric=info.metric if info else None,
        yours=None,
        stderr=None,
        n=None,
        difference=None,
        within_noise=None,
        method=info.method if info else "",
        differs=info.differs if info else "",
        limit=None,
        run=None,
        why=why,
    )


def _measured(label: str, published: float, info: TaskInfo, summary: Mapping[str, Any]) -> CardRow:
    figure = summary.get("metrics", {}).get(info.metric)
    limit = summary.get("limit")
    if figure is None or _missing(figure.get("value")):
        row = _without(label, published, info, f"the run has no {info.metric} figure")
        return replace(row, shots=summary.get("shots"), limit=limit, run=summary.get("run"))
    yours = 100 * figure["value"]
    stderr = None if _missing(figure.get("stderr")) else 100 * figure["stderr"]
    difference = yours - published
    return CardRow(
        benchmark=label,
        published=published,
        task=info.name,
        shots=summary.get("shots", info.shots),
        metric=info.metric,
        yours=yours,
        stderr=stderr,
        n=figure.get("n"),
        difference=difference,
        within_noise=None if stderr is None else abs(difference) <= Z95 * stderr,
        method=info.method,
        differs=info.differs,
        limit=limit,
        run=summary.get("run"),
        why=None,
    )


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
