"""Exact log-likelihoods: log P(token | everything before it), for every token asked.

This is what multiple-choice benchmarks are scored by (lm-evaluation-harness's
`loglikelihood`): the sum over a continuation's tokens, and whether each was
the model's own greedy choice. Two implementations, held against each other
by the tests:

- `LlamaCppScorer`, for GGUF files: llama.cpp through llama-cpp-python's
  low-level API (`llama_decode`, `llama_get_logits_ith`). It asks llama.cpp
  for the logits of exactly the positions it needs and takes the log-softmax
  itself, in float64. (llama-cpp-python's `create_completion(echo=True)`
  returns prompt log-probabilities shifted by one position, its issue #1983:
  never used here.)
- `TransformersScorer`, for HF folders: one forward pass over the tokens.

Both keep the KV cache of the last sequence and reuse its longest common
prefix with the next one, so a few-shot prefix shared by many questions and
choices is evaluated once. Callers sort their requests so that sequences
sharing a prefix come one after another.

llama.cpp's figures for a sequence are a function of its tokens alone, bit for
bit, whatever was scored before it (so a run dealt out to several workers, or
resumed, gives the figures of one uninterrupted run): see `LlamaCppScorer`.
"""

from __future__ import annotations

import ctypes
import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np

from scheda import settings
from scheda.errors import EngineError, PromptTooLongError, UsageError

EVAL_INSTALL = "`make install-eval` (or `pip install 'scheda[eval]'`)"
BRANCHES = 16  # choices of one question decoded together, at most
BATCH = 512  # llama.cpp's default batch; smaller ones are for tests of what crosses one
# The longest block llama.cpp decodes a sequence in (LlamaCppScorer.blocks). A question's
# own tokens after its few-shot prefix (30 to 60 for MMLU) fit in one block, and a prefix
# without a blank line is decoded again from at most 63 tokens back. Measured on MMLU
# (5-shot, CPU time on one thread, a busy 2-core machine): 32, 64, 128 and 256 alike
# within the noise; against the 512-token batches before, 2% more time with 40 questions
# per subject (45.1 s against 46.2 s) and about 13% with 6: the few-shot prefix, decoded
# once per subject, costs more in blocks of 64 than in one batch.
BLOCK = 64


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


def _check_start(tokens: Sequence[int], start: int) -> None:
    """A token is scored from the tokens before it: the first scored one is token 1 or later."""
    if not tokens:
        raise UsageError("nothing to score: the text has no tokens; give it some text")
    if not 1 <= start <= len(tokens):
        raise UsageError(
            f"cannot score from token {start} of {len(tokens)}: start between 1 and "
            f"{len(tokens)}, after at least one token of context"
        )


def _check_context(tokens: Sequence[int]) -> None:
    if not tokens:
        raise UsageError("nothing to continue from: give at least one token of context")


def _groups(tails: list[list[int]], room: int) -> Iterator[list[list[int]]]:
    """Tails in runs of at most BRANCHES whose decoded tokens fit in `room`.

    A tail's last token is scored, never decoded. A tail alone over `room` forms a
    run of its own, for the caller to score another way.
    """
    group: list[list[int]] = []
    size = 0
    for tail in tails:
        need = len(tail) - 1
        if group and (size + need > room or len(group) == BRANCHES):
            yield group
            group, size = [], 0
        group.append(tail)
        size += need
    if group:
        yield group


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


class LlamaCppScorer(Scorer):
    """A GGUF file in llama.cpp, through llama-cpp-python's ctypes bindings.

    Every figure is a function of the sequence's own tokens, bit for bit. llama.cpp's
    result for a token depends on more than the tokens: on the batch it was decoded in
    (its CPU kernels change with the number of rows, and a row's place among them) and
    on the cache it attended to (which cells hold which positions). Reusing whatever the
    last call left would make an item's figures depend on the item before it. So a
    sequence is decoded in blocks whose ends depend on its tokens alone (`blocks`: after
    a blank line, or after `block` tokens), and of the last call's cache only the whole
    blocks it shares with this sequence are kept: each was decoded from the same tokens,
    in the same batch, after the same cells, as this sequence decoded alone would decode
    it. The cache then holds exactly cells 0..keep-1 (llama.cpp's `seq_rm` moves the
    search for free cells back to the first cell it frees), so the rest goes to the same
    cells too. A few-shot prefix ends with a blank line, so the questions that share it
    still decode it once.
    """

    def __init__(
        self,
        path: Path,
        context: int | None = None,
        threads: int | None = None,
        batch: int = BATCH,
    ) -> None:
        try:
            import llama_cpp
        except ImportError as exc:
            raise EngineError(
                f"scoring a GGUF needs llama-cpp-python, which is not installed: run {EVAL_INSTALL}"
            ) from exc
        from scheda.formulas.hardware import physical_cores

        self._ll = llama_cpp
        self.path = Path(path)
        _silence(llama_cpp)
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        self._model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), model_params)
        if not self._model:
            raise EngineError(f"{self.path}: llama.cpp could not load the model")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        trained = llama_cpp.llama_model_n_ctx_train(self._model)
        wanted = settings.context_for(context, trained or None)
        self.context = min(wanted, trained) if trained > 0 else wanted
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.context
        params.n_batch = params.n_ubatch = batch
        # Sequence 0 holds the shared head; 1..BRANCHES the choices decoded together after
        # it. One unified cache: a copied head is the same cells, tagged with more ids.
        params.n_seq_max = 1 + BRANCHES
        params.kv_unified = True
        # llama.cpp computes a batch of one token on `n_threads`, and its CPU flash attention
        # then splits the cache among the threads (from 512 cells on): the sums come out in
        # another order on another thread count. One thread for those keeps every figure
        # the same whatever `threads` is; a batch of several tokens gives the same bits on
        # any thread count, and a one-token batch is rare here (a sequence's last block).
        params.n_threads = 1
        params.n_threads_batch = threads or physical_cores()
        params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            raise EngineError(f"{self.path}: llama.cpp could not make a context")
        self.n_batch = batch  # the most tokens one llama_decode takes
        self.block = BLOCK
        self._blank, self._newline, self._lone_newline = self._newlines()
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._past: list[int] = []  # the tokens whose KV the context holds, in order
        # The last `score` call: its tokens, `top`, and each row's (logprob, greedy, top).
        self._scored: list[int] = []
        self._scored_first = self._scored_top = 0
        self._scores: dict[int, tuple[float, bool, tuple[tuple[int, float], ...]]] = {}

    def _newlines(self) -> tuple[frozenset[int], frozenset[int], frozenset[int]]:
        """The tokens whose text holds a blank line, those that end with a newline, and
        those that are one newline: what `blocks` needs to see a paragraph end."""
        buffer = ctypes.create_string_buffer(256)
        blank, ending, lone = set(), set(), set()
        for token in range(self.n_vocab):
            n = self._ll.llama_token_to_piece(self._vocab, token, buffer, 256, 0, False)
            piece = buffer.raw[: max(n, 0)]
            if b"\n\n" in piece:
                blank.add(token)
            if piece.endswith(b"\n"):
                ending.add(token)
            if piece == b"\n":
                lone.add(token)
        return frozenset(blank), frozenset(ending), frozenset(lone)

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        raw = text.encode("utf-8")
        room = len(raw) + 16
        while True:
            buffer = (self._ll.llama_token * room)()
            n = self._ll.llama_tokenize(
                self._vocab, raw, len(raw), buffer, room, add_special, False
            )
            if n >= 0:
                return list(buffer[:n])
            room = -n  # too small: llama.cpp says how many it needs

    def piece(self, token: int) -> str:
        buffer = ctypes.create_string_buffer(64)
        n = self._ll.llama_token_to_piece(self._vocab, token, buffer, 64, 0, True)
        return buffer.raw[: max(n, 0)].decode("utf-8", errors="replace")

    def score(self, tokens: Sequence[int], start: int, top: int = 0) -> Scored:
        tokens = list(tokens)
        _check_start(tokens, start)
        if len(tokens) > self.context:
            raise PromptTooLongError(len(tokens), self.context)
        first, cuts = start - 1, self.blocks(tokens)
        resume = self._recalled(tokens, cuts, first, top)
        # Each row is read before the next decode overwrites llama.cpp's logits.
        rows = (row for _, row in self._rows(tokens, resume, len(tokens) - 2, cuts))
        fresh = scored(rows, tokens[resume + 1 :], top)
        recalled = [self._scores[p] for p in range(first, resume)]
        entries = recalled + list(
            zip(fresh.logprobs, fresh.greedy, fresh.top or ((),) * len(fresh.logprobs), strict=True)
        )
        self._scores = dict(enumerate(entries, start=first))
        self._scored, self._scored_first, self._scored_top = tokens, first, top
        return Scored(
            tuple(e[0] for e in entries),
            tuple(e[1] for e in entries),
            tuple(e[2] for e in entries) if top else (),
        )

    def _recalled(self, tokens: list[int], cuts: list[int], first: int, top: int) -> int:
        """Where decoding must start for rows first..: `first`, or a later cut where the
        last `score` call's figures stand for the rows before it.

        That call scored rows `first`.. too, of a sequence that begins as this one does. A
        row of a whole block that the two share was decoded from the same tokens, in the
        same batch with the same rows asked for, after the same cells (the class
        docstring): its bits are those a decode now would give, and if it scores the same
        next token its figures are recalled instead (echo's choices of one question share
        all but their last tokens). Decoding then starts at the first block not recalled,
        its cache kept before it, as `_rows` keeps whole shared blocks.
        """
        if top != self._scored_top or first != self._scored_first or not self._scores:
            return first
        cached = common_prefix(self._past, tokens)
        # Rows before this one score the same next token; that call scored every row to
        # its sequence's end, so all of them are recalled.
        same_targets = common_prefix(self._scored, tokens) - 1
        limit = min(cached, same_targets)
        return max((c for c in cuts if first <= c <= limit), default=first)

    def next_logprobs(self, tokens: Sequence[int]) -> np.ndarray:
        tokens = list(tokens)
        _check_context(tokens)
        if len(tokens) >= self.context:
            raise PromptTooLongError(len(tokens) + 1, self.context)
        [(_, row)] = list(self._rows(tokens, len(tokens) - 1, len(tokens) - 1))
        return log_softmax(row)

    @property
    def vocab_size(self) -> int:
        return int(self.n_vocab)

    def bos(self) -> int | None:
        if not self._ll.llama_vocab_get_add_bos(self._vocab):
            return None
        return int(self._ll.llama_vocab_bos(self._vocab))

    def chunk_logits(self, tokens: Sequence[int], first: int) -> np.ndarray:
        tokens = list(tokens)
        if len(tokens) > self.context:
            raise PromptTooLongError(len(tokens), self.context)
        _check_start(tokens, first + 1)
        self._ll.llama_memory_seq_rm(self._memory, 0, 0, -1)
        self._past = []
        parts = []
        for begin in range(0, len(tokens), self.n_batch):
            chunk = tokens[begin : begin + self.n_batch]
            wanted = self._decode(chunk, begin, first_logit=first, last_logit=len(tokens) - 2)
            self._past.extend(chunk)
            if wanted:
                # The rows asked for, in batch order, one block in llama.cpp's buffer.
                rows = np.ctypeslib.as_array(
                    self._ll.llama_get_logits(self._ctx), shape=(len(wanted), self.n_vocab)
                )
                more = begin + self.n_batch < len(tokens)
                parts.append(rows.copy() if more else rows)
        # Decoded in whole batches, not blocks: nothing of it may be reused by `_rows`.
        self._past = []
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def branches(self, head: list[int], tails: list[list[int]]) -> list[Scored]:
        """Every tail after one head, decoded together: the choices of one question.

        The head is decoded once into sequence 0 (its KV reused from the last call as
        far as it matches). The distribution after it scores each tail's first token.
        The tails' other tokens go into one `llama_decode`, each tail in a sequence of
        its own that starts as a copy of the head, as many tails at a time as the batch
        and the cache hold.
        """
        if not head or any(not tail for tail in tails):
            return super().branches(head, tails)
        after_head = self.next_logprobs(head)
        room = min(self.n_batch, self.context - len(head))  # a batch, and the cache's free cells
        results: list[Scored] = []
        for group in _groups(tails, room):
            if sum(len(tail) - 1 for tail in group) > room:
                # One tail too long for a batch beside the head: the plain path chunks it.
                results.extend(self.score(head + tail, len(head)) for tail in group)
            else:
                results.extend(self._decode_branches(head, group, after_head))
        return results

    def _decode_branches(
        self, head: list[int], tails: list[list[int]], after_head: np.ndarray
    ) -> list[Scored]:
        ll, batch, at = self._ll, self._batch, len(head)
        index = 0
        rows_at: list[list[int]] = []  # per tail, the batch indices whose logits score it
        for seq, tail in enumerate(tails, start=1):
            ll.llama_memory_seq_cp(self._memory, 0, seq, 0, at)
            rows_at.append([])
            for offset, token in enumerate(tail[:-1]):
                self._put(index, token, at + offset, seq, True)
                rows_at[-1].append(index)
                index += 1
        batch.n_tokens = index
        try:
            if index and ll.llama_decode(self._ctx, batch) != 0:
                raise EngineError(f"llama.cpp could not evaluate {index} tokens of choices")
            return [
                scored([after_head, *(self._logits(i) for i in rows)], tail)
                for tail, rows in zip(tails, rows_at, strict=True)
            ]
        finally:
            for seq in range(1, len(tails) + 1):
                ll.llama_memory_seq_rm(self._memory, seq, -1, -1)

    def _put(self, index: int, token: int, position: int, seq: int, logits: bool) -> None:
        """Entry `index` of the batch: a token at a position of one sequence."""
        batch = self._batch
        batch.token[index] = token
        batch.pos[index] = position
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = seq
        batch.logits[index] = logits

    def _logits(self, index: int) -> np.ndarray:
        """The logits of batch entry `index` in the last decode (a view, not a copy)."""
        return np.ctypeslib.as_array(
            self._ll.llama_get_logits_ith(self._ctx, index), shape=(self.n_vocab,)
        )

    def _rows(
        self, tokens: list[int], first: int, last: int, cuts: list[int] | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """The logits at positions first..last, decoding only what the cache lacks.

        The KV of the whole blocks shared with the previous call is kept (see the class);
        decoding restarts at `first`'s block at the latest: logits are not kept between
        calls.
        """
        cuts = self.blocks(tokens) if cuts is None else cuts  # `score` has them already
        shared = min(common_prefix(self._past, tokens), first)
        keep = max(cut for cut in cuts if cut <= shared)
        self._ll.llama_memory_seq_rm(self._memory, 0, keep, -1)
        self._past = tokens[:keep]
        for begin, end in itertools.pairwise(cuts):
            if begin < keep:
                continue
            chunk = tokens[begin:end]
            wanted = self._decode(chunk, begin, first_logit=first, last_logit=last)
            self._past.extend(chunk)
            for index, position in wanted:
                yield position, self._logits(index)

    def blocks(self, tokens: Sequence[int]) -> list[int]:
        """Where the blocks a sequence is decoded in begin, and its length: 0, ..., len.

        A block ends after a blank line, and otherwise `block` tokens after it, then
        `block` more, then twice as many each time (up to a batch): where one ends depends
        on the tokens before that point alone, so two sequences cut the prefix they share
        into the same blocks. A few-shot prefix ends with a blank line, so the questions
        that share it keep all of its cache; a shared prefix without one is decoded again
        from its last cut, near the blank line or at most half way back; a long text is
        decoded in long batches, which llama.cpp computes faster.
        """
        cuts, paragraph, before = [0], 0, -1
        for position, token in enumerate(tokens, start=1):
            # The next block is as long as the paragraph so far: block, block, 2 x block...
            size = min(max(self.block, cuts[-1] - paragraph), self.n_batch)
            if token in self._blank or (token in self._lone_newline and before in self._newline):
                cuts.append(position)
                paragraph = position
            elif position - cuts[-1] == size:
                cuts.append(position)
            before = token
        if cuts[-1] != len(tokens):
            cuts.append(len(tokens))
        return cuts

    def _decode(
        self, chunk: list[int], at: int, first_logit: int, last_logit: int
    ) -> list[tuple[int, int]]:
        """Decode one batch of tokens at positions at..; (batch index, position) with logits."""
        batch = self._batch
        wanted = []
        for i, token in enumerate(chunk):
            position = at + i
            out = first_logit <= position <= last_logit
            self._put(i, token, position, 0, out)
            if out:
                wanted.append((i, position))
        batch.n_tokens = len(chunk)
        status = self._ll.llama_decode(self._ctx, batch)
        if status != 0:
            self._past = []
            self._ll.llama_memory_seq_rm(self._memory, 0, 0, -1)
            raise EngineError(f"llama.cpp could not evaluate {len(chunk)} tokens ({status})")
        return wanted

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            self._ll.llama_batch_free(self._batch)
            self._ll.llama_free(self._ctx)
            self._ll.llama_model_free(self._model)
            self._ctx = None


_LOG_CALLBACK = None


def _silence(llama_cpp: object) -> None:
    """llama.cpp logs every load to stderr; an evaluation's progress bar needs it quiet."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is None:
        ll = llama_cpp
        _LOG_CALLBACK = ll.llama_log_callback(lambda level, text, data: None)  # type: ignore[attr-defined]
        ll.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))  # type: ignore[attr-defined]


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
        _check_start(tokens, start)
        rows = self._rows(tokens, start - 1)[:-1]  # the last row scores no token
        return scored(rows, tokens[start:], top)

    def next_logprobs(self, tokens: Sequence[int]) -> np.ndarray:
        tokens = list(tokens)
        _check_context(tokens)
        return log_softmax(self._rows(tokens, len(tokens) - 1)[-1])

    @property
    def vocab_size(self) -> int:
        return int(self.engine.model.get_output_embeddings().weight.shape[0])

    def bos(self) -> int | None:
        first = self.tokenize("a", True)
        return first[0] if len(first) > len(self.tokenize("a", False)) else None

    def chunk_logits(self, tokens: Sequence[int], first: int) -> np.ndarray:
        tokens = list(tokens)
        _check_start(tokens, first + 1)
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


def open_scorer(path: Path, context: int | None = None, threads: int | None = None) -> Scorer:
    """The scorer for a model file or folder: llama.cpp for GGUF, transformers for HF."""
    from scheda.engines import engine_for

    if engine_for(path) == "llama.cpp":
        return LlamaCppScorer(path, context, threads)
    return TransformersScorer(path, context, threads)
