"""Answers in OpenAI's shapes: whole completions, streamed chunks, usage, logprobs, timings.

Text completions and chat completions say the same things in different words
(`text` against `message` and `delta`, one logprobs layout against another);
a `Shape` per route spells them, so the routes only pick one. `timings` is
scheda's own addition to a whole answer (llama.cpp's server adds the same).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from scheda.engines.base import CallPiece, Generation, TokenLogprob
from scheda.server.errors import sse

# A stream's pieces of text are spelled from a template (`Shape.text_events`): the mark stands
# for the text (a NUL and a private-use character, found in no model's name), and the encoder
# writes a string as `sse`'s json.dumps writes one.
_MARK = "\x00\ue000"
_TEXT_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_MARK_JSON = _TEXT_JSON.encode(_MARK)


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def usage_of(generations: list[Generation]) -> dict[str, Any]:
    prompt = sum(g.prompt_tokens for g in generations)
    completion = sum(g.completion_tokens for g in generations)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    cached = cached_tokens(generations)
    if cached is not None:  # OpenAI's place for the prompt's tokens read from a cache
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


def cached_tokens(generations: list[Generation]) -> int | None:
    """The prompts' tokens the engine took from its cache; None when an engine cannot say."""
    counts = [g.cached_tokens for g in generations]
    if not counts or any(c is None for c in counts):
        return None
    return sum(c for c in counts if c is not None)


def finish_reason(reason: str) -> str:
    return reason if reason in ("length", "tool_calls") else "stop"


def timings(generation: Generation) -> dict[str, float]:
    t = generation.timings
    return {
        "first_token_s": round(t.first_token_s, 4),
        "total_s": round(t.total_s, 4),
        "prompt_tokens_per_s": round(t.prompt_tokens_per_s, 2),
        "tokens_per_s": round(t.tokens_per_s, 2),
    }


class Shape:
    """How one route spells its answers and chunks."""

    prefix = "cmpl"
    object = "text_completion"
    chunk_object = "text_completion"

    def __init__(self, model: str, logprobs: int | None) -> None:
        self.model = model
        self.logprobs = logprobs  # alternatives to show per token; None: no logprobs at all

    def chunk(
        self, chunk_id: str, created: int, choices: list[dict[str, Any]], usage: Any = None
    ) -> dict[str, Any]:
        body = {
            "id": chunk_id,
            "object": self.chunk_object,
            "created": created,
            "model": self.model,
            "choices": choices,
        }
        if usage is not None:
            body["usage"] = usage
        return body

    def whole(self, answer_id: str, generations: list[Generation]) -> dict[str, Any]:
        samples = [s for g in generations for s in g.samples]
        result = self.chunk(answer_id, int(time.time()), [], usage_of(generations))
        result["object"] = self.object
        result["choices"] = [self.complete(i, s) for i, s in enumerate(samples)]
        if len(generations) == 1:
            result["timings"] = timings(generations[0])
        return result

    def opening(self, index: int) -> dict[str, Any] | None:
        return None

    def text_events(self, chunk_id: str, created: int) -> Callable[[int, str], str]:
        """`sse(chunk(piece(index, text)))` for a stream's pieces of text, spelled faster: each
        sample's event is written once with a mark for its text, then filled in per token
        (the mark's JSON swapped for the text's, so the bytes are the same)."""
        templates: dict[int, tuple[str, str]] = {}

        def event(index: int, text: str) -> str:
            template = templates.get(index)
            if template is None:
                whole = sse(self.chunk(chunk_id, created, [self.piece(index, _MARK)]))
                head, tail = whole.split(_MARK_JSON)
                template = templates[index] = (head, tail)
            return template[0] + _TEXT_JSON.encode(text) + template[1]

        return event

    def call_pieces(self, index: int, piece: CallPiece) -> list[dict[str, Any]]:
        """The stream's pieces that carry a piece of a tool call (a text completion has none)."""
        return []

    def piece(self, index: int, text: str) -> dict[str, Any]:
        return {"index": index, "text": text, "logprobs": None, "finish_reason": None}

    def closing(self, index: int, sample: Any) -> dict[str, Any]:
        return {
            "index": index,
            "text": "",
            "logprobs": self.format_logprobs(sample.logprobs),
            "finish_reason": finish_reason(sample.finish_reason),
        }

    def complete(self, index: int, sample: Any) -> dict[str, Any]:
        return {
            "index": index,
            "text": sample.text,
            "logprobs": self.format_logprobs(sample.logprobs),
            "finish_reason": finish_reason(sample.finish_reason),
        }

    def format_logprobs(self, entries: list[TokenLogprob] | None) -> Any:
        if self.logprobs is None or entries is None:
            return None
        offsets, at = [], 0
        for e in entries:
            offsets.append(at)
            at += len(e.token)
        return {
            "tokens": [e.token for e in entries],
            "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [dict(e.top[: self.logprobs]) for e in entries],
            "text_offset": offsets,
        }


TextShape = Shape


class ChatShape(Shape):
    prefix = "chatcmpl"
    object = "chat.completion"
    chunk_object = "chat.completion.chunk"

    def opening(self, index: int) -> dict[str, Any] | None:
        return {
            "index": index,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }

    def piece(self, index: int, text: str) -> dict[str, Any]:
        return {"index": index, "delta": {"content": text}, "logprobs": None, "finish_reason": None}

    def call_pieces(self, index: int, piece: CallPiece) -> list[dict[str, Any]]:
        """A call as OpenAI streams one: its index, id and name (empty arguments) when it
        starts, then its arguments' text in fragments as they are written."""
        deltas: list[dict[str, Any]] = []
        if piece.starts:
            function = {"name": piece.name, "arguments": ""}
            deltas.append(
                {"index": piece.index, "id": piece.id, "type": "function", "function": function}
            )
        if piece.arguments:
            deltas.append({"index": piece.index, "function": {"arguments": piece.arguments}})
        return [
            {"index": index, "delta": {"tool_calls": [d]}, "logprobs": None, "finish_reason": None}
            for d in deltas
        ]

    def closing(self, index: int, sample: Any) -> dict[str, Any]:
        return {
            "index": index,
            "delta": {},
            "logprobs": self.format_logprobs(sample.logprobs),
            "finish_reason": finish_reason(sample.finish_reason),
        }

    def complete(self, index: int, sample: Any) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": sample.text}
        if sample.tool_calls:
            message["content"] = sample.text or None
            message["tool_calls"] = [c.to_openai() for c in sample.tool_calls]
        return {
            "index": index,
            "message": message,
            "logprobs": self.format_logprobs(sample.logprobs),
            "finish_reason": finish_reason(sample.finish_reason),
        }

    def format_logprobs(self, entries: list[TokenLogprob] | None) -> Any:
        if self.logprobs is None or entries is None:
            return None

        def token(text: str, logprob: float) -> dict[str, Any]:
            return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

        return {
            "content": [
                {
                    **token(e.token, e.logprob),
                    "top_logprobs": [token(t, lp) for t, lp in e.top[: self.logprobs]],
                }
                for e in entries
            ]
        }
