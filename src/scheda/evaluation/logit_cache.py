"""The reference model's next-token distributions, kept on disk so that it runs once per text.

`scheda compare` scores every candidate against the reference's distribution
at each scored position. Computing it is one pass of the reference over the
text; this cache keeps what the comparison needs, keyed by the reference
model (its file and size and modification time, its engine), the text
(sha256) and the context, so each further candidate (today's or next
week's) costs one pass of its own.

What is kept, per scored position (one row):

- the exact figures: the reference's log-probability of the actual next
  token (float64), its most likely token (int32), and the log-probability
  of that token (float64);
- its distribution, compactly: every token within `WINDOW` (16) nats of the
  most likely one, as llama-perplexity's `--kl-divergence-base` file keeps
  it, but stored sparsely. A bitmask says which tokens they are (one bit per
  vocabulary entry) and a uint16 each holds its log-probability as a fixed
  point number below the top: `top - 16 + code * 16/65535`. The step is
  16/65535 = 2.4e-4 nats, so each kept probability is within 1.2e-4 of its
  value, relative. The tokens below the window (each under e^-16 of the
  top) are kept as one number, their total probability (float64), so the
  stored distribution still sums to one.

For the embedded 135M model about a third of its 49,152 tokens fall inside
the window: a row takes about 38 KB against 196 KB for float32 logits.

A cache is written into a hidden folder and renamed when every chunk is in
it, so an interrupted reference pass leaves nothing that could be read back.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from scheda import settings

WINDOW = 16.0  # nats below the most likely token, as llama-perplexity keeps
STEP = WINDOW / 65535
FORMAT = 1  # bumped when what a cache holds changes: an old one is not read


# exp(code * STEP) for every code: a kept probability is its row's exp(top - WINDOW) times
# this, a table lookup instead of an exponential per token.
# Below this many rows a thread costs more than it saves (encode_rows, compare_rows).
MIN_ROWS_PER_PART = 32
ARRAYS = ("nll", "argmax", "top", "mask", "counts", "codes", "mass", "negentropy")
SCALE = np.exp(np.arange(65536, dtype=np.float64) * STEP)


@dataclass
class ReferenceChunk:
    """The reference at the scored positions of one chunk (R rows, a vocabulary of V)."""

    nll: np.ndarray  # (R,) float64: -log p(actual next token)
    argmax: np.ndarray  # (R,) int32: the most likely token
    top: np.ndarray  # (R,) float64: its log-probability
    mask: np.ndarray  # (R, ceil(V/8)) uint8: the tokens inside the window, packed bits
    counts: np.ndarray  # (R,) int32: how many tokens each row keeps
    codes: np.ndarray  # (K,) uint16: their log-probabilities, row by row, in token order
    mass: np.ndarray  # (R,) float64: the kept probabilities' sum (the rest is the tail)
    negentropy: np.ndarray  # (R,) float64: sum of p log p over the kept tokens

    @property
    def tail(self) -> np.ndarray:
        """The probability of the tokens below the window, together."""
        return np.clip(1.0 - self.mass, 0.0, 1.0)

    @property
    def starts(self) -> np.ndarray:
        """Where each row's codes begin."""
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)

    def inside(self, vocab: int) -> np.ndarray:
        """(R, V) bool: the tokens each row keeps."""
        return np.unpackbits(self.mask, axis=1, count=vocab).view(bool)

    def row_scale(self) -> np.ndarray:
        """exp(top - WINDOW): a kept probability is this times SCALE[code]."""
        return np.exp(self.top - WINDOW)

    def rows(self, first: int, stop: int) -> ReferenceChunk:
        """The rows first..stop-1 alone (views where the arrays allow)."""
        ends = np.cumsum(self.counts)
        low = int(ends[first - 1]) if first else 0
        high = int(ends[stop - 1]) if stop else 0
        return ReferenceChunk(
            nll=self.nll[first:stop],
            argmax=self.argmax[first:stop],
            top=self.top[first:stop],
            mask=self.mask[first:stop],
            counts=self.counts[first:stop],
            codes=self.codes[low:high],
            mass=self.mass[first:stop],
            negentropy=self.negentropy[first:stop],
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in ARRAYS}


def log_normalizer(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: the most likely token, exp(logits - its logit) and log(sum(exp(logits))).

    The exponentials are float32, their sum float64.
    """
    best = logits.argmax(axis=1)
    largest = logits[np.arange(len(best)), best]
    shifted = np.subtract(logits, largest[:, None])
    np.exp(shifted, out=shifted)  # in place: one (R, V) array, not two
    lse = largest.astype(np.float64) + np.log(shifted.sum(axis=1, dtype=np.float64))
    return best, shifted, lse


def encode(logits: np.ndarray, targets: np.ndarray) -> ReferenceChunk:
    """One chunk of the reference's raw logits (R, V) as the cache keeps it."""
    rows = np.arange(len(targets))
    best, _, lse = log_normalizer(logits)
    largest = logits[rows, best]
    below = largest[:, None] - logits  # >= 0: nats below the most likely token
    inside = below < WINDOW
    codes = np.rint((WINDOW - below[inside]) / STEP).astype(np.uint16)
    counts = inside.sum(axis=1).astype(np.int32)
    top = largest - lse
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    # The sums are over the rounded values, so the kept distribution and its tail add up
    # to one exactly as stored.
    scale = np.exp(top - WINDOW)
    p = SCALE[codes]
    logp = np.repeat(top - WINDOW, counts) + codes * STEP
    return ReferenceChunk(
        nll=lse - logits[rows, targets].astype(np.float64),
        argmax=best.astype(np.int32),
        top=top,
        mask=np.packbits(inside, axis=1),
        counts=counts,
        codes=codes,
        mass=np.add.reduceat(p, starts) * scale,
        negentropy=np.add.reduceat(p * logp, starts) * scale,
    )


def encode_rows(
    logits: np.ndarray, targets: np.ndarray, parts: int | None = None
) -> ReferenceChunk:
    """`encode` over row ranges in threads, one per core (numpy releases the GIL), joined
    into the one chunk `encode` would make: every row is encoded on its own."""
    count = len(targets)
    parts = max(1, min(parts or os.cpu_count() or 1, count // MIN_ROWS_PER_PART))
    if parts == 1:
        return encode(logits, targets)
    bounds = [count * i // parts for i in range(parts + 1)]
    with ThreadPoolExecutor(max_workers=parts) as pool:
        done = list(
            pool.map(lambda r: encode(logits[r[0] : r[1]], targets[r[0] : r[1]]), pairwise(bounds))
        )
    return ReferenceChunk(
        **{name: np.concatenate([getattr(d, name) for d in done]) for name in ARRAYS}
    )


def model_identity(path: Path) -> dict[str, Any]:
    """What makes a model the same model to the cache: its path, sizes and times."""
    path = path.resolve()
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return {"path": str(path), "files": stats}


class LogitCache:
    """One reference's distributions over one text at one context, in a folder of its own."""

    def __init__(self, model: Path, engine: str, text_sha256: str, context: int) -> None:
        key = json.dumps(
            [FORMAT, model_identity(model), engine, text_sha256, context], sort_keys=True
        )
        self.key = hashlib.sha256(key.encode()).hexdigest()[:32]
        self.folder = settings.cache_dir() / "logits" / self.key

    @property
    def complete(self) -> bool:
        return (self.folder / "meta.json").is_file()

    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = json.loads((self.folder / "meta.json").read_text(encoding="utf-8"))
        return meta

    def tokens(self) -> np.ndarray:
        tokens: np.ndarray = np.load(self.folder / "tokens.npy")
        return tokens

    def chunk(self, index: int) -> ReferenceChunk:
        with np.load(self.folder / f"chunk-{index:05d}.npz") as data:
            return ReferenceChunk(**{k: data[k] for k in data.files})

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.folder.iterdir()) if self.complete else 0

    def write(
        self,
        tokens: np.ndarray,
        chunks: Iterable[ReferenceChunk],
        meta: Callable[[], dict[str, Any]],
    ) -> None:
        """Write every chunk into a hidden folder, then `meta()` (asked once the chunks are
        written), then give the folder the cache's name."""
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        staging = self.folder.parent / f".{self.key}.{secrets.token_hex(4)}"
        staging.mkdir()
        try:
            np.save(staging / "tokens.npy", tokens)
            for index, chunk in enumerate(chunks):
                np.savez(staging / f"chunk-{index:05d}.npz", **chunk.arrays())  # type: ignore[arg-type]
            (staging / "meta.json").write_text(json.dumps(meta(), indent=1), encoding="utf-8")
            if self.folder.exists():  # another process made it meanwhile: the same content
                shutil.rmtree(self.folder)
            os.replace(staging, self.folder)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
