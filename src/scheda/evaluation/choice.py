"""What the log-likelihood multiple-choice tasks share: records that know where they came
from, and prompts built as lm-evaluation-harness builds a `multiple_choice` task's.

A task (ARC, CommonsenseQA, Winogrande, BoolQ, HellaSwag, TruthfulQA, GPQA) turns each
record of its dataset into a `Doc`: lm-eval's three views of a document, `text`
(`doc_to_text`), `choices` (`doc_to_choice`) and `gold` (`doc_to_target`, as an index).
The prompt is the few-shot exemplars, each its text, the target delimiter " ", its
right choice and the few-shot delimiter "\\n\\n", then the scored document's text; each
choice is the continuation " " + choice, scored by log-likelihood
(`multiple_choice.score_item`: acc, and acc_norm per character of the choice).

The exemplars are the first `shots` records of the task's few-shot split, the same for
every question, so every prompt shares one prefix that the scorer evaluates once. lm-eval
draws its exemplars at random for each question (seeded); that is the one way in which
these prompts differ from its own.

Records come from the files of `--data DIR` (the original release's, or the Hub's own
parquet and JSONL) or else from the dataset's parquet files on the Hub (`sources`). Each
keeps where it came from ("FILE:LINE", "FILE row N", "REPO CONFIG SPLIT row N"), so that
a record that lacks a field is one line naming the place and the field.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from scheda.errors import UsageError
from scheda.evaluation.base import EvalModel, Item, ItemResult, Task
from scheda.evaluation.multiple_choice import score_item
from scheda.evaluation.sources import Row, Source, load, parquet_rows

TARGET_DELIMITER = " "  # lm-eval's default between a question and its answer
FEWSHOT_DELIMITER = "\n\n"  # and after each exemplar


@dataclass(frozen=True)
class Record:
    """One row of a dataset and where it came from, to name in a message."""

    where: str  # "FILE:LINE", "FILE row N", "REPO (CONFIG) SPLIT row N"
    row: Row
    path: str = ""  # the field names above this one, for a nested record ("question.")

    def value(self, name: str) -> Any:
        """The field; a dotted name reaches into nested objects ("question.stem")."""
        value: Any = self.row
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
            if value is None:
                raise UsageError(f"{self.where}: no '{self.path}{name}' field")
        return value

    def has(self, name: str) -> bool:
        return self.row.get(name) is not None

    def text(self, name: str) -> str:
        value = self.value(name)
        if not isinstance(value, str):
            raise UsageError(f"{self.where}: '{self.path}{name}' is not text")
        return value

    def texts(self, name: str) -> list[str]:
        value = self.value(name)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{self.where}: '{self.path}{name}' is not a list of texts")
        return list(value)

    def records(self, name: str) -> list[Record]:
        """A list of objects, each a record of its own (the release's `choices` lists)."""
        value = self.value(name)
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise UsageError(f"{self.where}: '{self.path}{name}' is not a list of objects")
        return [Record(self.where, v, f"{self.path}{name}[{i}].") for i, v in enumerate(value)]

    def fail(self, why: str) -> UsageError:
        return UsageError(f"{self.where}: {why}")


@dataclass(frozen=True)
class Doc:
    """A document as lm-eval's task sees it."""

    text: str  # doc_to_text (for Winogrande, doc_to_target: the words after the blank)
    choices: list[str]  # doc_to_choice (for Winogrande, the contexts that differ)
    gold: int  # the right choice
    labels: tuple[int, ...] = ()  # TruthfulQA's mc2: 1 for each true choice


# -- files ----------------------------------------------------------------------------------


def read_file(path: Path) -> list[Record]:
    """The records of one JSONL, JSON (a list of objects), CSV or parquet file."""
    if path.suffix == ".parquet":
        return [Record(f"{path} row {n}", r) for n, r in enumerate(parquet_rows([path]), 1)]
    if path.suffix == ".csv":
        return _read_csv(path)
    if path.suffix == ".json":
        return _read_json(path)
    return _read_jsonl(path)


def _read_jsonl(path: Path) -> list[Record]:
    records = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise UsageError(f"{path}:{number}: not a JSON line ({exc})") from None
            if not isinstance(row, dict):
                raise UsageError(f"{path}:{number}: each line must be a JSON object")
            records.append(Record(f"{path}:{number}", row))
    return records


def _read_json(path: Path) -> list[Record]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UsageError(f"{path}: not JSON ({exc})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UsageError(f"{path}: expected a JSON list of objects")
    return [Record(f"{path} item {n}", r) for n, r in enumerate(rows, 1)]


def _read_csv(path: Path) -> list[Record]:
    with path.open(newline="", encoding="utf-8") as f:
        # Rows counted after the header: a quoted field may hold line breaks.
        return [Record(f"{path} row {n}", dict(r)) for n, r in enumerate(csv.DictReader(f), 1)]


@dataclass(frozen=True)
class Split:
    """One split of a task's dataset: on the Hub (`source`), and in a local folder, the
    names its files may have, tried in order: the original release's first, then the
    Hub's own layouts (parquet, or JSONL as `datasets` writes it)."""

    source: Source
    originals: tuple[str, ...] = ()

    def globs(self) -> list[str]:
        config, split = self.source.config or "default", self.source.split
        return [
            *self.originals,
            *self.source.patterns(),
            f"{config}/{split}.jsonl",
            f"{split}.jsonl",
        ]

    def files(self, folder: Path) -> list[Path]:
        for pattern in self.globs():
            found = sorted(p for p in folder.glob(pattern) if p.is_file())
            if found:
                return found
        return []

    def records(self, data_dir: Path | None) -> list[Record]:
        """The split's records, from the folder when it holds them, else from the Hub."""
        return load(
            self.source,
            data_dir,
            lambda folder: bool(self.files(folder)),
            lambda folder: [r for path in self.files(folder) for r in read_file(path)],
            self._from_hub,
        )

    def _from_hub(self, rows: list[Row]) -> list[Record]:
        s = self.source
        where = s.repo + (f" ({s.config})" if s.config else "") + f" {s.split} row"
        return [Record(f"{where} {n}", row) for n, row in enumerate(rows, 1)]


# -- the task -------------------------------------------------------------------------------


class ChoiceTask(Task):
    """A multiple-choice task of lm-eval's kind; a subclass says where its data is (`scored`,
    `fewshot`) and how a record becomes a `Doc`."""

    metrics: tuple[str, ...] = ("acc", "acc_norm")
    scored: ClassVar[Split]  # the split whose records are the items
    fewshot: ClassVar[Split | None] = None  # where exemplars come from (None: nowhere)

    def __init__(
        self, shots: int = 0, limit: int | None = None, data_dir: Path | None = None
    ) -> None:
        super().__init__(shots, limit)
        self.data_dir = data_dir

    @classmethod
    def made(cls, shots: int, limit: int | None, data: Path | None, samples: int) -> Self:
        """The task, its data found and read once now: data that is nowhere here, or a bad
        record, is one line before any model loads (`eval --card` makes it a row that says
        why). The items are read again when the run asks for them, not kept: a task dealt
        out to workers travels without them."""
        task = cls(shots, limit, data)
        task.items()
        return task

    def doc(self, record: Record) -> Doc:
        """The record as lm-eval's task sees it (each task says how)."""
        raise NotImplementedError

    def docs(self, records: list[Record]) -> list[Doc]:
        """The records' documents; a task whose documents depend on those before them
        (GPQA's shuffle) overrides this instead of `doc`."""
        return [self.doc(r) for r in records]

    def exemplars(self) -> list[Doc]:
        """The first `shots` documents of the few-shot split."""
        if self.shots == 0:
            return []
        if self.fewshot is None:
            raise UsageError(f"{self.name} has no split to take exemplars from: pass --shots 0")
        records = self.fewshot.records(self.data_dir)
        if len(records) < self.shots:
            raise UsageError(
                f"{self.name}: {self.shots} shots asked, but the {self.fewshot.source.split} "
                f"split has {len(records)} rows"
            )
        return self.docs(records[: self.shots])

    def exemplar(self, doc: Doc) -> str:
        """A solved document, as lm-eval writes one into the prompt (less the delimiter)."""
        return doc.text + TARGET_DELIMITER + doc.choices[doc.gold]

    def prefix(self) -> str:
        """The exemplars each followed by the few-shot delimiter: what every prompt shares."""
        return "".join(self.exemplar(d) + FEWSHOT_DELIMITER for d in self.exemplars())

    def items(self) -> list[Item]:
        prefix = self.prefix()
        records = self.scored.records(self.data_dir)[: self.limit]
        split = self.scored.source.split
        return [
            Item(f"{split}/{i}", self.item_data(prefix, doc))
            for i, doc in enumerate(self.docs(records))
        ]

    def item_data(self, prefix: str, doc: Doc) -> dict[str, Any]:
        return {"context": prefix + doc.text, "choices": doc.choices, "gold": doc.gold}

    def score(self, model: EvalModel, data: dict[str, Any]) -> dict[str, Any]:
        """{"metrics": ..., "detail": ...} for one item."""
        return score_item(model, data["context"], data["choices"], data["gold"])

    def run(self, items: list[Item], model: EvalModel) -> Iterator[ItemResult]:
        # In order: the items share their few-shot prefix, which the scorer keeps cached.
        for item in items:
            scored = self.score(model, item.data)
            metrics = {m: scored["metrics"][m] for m in self.metrics}
            yield ItemResult(item.key, metrics, scored["detail"])

    def config(self) -> dict[str, Any]:
        exemplars = (
            f"the first {self.shots} rows of {self.fewshot.source.split}"
            if self.shots and self.fewshot
            else "none"
        )
        return {
            **super().config(),
            "split": self.scored.source.split,
            "exemplars": exemplars,
        }


def headline_first(name: str, metrics: tuple[str, ...]) -> tuple[str, ...]:
    """The task's metrics with the registry's headline first (what reports show first)."""
    from scheda.evaluation.tasks import TASKS

    headline = TASKS[name].metric
    return (headline, *(m for m in metrics if m != headline))
