"""Fitting a prompt into the context.

`generate` and `chat` share this: a prompt is counted in the model's own
tokens before it is sent, so a prompt too long for the context gets an error
with both counts (or is cut, oldest text first, when the user asks), rather
than a failure from deep inside the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheda.engines.base import Engine, Message
from scheda.errors import UsageError

# Tokens kept free for the answer when a prompt is cut to fit: at least this many.
MIN_ANSWER_ROOM = 16


@dataclass
class Fitted:
    """A prompt that fits, its size, and what was cut to make it fit (0: nothing)."""

    prompt: str
    tokens: int
    cut_tokens: int = 0


def prompt_tokens(engine: Engine, prompt: str, chat: bool) -> int:
    """Tokens the engine will see: a chat prompt already holds its special tokens as text."""
    return len(engine.tokenize(prompt, add_special=not chat))


def answer_room(context: int, max_tokens: int) -> int:
    """Tokens kept free for the answer when a prompt or a history is cut to fit: `max_tokens`,
    but at most half the context (the prompt keeps the other half) and at least
    MIN_ANSWER_ROOM; half the context when the answer has no limit (`max_tokens` 0)."""
    half = context // 2
    if max_tokens <= 0:
        return half
    return max(MIN_ANSWER_ROOM, min(max_tokens, half))


def fit_prompt(
    engine: Engine, prompt: str, max_tokens: int, truncate: bool, chat: bool = False
) -> Fitted:
    """The prompt as is when it fits the context, cut from the start when `truncate`, or an error.

    A prompt fits when it leaves room for at least one token of answer. Cutting
    keeps the end of the text (where the question usually is) and leaves the
    answer its room (`answer_room`).
    """
    count = prompt_tokens(engine, prompt, chat)
    if count < engine.context:
        return Fitted(prompt, count)
    if not truncate:
        raise UsageError(
            f"the prompt is {count:,} tokens and the context holds {engine.context:,}: "
            "shorten it, raise --context, or pass --truncate to cut its start"
        )
    keep = engine.context - answer_room(engine.context, max_tokens)
    ids = [t.id for t in engine.tokenize(prompt, add_special=False)]
    cut = ids[len(ids) - keep :]
    text = engine.detokenize(cut)
    return Fitted(text, prompt_tokens(engine, text, chat), len(ids) - len(cut))


def fit_user_message(
    engine: Engine, messages: list[Message], max_tokens: int, truncate: bool
) -> tuple[list[Message], Fitted]:
    """A chat whose template output fits, cutting the start of the last message when asked."""
    prompt = engine.chat_prompt(messages)
    count = prompt_tokens(engine, prompt, chat=True)
    if count < engine.context:
        return messages, Fitted(prompt, count)
    if not truncate:
        raise UsageError(
            f"the prompt is {count:,} tokens with the chat template and the context holds "
            f"{engine.context:,}: shorten it, raise --context, or pass --truncate to cut its start"
        )
    overflow = count - (engine.context - answer_room(engine.context, max_tokens))
    last = messages[-1]
    ids = [t.id for t in engine.tokenize(last.content, add_special=False)]
    if overflow >= len(ids):
        raise UsageError(
            f"the system prompt and template alone take {count - len(ids):,} of the "
            f"{engine.context:,}-token context: shorten the system prompt or raise --context"
        )
    kept = [*messages[:-1], Message(last.role, engine.detokenize(ids[overflow:]))]
    prompt = engine.chat_prompt(kept)
    return kept, Fitted(prompt, prompt_tokens(engine, prompt, chat=True), overflow)


def fit_history(
    engine: Engine, system: str | None, history: list[Message], max_tokens: int
) -> tuple[list[Message], int]:
    """The messages to send: the system prompt, then the latest turns that fit with room for
    the answer; and how many of the oldest turns were left out. `scheda chat` and the studio
    share it.
    """
    head = [Message("system", system)] if system else []
    room = engine.context - answer_room(engine.context, max_tokens)
    start = 0
    while True:
        messages = head + history[start:]
        count = prompt_tokens(engine, engine.chat_prompt(messages), chat=True)
        if count <= room or start >= len(history) - 1:
            break
        start = _next_turn(history, start)
    if count > engine.context - 1:
        raise UsageError(
            f"this message and the system prompt take {count:,} tokens, more than the "
            f"{engine.context:,}-token context: shorten it or raise --context"
        )
    return messages, sum(1 for m in history[:start] if m.role == "user")


def _next_turn(history: list[Message], start: int) -> int:
    """The index of the next user message after `start` (a turn is a question and its answer)."""
    for i in range(start + 1, len(history)):
        if history[i].role == "user":
            return i
    return len(history) - 1
