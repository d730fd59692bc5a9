"""The OpenAI-compatible routes: models, chat and text completions, embeddings, tokenizer.

Each route validates the body (schemas.py), finds the model in the pool and
runs the engine call as a `Job`. The first event of a job is awaited before
any answer starts, so an error the engine finds at once (a prompt over the
context, a value llama.cpp refuses) still gets its proper status rather than
a 200 followed by a broken stream. The answers' shapes are responses.py's;
echo's prompt scoring is echo.py's. A route parses, calls and answers.
"""

from __future__ import annotations

import base64
import struct
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from scheda.engines.base import Generation, Token
from scheda.errors import APIError
from scheda.sampling import Sampling
from scheda.server import chat_job, echo
from scheda.server.errors import error_body, error_response, sse
from scheda.server.openapi import answers
from scheda.server.pool import Loaded, ModelPool, ServedModel, embedder, generator
from scheda.server.responses import ChatShape, Shape, TextShape, new_id, usage_of
from scheda.server.runner import BareJob, Event, Job, after_loading
from scheda.server.schemas import (
    ChatRequest,
    CompletionRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    TokenizeRequest,
)

router = APIRouter()


def pool_of(request: Request) -> ModelPool:
    return cast(ModelPool, request.app.state.pool)


def _entry(request: Request, model: str | None, kind: str) -> ServedModel:
    entry = pool_of(request).get(model, kind)
    if entry.kind != kind:
        verb = "generates text" if entry.kind == "chat" else "makes embeddings"
        wanted = "an embedding" if kind == "embedding" else "a chat"
        raise APIError(f"{entry.id} {verb}: use {wanted} model for this route", param="model")
    return entry


# -- models ----------------------------------------------------------------------------------


@router.get("/v1/models")
def list_models(request: Request) -> dict[str, Any]:
    pool = pool_of(request)
    return {
        "object": "list",
        "data": [
            {
                "id": m.id,
                "object": "model",
                "created": int(request.app.state.started),
                "owned_by": "scheda",
                **pool.describe(m),
            }
            for m in pool.models.values()
        ],
    }


@router.get("/v1/models/{model_id:path}", responses=answers(404))
def get_model(model_id: str, request: Request) -> dict[str, Any]:
    pool = pool_of(request)
    m = pool.get(model_id)
    created = int(request.app.state.started)
    return {
        "id": m.id,
        "object": "model",
        "created": created,
        "owned_by": "scheda",
        **pool.describe(m),
    }


# -- chat and text completions ---------------------------------------------------------------


@router.post("/v1/chat/completions", responses=answers(400, 404, 503, stream=True))
async def chat_completions(body: ChatRequest, request: Request) -> Any:
    entry = _entry(request, body.model, "chat")
    sampling = body.to_sampling()
    job = chat_job.start(request, entry, body.chat_messages(), sampling, body.guide(), body.stream)
    shape = ChatShape(entry.id, body.top_logprobs or 0 if body.logprobs else None)
    return await _answer(job, request, shape, body.stream, body.include_usage, sampling.n)


@router.post("/v1/completions", responses=answers(400, 404, 503, stream=True))
async def completions(body: CompletionRequest, request: Request) -> Any:
    entry = _entry(request, body.model, "chat")
    prompts = body.prompts()
    sampling = body.to_sampling()
    shape = TextShape(entry.id, body.logprobs)
    if body.echo:
        return await _echo(request, entry, prompts, sampling, body.logprobs)
    if len(prompts) == 1:
        prompt = prompts[0]
        job = Job(
            pool_of(request),
            entry,
            lambda engine, on_text, cancel: generator(engine).generate(
                prompt, sampling, on_text, cancel
            ),
            texts=body.stream,
        )
        return await _answer(job, request, shape, body.stream, body.include_usage, sampling.n)
    if body.stream:
        raise APIError("streaming takes one prompt: send several as separate requests", "prompt")
    job = Job(pool_of(request), entry, _batch(prompts, sampling, entry))
    event = await job.finish(request)
    if event.kind == "error":
        return error_response(event.error)
    return shape.whole(new_id("cmpl"), event.result)


def _batch(prompts: list[Any], sampling: Sampling, entry: ServedModel) -> Any:
    """Several prompts in one request: sent to the engine together, so its slots share them."""

    def work(loaded: Loaded, _on_text: Any, cancel: threading.Event) -> list[Generation]:
        engine = generator(loaded)
        with ThreadPoolExecutor(max_workers=entry.options.get("parallel", 1)) as workers:
            return list(workers.map(lambda p: engine.generate(p, sampling, None, cancel), prompts))

    return work


async def _answer(
    job: Job, request: Request, shape: Shape, stream: bool, usage: bool, n: int
) -> Any:
    if not stream:
        last = await job.finish(request)
        if last.kind == "error":
            return error_response(last.error)
        return shape.whole(new_id(shape.prefix), [last.result])
    first = await job.first(request)
    if first.kind == "error":
        return error_response(first.error)
    return StreamingResponse(
        after_loading(job, first, lambda event: _stream(job, event, shape, usage, n)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(job: Job, first: Event, shape: Shape, usage: bool, n: int) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk shape; leaving early cancels the generation.

    The events that came together are written together (one write, not one per token),
    the openings with the first of them; a piece of text is spelled from a template.
    """
    chunk_id = new_id(shape.prefix)
    created = int(time.time())
    text = shape.text_events(chunk_id, created)
    calls = [chat_job.Calls() for _ in range(n)]  # what each sample's stream sent of its calls
    out = [sse(shape.chunk(chunk_id, created, [o])) for i in range(n) if (o := shape.opening(i))]
    event = first
    try:
        async for batch in job.batches(first):
            for event in batch:
                if event.call is not None:
                    calls[event.index].add(event.call)
                    pieces = shape.call_pieces(event.index, event.call)
                    out += [sse(shape.chunk(chunk_id, created, [piece])) for piece in pieces]
                elif event.streamed:
                    out.append(text(event.index, event.text))
            if out:
                yield "".join(out)
                out = []
        if event.kind == "error":
            out.append(sse({"error": error_body(event.error)}))
        else:
            generation: Generation = event.result
            for i, sample in enumerate(generation.samples):  # calls an engine gave only whole
                for call in calls[i].rest(sample):
                    for piece in shape.call_pieces(i, call):
                        out.append(sse(shape.chunk(chunk_id, created, [piece])))
            closing = [shape.closing(i, s) for i, s in enumerate(generation.samples)]
            out.append(sse(shape.chunk(chunk_id, created, closing)))
            if usage:
                out.append(sse(shape.chunk(chunk_id, created, [], usage_of([generation]))))
        yield "".join(out) + "data: [DONE]\n\n"
    finally:
        job.cancel.set()  # the client left (or the stream ended): stop generating either way


# -- echo: the prompt's own log-probabilities (echo.py) ------------------------------------


async def _echo(
    request: Request,
    entry: ServedModel,
    prompts: list[Any],
    sampling: Sampling,
    logprobs: int | None,
) -> Any:
    """Each prompt with its tokens' log-probabilities, then what `max_tokens` asks for more."""
    pool = pool_of(request)
    job = BareJob(entry, echo.scoring(pool, entry, prompts, logprobs or 0))
    event = await job.finish(request)
    if event.kind == "error":
        return error_response(event.error)
    echoed = event.result  # fewer than the prompts if the client left while they were scored
    generations: list[Any] = [None] * len(echoed)
    if sampling.max_tokens > 0 and not job.cancel.is_set():
        more = Job(pool, entry, _batch([e["ids"] for e in echoed], sampling, entry))
        done = await more.finish(request)
        if done.kind == "error":
            return error_response(done.error)
        generations = done.result
    return echo.answer(entry.id, echoed, generations, logprobs)


# -- embeddings ------------------------------------------------------------------------------


@router.post("/v1/embeddings", responses=answers(400, 404, 503))
async def embeddings(body: EmbeddingRequest, request: Request) -> Any:
    entry = _entry(request, body.model, "embedding")
    texts = _embedding_texts(body)
    job = Job(pool_of(request), entry, lambda engine, _on_text, _cancel: _embed(engine, texts))
    event = await job.finish(request)
    if event.kind == "error":
        return error_response(event.error)
    vectors, tokens = event.result
    if body.dimensions is not None and body.dimensions != len(vectors[0]):
        raise APIError(
            f"{entry.id} makes {len(vectors[0])}-dimensional vectors, not {body.dimensions}",
            "dimensions",
        )
    return {
        "object": "list",
        "data": [
            {
                "object": "embedding",
                "index": i,
                "embedding": _encode_vector(v, body.encoding_format),
            }
            for i, v in enumerate(vectors)
        ],
        "model": entry.id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _embedding_texts(body: EmbeddingRequest) -> list[str | list[int]]:
    value = body.input
    if isinstance(value, str):
        texts: list[Any] = [value]
    elif value and all(isinstance(x, int) for x in value):
        texts = [list(value)]
    else:
        texts = list(value)
    if not texts:
        raise APIError("input is empty: give a string or a list of them", "input")
    return texts


def _embed(loaded: Loaded, texts: list[str | list[int]]) -> tuple[list[list[float]], int]:
    engine = embedder(loaded)
    decoded = [t if isinstance(t, str) else engine.detokenize(t) for t in texts]
    embedded: tuple[list[list[float]], int] = engine.embed(decoded)
    return embedded


def _encode_vector(vector: list[float], encoding: str) -> Any:
    if encoding == "base64":  # OpenAI's packing: little-endian float32
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


# -- tokenizer (vLLM's routes and shapes) ----------------------------------------------------


@router.post("/tokenize", responses=answers(400, 404, 503))
async def tokenize(body: TokenizeRequest, request: Request) -> Any:
    entry = pool_of(request).get(body.model)

    def work(engine: Loaded, _on_text: Any, _cancel: Any) -> list[Token]:
        if body.messages is not None:
            text = generator(engine).chat_prompt([m.message() for m in body.messages])
            special = bool(body.add_special_tokens)  # the template writes BOS itself
        else:
            text = body.prompt or ""  # the request's validator made sure it has one
            special = True if body.add_special_tokens is None else body.add_special_tokens
        return engine.tokenize(text, add_special=special)

    job = Job(pool_of(request), entry, work)
    event = await job.finish(request)
    if event.kind == "error":
        return error_response(event.error)
    tokens = event.result
    return {
        "count": len(tokens),
        "max_model_len": entry.context,
        "tokens": [t.id for t in tokens],
        "token_strs": (
            [t.piece.decode("utf-8", errors="replace") for t in tokens]
            if body.return_token_strs
            else None
        ),
    }


@router.post("/detokenize", responses=answers(400, 404, 503))
async def detokenize(body: DetokenizeRequest, request: Request) -> Any:
    entry = pool_of(request).get(body.model)
    job = Job(pool_of(request), entry, lambda engine, _t, _c: engine.detokenize(body.tokens))
    event = await job.finish(request)
    if event.kind == "error":
        return error_response(event.error)
    return {"prompt": event.result}


@router.get("/tokenizer_info", responses=answers(400, 404, 503))
async def tokenizer_info(request: Request, model: str | None = None) -> Any:
    entry = pool_of(request).get(model)
    job = Job(pool_of(request), entry, lambda engine, _t, _c: engine.tokenizer_info())
    event = await job.finish(request)
    if event.kind == "error":
        return error_response(event.error)
    info = {"tokenizer_class": entry.spec.tokenizer, **event.result}
    return JSONResponse(info)


__all__ = ["router"]
