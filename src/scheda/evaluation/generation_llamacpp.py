"""Greedy answers for a GGUF, many at once, with the few-shot prefix held once.

The spec sheet's generated tasks (GSM8K 8-shot, BBH 3-shot chain of thought)
put every question after the same long prefix of worked examples. llama.cpp's
server gives each parallel slot cells of its own, so eight questions in flight
attend to eight copies of that prefix, and on a CPU that attention, not the
weights, is most of a step: its slots level off at about 1.4x one sequence
(docs/benchmarks.md, "The prefix's cells shared"). Here the prefix is decoded
once into a sequence of its own in one unified cache and copied to each question's
sequence (`llama_memory_seq_cp`: the same cells, tagged with one more id), and
attention runs as matrix products (flash attention off), so the questions'
queries over those shared cells make one larger product.

Decoding is llama.cpp's own: `llama_decode` over a batch holding the next token
of every answer in flight and the prompt tokens of those just admitted
(continuous batching, as llama.cpp's server does), the argmax of each row's
logits as the next token. The text, its stop strings and the finish reasons
follow llama.cpp's server: the end-of-generation token ends an answer
("stop") and is not part of it, the earliest stop string cuts the text where it
begins ("stop"), `max_tokens` new tokens end it ("length").

It is used for greedy decoding only (temperature 0, one sample, no penalties):
`BatchGenerator.handles` says whether a request's sampling is that; other
sampling goes to the engine's slots (evaluation/generation.py).
"""

from __future__ import annotations

import importlib.util
import time
from collections import deque
from collections.abc import Generator as Stream
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scheda.engines.base import Generation, Sample, Timings, first_stop
from scheda.errors import EngineError, PromptTooLongError
from scheda.evaluation.scorer import common_prefix
from scheda.evaluation.scorer_llamacpp import LlamaCppScorer, piece, tokenize
from scheda.sampling import Sampling

SHARED_PREFIX = "llama.cpp batch, prefix shared"
SLOTS = "engine slots"


def decoding(path: Path) -> str:
    """How a model's greedy answers are generated: on llama.cpp's batch API with the prefix
    shared (a GGUF, llama-cpp-python installed) or on the engine's slots. The two are not
    bit-identical, so it is part of a generated task's run configuration."""
    from scheda.engines import engine_for
    from scheda.sampling import LLAMA_CPP

    gguf = path.is_file() and engine_for(path) == LLAMA_CPP
    return SHARED_PREFIX if gguf and importlib.util.find_spec("llama_cpp") else SLOTS


BATCH = 512  # the most tokens one llama_decode takes: answers' next tokens and prompts' tails
PREFIXES = 2  # prefixes held at once: the next group's is decoded while the last one drains
# A group of prompts keeps its shared prefix while a new prompt leaves at least this much
# of it (or drops no more than SHORT tokens): BBH's subtasks each open a group of their own.
# A group of one prompt takes the next whatever they share (its prefix is that one prompt,
# not yet a prefix of anything), so that zero-shot prompts make one group, not one each.
KEEP = 0.5
SHORT = 32


@dataclass
class _Group:
    """Prompts that share one prefix, and where that prefix lives in the cache."""

    prefix: list[int]
    waiting: deque[int]  # prompt indices not yet admitted
    seq: int = -1  # the prefix's sequence id once decoded
    answering: int = 0  # admitted answers not yet finished


@dataclass
class _Answer:
    index: int
    group: _Group
    seq: int
    pending: list[int]  # prompt tokens not yet decoded
    position: int  # the next token's position
    prompt_tokens: int
    limit: int  # new tokens at most
    started: float
    raw: bytearray = field(default_factory=bytearray)
    tokens: int = 0
    last: int = -1  # the token to decode next, once the prompt is in


def groups_of(prompts: Sequence[list[int]]) -> list[_Group]:
    """Consecutive prompts in groups that share a long prefix (each leaving its last token
    to decode, whose logits give the first answer token)."""
    groups: list[_Group] = []
    for index, tokens in enumerate(prompts):
        head = tokens[: len(tokens) - 1]
        if groups:
            current = groups[-1]
            shared = common_prefix(current.prefix, head)
            kept = shared >= KEEP * len(current.prefix) or len(current.prefix) - shared <= SHORT
            if kept or len(current.waiting) == 1:
                current.prefix = current.prefix[:shared]
                current.waiting.append(index)
                continue
        groups.append(_Group(head, deque([index])))
    return groups


class BatchGenerator:
    """Greedy generations on a model loaded by llama-cpp-python (the scorer's), `width` at once.

    `llama` is the llama_cpp module, `model` and `vocab` its loaded model's handles.
    """

    def __init__(
        self, llama: Any, model: Any, vocab: Any, trained: int, width: int, threads: int
    ) -> None:
        self._ll = llama
        self._model = model
        self._vocab = vocab
        self.n_vocab = llama.llama_vocab_n_tokens(vocab)
        self.trained = trained
        self.width = max(1, width)
        self.threads = threads
        self.prefix_seconds = 0.0  # spent decoding prefixes, every call: benchmarks leave it out

    @classmethod
    def on(cls, scorer: LlamaCppScorer, width: int) -> BatchGenerator:
        """Greedy generations on the scorer's loaded model, `width` at once, in contexts of
        their own."""
        llama, model, vocab = scorer.handles()
        return cls(llama, model, vocab, scorer.trained, width, scorer.threads)

    @staticmethod
    def handles(sampling: Sampling) -> bool:
        """Whether this sampling is greedy decoding, which is all this generator does."""
        return (
            sampling.temperature == 0
            and sampling.n == 1
            and sampling.repeat_penalty in (0.0, 1.0)
            and sampling.frequency_penalty == 0
            and sampling.presence_penalty == 0
            and not sampling.logprobs
            and not sampling.ignore_eos
        )

    def tokenize(self, text: str) -> list[int]:
        """As llama.cpp's server tokenizes a prompt: the model's BOS added, special text parsed."""
        return tokenize(self._ll, self._vocab, text, add_special=True, parse_special=True)

    def generate(
        self, texts: Sequence[str], sampling: Sampling
    ) -> Stream[tuple[int, Generation], None, None]:
        """Each prompt's index with its greedy answer, as soon as that answer is done.

        A consumer that stops early frees the context at once (the generator's `finally`).
        """
        prompts = [self.tokenize(text) for text in texts]
        for tokens in prompts:
            if len(tokens) >= self.trained:
                raise PromptTooLongError(len(tokens), self.trained)
        if not prompts:
            return
        groups = groups_of(prompts)
        wanted = sampling.max_tokens or self.trained
        tails = max(len(p) - len(g.prefix) for g in groups for p in (prompts[i] for i in g.waiting))
        heads = sum(sorted((len(g.prefix) for g in groups), reverse=True)[:PREFIXES])
        # Cells for the prefixes and `width` answers at their longest, within the cells of
        # one context as long as the model's: fewer answers at once where they would not fit.
        each = min(tails + wanted, self.trained)
        width = max(1, min(self.width, (self.trained - heads - BATCH) // each))
        run = _Run(self, width, heads + width * each + BATCH, sampling.stop)
        try:
            yield from run.answers(prompts, groups, wanted)
        finally:
            run.close()


class _Run:
    """One context for one `generate` call: sequences 0..width-1 answer, the next ids hold
    prefixes."""

    def __init__(self, owner: BatchGenerator, width: int, cells: int, stops: list[str]) -> None:
        ll = owner._ll
        self.owner, self._ll = owner, ll
        self.stops = [s for s in stops if s]
        params = ll.llama_context_default_params()
        params.n_ctx = cells
        params.n_batch = params.n_ubatch = BATCH
        params.n_seq_max = width + PREFIXES
        params.kv_unified = True  # the prefix's cells shared by every sequence that copies it
        params.flash_attn_type = 0  # matrix products: one larger product over shared cells
        params.n_threads = params.n_threads_batch = owner.threads
        params.no_perf = True
        self.ctx = ll.llama_init_from_model(owner._model, params)
        if not self.ctx:
            raise EngineError(f"llama.cpp could not make a context of {cells} cells")
        self.memory = ll.llama_get_memory(self.ctx)
        self.batch = ll.llama_batch_init(BATCH, 0, 1)
        self.free_answers = list(range(width - 1, -1, -1))
        self.free_prefixes = list(range(width + PREFIXES - 1, width - 1, -1))

    def close(self) -> None:
        if self.ctx:
            self._ll.llama_batch_free(self.batch)
            self._ll.llama_free(self.ctx)
            self.ctx = None

    def _decode(self, rows: list[tuple[int, int, int, bool]]) -> None:
        """One llama_decode of (token, position, sequence, logits wanted) rows."""
        batch = self.batch
        batch.n_tokens = len(rows)
        for j, (token, position, seq, logits) in enumerate(rows):
            batch.token[j], batch.pos[j], batch.n_seq_id[j] = token, position, 1
            batch.seq_id[j][0], batch.logits[j] = seq, logits
        status = self._ll.llama_decode(self.ctx, batch)
        if status != 0:
            raise EngineError(f"llama.cpp could not decode {len(rows)} tokens ({status})")

    def _greedy(self, row: int) -> int:
        logits = self._ll.llama_get_logits_ith(self.ctx, row)
        return int(np.argmax(np.ctypeslib.as_array(logits, shape=(self.owner.n_vocab,))))

    def _open(self, group: _Group) -> bool:
        """Decode the group's prefix into a prefix sequence of its own, if one is free."""
        if group.seq >= 0:
            return True
        if not self.free_prefixes:
            return False
        group.seq = self.free_prefixes.pop()
        start = time.perf_counter()
        for at in range(0, len(group.prefix), BATCH):
            chunk = group.prefix[at : at + BATCH]
            self._decode([(t, at + i, group.seq, False) for i, t in enumerate(chunk)])
        self.owner.prefix_seconds += time.perf_counter() - start
        return True

    def _admit(self, prompts: list[list[int]], groups: deque[_Group], wanted: int) -> list[_Answer]:
        """Answers started on the free sequences, from the first groups' waiting prompts."""
        started = []
        while self.free_answers and groups:
            group = groups[0]
            if not group.waiting:
                groups.popleft()
                continue
            if not self._open(group):
                break
            index = group.waiting.popleft()
            tokens = prompts[index]
            seq = self.free_answers.pop()
            self._ll.llama_memory_seq_cp(self.memory, group.seq, seq, -1, -1)
            group.answering += 1
            limit = min(wanted, self.owner.trained - len(tokens))
            started.append(
                _Answer(
                    index,
                    group,
                    seq,
                    tokens[len(group.prefix) :],
                    len(group.prefix),
                    len(tokens),
                    limit,
                    time.perf_counter(),
                )
            )
        while groups and not groups[0].waiting:
            groups.popleft()
        return started

    def _release(self, answer: _Answer) -> None:
        self._ll.llama_memory_seq_rm(self.memory, answer.seq, -1, -1)
        self.free_answers.append(answer.seq)
        group = answer.group
        group.answering -= 1
        if not group.answering and not group.waiting:
            self._ll.llama_memory_seq_rm(self.memory, group.seq, -1, -1)
            self.free_prefixes.append(group.seq)
            group.seq = -1

    def answers(
        self, prompts: list[list[int]], group_list: list[_Group], wanted: int
    ) -> Iterator[tuple[int, Generation]]:
        groups = deque(group_list)
        active: list[_Answer] = []
        while active or groups:
            active += self._admit(prompts, groups, wanted)
            if not active:  # every prefix sequence held by a group with nothing in flight
                raise EngineError("the batch generator has prompts waiting and none it can start")
            rows: list[tuple[int, int, int, bool]] = []
            owners: list[_Answer] = []  # the answer whose next token each logits row gives
            for answer in active:  # answers already generating: one token each
                if not answer.pending:
                    rows.append((answer.last, answer.position, answer.seq, True))
                    owners.append(answer)
                    answer.position += 1
            for answer in active:  # then prompts' tails, as many tokens as the batch holds
                if not answer.pending or len(rows) == BATCH:
                    continue
                taken = answer.pending[: BATCH - len(rows)]
                answer.pending = answer.pending[len(taken) :]
                # The prompt's last token's logits give the answer's first token.
                last = len(taken) - 1 if not answer.pending else -1
                at, seq = answer.position, answer.seq
                rows += [(t, at + i, seq, i == last) for i, t in enumerate(taken)]
                answer.position += len(taken)
                if not answer.pending:
                    owners.append(answer)
            self._decode(rows)
            finished = []
            wanting = [j for j, row in enumerate(rows) if row[3]]
            for row, answer in zip(wanting, owners, strict=True):
                generation = self._step(answer, self._greedy(row))
                if generation is not None:
                    finished.append((answer, generation))
            for answer, generation in finished:
                active.remove(answer)
                self._release(answer)
                yield answer.index, generation

    def _step(self, answer: _Answer, token: int) -> Generation | None:
        """Take one generated token; the answer's Generation when this token ends it."""
        finish, stop = "", None
        if self._ll.llama_vocab_is_eog(self.owner._vocab, token):
            finish = "stop"
        else:
            answer.tokens += 1
            answer.raw += piece(self._ll, self.owner._vocab, token, special=False)
            answer.last = token
            if self.stops:
                found = first_stop(answer.raw.decode("utf-8", errors="ignore"), self.stops)
                if found is not None:
                    finish, stop = "stop", found[1]
            if not finish and answer.tokens >= answer.limit:
                finish = "length"
        if not finish:
            return None
        text = answer.raw.decode("utf-8", errors="ignore")
        if stop is not None:
            text = text[: text.find(stop)]
        total = time.perf_counter() - answer.started
        return Generation(
            [Sample(text, finish, answer.tokens, stop_sequence=stop)],
            answer.prompt_tokens,
            Timings(total_s=total, tokens_per_s=answer.tokens / total if total > 0 else 0.0),
            cached_tokens=len(answer.group.prefix),
        )
