"""`scheda compare`: what a quantization (or an engine) costs against a reference, one table.

A row per model, the reference first. Each figure says how it was obtained
(`HOW`): read from the file, computed, or measured here.

- Read: the size on disk and the bits per weight (tensor bytes over
  parameters) from the file's header.
- Computed by `fit`: the memory the model takes at a context.
- Measured by `bench`: load time, pp512 and tg128, each model in a fresh
  process, round-robin over the rounds, medians (`bench.measure_models`).
- Computed from the logits, as llama-perplexity does: the text is tokenized
  once, cut into chunks of `context` tokens (the first of each replaced by
  BOS where the model adds one), and the second half of each chunk is
  scored, each token from every token before it in the chunk. Perplexity
  and its ratio to the reference; KL divergence, same top token and RMS Δp
  against the reference's distribution (`divergence`).
- Computed from stored `scheda eval` runs: the accuracy difference on the
  items both models answered, paired, and how many answers flip.

The reference runs once per text and context: its distributions go to the
logit cache (`logit_cache`), and each candidate is one pass over the same
chunks. A candidate may run on another engine (a GGUF against the HF folder
it came from) if both split the text into the same tokens and give logits
over the same vocabulary; otherwise the comparison stops with one line.

Every comparison is stored beside the evaluation runs, with the machine and
the versions that made it (`scheda compare list`, the studio's tab).

On Ray (`candidates_on_ray`, given a connected `ray` by `cluster`), each candidate's
pass is a Ray task of its own against the logit cache the driver wrote. A worker reads
the cache where the driver wrote it, so its folder must be one every node sees at the
same path (on one machine it is; on a cluster, a shared filesystem named by
SCHEDA_CACHE_DIR on every node). A task whose worker dies is run again by Ray.
"""

from __future__ import annotations

import hashlib
import math
import socket
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, Required, TypedDict

import numpy as np

from scheda import settings
from scheda.errors import ModelFileError, UsageError
from scheda.evaluation.divergence import (
    DivergenceFigures,
    Estimate,
    Figures,
    KldFigures,
    compare_rows,
    reference_summary,
)
from scheda.evaluation.logit_cache import STEP, WINDOW, LogitCache, ReferenceChunk, encode_rows
from scheda.evaluation.scorer import Scorer, open_scorer
from scheda.stores.evals import EvalStore

if TYPE_CHECKING:
    from scheda.measurement.bench import Machine

DEFAULT_TEXT = "gsm8k-test-60.txt"
DEFAULT_TEXT_ABOUT = (
    "the first 60 problems of GSM8K's test split with their worked answers (calculator "
    "annotations removed); MIT licence, OpenAI"
)

# How each figure is obtained: (read | computed | measured, how).
HOW: dict[str, tuple[str, str]] = {
    "size": ("read", "the file's size on disk (a folder: its weight files)"),
    "bits_per_weight": ("read", "tensor bytes x 8 / parameters, from the file's header"),
    "memory": (
        "computed",
        "fit's estimate at the memory context: weights, KV cache, compute and output buffers",
    ),
    "bench": (
        "measured",
        "scheda bench: load, pp512 and tg128, each model in a fresh process, round-robin, "
        "medians over the rounds",
    ),
    "perplexity": (
        "computed",
        "exp(mean negative log-likelihood) over the second half of each chunk, from the "
        "model's logits, as llama-perplexity scores them; ± its uncertainty",
    ),
    "perplexity_ratio": ("computed", "exp(mean of the per-token log-likelihood differences)"),
    "kld": (
        "computed",
        "KL(reference || model) per scored token: mean ± uncertainty, median, 99th "
        "percentile and maximum",
    ),
    "same_top": ("computed", "% of scored tokens whose most likely token is the reference's"),
    "rms_delta_p": ("computed", "RMS of the change in the probability of the actual next token"),
    "accuracy": (
        "computed",
        "stored scheda eval runs of both models, paired on their common items: the "
        "difference ± its standard error, and the answers that flip",
    ),
    "pass": ("measured", "tokens evaluated per second by this comparison's pass over the text"),
}


# The comparison record: made here, shown by `display.render_compare`, stored as JSON by the
# evaluation store, served whole by the studio's API. Keys and order are the JSON's.


class PassFigures(TypedDict):
    """One pass over the text: its timing, against its engine's own prompt rate."""

    tokens_evaluated: int
    tokens_scored: int
    seconds: float
    decode_seconds: float
    tokens_per_s: float | None
    decode_tokens_per_s: float | None
    prompt_tokens_per_s: float | None
    against_prompt_rate: float | None
    node: NotRequired[str]  # on Ray: the worker's host and CPUs
    threads: NotRequired[int]


class FileFacts(TypedDict):
    """The read and computed columns: from the file's header and fit's formulas."""

    name: str
    type: str | None
    size: int | None
    bits_per_weight: float | None
    parameters: int | None
    memory: int
    memory_context: int


class BenchFigures(TypedDict):
    """The measured columns: scheda bench's medians."""

    contender: str
    load_s: float
    pp512: float
    tg128: float
    runs: int
    detail: dict[str, Any]


class PairedAccuracy(TypedDict):
    """Two stored runs' accuracy on the items both answered, and the answers that flip."""

    metric: str
    reference: float
    candidate: float
    delta: float
    stderr: float | None
    items: int
    gained: int
    lost: int


class AccuracyDelta(PairedAccuracy):
    task: str
    run: str
    reference_run: str


# "pass" is a keyword: the functional form. Only what every row has is required; the
# divergence figures are a candidate's, bench and accuracy there when asked for.
ComparisonRow = TypedDict(
    "ComparisonRow",
    {
        "role": Required[str],  # "reference" or "candidate"
        "path": Required[str],
        "engine": Required[str],
        "tokens": int,
        "perplexity": Estimate,
        "perplexity_ratio": Estimate,
        "kld": KldFigures,
        "same_top": Estimate,
        "rms_delta_p": Estimate,
        "pass": PassFigures | None,  # None: a reference cache written without its timing
        "cached": bool,
        "name": str,
        "type": str | None,
        "size": int | None,
        "bits_per_weight": float | None,
        "parameters": int | None,
        "memory": int,
        "memory_context": int,
        "bench": BenchFigures,
        "accuracy": AccuracyDelta | None,
    },
    total=False,
)


class ComparisonText(TypedDict):
    name: str
    about: str
    sha256: str
    tokens: int
    chunks: int
    scored: int


class CacheFacts(TypedDict):
    key: str
    bytes: int
    how: str


class How(TypedDict):
    kind: str  # read | computed | measured
    how: str


class Comparison(TypedDict):
    """`scheda compare`'s record: what it shows, stores and the studio serves."""

    created: float
    reference: str
    text: ComparisonText
    context: int
    memory_context: int
    bench_runs: int
    cache: CacheFacts
    how: dict[str, How]
    machine: Machine
    rows: list[ComparisonRow]
    id: NotRequired[str]  # set when stored


@dataclass(frozen=True)
class Text:
    """The text the models are scored on."""

    name: str
    content: str
    about: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content.encode("utf-8")).hexdigest()


def load_text(path: Path | None) -> Text:
    """`--text FILE` (any UTF-8 file), or the text scheda ships."""
    if path is None:
        content = resources.files("scheda").joinpath("texts", DEFAULT_TEXT).read_text("utf-8")
        return Text(DEFAULT_TEXT, content, DEFAULT_TEXT_ABOUT)
    try:
        content = Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError as exc:
        raise UsageError(f"--text {path}: no such file") from exc
    except IsADirectoryError as exc:
        raise UsageError(f"--text {path}: a folder: give a UTF-8 text file") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"--text {path}: not UTF-8 text (byte {exc.start}): give a UTF-8 file"
        ) from exc
    return Text(Path(path).name, content, str(path))


def check_model(path: Path) -> str:
    """The engine a model runs on here; a file that is no GGUF fails now, in one line."""
    if path.is_file():
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise ModelFileError(
                    f"{path}: not a GGUF file (it does not start with GGUF's magic): give a "
                    ".gguf file or an HF model folder"
                )
        return "llama.cpp"
    if path.is_dir() and (path / "config.json").is_file():
        return "transformers"
    raise ModelFileError(f"{path}: not a GGUF file or an HF model folder")


@dataclass(frozen=True)
class Chunks:
    """The text cut as llama-perplexity cuts it."""

    tokens: list[int]  # the whole text, tokenized with the model's specials
    context: int
    bos: int | None

    @property
    def count(self) -> int:
        return len(self.tokens) // self.context

    @property
    def first(self) -> int:
        """The last position not scored: the second half of a chunk is scored."""
        return self.context // 2

    @property
    def scored(self) -> int:
        return self.count * (self.context - 1 - self.first)

    def chunk(self, index: int) -> list[int]:
        start = index * self.context
        tokens = self.tokens[start : start + self.context]
        if self.bos is not None:
            tokens[0] = self.bos  # as llama-perplexity does at the start of every chunk
        return tokens

    def targets(self, index: int) -> np.ndarray:
        return np.asarray(self.chunk(index)[self.first + 1 :], dtype=np.int64)


def cut(tokens: list[int], context: int, bos: int | None, text: Text) -> Chunks:
    chunks = Chunks(tokens, context, bos)
    if chunks.count < 2:
        raise UsageError(
            f"the text {text.name} is {len(tokens):,} tokens: shorter than two chunks of "
            f"--context {context} ({2 * context:,} tokens); give a longer --text or a "
            "smaller --context"
        )
    return chunks


Progress = Callable[[str, int, int], None]  # what, done, total


def _quiet(what: str, done: int, total: int) -> None:
    return None


def reference_pass(
    scorer: Scorer,
    cache: LogitCache,
    chunks: Chunks,
    meta: dict[str, Any],
    progress: Progress,
    threads: int | None = None,
) -> None:
    """One pass of the reference over the chunks, its distributions into the cache; the
    rows encoded on `threads` threads (every core when None), as llama.cpp decodes."""
    timing = {"seconds": 0.0, "decode_seconds": 0.0}

    def encoded() -> Iterator[ReferenceChunk]:
        started = time.perf_counter()
        for index in range(chunks.count):
            progress("reference", index, chunks.count)
            begin = time.perf_counter()
            logits = scorer.chunk_logits(chunks.chunk(index), chunks.first)
            timing["decode_seconds"] += time.perf_counter() - begin
            yield encode_rows(logits, chunks.targets(index), threads)
            timing["seconds"] = time.perf_counter() - started
        timing["prompt_tokens_per_s"] = prompt_rate(scorer, chunks.chunk(0))
        progress("reference", chunks.count, chunks.count)

    tokens = np.asarray(chunks.tokens, dtype=np.int32)
    cache.write(tokens, encoded(), lambda: {**meta, "pass": _pass_figures(chunks, timing)})


def _pass_figures(chunks: Chunks, timing: dict[str, float]) -> PassFigures:
    evaluated = chunks.count * chunks.context
    seconds = timing["seconds"]
    decode = timing["decode_seconds"]
    prompt = timing.get("prompt_tokens_per_s")
    rate = evaluated / seconds if seconds else None
    return {
        "tokens_evaluated": evaluated,
        "tokens_scored": chunks.scored,
        "seconds": seconds,
        "decode_seconds": decode,
        "tokens_per_s": rate,
        "decode_tokens_per_s": evaluated / decode if decode else None,
        # The goal (llama-perplexity's arithmetic: a pass costs a prompt's decode): >= 0.8.
        "prompt_tokens_per_s": prompt,
        "against_prompt_rate": rate / prompt if rate and prompt else None,
    }


def check_vocabulary(
    candidate: Scorer, name: str, reference: str, plain: list[int], vocab: int, text: Text
) -> None:
    """The candidate splits the text into the reference's tokens, over the same vocabulary."""
    mine = candidate.tokenize(text.content, add_special=False)
    if mine != plain:
        at = next((i for i, (a, b) in enumerate(zip(mine, plain, strict=False)) if a != b), None)
        at = min(len(mine), len(plain)) if at is None else at
        raise UsageError(
            f"{name} and {reference} do not share a vocabulary: they split the text "
            f"differently from token {at:,} on; compare models with one tokenizer"
        )
    if candidate.vocab_size != vocab:
        raise UsageError(
            f"{name} and {reference} do not share a vocabulary: logits over "
            f"{candidate.vocab_size:,} tokens against {vocab:,}; compare models with one tokenizer"
        )


def _same_vocabulary_size(models: list[Path]) -> None:
    """Refuse, before any pass, the candidates whose files declare another vocabulary size.

    A cheap read of each spec; `check_vocabulary` still checks, after loading, that the
    tokens themselves agree."""
    from scheda.readers import read_spec

    sizes = [read_spec(p).vocab_size for p in models]
    for path, size in zip(models[1:], sizes[1:], strict=True):
        if size and sizes[0] and size != sizes[0]:
            raise UsageError(
                f"{path.name} and {models[0].name} do not share a vocabulary: {size:,} tokens "
                f"against {sizes[0]:,}; compare models with one tokenizer"
            )


def candidate_pass(
    scorer: Scorer,
    cache: LogitCache,
    chunks: Chunks,
    progress: Progress,
    label: str,
    threads: int | None = None,
) -> tuple[DivergenceFigures, PassFigures]:
    """One pass of a candidate over the chunks, against the cached reference; the rows
    compared on `threads` threads (every core when None): a Ray task's own CPUs."""
    figures = Figures()
    timing = {"seconds": 0.0, "decode_seconds": 0.0}
    started = time.perf_counter()
    for index in range(chunks.count):
        progress(label, index, chunks.count)
        begin = time.perf_counter()
        logits = scorer.chunk_logits(chunks.chunk(index), chunks.first)
        timing["decode_seconds"] += time.perf_counter() - begin
        reference = cache.chunk(index)
        figures.add(compare_rows(logits, reference, chunks.targets(index), threads), reference)
    timing["seconds"] = time.perf_counter() - started
    progress(label, chunks.count, chunks.count)
    timing["prompt_tokens_per_s"] = prompt_rate(scorer, chunks.chunk(0))
    return figures.summary(), _pass_figures(chunks, timing)


PROMPT_RATE_RUNS = 2


def prompt_rate(scorer: Scorer, tokens: Sequence[int]) -> float:
    """The engine's own prompt rate, as the pass's yardstick: one chunk decoded from an empty
    cache with only its last position's logits (pp512 at the default context), the best of
    PROMPT_RATE_RUNS, in the pass's own process and engine."""
    best = math.inf
    for _ in range(PROMPT_RATE_RUNS):
        begin = time.perf_counter()
        scorer.chunk_logits(tokens, len(tokens) - 2)
        best = min(best, time.perf_counter() - begin)
    return len(tokens) / best


@dataclass(frozen=True)
class Candidate:
    """One candidate's pass against the cached reference: here, or on a Ray worker."""

    path: Path
    engine: str
    reference: str  # the reference's name, for the vocabulary check's message

    def row(
        self,
        cache: LogitCache,
        chunks: Chunks,
        vocab: int,
        text: Text,
        threads: int | None,
        progress: Progress = _quiet,
    ) -> ComparisonRow:
        """The candidate's row of the table: its divergence figures and its pass's timing."""
        plain = chunks.tokens[1:] if chunks.bos is not None else chunks.tokens
        scorer = open_scorer(self.path, chunks.context, threads)
        try:
            check_vocabulary(scorer, self.path.name, self.reference, plain, vocab, text)
            summary, timing = candidate_pass(
                scorer, cache, chunks, progress, self.path.name, threads
            )
        finally:
            scorer.close()
        return {
            "role": "candidate",
            "path": str(self.path),
            "engine": self.engine,
            **summary,
            "pass": timing,
        }


def _reference_nll(cache: LogitCache, count: int) -> np.ndarray:
    return np.concatenate([cache.chunk(i).nll for i in range(count)])


# The read and computed columns ------------------------------------------------------------


def file_facts(path: Path, memory_context: int) -> FileFacts:
    """Size, type and bits per weight from the file; memory from fit's formulas."""
    from scheda.formulas.fit import estimate
    from scheda.readers import read_spec

    spec = read_spec(path)
    size = spec.file_size
    if path.is_dir():
        size = sum(p.stat().st_size for p in path.glob("*.safetensors"))
    breakdown = estimate(spec, "file" if spec.tensor_bytes else "FP16/BF16", memory_context)
    return {
        "name": spec.name,
        "type": spec.file_type or _folder_type(spec),
        "size": size,
        "bits_per_weight": spec.bits_per_weight,
        "parameters": spec.parameters,
        "memory": breakdown.total,
        "memory_context": memory_context,
    }


def _folder_type(spec: Any) -> str | None:
    types = sorted(spec.quantization)
    return "/".join(types) if types else None


def bench_models(
    paths: list[tuple[str, Path]], runs: int, threads: int | None, progress: Callable[[str], None]
) -> list[BenchFigures]:
    """load, pp512, tg128 per model: scheda bench's workers, round-robin (`bench`)."""
    from scheda.measurement.bench import measure_models

    targets = [("scheda" if engine == "llama.cpp" else "transformers", p) for engine, p in paths]
    results = measure_models(targets, runs, threads, progress)
    return [
        {
            "contender": r.contender,
            "load_s": r.load_s,
            "pp512": r.pp_tokens_per_s,
            "tg128": r.tg_tokens_per_s,
            "runs": r.runs,
            "detail": r.detail,
        }
        for r in results
    ]


# Accuracy from stored evaluation runs -------------------------------------------------------


def _finished_runs(store: EvalStore, path: Path) -> list[Any]:
    here = str(path.resolve())
    return [
        r for r in store.runs() if r.finished is not None and str(Path(r.path).resolve()) == here
    ]


def _shots(config: dict[str, Any]) -> Any:
    return config.get("shots")


def accuracy_delta(store: EvalStore, reference: Path, candidate: Path) -> AccuracyDelta | None:
    """The newest pair of finished runs (same task and shots) of both models, paired by item."""
    mine = _finished_runs(store, candidate)
    theirs = _finished_runs(store, reference)
    for run in mine:  # newest first
        match = next(
            (r for r in theirs if r.task == run.task and _shots(r.config) == _shots(run.config)),
            None,
        )
        if match is None:
            continue
        figure = _paired(store.results(match.id), store.results(run.id))
        if figure is not None:
            return {"task": run.task, "run": run.id, "reference_run": match.id, **figure}
    return None


def _paired(reference: list[Any], candidate: list[Any]) -> PairedAccuracy | None:
    theirs = {r.key: r for r in reference}
    pairs = [(theirs[r.key], r) for r in candidate if r.key in theirs]
    if not pairs:
        return None
    metric = next(iter(pairs[0][0].metrics))
    diffs = [c.metrics.get(metric, 0.0) - r.metrics.get(metric, 0.0) for r, c in pairs]
    n = len(diffs)
    mean = math.fsum(diffs) / n
    stderr = statistics.stdev(diffs) / math.sqrt(n) if n > 1 else None
    return {
        "metric": metric,
        "reference": math.fsum(r.metrics.get(metric, 0.0) for r, _ in pairs) / n,
        "candidate": math.fsum(c.metrics.get(metric, 0.0) for _, c in pairs) / n,
        "delta": mean,
        "stderr": stderr,
        "items": n,
        "gained": sum(1 for d in diffs if d > 0),
        "lost": sum(1 for d in diffs if d < 0),
    }


def run_evals(
    store: EvalStore,
    paths: list[Path],
    tasks: list[str],
    limit: int | None,
    data: Path | None,
    threads: int | None,
    progress: Callable[[str], None],
    ray: Any = None,
    workers: int | None = None,
) -> None:
    """`--tasks`: run (or resume, or find done) `scheda eval` on every model, stored as usual;
    with `ray`, each run's items dealt out to Ray workers as `eval --ray` deals them."""
    from scheda.evaluation.base import EvalModel
    from scheda.evaluation.runner import make_task, run_task

    for name in tasks:
        for path in paths:
            task = make_task(name, None, limit, data)
            progress(f"{name} on {path.name}")
            model = EvalModel(path, None, 4, threads)
            try:
                if ray is None:
                    run_task(task, model, store, path.name)
                else:
                    from scheda.evaluation.distributed import run_on_ray

                    run_on_ray(ray, task, str(path), model, store, workers)
            finally:
                model.close()


# The comparison -----------------------------------------------------------------------------


def run_compare(
    reference: Path,
    candidates: list[Path],
    text: Text,
    context: int = settings.COMPARE_CHUNK,
    memory_context: int = settings.DEFAULT_CONTEXT,
    bench_runs: int = 3,
    threads: int | None = None,
    store: EvalStore | None = None,
    tasks: list[str] | None = None,
    limit: int | None = None,
    data: Path | None = None,
    progress: Progress = _quiet,
    step: Callable[[str], None] = lambda _: None,
    ray: Any = None,
    workers: int | None = None,
) -> Comparison:
    """Compare every candidate with the reference; the record `scheda compare` shows and stores.

    `bench_runs` 0 leaves the bench columns out. With `ray` (connected, see `cluster`),
    the candidates' passes run on Ray workers, at most `workers` at once, and `--tasks`
    runs are dealt out as `eval --ray` deals them; the bench columns are measured here,
    one model at a time, as without Ray (speed measured beside other work means little).
    """
    models = [reference, *candidates]
    engines = [check_model(p) for p in models]
    if len({p.resolve() for p in models}) < len(models):
        raise UsageError("a model is named twice: give each candidate once, none the reference")
    _same_vocabulary_size(models)
    cache = LogitCache(reference, engines[0], text.sha256, context)
    chunks, meta = _reference(reference, engines[0], cache, text, context, threads, progress, step)
    rows: list[ComparisonRow] = [
        {
            "role": "reference",
            "path": str(reference),
            "engine": engines[0],
            **reference_summary(_reference_nll(cache, chunks.count)),
            "pass": meta.get("pass"),
            "cached": meta.get("cached", False),
        }
    ]
    passes = [
        Candidate(path, engine, reference.name)
        for path, engine in zip(candidates, engines[1:], strict=True)
    ]
    if ray is None:
        for candidate in passes:
            step(f"loading {candidate.path.name} ({candidate.engine})")
            rows.append(candidate.row(cache, chunks, meta["vocab"], text, threads, progress))
    else:
        step(f"{len(passes)} candidates on Ray workers")
        rows.extend(
            candidates_on_ray(
                ray, passes, cache, chunks, meta["vocab"], text, threads, progress, workers
            )
        )
    for row, path in zip(rows, models, strict=True):
        row.update(file_facts(path, memory_context))
    if bench_runs:
        measured = bench_models(list(zip(engines, models, strict=True)), bench_runs, threads, step)
        for row, figures in zip(rows, measured, strict=True):
            row["bench"] = figures
    if store is not None:
        if tasks:
            run_evals(store, models, tasks, limit, data, threads, step, ray, workers)
        for row, path in zip(rows[1:], candidates, strict=True):
            row["accuracy"] = accuracy_delta(store, reference, path)
    return _record(rows, text, chunks, cache, context, memory_context, bench_runs)


def _reference(
    path: Path,
    engine: str,
    cache: LogitCache,
    text: Text,
    context: int,
    threads: int | None,
    progress: Progress,
    step: Callable[[str], None],
) -> tuple[Chunks, dict[str, Any]]:
    """The reference's chunks and cache: read back, or made by one pass now."""
    if cache.complete:
        meta = cache.meta()
        chunks = Chunks([int(t) for t in cache.tokens()], context, meta["bos"])
        return chunks, {**meta, "cached": True}
    step(f"loading {path.name} ({engine}), the reference")
    scorer = open_scorer(path, context, threads)
    try:
        chunks = cut(scorer.tokenize(text.content, add_special=True), context, scorer.bos(), text)
        meta = {
            "model": str(path),
            "engine": engine,
            "text": {"name": text.name, "sha256": text.sha256},
            "context": context,
            "vocab": scorer.vocab_size,
            "bos": chunks.bos,
            "chunks": chunks.count,
            "window_nats": WINDOW,
            "step_nats": STEP,
        }
        reference_pass(scorer, cache, chunks, meta, progress, threads)
    finally:
        scorer.close()
    return chunks, {**cache.meta(), "cached": False}


def _record(
    rows: list[ComparisonRow],
    text: Text,
    chunks: Chunks,
    cache: LogitCache,
    context: int,
    memory_context: int,
    bench_runs: int,
) -> Comparison:
    from scheda.measurement.bench import machine

    return {
        "created": time.time(),
        "reference": rows[0]["path"],
        "text": {
            "name": text.name,
            "about": text.about,
            "sha256": text.sha256,
            "tokens": len(chunks.tokens),
            "chunks": chunks.count,
            "scored": chunks.scored,
        },
        "context": context,
        "memory_context": memory_context,
        "bench_runs": bench_runs,
        "cache": {
            "key": cache.key,
            "bytes": cache.size(),
            "how": (
                f"the reference's tokens within {WINDOW:g} nats of its top token, log-"
                f"probabilities as 16-bit fixed point (step {STEP:.2g} nats), a bitmask of "
                "which tokens they are, the rest as one total probability"
            ),
        },
        "how": {k: {"kind": kind, "how": how} for k, (kind, how) in HOW.items()},
        "machine": machine(),
        "rows": rows,
    }


# -- a comparison's candidates -----------------------------------------------------------------


def candidates_on_ray(
    ray: Any,
    candidates: list[Candidate],
    cache: LogitCache,
    chunks: Chunks,
    vocab: int,
    text: Text,
    threads: int | None,
    progress: Progress,
    workers: int | None = None,
) -> list[ComparisonRow]:
    """Each candidate's row, its pass run on a Ray worker, at most `workers` at once.

    A worker takes `threads` CPUs (1 when not given: the candidates run side by side) and
    runs llama.cpp on as many threads. The rows come back in the candidates' order.
    """
    cpus = threads or 1
    remote = ray.remote(num_cpus=cpus)(candidate_row)
    waiting = deque(enumerate(candidates))
    running: dict[Any, int] = {}
    rows: dict[int, ComparisonRow] = {}
    while waiting or running:
        while waiting and len(running) < (workers or len(candidates)):
            index, candidate = waiting.popleft()
            progress(candidate.path.name, 0, chunks.count)
            # A worker's working folder is not the driver's: the path made absolute.
            there = replace(candidate, path=candidate.path.resolve())
            call = remote.remote(there, cache, chunks, vocab, text, cpus)
            running[call] = index
        [ready], _ = ray.wait(list(running), num_returns=1)
        index = running.pop(ready)
        try:
            row: ComparisonRow = ray.get(ready)
        except ray.exceptions.RayTaskError as exc:
            from scheda.evaluation.distributed import worker_error

            raise worker_error(exc) from None
        rows[index] = {**row, "path": str(candidates[index].path)}  # as the user named it
        progress(candidates[index].path.name, chunks.count, chunks.count)
    return [rows[i] for i in range(len(candidates))]


def candidate_row(
    candidate: Candidate, cache: LogitCache, chunks: Chunks, vocab: int, text: Text, threads: int
) -> ComparisonRow:
    """On a worker: the candidate's row, after checking that this node sees what it needs."""
    host = socket.gethostname()
    if not candidate.path.exists():
        raise UsageError(
            f"{candidate.path} is not on the Ray node {host}: every node needs the "
            "candidates at the same path"
        )
    if not cache.complete:
        raise UsageError(
            f"the reference's logit cache {cache.folder} is not on the Ray node {host}: give "
            "every node the same cache folder (SCHEDA_CACHE_DIR on a shared filesystem)"
        )
    row = candidate.row(cache, chunks, vocab, text, threads)
    timing = row["pass"]
    assert timing is not None  # a candidate's row always times its pass
    row["pass"] = {**timing, "node": host, "threads": threads}
    return row
