"""The web studio's own routes (`/api`): sessions, the spec sheet, the fit calculator, tokens,
evals.

Tokens are `scheda tokens --json`'s answer for the served models: a GGUF's
vocabulary answers alone where it can, so a model need not be loaded to show
how it splits a text; where it cannot, the served engine answers.

Sessions are the same SQLite store as `scheda chat`'s, so a conversation
begun in the terminal goes on in the browser. A chat turn saves the question
before the model answers and the answer when it ends; a client that stops
reading (the stop button) cancels the generation and the partial answer is
saved, as Ctrl-C does in the terminal. Evaluation runs are `scheda eval`'s store,
read only: a run started in the terminal shows here as its items are scored.
"""

from __future__ import annotations

import math
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import Field, create_model

from scheda import sampling as options
from scheda.display.render import card_rows
from scheda.engines.base import Generation, Token
from scheda.errors import APIError
from scheda.evaluation.base import EvalModel, Item, ItemResult, Task
from scheda.evaluation.runner import summarize
from scheda.formulas import hardware
from scheda.formulas.fit_report import fit_report
from scheda.sampling import Sampling
from scheda.server.errors import error_body, error_response, sse
from scheda.server.openapi import EventStream, answers
from scheda.server.pool import ModelPool, ServedModel
from scheda.server.runner import Event, Job
from scheda.server.schemas import Strict, chosen, declared_fields
from scheda.stores.comparisons import ComparisonStore
from scheda.stores.evals import EvalStore, Run
from scheda.stores.sessions import SessionStore
from scheda.talk.prompt_fit import fit_history
from scheda.tokenization.tokens import Tokenization, tokenize

router = APIRouter(prefix="/api")
MAX_CONTEXT = 1 << 24


def pool_of(request: Request) -> ModelPool:
    return cast(ModelPool, request.app.state.pool)


def store_of(request: Request) -> SessionStore:
    return cast(SessionStore, request.app.state.store)


def evals_of(request: Request) -> EvalStore:
    return cast(EvalStore, request.app.state.evals)


def comparisons_of(request: Request) -> ComparisonStore:
    return cast(ComparisonStore, request.app.state.comparisons)


# -- models ----------------------------------------------------------------------------------


@router.get("/models")
def models(request: Request) -> list[dict[str, Any]]:
    pool = pool_of(request)
    return [pool.describe(m) for m in pool.models.values()]


@router.get("/models/{model_id:path}/card", responses=answers(404))
def card(model_id: str, request: Request) -> dict[str, Any]:
    spec = pool_of(request).get(model_id).spec
    return {
        "name": spec.name,
        "rows": [[label, cells[0]] for label, cells in card_rows([spec])],
        "spec": spec.to_dict(),
    }


@router.get("/models/{model_id:path}/fit", responses=answers(400, 404))
def fit(
    model_id: str,
    request: Request,
    context: Annotated[int | None, Query(ge=1, le=MAX_CONTEXT)] = None,
    gpu: str | None = None,
) -> dict[str, Any]:
    spec = pool_of(request).get(model_id).spec
    devices = hardware.find(gpu) if gpu else hardware.all_devices()
    return fit_report(spec, context, 1, devices).to_dict()


@router.get("/gpus")
def gpus() -> list[dict[str, Any]]:
    return [
        {"key": d.key, "name": d.name, "memory": d.memory, "usable": d.usable}
        for d in hardware.all_devices()
    ]


@router.get("/sampling")
def sampling_options() -> list[dict[str, Any]]:
    """The sampling options as declared (scheda/sampling.py): the studio builds its controls
    and their defaults from these, and marks those the chosen model's engine does not honour."""
    return options.describe()


# -- tokens ----------------------------------------------------------------------------------


class TokensRequest(Strict):
    text: str
    models: list[str] | None = None  # served model ids; every served model when none


@router.post("/tokens", responses=answers(400, 404, 503))
def tokens(body: TokensRequest, request: Request) -> dict[str, Any]:
    """How each model splits the text, side by side: `scheda tokens --json` with the ids."""
    pool = pool_of(request)
    entries = [pool.get(m) for m in body.models] if body.models else list(pool.models.values())
    return {
        "text": body.text,
        "models": [{"id": e.id, **_tokenization(pool, e, body.text).to_dict()} for e in entries],
    }


def _tokenization(pool: ModelPool, entry: ServedModel, text: str) -> Tokenization:
    """A served model's tokens: from its vocabulary, else from its own loaded engine."""

    def served_engine(_path: Path, question: str) -> list[Token]:
        with pool.lease(entry) as engine:
            return list(engine.tokenize(question))

    generates_on_llamacpp = entry.kind == "chat" and entry.engine_name == "llama.cpp"
    return tokenize(entry.spec, text, served_engine if generates_on_llamacpp else None)


# -- sessions --------------------------------------------------------------------------------


class NewSession(Strict):
    model: str | None = None
    system: str | None = None
    title: str | None = None


class SessionChange(Strict):
    title: str | None = None
    system: str | None = None
    params: dict[str, Any] | None = None
    model: str | None = None


# The options a chat turn may set: every declared option settable in a chat (scheda/sampling.py).
CHAT_OPTIONS = options.chat_options()
if TYPE_CHECKING:
    ChatParams = Strict
else:
    ChatParams = create_model("ChatParams", __base__=Strict, **declared_fields(CHAT_OPTIONS))


class ChatTurn(Strict):
    content: Annotated[str, Field(min_length=1)]
    params: ChatParams | None = None
    model: str | None = None


def _session_json(store: SessionStore, session_id: str) -> dict[str, Any]:
    session = store.get(session_id)
    messages = store.messages(session.id)
    return {
        **session.to_dict(),
        "messages": [{"role": m.role, "content": m.content} for m in messages],
    }


@router.get("/sessions")
def list_sessions(request: Request) -> list[dict[str, Any]]:
    return [s.to_dict() for s in store_of(request).list()]


@router.post("/sessions", status_code=201, responses=answers(400, 404))
def create_session(body: NewSession, request: Request) -> dict[str, Any]:
    entry = _chat_model(pool_of(request), body.model)
    store = store_of(request)
    session = store.create(entry.id, body.system or None)
    if body.title:
        store.rename(session.id, body.title)
    return _session_json(store, session.id)


@router.get("/sessions/{session_id}", responses=answers(404))
def get_session(session_id: str, request: Request) -> dict[str, Any]:
    return _session_json(store_of(request), session_id)


@router.patch("/sessions/{session_id}", responses=answers(400, 404))
def change_session(session_id: str, body: SessionChange, request: Request) -> dict[str, Any]:
    store = store_of(request)
    session = store.get(session_id)
    fields = body.model_fields_set
    if "model" in fields and body.model:
        store.set_model(session.id, _chat_model(pool_of(request), body.model).id)
    if "title" in fields:
        store.rename(session.id, body.title)
    if "system" in fields:
        store.set_system(session.id, body.system)
    if "params" in fields:
        store.set_params(session.id, body.params or {})
    return _session_json(store, session.id)


@router.delete("/sessions/{session_id}", responses=answers(404))
def delete_session(session_id: str, request: Request) -> dict[str, Any]:
    gone = store_of(request).delete(session_id)
    return {"deleted": gone.id}


def _chat_model(pool: ModelPool, model: str | None) -> ServedModel:
    entry = pool.get(model, "chat")
    if entry.kind != "chat":
        raise APIError(f"{entry.id} makes embeddings; it cannot chat", "model")
    return entry


def _session_model(pool: ModelPool, stored: str, asked: str | None) -> ServedModel:
    """The model a turn runs on: the one asked for, else the session's if it is served here."""
    if asked:
        return _chat_model(pool, asked)
    if stored in pool.models:
        return _chat_model(pool, stored)
    # A session begun in the terminal names a file or a reference: match it to a served model.
    for m in pool.models.values():
        if m.kind == "chat" and stored in (m.ref, str(m.path), Path(stored).name):
            return m
    return _chat_model(pool, None)


def _sampling(saved: dict[str, Any], params: ChatParams | None) -> Sampling:
    # What `scheda chat`'s /params or an earlier turn saved with the session, then this turn's.
    values = {k: v for k, v in saved.items() if k in CHAT_OPTIONS}
    values.update(chosen(params, CHAT_OPTIONS) if params else {})
    return options.chat_sampling(values)


@router.post(
    "/sessions/{session_id}/chat",
    response_class=EventStream,
    responses=answers(400, 404, 503, stream=True),
)
async def chat(session_id: str, body: ChatTurn, request: Request) -> Any:
    store, pool = store_of(request), pool_of(request)
    session = store.get(session_id)
    entry = _session_model(pool, session.model, body.model)
    if entry.id != session.model:
        store.set_model(session.id, entry.id)
    sampling = _sampling(session.params, body.params)
    if body.params is not None:
        store.set_params(
            session.id, {**session.params, **body.params.model_dump(exclude_none=True)}
        )
    ask = _Question(store, session.id, body.content)

    def work(engine: Any, on_text: Any, cancel: Any) -> Generation:
        ask.save()
        history = store.messages(session.id)
        messages, _ = fit_history(engine, session.system, history, sampling.max_tokens)
        generation: Generation = engine.chat(messages, sampling, on_text, cancel)
        return generation

    job = Job(pool, entry, work)
    # A turn the server cannot take now (its model's slots and queue are full, or no room to
    # load it) is refused with its status and saves nothing, as the API's routes are.
    first = await job.first(request)
    if first.kind == "error" and not ask.saved:
        return error_response(first.error)
    if first.kind == "loading":
        ask.save()  # admitted: the question is the session's while its model loads
    return StreamingResponse(
        _turn(job, first, store, session.id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class _Question:
    """A turn's question, saved once, when the server has taken the turn: at the start of its
    model's load, or when it runs."""

    def __init__(self, store: SessionStore, session_id: str, content: str) -> None:
        self.store, self.session_id, self.content = store, session_id, content
        self.saved = False
        self._lock = threading.Lock()

    def save(self) -> None:
        with self._lock:
            if not self.saved:
                self.store.add_message(self.session_id, "user", self.content)
                self.saved = True


async def _turn(job: Job, first: Event, store: SessionStore, session_id: str) -> AsyncIterator[str]:
    """Stream one answer from its first event; save it when it ends, however it ends."""
    answer: list[str] = []
    saved = False
    pending: Event | None = first

    def save(text: str, tokens: int | None) -> None:
        nonlocal saved
        if not saved and text:
            store.add_message(session_id, "assistant", text, tokens)
        saved = True

    try:
        while True:
            event, pending = pending or await job.next(), None
            if event.kind == "loading":  # the studio shows it while it waits
                yield sse({"loading": event.text})
                continue
            if event.kind == "text":
                if event.index == 0:
                    answer.append(event.text)
                    yield sse({"text": event.text})
                continue
            if event.kind == "error":
                yield sse({"error": error_body(event.error)})
                return
            generation: Generation = event.result
            t = generation.timings
            save(generation.text, generation.completion_tokens)
            yield sse(
                {
                    "done": True,
                    "finish_reason": generation.finish_reason,
                    "prompt_tokens": generation.prompt_tokens,
                    "cached_tokens": generation.cached_tokens,
                    "completion_tokens": generation.completion_tokens,
                    "first_token_s": round(t.first_token_s, 3),
                    "tokens_per_s": round(t.tokens_per_s, 1),
                    "total_s": round(t.total_s, 3),
                }
            )
            return
    finally:
        if not saved:
            # The client left mid-answer: stop the engine, keep what it had said. Saved
            # here and now, not awaited: a cancelled stream may not await anything more.
            job.cancel.set()
            # The text that had come and not been sent yet (the loop is woken for it in
            # batches) was said all the same.
            answer += [e.text for e in job.ready() if e.kind == "text" and e.index == 0]
            save("".join(answer), None)


# -- evaluation runs -------------------------------------------------------------------------


class _StoredTask(Task):
    """A stored run's task as `summarize` reads it: its name, shots and metrics, no items."""

    def __init__(self, name: str, shots: int, metrics: tuple[str, ...]) -> None:
        super().__init__(shots)
        self.name = name
        self.metrics = metrics

    def items(self) -> list[Item]:
        return []

    def run(self, items: list[Item], model: EvalModel) -> Iterator[ItemResult]:
        return iter(())


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: a figure over no items is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _scored(store: EvalStore, run: Run) -> int:
    if run.summary is not None and isinstance(run.summary.get("items"), int):
        return int(run.summary["items"])
    return len(store.done(run.id))


def _so_far(run: Run, results: list[ItemResult]) -> dict[str, Any] | None:
    """An unfinished run's figures over the items scored so far, in the summary's shape."""
    if run.finished is not None or not results or not results[0].metrics:
        return None
    headline = next(iter(results[0].metrics))  # a task's results list its headline first
    metrics = (headline, *[m for r in results for m in r.metrics if m != headline])
    task = _StoredTask(run.task, int(run.config.get("shots") or 0), tuple(dict.fromkeys(metrics)))
    return summarize(task, [r for r in results if headline in r.metrics])


def _find_run(store: EvalStore, run_id: str) -> Run:
    """A run by id or unique id prefix; a 404 in the API's shape if none or several match."""
    runs = store.runs()
    found = [r for r in runs if r.id == run_id] or [r for r in runs if r.id.startswith(run_id)]
    if len(found) != 1:
        what = "no evaluation run" if not found else f"{len(found)} evaluation runs"
        raise APIError(f"{what} with id {run_id!r}: GET /api/evals lists them", None, 404)
    return found[0]


@router.get("/evals")
def list_evals(request: Request) -> list[dict[str, Any]]:
    store = evals_of(request)
    return [_finite({**r.to_dict(), "scored": _scored(store, r)}) for r in store.runs()]


@router.get("/evals/{run_id}", responses=answers(400, 404))
def get_eval(run_id: str, request: Request, detail: bool = False) -> dict[str, Any]:
    store = evals_of(request)
    run = _find_run(store, run_id)
    results = store.results(run.id)
    rows = [
        {
            "key": r.key,
            "group": r.group,
            "metrics": r.metrics,
            **({"detail": r.detail} if detail else {}),
        }
        for r in results
    ]
    answer: dict[str, Any] = _finite(
        {**run.to_dict(), "scored": len(results), "partial": _so_far(run, results), "results": rows}
    )
    return answer


# -- comparisons -----------------------------------------------------------------------------


def _comparison_summary(record: dict[str, Any]) -> dict[str, Any]:
    """One line of the list: what was compared with what, on which text, the worst KLD."""
    candidates = [r for r in record["rows"] if r["role"] == "candidate"]
    klds = [r["kld"]["mean"] for r in candidates if r.get("kld")]
    summary: dict[str, Any] = _finite(
        {
            "id": record["id"],
            "created": record["created"],
            "reference": record["reference"],
            "candidates": [r["path"] for r in candidates],
            "text": record["text"]["name"],
            "context": record["context"],
            "largest_kld": max(klds) if klds else None,
        }
    )
    return summary


@router.get("/comparisons")
def list_comparisons(request: Request) -> list[dict[str, Any]]:
    """`scheda compare`'s stored comparisons, newest first (read only)."""
    return [_comparison_summary(r) for r in comparisons_of(request).list()]


@router.get("/comparisons/{comparison_id}", responses=answers(404))
def get_comparison(comparison_id: str, request: Request) -> dict[str, Any]:
    """One stored comparison, whole: its rows, how each figure was obtained, the machine."""
    records = comparisons_of(request).list()
    found = [r for r in records if r["id"] == comparison_id] or [
        r for r in records if r["id"].startswith(comparison_id)
    ]
    if len(found) != 1:
        what = "no comparison" if not found else f"{len(found)} comparisons"
        raise APIError(
            f"{what} with id {comparison_id!r}: GET /api/comparisons lists them", None, 404
        )
    answer: dict[str, Any] = _finite(found[0])
    return answer
