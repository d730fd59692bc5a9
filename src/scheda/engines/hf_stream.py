"""Streaming transformers' `generate`: one `StoppingCriteria` that sees every new token.

transformers' `model.generate` does not say by itself what scheda's engines
promise; `Watch` adds it, for every sample of a request at once:

- streaming: each sample's new text, decoded incrementally (a character split
  across tokens is held back until it is whole) and sent to `on_text(i, text)`
  for every sample, as llama.cpp does with `n` > 1;
- stop strings, matched on the decoded text like llama.cpp and the OpenAI
  API: the text stops before the stop string, and the text that might begin
  one is held back from the stream until it is decided;
- cancelling: when the event is set, generation ends after the current token;
- log-probabilities of the raw logits, read after `generate` returns;
- the answer: samples, finish reasons and timings as llama.cpp reports them.

It knows the model only through what the engine hands it: a decoder, the
end-of-text ids, a token's text, and the load time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch
import transformers

from scheda.engines.base import (
    Generation,
    OnText,
    Sample,
    Timings,
    TokenLogprob,
    held_back,
    stopwatch,
)
from scheda.sampling import Sampling

# A character is at most 4 UTF-8 bytes; byte-level tokenizers may split one over as many tokens.
HOLD_TOKENS = 4

Decode = Callable[[list[int]], str]  # token ids to text, special tokens left out


class _Sample:
    """One sample's tokens and text, decoded as they come (vLLM's incremental detokenizer)."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.prefix = 0  # decoding starts here, a few tokens back, so spaces come out right
        self.read = 0  # tokens before this one are in `text`
        self.text = ""  # decoded so far, stop strings not yet cut
        self.sent = 0  # characters of `text` sent to the stream
        self.finish: str | None = None
        self.cut = False  # ended by a stop string
        self.stop: str | None = None  # which
        self.logprobs: list[TokenLogprob] | None = None

    def new_text(self, decode: Decode, final: bool = False) -> str:
        before = decode(self.ids[self.prefix : self.read])
        after = decode(self.ids[self.prefix :])
        if not final and after.endswith("\ufffd") and len(self.ids) - self.read < HOLD_TOKENS:
            return ""  # a character is still arriving
        self.prefix, self.read = self.read, len(self.ids)
        return after[len(before) :]


class Watch(transformers.StoppingCriteria):
    """Sees each new token of every sample: streams it, stops at EOS, a stop string or cancel."""

    def __init__(
        self,
        sampling: Sampling,
        prompt_tokens: int,
        on_text: OnText | None,
        cancel: threading.Event | None,
        *,
        decode: Decode,
        eos: tuple[int, ...],
        piece: Callable[[int], str],
        load_s: float,
    ) -> None:
        self.decode = decode
        self.eos = eos
        self.piece = piece  # a token's text, as log-probabilities show it
        self.load_s = load_s
        self.stops = [s for s in sampling.stop if s]
        self.prompt_tokens = prompt_tokens
        self.on_text = on_text
        self.cancel = cancel
        self.samples = [_Sample() for _ in range(sampling.n)]
        self.cancelled = cancel is not None and cancel.is_set()
        self.elapsed = stopwatch()
        self.first_token_s = 0.0

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        if not self.first_token_s:
            self.first_token_s = self.elapsed()
        last = input_ids[:, -1].tolist()
        for i, (sample, token) in enumerate(zip(self.samples, last, strict=True)):
            if sample.finish is not None:
                continue
            if token in self.eos:
                sample.finish = "stop"
                continue
            sample.ids.append(int(token))
            sample.text += sample.new_text(self.decode)
            self._send(i, sample)
        if self.cancel is not None and self.cancel.is_set():
            self.cancelled = True
        done = [self.cancelled or s.finish is not None for s in self.samples]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]

    def _send(self, i: int, sample: _Sample, final: bool = False) -> None:
        """Send what is decided: text before any stop string, minus a possible stop's start."""
        end = len(sample.text)
        for stop in self.stops:
            at = sample.text.find(stop, max(0, sample.sent - len(stop) + 1))
            if 0 <= at < end:
                end, sample.stop = at, stop
        if end < len(sample.text):  # a stop string: the text ends before it
            sample.text, sample.finish, sample.cut = sample.text[:end], "stop", True
        elif not final:
            end -= held_back(sample.text, self.stops)
        if end > sample.sent:
            new, sample.sent = sample.text[sample.sent : end], end
            if self.on_text is not None:
                self.on_text(i, new)

    def add_logprobs(self, logits: tuple[torch.Tensor, ...], top: int) -> None:
        """Log-probabilities of the raw logits (before sampling), as llama.cpp reports them."""
        for i, sample in enumerate(self.samples):
            entries: list[TokenLogprob] = []
            for step, token in enumerate(sample.ids):
                if step >= len(logits):
                    break
                row = torch.log_softmax(logits[step][i].float(), dim=-1)
                values, ids = torch.topk(row, min(top, row.shape[-1]))
                entries.append(
                    TokenLogprob(
                        self.piece(token),
                        float(row[token]),
                        [
                            (self.piece(int(t)), float(v))
                            for v, t in zip(values.tolist(), ids.tolist(), strict=True)
                        ],
                    )
                )
            sample.logprobs = entries

    def result(self) -> Generation:
        for i, sample in enumerate(self.samples):
            if not sample.cut:  # what was held back is text after all
                sample.text += sample.new_text(self.decode, final=True)
                self._send(i, sample, final=True)
                if sample.finish is None:
                    sample.finish = "cancelled" if self.cancelled else "length"
        total = self.elapsed()
        samples = [
            Sample(s.text, s.finish or "length", len(s.ids), s.logprobs, stop_sequence=s.stop)
            for s in self.samples
        ]
        first = self.first_token_s
        decode_s = total - first
        # Decoding steps after the first, per second: one sample's rate, as llama.cpp reports.
        after_first = max(s.completion_tokens for s in samples) - 1
        timings = Timings(
            load_s=self.load_s,
            first_token_s=first,
            total_s=total,
            prompt_tokens_per_s=self.prompt_tokens / first if first > 0 else 0.0,
            tokens_per_s=after_first / decode_s if after_first > 0 and decode_s > 0 else 0.0,
        )
        return Generation(samples, self.prompt_tokens, timings)
