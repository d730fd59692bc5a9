"""The scorer for GGUF files: llama.cpp through llama-cpp-python's low-level API.

`open_scorer` (scorer.py, the contract) imports this module only for a GGUF; llama-cpp-python
itself loads when a scorer is made, so a missing install is one line naming the extra.
"""

from __future__ import annotations

import ctypes
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scheda import settings
from scheda.errors import EngineError, PromptTooLongError
from scheda.evaluation.scorer import (
    BRANCHES,
    EVAL_INSTALL,
    Scored,
    Scorer,
    check_context,
    check_start,
    common_prefix,
    log_softmax,
    scored,
)

BATCH = 512  # llama.cpp's default batch; smaller ones are for tests of what crosses one
# The longest block llama.cpp decodes a sequence in (LlamaCppScorer.blocks). A question's
# own tokens after its few-shot prefix (30 to 60 for MMLU) fit in one block, and a prefix
# without a blank line is decoded again from at most 63 tokens back. Measured on MMLU
# (5-shot, CPU time on one thread, a busy 2-core machine): 32, 64, 128 and 256 alike
# within the noise; against the 512-token batches before, 2% more time with 40 questions
# per subject (45.1 s against 46.2 s) and about 13% with 6: the few-shot prefix, decoded
# once per subject, costs more in blocks of 64 than in one batch.
BLOCK = 64


def tokenize(
    llama: Any, vocab: Any, text: str, add_special: bool, parse_special: bool
) -> list[int]:
    """A text's tokens in llama.cpp's vocabulary (`llama` the llama_cpp module)."""
    raw = text.encode("utf-8")
    room = len(raw) + 16
    while True:
        buffer = (llama.llama_token * room)()
        n = llama.llama_tokenize(vocab, raw, len(raw), buffer, room, add_special, parse_special)
        if n >= 0:
            return list(buffer[:n])
        room = -n  # too small: llama.cpp says how many it needs


def piece(llama: Any, vocab: Any, token: int, special: bool) -> bytes:
    """A token's bytes (maybe part of a UTF-8 character); a special token's text if `special`."""
    buffer = ctypes.create_string_buffer(128)
    n = llama.llama_token_to_piece(vocab, token, buffer, 128, 0, special)
    return buffer.raw[: max(n, 0)]


def groups(tails: list[list[int]], room: int) -> Iterator[list[list[int]]]:
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
        self.trained = trained if trained > 0 else self.context
        self.threads = threads or physical_cores()

    def handles(self) -> tuple[Any, Any, Any]:
        """The llama_cpp module and the loaded model's handles (model, vocabulary): what the
        batch generator (generation_llamacpp.py) needs to share this model."""
        return self._ll, self._model, self._vocab

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
        return tokenize(self._ll, self._vocab, text, add_special, parse_special=False)

    def piece(self, token: int) -> str:
        return piece(self._ll, self._vocab, token, special=True).decode("utf-8", errors="replace")

    def score(self, tokens: Sequence[int], start: int, top: int = 0) -> Scored:
        tokens = list(tokens)
        check_start(tokens, start)
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
        check_context(tokens)
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
        check_start(tokens, first + 1)
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
        for group in groups(tails, room):
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
