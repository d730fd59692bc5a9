"""What every evaluation task is: items, one result per item, metrics aggregated with errors.

A task lists its items (each with a key that stays the same run to run, so
that an interrupted run resumes where it stopped), and turns items into
results through the model: log-likelihoods from the `Scorer`, or generated
text from the `Engine`. The runner stores each result as it comes, and the
report aggregates the metrics: the mean and its standard error, as the
published spec sheets give them.
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from scheda.engines.base import Engine
from scheda.evaluation.scorer import Scorer, open_scorer

if TYPE_CHECKING:
    from scheda.evaluation.generation_llamacpp import BatchGenerator


@dataclass(frozen=True)
class Item:
    """One question of a task. `key` is unique within the task and stable across runs."""

    key: str
    data: dict[str, Any]
    group: str = ""  # MMLU's subject, for per-group averages; "" when a task has none


@dataclass
class ItemResult:
    key: str
    metrics: dict[str, float]  # e.g. {"acc": 1.0, "acc_norm": 0.0}; each in [0, 1]
    detail: dict[str, Any] = field(default_factory=dict)  # what was asked and answered
    group: str = ""


class EvalModel:
    """The model under evaluation: a scorer and an engine, each opened on first use."""

    def __init__(
        self,
        path: Path,
        context: int | None = None,
        parallel: int = 4,
        threads: int | None = None,
        engine: str | None = None,
        shared_prefix: bool = True,
    ) -> None:
        self.path = path
        self.shared_prefix = shared_prefix  # False: generated answers on the engine's slots
        self.context = context
        self.parallel = parallel
        self.threads = threads
        self.engine_name = engine
        self._scorer: Scorer | None = None
        self._engine: Engine | None = None
        self._generator: BatchGenerator | None = None
        self._generator_sought = False
        self._lock = threading.Lock()

    @property
    def scorer(self) -> Scorer:
        with self._lock:
            if self._scorer is None:
                self._scorer = open_scorer(self.path, self.context, self.threads)
            return self._scorer

    @property
    def engine(self) -> Engine:
        """For generation; llama.cpp with `parallel` slots so concurrent prompts decode together."""
        from scheda import engines

        with self._lock:
            if self._engine is None:
                self._engine = engines.open_model(
                    self.path,
                    self.engine_name,
                    context=self.context,
                    threads=self.threads,
                    parallel=self.parallel,
                )
            return self._engine

    def generator(self) -> BatchGenerator | None:
        """Greedy generation with the few-shot prefix held once, on the scorer's model: for a
        GGUF on llama.cpp with llama-cpp-python installed; None where generated answers go
        to the engine's parallel slots instead (an HF folder, another engine, no
        llama-cpp-python)."""
        if not self._generator_sought:
            self._generator, self._generator_sought = self._open_generator(), True
        return self._generator

    def _open_generator(self) -> BatchGenerator | None:
        from scheda.evaluation.generation_llamacpp import SHARED_PREFIX, BatchGenerator, decoding
        from scheda.sampling import LLAMA_CPP

        if not self.shared_prefix or self.engine_name not in (None, LLAMA_CPP):
            return None
        if decoding(self.path) != SHARED_PREFIX:
            return None
        from scheda.evaluation.scorer_llamacpp import LlamaCppScorer

        scorer = self.scorer
        return (
            BatchGenerator.on(scorer, self.parallel) if isinstance(scorer, LlamaCppScorer) else None
        )

    def close(self) -> None:
        if self._scorer is not None:
            self._scorer.close()
        if self._engine is not None:
            self._engine.close()


# Called once per finished item; the runner stores it and moves the progress bar.
OnResult = Callable[[ItemResult], None]


class Task(ABC):
    """A benchmark: its items and how one is scored."""

    name: str = "task"
    metrics: tuple[str, ...] = ("acc",)  # the first is the headline figure
    output: str = "loglikelihood"  # or "generate"
    version: int = 1  # a registered task's is its entry's in evaluation/tasks.py

    def __init__(self, shots: int = 0, limit: int | None = None) -> None:
        self.shots = shots
        self.limit = limit

    @classmethod
    def made(cls, shots: int, limit: int | None, data: Path | None, samples: int) -> Self:
        """The task as `scheda eval` makes it from its options; a task that reads data or
        draws samples says how."""
        return cls(shots, limit)

    @abstractmethod
    def items(self) -> list[Item]:
        """The scored items, in a fixed order (the first `limit` when a limit is set)."""

    @abstractmethod
    def run(self, items: list[Item], model: EvalModel) -> Iterator[ItemResult]:
        """Score the items (any order), yielding each result as soon as it is known."""

    def config(self) -> dict[str, Any]:
        """What makes two runs comparable: kept with the run, shown in the report."""
        return {"shots": self.shots, "limit": self.limit}


@dataclass
class Aggregate:
    metric: str
    value: float  # mean over items, in [0, 1]
    stderr: float  # standard error of the mean
    n: int


def aggregate(values: Iterable[float], metric: str) -> Aggregate:
    """Mean and its standard error (sample standard deviation / sqrt(n)), as lm-eval reports."""
    xs = list(values)
    n = len(xs)
    if n == 0:
        return Aggregate(metric, float("nan"), float("nan"), 0)
    mean = math.fsum(xs) / n
    if n < 2:
        return Aggregate(metric, mean, float("nan"), n)
    variance = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
    return Aggregate(metric, mean, math.sqrt(variance / n), n)
