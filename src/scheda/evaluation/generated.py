"""What the generated-answer tasks share: fixed exemplars, greedy decoding, each answer scored.

SQuAD, QuAC, DROP and MATH each build a prompt from a prefix of solved
exemplars, the same for every question (so llama.cpp reuses its cache for
it), and the question; the model answers greedily until a stop sequence or
`max_tokens`; the task scores the text. The exemplars are drawn once from the
train split with a fixed seed (MATH's are Minerva's own four), and the run
config names them, with the stops and the token limit, so that two runs are
comparable only when they asked the same thing.

Prompts go to the engine's parallel slots together (evaluation/generation.py).
"""

from __future__ import annotations

import random
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

from scheda.errors import UsageError
from scheda.evaluation.base import EvalModel, Item, ItemResult, Task
from scheda.evaluation.generation import generate_all
from scheda.evaluation.tasks import TASKS
from scheda.sampling import Sampling

SEED = 1234  # the exemplars' draw, as lm-eval seeds its few-shot sampler


def draw(task: str, shots: int, pool: int, seed: int) -> list[int]:
    """`shots` distinct indices of a pool of `pool` rows, the same for the same seed."""
    if shots > pool:
        raise UsageError(f"{task}: {shots} shots, but the train split has {pool}")
    return random.Random(seed).sample(range(pool), shots)


def field(row: Mapping[str, Any], name: str, where: str) -> Any:
    """A record's field, or a one-line error that names the record and the field."""
    if not isinstance(row, Mapping) or name not in row or row[name] is None:
        raise UsageError(f"{where}: the record has no {name!r} field")
    return row[name]


def text_field(row: Mapping[str, Any], name: str, where: str) -> str:
    value = field(row, name, where)
    if not isinstance(value, str):
        raise UsageError(f"{where}: {name!r} is not a string")
    return value


def list_field(row: Mapping[str, Any], name: str, where: str) -> list[Any]:
    value = field(row, name, where)
    if not isinstance(value, list):
        raise UsageError(f"{where}: {name!r} is not a list")
    return value


class GeneratedTask(Task):
    """A task answered by generation: its items, a prompt for each, a score for each answer."""

    output = "generate"
    stop: ClassVar[tuple[str, ...]] = ()
    default_max_tokens: ClassVar[int] = 32

    def __init__(
        self,
        shots: int | None = None,
        limit: int | None = None,
        data_dir: Path | None = None,
        seed: int = SEED,
        max_tokens: int | None = None,
    ) -> None:
        # No shots given: the task's registry entry's (each subclass is named after its entry).
        super().__init__(TASKS[self.name].shots if shots is None else shots, limit)
        self.data_dir = data_dir
        self.seed = seed
        self.max_tokens = max_tokens or self.default_max_tokens

    @classmethod
    def made(cls, shots: int, limit: int | None, data: Path | None, samples: int) -> Self:
        """The task with its data read: data that is nowhere, or a bad file, is said before
        the model loads (and `eval --card` makes it a row's reason, not the run's end)."""
        task = cls(shots, limit, data)
        task.items()
        task.prefix()
        return task

    @abstractmethod
    def prefix(self) -> str:
        """The solved exemplars, each followed by its delimiter: what every prompt starts with."""

    @abstractmethod
    def question(self, item: Item) -> str:
        """The item's part of the prompt, which the model's answer continues."""

    @abstractmethod
    def score(self, item: Item, answer: str) -> ItemResult:
        """The metrics and the detail for one generated answer."""

    @abstractmethod
    def exemplars(self) -> list[Any]:
        """Which exemplars the prefix holds (their ids or names), in prompt order."""

    def prompt(self, item: Item) -> str:
        return self.prefix() + self.question(item)

    def sampling(self) -> Sampling:
        return Sampling(temperature=0.0, max_tokens=self.max_tokens, stop=list(self.stop), seed=0)

    def run(self, items: list[Item], model: EvalModel) -> Iterator[ItemResult]:
        prefix = self.prefix()

        def prompt(item: Item) -> str:
            return prefix + self.question(item)

        for item, generation in generate_all(items, model, prompt, self.sampling()):
            result = self.score(item, generation.text)
            result.detail["generation"] = generation.text
            # "length": cut at max_tokens, perhaps before the answer was complete.
            result.detail["finish_reason"] = generation.finish_reason
            result.detail["completion_tokens"] = generation.completion_tokens
            yield result

    def config(self) -> dict[str, Any]:
        return {
            "shots": self.shots,
            "limit": self.limit,
            "seed": self.seed,
            "exemplars": self.exemplars(),
            "max_tokens": self.max_tokens,
            "stop": list(self.stop),
            "temperature": 0.0,
        }
