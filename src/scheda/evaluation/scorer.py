"""Exact log-likelihoods: log P(token | everything before it), for every token asked.

This is what multiple-choice benchmarks are scored by (lm-evaluation-harness's
`loglikelihood`): the sum over a continuation's tokens, and whether each was
the model's own greedy choice. This module is the contract: `Scorer`, what it
answers (`Scored`), the arithmetic both backends share, and `open_scorer`,
which imports a backend only when a model asks for it (neither llama-cpp-python
nor torch loads with this module). Two backends, held against each other by
the tests:

- `LlamaCppScorer` (scorer_llamacpp.py), for GGUF files: llama.cpp through
  llama-cpp-python's low-level API (`llama_decode`, `llama_get_logits_ith`).
  It asks llama.cpp for the logits of exactly the positions it needs and takes
  the log-softmax itself, in float64. (llama-cpp-python's
  `create_completion(echo=True)` returns prompt log-probabilities shifted by
  one position, its issue #1983: never used here.)
- `TransformersScorer` (scorer_transformers.py), for HF folders: one forward
  pass over the tokens.

Both keep the KV cache of the last sequence and reuse its longest common
prefix with the next one, so a few-shot prefix shared by many questions and
choices is evaluated once. Callers sort their requests so that sequences
sharing a prefix come one after another.

llama.cpp's figures for a sequence are a function of its tokens alone, bit for
bit, whatever was scored before it (so a run dealt out to several workers, or
resumed, gives the figures of one uninterrupted run): see `LlamaCppScorer`.
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from scheda.errors import PromptTooLongError, UsageError, install_hint

EVAL_INSTALL = install_hint("eval")
BRANCHES = 16  # choices of one question decoded together, at most


@dataclass(frozen=True)
class Scored:
    """Log-probabilities of `tokens[start:]`, one per token, and whether each was the argmax.

    `top` holds, per token, the `top` most likely tokens at that position with their
    log-probabilities, when asked for.
    """

    logprobs: tuple[float, ...]
    greedy: tuple[bool, ...]
    top: tuple[tuple[tuple[int, float], ...], ...] = ()

    @property
    def total(self) -> float:
        return math.fsum(self.logprobs)

    @property
    def is_greedy(self) -> bool:
        return all(self.greedy)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """In float64: the sum over a 50k vocabulary loses digits in float32."""
    x = logits.astype(np.float64)
    top = x.max()
    result: np.ndarray = x - (top + math.log(np.exp(x - top).sum()))
    return result


def top_k(logprobs: np.ndarray, k: int) -> tuple[tuple[int, float], ...]:
    """The k most likely tokens, most likely first."""
    if k <= 0:
        return ()
    best = np.argpartition(-logprobs, k - 1)[:k]
    best = best[np.argsort(-logprobs[best], kind="stable")]
    return tuple((int(t), float(logprobs[t])) for t in best)


def scored(rows: Iterable[np.ndarray], targets: Sequence[int], top: int = 0) -> Scored:
    """Each target scored by the row of logits just before it.

    A row may be log-probabilities already: the log-softmax leaves those unchanged.
    """
    logprobs: list[float] = []
    greedy: list[bool] = []
    alternatives: list[tuple[tuple[int, float], ...]] = []
    for row, target in zip(rows, targets, strict=True):
        lp = log_softmax(row)
        logprobs.append(float(lp[target]))
        greedy.append(int(row.argmax()) == target)
        alternatives.append(top_k(lp, top))
    return Scored(tuple(logprobs), tuple(greedy), tuple(alternatives) if top else ())


def check_start(tokens: Sequence[int], start: int) -> None:
    """A token is scored from the tokens before it: the first scored one is token 1 or later."""
    if not tokens:
        raise UsageError("nothing to score: the text has no tokens; give it some text")
    if not 1 <= start <= len(tokens):
        raise UsageError(
            f"cannot score from token {start} of {len(tokens)}: start between 1 and "
            f"{len(tokens)}, after at least one token of context"
        )


def check_context(tokens: Sequence[int]) -> None:
    if not tokens:
        raise UsageError("nothing to continue from: give at least one token of context")


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Scorer(ABC):
    """Scores token sequences; tokenizes as the model does."""

    context: int = 0

    @abstractmethod
    def tokenize(self, text: str, add_special: bool = True) -> list[int]: ...

    @abstractmethod
    def score(self, tokens: Sequence[int], start: int, top: int = 0) -> Scored:
        """log P(tokens[i] | tokens[:i]) for i in start..len-1 (start >= 1), and the `top`
        alternatives at each of those positions."""

    @abstractmethod
    def piece(self, token: int) -> str:
        """The text of one token."""

    @abstractmethod
    def next_logprobs(self, tokens: Sequence[int]) -> np.ndarray:
        """log P(next token | tokens) over the whole vocabulary."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """The width of a row of logits."""

    @abstractmethod
    def bos(self) -> int | None:
        """The token the tokenizer puts first (`add_special`), or None when it adds none."""

    @abstractmethod
    def chunk_logits(self, tokens: Sequence[int], first: int) -> np.ndarray:
        """The raw logits (float32) at positions first..len-2, each scoring the next token,
        from an empty cache: one row per scored token, as llama-perplexity reads them.

        The rows may be a view of the engine's own buffer, valid until the next call.
        """

    def split(self, context: str, continuation: str) -> tuple[list[int], int]:
        """The tokens of context + continuation, and where the continuation's begin.

        As lm-evaluation-harness does: the whole text is tokenized at once and the
        continuation is what follows the context's own tokens; a space that ends the
        context moves to the continuation (" A" is one token, "A" after a space another).
        """
        if context.endswith(" ") and continuation and not continuation.startswith(" "):
            context, continuation = context[:-1], " " + continuation
        whole = self.tokenize(context + continuation)
        start = max(common_prefix(whole, self.tokenize(context)), 1)
        if len(whole) > self.context:
            raise PromptTooLongError(len(whole), self.context)
        return whole, start

    def loglikelihood(self, context: str, continuation: str) -> tuple[Scored, int]:
        """Score `continuation` after `context`; and how many tokens the continuation has."""
        whole, start = self.split(context, continuation)
        return self.score(whole, start), len(whole) - start

    def choices(self, context: str, continuations: Sequence[str]) -> list[Scored]:
        """Each continuation scored after one context.

        When every continuation is one token after the same context tokens (MMLU's
        " A" to " D"), one pass over the context gives all of them: the log-probability
        of each is read from the same next-token distribution.
        """
        pairs = [self.split(context, c) for c in continuations]
        heads = {tuple(whole[:start]) for whole, start in pairs}
        if len(heads) == 1 and all(len(whole) - start == 1 for whole, start in pairs):
            lp = self.next_logprobs(next(iter(heads)))
            best = int(lp.argmax())
            return [Scored((float(lp[w[-1]]),), (best == w[-1],)) for w, _ in pairs]
        if len(heads) == 1:
            head = list(next(iter(heads)))
            return self.branches(head, [whole[start:] for whole, start in pairs])
        return [self.score(whole, start) for whole, start in pairs]

    def branches(self, head: list[int], tails: list[list[int]]) -> list[Scored]:
        """Each tail scored after the same head tokens.

        One after another here, the head's KV kept between them; a scorer that can
        decode several sequences at once overrides this.
        """
        return [self.score(head + tail, len(head)) for tail in tails]

    def close(self) -> None:  # noqa: B027 - a scorer with nothing to free needs no override
        """Free the model."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# The backend of each engine, as "module:class": imported by `open_scorer` only when a model
# asks for it, as the engines' registry does (each backend imports this contract).
BACKENDS = {
    "llama.cpp": "scheda.evaluation.scorer_llamacpp:LlamaCppScorer",
    "transformers": "scheda.evaluation.scorer_transformers:TransformersScorer",
}


def open_scorer(path: Path, context: int | None = None, threads: int | None = None) -> Scorer:
    """The scorer for a model file or folder: llama.cpp for GGUF, transformers for HF."""
    from scheda.engines import engine_for

    module_name, class_name = BACKENDS[engine_for(path)].split(":")
    backend: Callable[[Path, int | None, int | None], Scorer] = getattr(
        importlib.import_module(module_name), class_name
    )
    return backend(path, context, threads)
