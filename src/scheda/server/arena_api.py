"""The arena's routes (`/api/arena`): blind battles, the vote, the leaderboard, the export.

A battle is one prompt to two served models at once, each answer streamed as
it is written, in columns "a" and "b" whose order is drawn at random. Both
answers are ordinary engine calls (a `Job` each, in its own thread), so two
models decode at the same time and one model's slots batch with its other
requests as usual. Each answer is stored by the thread that made it, the
moment it ends (finished, cancelled or failed), so a client that leaves, or a
stream cut short, loses nothing that was said.

Blind means blind until the vote, in every byte the page receives: the
stream's events and the battle's JSON carry the columns' answers and timings
only; an error that would name a model names its column instead; the
response headers are the same for any two models. The vote reveals who
answered, once: a second vote is a 409, and so is a vote on a battle still
answering or one whose answer failed.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from scheda import sampling as options
from scheda.engines.base import Generation, Message
from scheda.errors import APIError
from scheda.files.digest import sha256
from scheda.sampling import Sampling
from scheda.server.errors import api_error, sse
from scheda.server.openapi import EventStream, answers
from scheda.server.pool import ModelPool, ServedModel, generator
from scheda.server.runner import BareJob, Event
from scheda.server.schemas import Strict, chosen
from scheda.server.studio_api import CHAT_OPTIONS, ChatParams, comparisons_of, evals_of, pool_of
from scheda.stores.arena import SIDES, ArenaStore, Battle, Side

if TYPE_CHECKING:
    from threading import Event as Flag

router = APIRouter(prefix="/api/arena")
PROMPTS = "arena-prompts.jsonl"


def arena_of(request: Request) -> ArenaStore:
    return cast(ArenaStore, request.app.state.arena)


class BattleRequest(Strict):
    models: Annotated[list[str], Field(min_length=2, max_length=2)] | None = Field(
        None, description="Two served chat models; none: any two, drawn at random."
    )
    prompt: Annotated[str, Field(min_length=1, max_length=100_000)]
    system: Annotated[str, Field(max_length=100_000)] = ""
    tag: Annotated[str, Field(max_length=64)] = ""
    params: ChatParams | None = None
    blind: bool = True


class Vote(Strict):
    outcome: Literal["a", "b", "tie", "bad"] = Field(
        description="a: A is better; b: B is better; tie; bad: both are bad."
    )


# -- choosing the two ------------------------------------------------------------------------


def _contenders(pool: ModelPool, asked: list[str] | None) -> list[ServedModel]:
    """The two models, in the order their columns will have: drawn at random."""
    if asked is None:
        chat = [m for m in pool.models.values() if m.kind == "chat"]
        if len(chat) < 2:
            raise APIError(
                "a battle needs two chat models and this server serves "
                f"{len(chat)}: serve another (scheda serve A B)",
                "models",
            )
        chosen_two = secrets.SystemRandom().sample(chat, 2)
    else:
        chosen_two = [pool.get(name) for name in asked]
        for entry in chosen_two:
            if entry.kind != "chat":
                raise APIError(f"{entry.id} makes embeddings: name a chat model", "models")
        if chosen_two[0].id == chosen_two[1].id:
            raise APIError(
                f"a battle needs two different models, not {chosen_two[0].id} twice", "models"
            )
        if secrets.randbelow(2):
            chosen_two.reverse()
    return chosen_two


def _names(entry: ServedModel) -> list[str]:
    """Every way a message could name this model, longest first (a path before its file name)."""
    names = {entry.id, entry.ref, str(entry.path), entry.path.name, entry.path.stem}
    return sorted((n for n in names if n), key=len, reverse=True)


def _unnamed(message: str, columns: dict[str, ServedModel]) -> str:
    """A message with each model's names replaced by its column's: what a blind page may read."""
    for name, entry in columns.items():
        for word in _names(entry):
            message = message.replace(word, f"model {name.upper()}")
    return message


# -- one column's answer ---------------------------------------------------------------------


def _messages(system: str, prompt: str) -> list[Message]:
    return ([Message("system", system)] if system else []) + [Message("user", prompt)]


def _answered(side: Side, generation: Generation) -> Side:
    timings = generation.timings
    return replace(
        side,
        answer=generation.text,
        finish_reason=generation.finish_reason,
        completion_tokens=generation.completion_tokens,
        tokens_per_s=round(timings.tokens_per_s, 2),
        first_token_s=round(timings.first_token_s, 3),
    )


def _column(
    pool: ModelPool,
    arena: ArenaStore,
    battle: Battle,
    name: str,
    columns: dict[str, ServedModel],
    sampling: Sampling,
) -> BareJob:
    """One column's answer, running; stored by its own thread when it ends, however it ends."""
    entry, side = columns[name], battle.side(name)

    def work(on_text: Any, cancel: Flag) -> Side:
        try:
            with pool.lease(entry) as engine:
                generation = generator(engine).chat(
                    _messages(battle.system, battle.prompt), sampling, on_text, cancel
                )
            ended = _answered(replace(side, sha256=sha256(entry.path)), generation)
        except Exception as exc:
            message = api_error(exc).message
            if battle.blind:
                message = _unnamed(message, columns)
            arena.finish(battle.id, name, replace(side, error=message, finish_reason="error"))
            raise APIError(message, None, api_error(exc).status) from exc
        arena.finish(battle.id, name, ended)
        return ended

    return BareJob(entry, work)


# -- the stream ------------------------------------------------------------------------------


def _head(battle: Battle) -> dict[str, Any]:
    head: dict[str, Any] = {"id": battle.id, "blind": battle.blind, "columns": list(SIDES)}
    if not battle.blind:
        for name in SIDES:
            head[name] = battle.side(name).identity()
    return head


def _end(name: str, event: Event) -> dict[str, Any]:
    if event.kind == "error":
        return {"side": name, "error": {"message": api_error(event.error).message}}
    side: Side = event.result
    # The text came piece by piece already: the end says how the answer ended, and its pace.
    said = {k: v for k, v in side.result().items() if k != "answer"}
    return {"side": name, "done": True, **said}


async def _fight(battle: Battle, jobs: dict[str, BareJob], arena: ArenaStore) -> AsyncIterator[str]:
    """Both columns' events as they come, one stream; leaving early cancels both answers."""
    yield sse({"battle": _head(battle)})
    merged: asyncio.Queue[tuple[str, Event]] = asyncio.Queue()

    async def pump(name: str, job: BareJob) -> None:
        while True:
            event = await job.next()
            await merged.put((name, event))
            if event.kind != "text":
                return

    pumps = [asyncio.ensure_future(pump(name, job)) for name, job in jobs.items()]
    ended: set[str] = set()
    try:
        while len(ended) < len(jobs):
            name, event = await merged.get()
            if event.kind == "text":
                if event.index == 0:
                    yield sse({"side": name, "text": event.text})
                continue
            ended.add(name)
            yield sse(_end(name, event))
        final = await asyncio.to_thread(arena.get, battle.id)
        yield sse({"end": True, "battle": final.view()})
    finally:
        # The client left, or the stream is done: any answer still going stops now, and its
        # thread stores what it had said (the work above), whether or not we are still here.
        for job in jobs.values():
            job.cancel.set()
        for task in pumps:
            task.cancel()


@router.post("/battles", response_class=EventStream, responses=answers(400, 404, 503, stream=True))
async def battle(body: BattleRequest, request: Request) -> Any:
    """Start a battle: both answers stream at once, in columns "a" and "b"."""
    pool, arena = pool_of(request), arena_of(request)
    first, second = _contenders(pool, body.models)
    columns = {"a": first, "b": second}
    values = chosen(body.params, CHAT_OPTIONS) if body.params else {}
    sampling = options.chat_sampling(values)
    sides = {n: Side(e.id, str(e.path.resolve()), e.engine_name) for n, e in columns.items()}
    started = await asyncio.to_thread(
        arena.start,
        body.prompt,
        sides["a"],
        sides["b"],
        {k: getattr(sampling, k) for k in CHAT_OPTIONS},
        _machine(),
        body.system,
        body.tag,
        body.blind,
    )
    jobs = {n: _column(pool, arena, started, n, columns, sampling) for n in SIDES}
    return StreamingResponse(
        _fight(started, jobs, arena),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@cache
def _machine() -> dict[str, Any]:
    from scheda.measurement.bench import machine

    return dict(machine())


# -- reading, voting, ranking ----------------------------------------------------------------


@router.get("/battles", responses=answers(400))
def battles(
    request: Request,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    voted: bool = False,
) -> list[dict[str, Any]]:
    """Every battle, newest first; a blind one not yet voted names no model."""
    return [b.view() for b in arena_of(request).battles(tag, voted)]


@router.get("/battles/{battle_id}", responses=answers(404))
def one_battle(battle_id: str, request: Request) -> dict[str, Any]:
    return arena_of(request).get(battle_id).view()


@router.post("/battles/{battle_id}/vote", responses=answers(400, 404, 409))
def vote(battle_id: str, body: Vote, request: Request) -> dict[str, Any]:
    """The verdict, once; the answer names both models."""
    return arena_of(request).vote(battle_id, body.outcome).view()


@router.get("/leaderboard", responses=answers(400))
def leaderboard(
    request: Request, tag: Annotated[str | None, Query(max_length=64)] = None
) -> dict[str, Any]:
    """Bradley-Terry ratings with 95% bootstrap intervals, games, the win matrix; each model's
    stored KLD and eval figures beside."""
    from scheda.arena.standings import standings

    return standings(
        arena_of(request), tag, evals=evals_of(request), comparisons=comparisons_of(request)
    )


@router.get("/export", response_class=StreamingResponse)
def export(request: Request) -> StreamingResponse:
    """Every battle as JSON Lines, oldest first (a blind one not yet voted names no model)."""
    records = list(arena_of(request).export())

    def lines() -> Iterator[str]:
        for record in records:
            yield json.dumps(record, ensure_ascii=False) + "\n"

    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="arena-battles.jsonl"'},
    )


@router.get("/prompts")
def prompts() -> list[dict[str, str]]:
    """The prompt set scheda ships, each with its tag, to draw a battle's prompt from."""
    return prompt_set()


@cache
def prompt_set() -> list[dict[str, str]]:
    text = resources.files("scheda").joinpath("texts", PROMPTS).read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def prompts_path() -> Path:
    return Path(str(resources.files("scheda").joinpath("texts", PROMPTS)))
