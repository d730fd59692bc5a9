"""GSM8K: grade-school maths word problems, 8-shot chain of thought, exact match on the number.

The prompt is lm-evaluation-harness's `gsm8k` task: each exemplar is
"Question: {question}\\nAnswer: {answer}" with the train answer whole (its
reasoning, the calculator annotations and the final "#### n"), exemplars
joined by a blank line, then "Question: {question}\\nAnswer:" for the scored
one. The exemplars are drawn once from the train split with a fixed seed and
are the same for every question, so the prompts share one prefix (llama.cpp
reuses its cache for it). lm-eval draws its exemplars afresh per question
and uses 5 by default; here the number is `shots` (8 by default).

Generation is greedy and stops where the model starts a new question
("Question:", an end-of-turn marker, or two blank lines). Two answers are
read from the text, as lm-eval's two filters read them:

- strict: the first "#### n", the format the exemplars teach;
- flexible: the last number anywhere in the text.

Both the gold answer and the extracted one are normalised as lm-eval's
`exact_match` does (commas and dollar signs removed, one trailing full stop
removed, lower case) and compared as strings. As in lm-eval, "18.0" and
"18" do not match: the comparison is textual, not numeric.

Prompts go to the engine's parallel slots together (evaluation/generation.py).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scheda.errors import UsageError
from scheda.evaluation.base import EvalModel, Item, ItemResult, Task
from scheda.evaluation.generation import generate_all
from scheda.evaluation.sources import Source, hub_rows
from scheda.evaluation.tasks import TASKS
from scheda.sampling import Sampling

HUB_DATASET = "openai/gsm8k"
HUB_CONFIG = "main"

# lm-eval's gsm8k filters: "strict-match" takes the first match, "flexible-extract" the last.
STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
# lm-eval's exact_match `regexes_to_ignore` for gsm8k, applied in this order to both sides.
IGNORE = (re.compile(r","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$"))

STOP = ["Question:", "</s>", "<|im_end|>", "\n\n\n"]
FEWSHOT_DELIMITER = "\n\n"


def extract_strict(text: str) -> str | None:
    """The number after the first "#### ", as lm-eval's strict-match filter reads it."""
    match = STRICT.search(text)
    return match.group(1).strip() if match else None


def extract_flexible(text: str) -> str | None:
    """The last number in the text, as lm-eval's flexible-extract filter reads it."""
    matches: list[tuple[str, ...]] = FLEXIBLE.findall(text)
    if not matches:
        return None
    return next(group for group in matches[-1] if group).strip()


def normalise(text: str) -> str:
    """lm-eval's exact_match normalisation for gsm8k: drop ",", "$", anything up to
    "#### ", one trailing ".", then lower case. A full train/test answer becomes its number."""
    for pattern in IGNORE:
        text = pattern.sub("", text)
    return text.lower()


def gold_answer(answer: str) -> str:
    """The normalised number after "####" in a GSM8K answer."""
    return normalise(answer)


def exact_match(extracted: str | None, gold: str) -> float:
    return float(extracted is not None and normalise(extracted) == gold)


def question_text(question: str) -> str:
    """lm-eval's `doc_to_text` for gsm8k."""
    return f"Question: {question}\nAnswer:"


def exemplar(row: dict[str, str]) -> str:
    """A solved train row: the question, lm-eval's target delimiter " ", the whole answer."""
    return f"{question_text(row['question'])} {row['answer']}"


def read_jsonl(path: Path) -> list[dict[str, str]]:
    rows = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise UsageError(f"{path}:{number}: not a JSON line ({exc})") from exc
            if not isinstance(row, dict) or not {"question", "answer"} <= row.keys():
                raise UsageError(f"{path}:{number}: expected an object with question and answer")
            rows.append({"question": str(row["question"]), "answer": str(row["answer"])})
    return rows


def load_splits(data_dir: Path | None) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(train, test) from a folder holding train.jsonl and test.jsonl, or from the Hub's
    openai/gsm8k (its parquet files, through the local cache)."""
    if data_dir is not None:
        data_dir = Path(data_dir)
        paths = [data_dir / "train.jsonl", data_dir / "test.jsonl"]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise UsageError(f"{data_dir}: no {' or '.join(missing)} there (GSM8K needs both)")
        return read_jsonl(paths[0]), read_jsonl(paths[1])
    train, test = (
        [{"question": str(r["question"]), "answer": str(r["answer"])} for r in hub_rows(source)]
        for source in (hub_source("train"), hub_source("test"))
    )
    return train, test


def hub_source(split: str) -> Source:
    return Source("gsm8k", "train.jsonl and test.jsonl", HUB_DATASET, HUB_CONFIG, split)


class GSM8K(Task):
    name = "gsm8k"
    version = TASKS["gsm8k"].version
    metrics = ("exact_match_strict", "exact_match_flexible")
    output = "generate"

    def __init__(
        self,
        shots: int = TASKS["gsm8k"].shots,
        limit: int | None = None,
        data_dir: Path | None = None,
        seed: int = 1234,
        max_tokens: int = 256,
    ) -> None:
        super().__init__(shots, limit)
        self.data_dir = data_dir
        self.seed = seed
        self.max_tokens = max_tokens
        self._splits: tuple[list[dict[str, str]], list[dict[str, str]]] | None = None

    @classmethod
    def made(cls, shots: int, limit: int | None, data: Path | None, samples: int) -> GSM8K:
        task = cls(shots, limit, data)
        task.prefix()  # the data read now: missing data is said before the model loads
        return task

    def _data(self) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        if self._splits is None:
            self._splits = load_splits(self.data_dir)
        return self._splits

    @property
    def exemplar_indices(self) -> list[int]:
        """The train rows used as exemplars, in prompt order; the same for every question."""
        train, _ = self._data()
        if self.shots > len(train):
            raise UsageError(f"GSM8K: {self.shots} shots, but the train split has {len(train)}")
        return random.Random(self.seed).sample(range(len(train)), self.shots)

    def prefix(self) -> str:
        """The exemplars, each followed by the delimiter: the part every prompt shares."""
        train, _ = self._data()
        return "".join(exemplar(train[i]) + FEWSHOT_DELIMITER for i in self.exemplar_indices)

    def prompt(self, question: str) -> str:
        return self.prefix() + question_text(question)

    def sampling(self) -> Sampling:
        return Sampling(temperature=0.0, max_tokens=self.max_tokens, stop=list(STOP), seed=0)

    def items(self) -> list[Item]:
        _, test = self._data()
        rows = test if self.limit is None else test[: self.limit]
        return [Item(f"test/{i}", row) for i, row in enumerate(rows)]

    def score(self, key: str, generation: str, answer: str) -> ItemResult:
        """The metrics and the detail for one generated answer, against the item's answer."""
        gold = gold_answer(answer)
        strict, flexible = extract_strict(generation), extract_flexible(generation)
        return ItemResult(
            key,
            {
                "exact_match_strict": exact_match(strict, gold),
                "exact_match_flexible": exact_match(flexible, gold),
            },
            detail={"gold": gold, "generation": generation, "strict": strict, "flexible": flexible},
        )

    def run(self, items: list[Item], model: EvalModel) -> Iterator[ItemResult]:
        prefix = self.prefix()

        def prompt(item: Item) -> str:
            return prefix + question_text(item.data["question"])

        for item, generation in generate_all(items, model, prompt, self.sampling()):
            result = self.score(item.key, generation.text, item.data["answer"])
            # "length": cut at max_tokens, before the model wrote its answer line.
            result.detail["finish_reason"] = generation.finish_reason
            result.detail["completion_tokens"] = generation.completion_tokens
            yield result

    def config(self) -> dict[str, Any]:
        return {
            "shots": self.shots,
            "limit": self.limit,
            "seed": self.seed,
            "exemplars": self.exemplar_indices,  # train row indices, in prompt order
            "max_tokens": self.max_tokens,
            "stop": list(STOP),
            "temperature": 0.0,
        }
