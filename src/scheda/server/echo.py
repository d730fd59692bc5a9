"""Echo: a prompt's own log-probabilities, from the exact scorer (evaluation/scorer.py).

This is what lm-evaluation-harness's `local-completions` sends to score
multiple choice. Each prompt comes back with a log-probability for every token
but the first, read from the scorer (llama.cpp's own server refuses echo).
When `max_tokens` asks for more, the engine generates it after the prompt, as
OpenAI's API does, and its tokens are appended to the prompt's.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from scheda.engines.base import Generation, TokenLogprob
from scheda.errors import APIError
from scheda.server.pool import ModelPool, ServedModel
from scheda.server.responses import finish_reason, new_id
from scheda.server.runner import BareWork


def scoring(pool: ModelPool, entry: ServedModel, prompts: list[Any], top: int) -> BareWork:
    """A job's work: every prompt scored by the model's scorer, until the client leaves."""

    def score_all(_on_text: Any, cancel: threading.Event) -> list[Any]:
        with pool.scoring(entry) as scorer:
            return [echo_one(scorer, p, top) for p in prompts if not cancel.is_set()]

    return score_all


def echo_one(scorer: Any, prompt: str | list[int], top: int) -> dict[str, Any]:
    """One prompt's ids, text and logprobs (OpenAI's text-completion layout)."""
    ids = scorer.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
    if not ids:
        raise APIError("the prompt is empty: echo needs at least one token", "prompt")
    vocab = getattr(scorer, "n_vocab", None)
    if vocab is not None and any(not 0 <= t < vocab for t in ids):
        raise APIError(f"a token id is outside the vocabulary (0 to {vocab - 1})", "prompt")
    pieces = [scorer.piece(t) for t in ids]
    scored = scorer.score(ids, 1, max(top, 1)) if len(ids) > 1 else None
    token_logprobs: list[float | None] = [None]
    top_logprobs: list[dict[str, float] | None] = [None]
    if scored is not None:
        token_logprobs += list(scored.logprobs)
        top_logprobs += [
            {scorer.piece(t): lp for t, lp in alternatives[: max(top, 1)]}
            for alternatives in scored.top
        ]
    offsets, at = [], 0
    for p in pieces:
        offsets.append(at)
        at += len(p)
    text = prompt if isinstance(prompt, str) else "".join(pieces)
    return {
        "ids": ids,
        "text": text,
        "logprobs": {
            "tokens": pieces,
            "token_logprobs": token_logprobs,
            "top_logprobs": top_logprobs,
            "text_offset": offsets,
        },
    }


def answer(
    model: str,
    echoed: list[dict[str, Any]],
    generations: list[Generation | None],
    logprobs: int | None,
) -> dict[str, Any]:
    """The whole text completion: each prompt echoed, then what was generated after it."""
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for i, (e, g) in enumerate(zip(echoed, generations, strict=True)):
        text, lp, finish = e["text"], e["logprobs"], "length"
        if g is not None:
            sample = g.samples[0]
            text += sample.text
            finish = finish_reason(sample.finish_reason)
            completion_tokens += sample.completion_tokens
            _append_generated(lp, sample.logprobs or [], logprobs or 0, len(e["text"]))
        prompt_tokens += len(e["ids"])
        choices.append(
            {"index": i, "text": text, "logprobs": lp if logprobs is not None else None,
             "finish_reason": finish}
        )  # fmt: skip
    return {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _append_generated(lp: dict[str, Any], entries: list[TokenLogprob], top: int, at: int) -> None:
    for e in entries:
        lp["tokens"].append(e.token)
        lp["token_logprobs"].append(e.logprob)
        lp["top_logprobs"].append(dict(e.top[: max(top, 1)]))
        lp["text_offset"].append(at)
        at += len(e.token)
