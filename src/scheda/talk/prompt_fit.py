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

# Tokens kept free for the answer when a prompt is cut to fit: at most this, or half the context.
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


def fit_prompt(
    engine: Engine, prompt: str, max_tokens: int, truncate: bool, chat: bool = False
) -> Fitted:
    """The prompt as is when it fits the context, cut from the start when `truncate`, or an error.

    A prompt fits when it leaves room for at least one token of answer. Cutting
    keeps the end of the text (where the question usually is) and leaves room
    for `max_tokens` of answer, or half the context when that is less.
    """
    count = prompt_tokens(engine, prompt, chat)
    if count < engine.context:
        return Fitted(prompt, count)
    if not truncate:
        raise UsageError(
            f"the prompt is {count:,} tokens and the context holds {engine.context:,}: "
            "shorten it, raise --context, or pass --truncate to cut its start"
        )
    room = max(MIN_ANSWER_ROOM, min(max_tokens, engine.context // 2))
    keep = engine.context - room
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
    room = max(MIN_ANSWER_ROOM, min(max_tokens, engine.context // 2))
    overflow = count - (engine.context - room)
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
