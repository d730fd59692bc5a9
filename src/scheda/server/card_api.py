"""The studio's spec-sheet routes (`/api/evals/card`): the card measured, and a card run.

    GET    /api/evals/card?model=&card=
           the card's rows (`evaluation/card`): the published figure beside the model's
           own from its latest finished stored run of each task (the card's shots), or,
           without one, where that row's data would come from
    POST   /api/evals/card  {"model", "card", "limit", "data"}
           starts a card run in the background (server/card_run): 202 and its progress;
           409 while one is going
    GET    /api/evals/card/run     the card run's progress (the last one, once ended)
    DELETE /api/evals/card/run     cancels it at the next scored item

The runs are `scheda eval --card`'s, in the same store: a run started here
shows in the terminal's `scheda eval list`, and either resumes the other's.
`data` is a folder on the server's machine, read as `--data` reads it; like
every route but the page's own, these need the API key when one is set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, cast

from fastapi import APIRouter, Request
from pydantic import Field

from scheda.errors import APIError
from scheda.evaluation.base import EvalModel
from scheda.evaluation.card import Card, card_for, card_rows, missing_module
from scheda.evaluation.tasks import TaskInfo, card_tasks
from scheda.server.card_run import CardRun, CardRuns, card_progress
from scheda.server.openapi import answers
from scheda.server.pool import ModelPool, ServedModel
from scheda.server.schemas import WHOLE, Strict
from scheda.stores.evals import EvalStore, Run

router = APIRouter(prefix="/api/evals/card")

# A row no stored run measures and no card run here has tried: where its data would come from.
NOT_YET = (
    "not measured yet: a card run reads {task}'s data from the folder given (DIR/{task}/ or "
    "DIR), else from where `scheda eval` finds it (for most tasks, the Hugging Face Hub)"
)


def runs_of(request: Request) -> CardRuns:
    return cast(CardRuns, request.app.state.card_runs)


def _chat_model(request: Request, model: str | None) -> ServedModel:
    """The served model a request names (the default with none); only a model that generates
    has a spec sheet's benchmarks to run."""
    pool = cast(ModelPool, request.app.state.pool)
    entry = pool.get(model)
    if entry.kind != "chat":
        raise APIError(f"{entry.id} makes embeddings: name a model that generates", "model")
    return entry


def _card(entry: ServedModel, card: str | None) -> tuple[Card, list[TaskInfo]]:
    """The card (the one named, else the model's own) and the tasks that measure its rows."""
    found = card_for(entry.spec, card)
    return found, card_tasks(found.benchmarks)


def _same_model(run: Run, path: Path) -> bool:
    return Path(run.path).expanduser().resolve() == path.expanduser().resolve()


def latest(runs: list[Run], path: Path, info: TaskInfo) -> Run | None:
    """The newest finished run of a task on this model file with the card's shots and the
    task's current version (the store lists the newest first)."""
    for run in runs:
        if (
            run.task == info.name
            and run.finished is not None
            and run.summary is not None
            and run.config.get("shots") == info.shots
            and run.config.get("version", 1) == info.version
            and _same_model(run, path)
        ):
            return run
    return None


@router.get("", responses=answers(400, 404))
def card_table(
    request: Request, model: str | None = None, card: str | None = None
) -> dict[str, Any]:
    """The card's table for a served model, from the evaluation store."""
    entry = _chat_model(request, model)
    found, infos = _card(entry, card)
    stored = cast(EvalStore, request.app.state.evals).runs()
    last = runs_of(request).last
    tried = {t.task: t.why for t in last.tasks if t.why} if last and last.path == entry.path else {}
    results = {info.name: _result(stored, entry.path, info, tried) for info in infos}
    return {
        "model": entry.id,
        "card": found.label,
        "instruct": found.instruct,
        "rows": [row.to_dict() for row in card_rows(found.benchmarks, results)],
    }


def _result(
    stored: list[Run], path: Path, info: TaskInfo, tried: dict[str, str]
) -> dict[str, Any] | str:
    """A task's summary (with its run's limit, for a quick look), or why it has none: what
    the last card run here found, or where a run would read its data."""
    run = latest(stored, path, info)
    if run is not None and run.summary is not None:
        return {**run.summary, "run": run.id, "limit": run.config.get("limit")}
    return tried.get(info.name) or missing_module(info) or NOT_YET.format(task=info.name)


class CardRunRequest(Strict):
    model: str | None = None  # a served model's id; the default one when none
    card: str | None = None  # a catalog card (llama-3-8b, llama-3-70b-instruct); the model's own
    limit: Annotated[int, Field(ge=1), WHOLE] | None = None  # items per task (per subject)
    data: str | None = None  # a folder on the server's machine, as --data


@router.post("", status_code=202, responses=answers(400, 404, 409))
def start_card_run(body: CardRunRequest, request: Request) -> dict[str, Any]:
    """Start the card's tasks on a served model; everything it is asked is checked first."""
    entry = _chat_model(request, body.model)
    found, infos = _card(entry, body.card)
    if not infos:
        raise APIError(f"the {found.label} card has no benchmark scheda runs", "card")
    data = _folder(body.data)
    run = CardRun(entry.id, entry.path, found.label, body.limit, data, card_progress(infos))
    # The server's slot count: a generated task's answers decode together as its requests do.
    slots = cast(ModelPool, request.app.state.pool).parallel

    def open_model() -> EvalModel:
        return EvalModel(entry.path, None, slots, entry.options.get("threads"), entry.engine_name)

    runs_of(request).start(run, cast(EvalStore, request.app.state.evals), open_model)
    return run.to_dict()


def _folder(data: str | None) -> Path | None:
    if data is None or not data.strip():
        return None
    folder = Path(data.strip()).expanduser()
    if not folder.is_dir():
        raise APIError(f"data: {data} is not a folder on the server's machine", "data")
    return folder


def _last(request: Request) -> CardRun:
    run = runs_of(request).last
    if run is None:
        raise APIError(
            "no card run since the server started: POST /api/evals/card starts one", None, 404
        )
    return run


@router.get("/run", responses=answers(404))
def card_run(request: Request) -> dict[str, Any]:
    """Where the card run stands: each task's state, items done of the total, an ETA."""
    return _last(request).to_dict()


@router.delete("/run", responses=answers(404))
def cancel_card_run(request: Request) -> dict[str, Any]:
    """Stop the card run at its next scored item (an ended one is left as it ended)."""
    run = _last(request)
    if run.running:
        run.cancel()
    return run.to_dict()
