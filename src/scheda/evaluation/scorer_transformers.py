"""The scorer for HF folders: transformers' logits from one forward pass, the prefix's KV kept.

`open_scorer` (scorer.py, the contract) imports this module only for an HF folder; torch and
transformers load when a scorer is made or runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scheda.errors import PromptTooLongError
from scheda.evaluation.scorer import (
    BRANCHES,
    Scored,
    Scorer,
    check_context,
    check_start,
    common_prefix,
    log_softmax,
    scored,
)


class TransformersScorer(Scorer):
    """An HF folder in transformers: logits from one forward pass, the prefix's KV kept."""

    def __init__(self, path: Path, context: int | None = None, threads: int | None = None) -> None:
        from scheda.engines import open_model
        from scheda.engines.transformers import TransformersEngine

        engine = open_model(path, "transformers", context=context, threads=threads, warmup=False)
        assert isinstance(engine, TransformersEngine)  # what the "transformers" engine opens
        self.engine = engine
        self.context = self.engine.context
        self._past: list[int] = []
        self._cache: Any = None  # transformers' DynamicCache, made on the first pass

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return self.engine._encode(text, add_special)

    def piece(self, token: int) -> str:
        return self.engine.detokenize([token])

    def score(self, tokens: Sequence[int], start: int, top: int = 0) -> Scored:
        tokens = list(tokens)
        check_start(tokens, start)
        rows = self._rows(tokens, start - 1)[:-1]  # the last row scores no token
        return scored(rows, tokens[start:], top)

    def next_logprobs(self, tokens: Sequence[int]) -> np.ndarray:
        tokens = list(tokens)
        check_context(tokens)
        return log_softmax(self._rows(tokens, len(tokens) - 1)[-1])

    @property
    def vocab_size(self) -> int:
        return int(self.engine.model.get_output_embeddings().weight.shape[0])

    def bos(self) -> int | None:
        first = self.tokenize("a", True)
        return first[0] if len(first) > len(self.tokenize("a", False)) else None

    def chunk_logits(self, tokens: Sequence[int], first: int) -> np.ndarray:
        tokens = list(tokens)
        check_start(tokens, first + 1)
        self._past, self._cache = [], None  # a chunk starts from an empty cache
        return self._rows(tokens, first)[:-1]

    def branches(self, head: list[int], tails: list[list[int]]) -> list[Scored]:
        """Every tail after one head, in one forward pass per group of tails.

        The head runs once (its KV reused from the last call as far as it matches); its
        cache is repeated along the batch for the tails, which are padded at the end
        (a causal model never looks ahead, so the padding changes nothing before it),
        and cut back to the head afterwards.
        """
        from transformers import DynamicCache

        width = max(len(tail) for tail in tails) - 1
        if (
            not head
            or len(tails) < 2
            or any(not tail for tail in tails)
            or len(head) + width > self.context
        ):
            return super().branches(head, tails)
        after_head = log_softmax(self._rows(head, len(head) - 1)[-1])
        if not isinstance(self._cache, DynamicCache):
            return super().branches(head, tails)
        results: list[Scored] = []
        for begin in range(0, len(tails), BRANCHES):
            group = tails[begin : begin + BRANCHES]
            rows = self._tail_logits(group)
            results.extend(
                scored([after_head, *rows[i][: len(tail) - 1]], tail)
                for i, tail in enumerate(group)
            )
        return results

    def _tail_logits(self, tails: list[list[int]]) -> np.ndarray:
        """Logits at every token but the last of each tail, after the cached head."""
        import torch

        width = max(len(tail) for tail in tails) - 1
        if width == 0:
            return np.zeros((len(tails), 0, 0), dtype=np.float32)
        padded = [tail[:-1] + [tail[0]] * (width - len(tail) + 1) for tail in tails]
        ids = torch.tensor(padded, device=self.engine.device)
        cache = self._cache
        assert cache is not None
        cache.batch_repeat_interleave(len(tails))
        try:
            with torch.inference_mode():
                out = self.engine.model(input_ids=ids, cache=cache, use_cache=True)
            logits: np.ndarray = out.logits.float().cpu().numpy()
            return logits
        finally:
            cache.batch_select_indices(torch.tensor([0], device=self.engine.device))
            cache.crop(-width)

    def _rows(self, tokens: list[int], first: int) -> np.ndarray:
        """The logits at positions first..len-1, running only what the cache lacks."""
        import torch
        from transformers import DynamicCache

        if len(tokens) > self.context:
            raise PromptTooLongError(len(tokens), self.context)
        keep = min(common_prefix(self._past, tokens), first)
        if self._cache is None or keep == 0:
            self._cache, keep = DynamicCache(), 0
        elif (surplus := self._cache.get_seq_length() - keep) > 0:
            # A negative count removes that many tokens, in transformers 4 and 5 alike.
            self._cache.crop(-surplus)
        ids = torch.tensor([tokens[keep:]], device=self.engine.device)
        with torch.inference_mode():
            out = self.engine.model(
                input_ids=ids,
                cache=self._cache,
                use_cache=True,
                # Only the rows asked for: the vocabulary projection is the costly part.
                logits_to_keep=len(tokens) - first,
            )
        self._cache = out.cache
        self._past = tokens
        logits: np.ndarray = out.logits[0].float().cpu().numpy()
        return logits

    def close(self) -> None:
        self._cache = None
        self.engine.close()
