"""How far a candidate's next-token distributions are from the reference's, token by token.

At each scored position the candidate's raw logits are set against the
reference's cached distribution (`logit_cache`). Per position:

- the candidate's negative log-likelihood of the actual next token (its
  perplexity, and the ratio to the reference's);
- the Kullback-Leibler divergence KL(reference || candidate) =
  sum p_ref * (log p_ref - log p_cand), over the tokens inside the
  reference's window, plus the tokens below it taken together as one
  outcome (their total probability on either side): exact where the
  candidate keeps the ratio of those tiny probabilities, a lower bound
  otherwise, and never more than the window's rounding away from the
  full sum (the tests hold it to an independent computation);
- whether the two most likely tokens are the same token;
- the change in the probability of the actual next token, Δp.

The summaries are llama-perplexity's: a mean with its uncertainty
sqrt(var / (n - 1)), the median, the 99th percentile (linear between ranks)
and the maximum of the KLD, the fraction of positions with the same top
token with sqrt(f(1 - f)/(n - 1)), and the RMS of Δp.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TypedDict

import numpy as np

from scheda.evaluation.logit_cache import (
    MIN_ROWS_PER_PART,
    SCALE,
    ReferenceChunk,
    log_normalizer,
)


class Estimate(TypedDict):
    """A figure and its standard uncertainty."""

    value: float
    uncertainty: float


class KldFigures(TypedDict):
    mean: float
    uncertainty: float
    median: float
    p99: float
    max: float


class ReferenceFigures(TypedDict):
    """The reference's own figures: its perplexity, and a ratio of 1 to itself."""

    tokens: int
    perplexity: Estimate
    perplexity_ratio: Estimate


class DivergenceFigures(ReferenceFigures):
    """A candidate's figures against the reference: `scheda compare`'s columns."""

    kld: KldFigures
    same_top: Estimate
    rms_delta_p: Estimate


@dataclass
class ChunkFigures:
    """Per scored position of one chunk."""

    nll: np.ndarray  # the candidate's -log p(next token)
    kld: np.ndarray
    same_top: np.ndarray  # bool
    delta_p: np.ndarray  # p_cand(next token) - p_ref(next token)


def compare_chunk(
    logits: np.ndarray, reference: ReferenceChunk, targets: np.ndarray
) -> ChunkFigures:
    """The candidate's raw logits (R, V) against the reference at the same R positions.

    With p the reference's kept probabilities and q the candidate's, over a row's kept
    tokens: sum p (log p - log q) = negentropy - sum p z + lse * mass, where z are the
    candidate's logits and lse their log-normalizer; the tail adds r log(r / q_tail).
    """
    count = len(targets)
    rows = np.arange(count)
    best, shifted, lse = log_normalizer(logits)
    nll = lse - logits[rows, targets].astype(np.float64)
    # The kept tokens' flat indices, found once: two gathers by index are much cheaper
    # than two boolean masks over the whole (R, V) array.
    inside = np.flatnonzero(reference.inside(logits.shape[1]))
    starts = reference.starts
    weights = SCALE[reference.codes]
    scale = reference.row_scale()
    p_dot_z = np.add.reduceat(weights * logits.ravel()[inside], starts) * scale
    kept = reference.negentropy - p_dot_z + lse * reference.mass
    # The candidate's probability below the reference's window: its whole sum less the
    # kept tokens' (both float64 sums of the same float32 exponentials).
    total = shifted.sum(axis=1, dtype=np.float64)
    kept_sum = np.add.reduceat(shifted.ravel()[inside].astype(np.float64), starts)
    cand_tail = np.clip((total - kept_sum) / total, 1e-300, 1.0)
    ref_tail = reference.tail
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = np.where(ref_tail > 0, ref_tail * np.log(ref_tail / cand_tail), 0.0)
    return ChunkFigures(
        nll=nll,
        kld=kept + tail,
        same_top=best == reference.argmax,
        delta_p=np.exp(-nll) - np.exp(-reference.nll),
    )


def compare_rows(
    logits: np.ndarray, reference: ReferenceChunk, targets: np.ndarray, parts: int | None = None
) -> ChunkFigures:
    """`compare_chunk` over row ranges in threads, one per core: numpy releases the GIL, and
    between two decodes the engine's threads are idle, so the comparison uses every core."""
    count = len(targets)
    parts = max(1, min(parts or os.cpu_count() or 1, count // MIN_ROWS_PER_PART))
    if parts == 1:
        return compare_chunk(logits, reference, targets)
    bounds = [count * i // parts for i in range(parts + 1)]
    ranges = list(pairwise(bounds))
    with ThreadPoolExecutor(max_workers=parts) as pool:
        done = list(
            pool.map(
                lambda r: compare_chunk(
                    logits[r[0] : r[1]], reference.rows(*r), targets[r[0] : r[1]]
                ),
                ranges,
            )
        )
    return ChunkFigures(
        nll=np.concatenate([d.nll for d in done]),
        kld=np.concatenate([d.kld for d in done]),
        same_top=np.concatenate([d.same_top for d in done]),
        delta_p=np.concatenate([d.delta_p for d in done]),
    )


def mean_and_uncertainty(values: np.ndarray) -> tuple[float, float]:
    """The mean and llama-perplexity's uncertainty of it: sqrt((E[x²] - E[x]²) / (n - 1))."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = float(np.mean(values))
    variance = float(np.mean(np.square(values))) - mean * mean
    return mean, math.sqrt(variance / (n - 1)) if variance > 0 and n > 10 else 0.0


def percentile(values: np.ndarray, fraction: float) -> float:
    """Linear between the nearest ranks, as llama-perplexity computes it."""
    return float(np.percentile(values, 100 * fraction, method="linear"))


@dataclass
class Figures:
    """Everything a candidate's row shows, from the per-position arrays of all chunks."""

    nll: list[np.ndarray] = field(default_factory=list)
    ref_nll: list[np.ndarray] = field(default_factory=list)
    kld: list[np.ndarray] = field(default_factory=list)
    same_top: list[np.ndarray] = field(default_factory=list)
    delta_p: list[np.ndarray] = field(default_factory=list)

    def add(self, figures: ChunkFigures, reference: ReferenceChunk) -> None:
        self.nll.append(figures.nll)
        self.ref_nll.append(reference.nll)
        self.kld.append(figures.kld)
        self.same_top.append(figures.same_top)
        self.delta_p.append(figures.delta_p)

    def summary(self) -> DivergenceFigures:
        nll = np.concatenate(self.nll)
        ref = np.concatenate(self.ref_nll)
        kld = np.concatenate(self.kld)
        same = np.concatenate(self.same_top).astype(np.float64)
        dp = np.concatenate(self.delta_p)
        n = len(nll)
        log_ppl, log_ppl_unc = mean_and_uncertainty(nll)
        log_ratio, log_ratio_unc = mean_and_uncertainty(nll - ref)
        kld_mean, kld_unc = mean_and_uncertainty(kld)
        mse, mse_unc = mean_and_uncertainty(dp * dp)
        rms = math.sqrt(mse)
        top = float(same.mean())
        ppl = math.exp(log_ppl)
        ratio = math.exp(log_ratio)
        return {
            "tokens": n,
            "perplexity": {"value": ppl, "uncertainty": ppl * log_ppl_unc},
            "perplexity_ratio": {"value": ratio, "uncertainty": ratio * log_ratio_unc},
            "kld": {
                "mean": kld_mean,
                "uncertainty": kld_unc,
                "median": float(np.median(kld)),
                "p99": percentile(kld, 0.99),
                "max": float(kld.max()),
            },
            "same_top": {
                "value": top,
                "uncertainty": math.sqrt(top * (1 - top) / (n - 1)) if n > 1 else 0.0,
            },
            "rms_delta_p": {
                "value": rms,
                "uncertainty": 0.5 / rms * mse_unc if rms > 0 else 0.0,
            },
        }


def reference_summary(nll: np.ndarray) -> ReferenceFigures:
    """The reference's own row: its perplexity; against itself every divergence is nil."""
    log_ppl, unc = mean_and_uncertainty(nll)
    ppl = math.exp(log_ppl)
    return {
        "tokens": len(nll),
        "perplexity": {"value": ppl, "uncertainty": ppl * unc},
        "perplexity_ratio": {"value": 1.0, "uncertainty": 0.0},
    }
