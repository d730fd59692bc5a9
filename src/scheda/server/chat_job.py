"""One chat turn for the routes that translate another protocol onto chat: Messages, Responses.

Anthropic's Messages API and OpenAI's Responses API say what chat completions
say in other words. Their routes translate the request into the engine's
terms (messages, a `Sampling`, a `Guide`) and call `start`; the engine call
runs as any chat completion's does (a `Job`: its own thread, cancelled when
the client hangs up). Each route then spells the answer, or the stream's
events, in its protocol's shape: text as it comes, and each tool call as it is
written, its start and then its arguments in fragments (`Calls` keeps what a
stream sent of them, to finish it from the answer).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn

from fastapi import Request
from fastapi.responses import StreamingResponse

from scheda.engines.base import CallPiece, Generation, Guide, Message, Sample, ToolCall
from scheda.errors import APIError
from scheda.sampling import Sampling
from scheda.server.pool import ModelPool, ServedModel, generator
from scheda.server.runner import ChatJob, Event, Job, after_loading

# A route's stream: its events, written as `event: KIND` and `data: JSON`, from the first.
Events = Callable[[Job, Event], AsyncIterator[str]]


def entry_of(request: Request, model: str | None) -> ServedModel:
    """The served chat model a request names (the default one when it names none)."""
    pool: ModelPool = request.app.state.pool
    entry = pool.get(model, "chat")
    if entry.kind != "chat":
        raise APIError(f"{entry.id} makes embeddings: name a chat model", param="model")
    return entry


def start(
    request: Request,
    entry: ServedModel,
    messages: list[Message],
    sampling: Sampling,
    guide: Guide,
    stream: bool,
) -> Job:
    """The engine's chat call, running; its text and calls come as events when streamed."""
    return ChatJob(
        request.app.state.pool,
        entry,
        lambda engine, on_text, on_call, cancel: generator(engine).chat(
            messages, sampling, on_text, cancel, guide, on_call
        ),
        texts=stream,
    )


async def whole(job: Job, request: Request) -> Generation:
    """The finished generation; an error is raised for the route's error handler."""
    event = await job.finish(request)
    if event.kind == "error":
        fail(event)
    result: Generation = event.result
    return result


async def streamed(job: Job, request: Request, events: Events) -> StreamingResponse:
    """Server-sent events from the first one on; an error before any text is raised, so it
    gets its status. Leaving early cancels the generation."""
    first = await job.first(request)
    if first.kind == "error":
        fail(first)

    return StreamingResponse(
        # The client left (or the stream ended): generating stops either way.
        after_loading(job, first, lambda event: events(job, event)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def texts(job: Job, first: Event) -> AsyncIterator[Event]:
    """The job's text and call events, then its last event ("done" or "error")."""
    event = first
    while event.streamed:
        yield event
        event = await job.next()
    yield event


class Calls:
    """What a stream has sent of one sample's tool calls, to finish it from the answer: an
    engine that gives calls only whole (through Ray) has them sent at the end, and a call
    begun in the stream that the answer left out was cut short (max_tokens, a cancel)."""

    def __init__(self) -> None:
        self.begun: dict[int, ToolCall] = {}  # a call's place -> what was sent of it

    def add(self, piece: CallPiece) -> None:
        if piece.starts:
            self.begun[piece.index] = ToolCall(piece.id, piece.name, piece.arguments)
        elif piece.index in self.begun:
            self.begun[piece.index].arguments += piece.arguments

    def rest(self, sample: Sample) -> list[CallPiece]:
        """The pieces still to send for the answer's calls to be whole in the stream."""
        pieces = []
        for at, call in enumerate(sample.tool_calls):
            sent = self.begun.get(at)
            if sent is None:
                pieces.append(CallPiece(at, call.id, call.name, call.arguments))
            elif len(call.arguments) > len(sent.arguments):
                pieces.append(CallPiece(at, arguments=call.arguments[len(sent.arguments) :]))
        return pieces

    def cut(self, sample: Sample) -> set[int]:
        """The places of the calls begun in the stream that the answer left out."""
        return {at for at in self.begun if at >= len(sample.tool_calls)}


def fail(event: Event) -> NoReturn:
    """Raise a job's error, for the route's error handler to answer."""
    raise event.error if event.error is not None else RuntimeError("a job failed unsaid")


def event(kind: str, data: dict[str, Any]) -> str:
    """One named server-sent event, as both protocols stream them."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {kind}\ndata: {payload}\n\n"
