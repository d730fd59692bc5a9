"""Multiple choice scored by log-likelihood: MMLU, and any task given as a JSONL file.

Each choice is a continuation of the question; the model's answer is the
choice with the highest log-likelihood (`acc`), or the highest per character
of the choice (`acc_norm`, lm-evaluation-harness's length normalisation, which
keeps long answers from losing for being long).

Prompts follow lm-evaluation-harness: few-shot examples are the question,
the target delimiter " " and the answer, separated by a blank line; the
choices are " " + choice. Items that share a few-shot prefix are scored one
after another, so the scorer evaluates that prefix once and reuses its cache.

A JSONL task has one object per line: `question` (or `query`, used as the
prompt verbatim), `choices` (a list of strings) and `answer` (the index of the
right one). Records with `"split": "fewshot"`, or a file NAME.fewshot.jsonl
beside it, are the pool the few-shot examples come from (the first K).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from scheda import settings
from scheda.errors import UsageError
from scheda.evaluation.base import EvalModel, Item, ItemResult, Task
from scheda.evaluation.sources import Source, hub_rows
from scheda.evaluation.tasks import TASKS

LETTERS = ("A", "B", "C", "D")


def choose(logliks: list[float], choices: list[str]) -> tuple[int, int]:
    """(argmax of the log-likelihoods, argmax per character): lm-eval's acc and acc_norm picks."""
    lls = np.array(logliks)
    lengths = np.array([float(len(c)) for c in choices])
    return int(lls.argmax()), int((lls / lengths).argmax())


def score_item(model: EvalModel, context: str, choices: list[str], gold: int) -> dict[str, Any]:
    """Score every continuation of one context: the metrics and what the model preferred."""
    continuations = [" " + c for c in choices]
    logliks = [scored.total for scored in model.scorer.choices(context, continuations)]
    return scored_choices(logliks, choices, gold)


def scored_choices(logliks: list[float], choices: list[str], gold: int) -> dict[str, Any]:
    """acc and acc_norm from one question's log-likelihoods. acc_norm is per character of the
    choice itself, not of the continuation with its leading " ": lm-eval's `process_results`
    measures `doc_to_choice`'s strings."""
    pick, pick_norm = choose(logliks, choices)
    return {
        "metrics": {"acc": float(pick == gold), "acc_norm": float(pick_norm == gold)},
        "detail": {"gold": gold, "pred": pick, "pred_norm": pick_norm, "logliks": logliks},
    }


# -- MMLU ------------------------------------------------------------------------------------


def subject_name(subject: str) -> str:
    return subject.replace("_", " ")


def mmlu_text(row: list[str]) -> str:
    question, *options = row[:5]
    lines = [question.strip()] + [
        f"{letter}. {o}" for letter, o in zip(LETTERS, options, strict=True)
    ]
    return "\n".join(lines) + "\nAnswer:"


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r]
    bad = [i for i, r in enumerate(rows) if len(r) < 6 or r[5].strip() not in LETTERS]
    if bad:
        raise UsageError(
            f"{path}: row {bad[0] + 1} is not question,A,B,C,D,answer (answer one of A-D)"
        )
    return rows


def mmlu_folder(data_dir: Path | None) -> Path:
    """The folder of `<subject>_test.csv` files: DIR, DIR/test, DIR/mmlu or DIR/mmlu/test."""
    if data_dir is None:
        return _mmlu_from_hub()
    for candidate in (data_dir, data_dir / "test", data_dir / "mmlu", data_dir / "mmlu" / "test"):
        if candidate.is_dir() and any(candidate.glob("*_test.csv")):
            return candidate
    raise UsageError(f"{data_dir}: no MMLU files (<subject>_test.csv) there or in test/, mmlu/")


def _mmlu_from_hub() -> Path:
    """`cais/mmlu` (its "all" config) from the Hub, once, written in the original CSV layout
    (test/ and dev/, one file per subject) under scheda's cache, where it is found offline."""
    out = settings.cache_dir() / "data" / "mmlu"
    if out.is_dir() and any(out.glob("test/*_test.csv")):
        return out / "test"
    for split in ("test", "dev"):
        by_subject: dict[str, list[list[str]]] = {}
        for row in hub_rows(Source("mmlu", "<subject>_test.csv files", "cais/mmlu", "all", split)):
            letter = LETTERS[int(row["answer"])]
            by_subject.setdefault(str(row["subject"]), []).append(
                [str(row["question"]), *map(str, row["choices"]), letter]
            )
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        for subject, rows in by_subject.items():
            with (folder / f"{subject}_{split}.csv").open("w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows(rows)
    return out / "test"


class MMLU(Task):
    """57 subjects, four choices, k-shot (5 by default); per subject, macro and micro averages.

    Exemplars are the subject's first k dev rows (lm-eval's `first_n`). Where there
    is no dev split beside the test files, they are the subject's first k test rows,
    which are then left out of the scored items; `config()` says which.
    `limit` applies per subject, as lm-eval's --limit does per subtask.
    """

    name = "mmlu"
    version = TASKS["mmlu"].version
    metrics = ("acc",)

    def __init__(
        self,
        shots: int = TASKS["mmlu"].shots,
        limit: int | None = None,
        data_dir: Path | None = None,
        subjects: list[str] | None = None,
    ) -> None:
        super().__init__(shots, limit)
        self.folder = mmlu_folder(data_dir)
        found = sorted(p.name.removesuffix("_test.csv") for p in self.folder.glob("*_test.csv"))
        unknown = sorted(set(subjects or []) - set(found))
        if unknown:
            raise UsageError(f"unknown MMLU subject {unknown[0]!r}: there are {len(found)} here")
        self.subjects = [s for s in found if not subjects or s in subjects]
        self.exemplar_source = "dev" if self._dev_file(self.subjects[0]) else "test"

    @classmethod
    def made(cls, shots: int, limit: int | None, data: Path | None, samples: int) -> MMLU:
        return cls(shots, limit, data)

    def _dev_file(self, subject: str) -> Path | None:
        for candidate in (
            self.folder.parent / "dev" / f"{subject}_dev.csv",
            self.folder / f"{subject}_dev.csv",
        ):
            if candidate.is_file():
                return candidate
        return None

    def _split(self, subject: str) -> tuple[list[list[str]], list[tuple[int, list[str]]]]:
        """(exemplars, scored rows with their index in the test file)."""
        test = read_csv(self.folder / f"{subject}_test.csv")
        dev = self._dev_file(subject)
        if dev is not None:
            return read_csv(dev)[: self.shots], list(enumerate(test))
        return test[: self.shots], list(enumerate(test))[self.shots :]

    def prefix(self, subject: str, exemplars: list[list[str]]) -> str:
        head = (
            "The following are multiple choice questions (with answers) about "
            f"{subject_name(subject)}.\n\n"
        )
        return head + "".join(f"{mmlu_text(r)} {r[5].strip()}\n\n" for r in exemplars)

    def items(self) -> list[Item]:
        items = []
        for subject in self.subjects:
            exemplars, rows = self._split(subject)
            prefix = self.prefix(subject, exemplars)
            for index, row in rows[: self.limit]:
                items.append(
                    Item(
                        key=f"{subject}/{index}",
                        group=subject,
                        data={
                            "context": prefix + mmlu_text(row),
                            "gold": LETTERS.index(row[5].strip()),
                        },
                    )
                )
        return items

    def run(self, items: list[Item], model: EvalModel) -> Iterator[ItemResult]:
        # In subject order: a subject's items share their few-shot prefix.
        for item in items:
            scored = score_item(model, item.data["context"], list(LETTERS), item.data["gold"])
            yield ItemResult(
                item.key, {"acc": scored["metrics"]["acc"]}, scored["detail"], item.group
            )

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "subjects": len(self.subjects),
            "exemplars": f"first {self.shots} {self.exemplar_source} rows per subject"
            + (
                ""
                if self.exemplar_source == "dev"
                else " (no dev split here; left out of the score)"
            ),
        }


# -- any multiple choice from a JSONL file ---------------------------------------------------


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}:{number}: not JSON ({exc.msg})") from None
            _check_record(path, number, record)
            records.append(record)
    return records


def _check_record(path: Path, number: int, record: Any) -> None:
    where = f"{path}:{number}"
    if not isinstance(record, dict):
        raise UsageError(f"{where}: each line must be a JSON object")
    if not isinstance(record.get("question", record.get("query")), str):
        raise UsageError(f"{where}: needs a 'question' (or 'query') string")
    choices = record.get("choices")
    if (
        not isinstance(choices, list)
        or len(choices) < 2
        or not all(isinstance(c, str) for c in choices)
    ):
        raise UsageError(f"{where}: 'choices' must be a list of at least two strings")
    answer = record.get("answer")
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
        raise UsageError(
            f"{where}: 'answer' must be the index of the right choice (0 to {len(choices) - 1})"
        )


def mc_text(record: dict[str, Any]) -> str:
    if isinstance(record.get("query"), str):
        return str(record["query"])
    return f"{record['question'].strip()}\nAnswer:"


class JsonlChoice(Task):
    """ARC, HellaSwag, BoolQ, CommonsenseQA or Winogrande-style data, without new code."""

    metrics = ("acc", "acc_norm")

    def __init__(self, path: Path, shots: int = 0, limit: int | None = None) -> None:
        super().__init__(shots, limit)
        if not path.is_file():
            raise UsageError(f"{path}: no such JSONL file")
        self.path = path
        self.name = path.stem
        records = _read_jsonl(path)
        self.pool = [r for r in records if r.get("split") == "fewshot"]
        self.records = [r for r in records if r.get("split") != "fewshot"]
        beside = path.with_name(f"{path.stem}.fewshot.jsonl")
        if beside.is_file():
            self.pool += _read_jsonl(beside)
        if shots > len(self.pool):
            raise UsageError(
                f"{path}: {shots} shots asked, {len(self.pool)} few-shot examples given "
                f'(records with "split": "fewshot", or {beside.name})'
            )
        self.prefix = "".join(
            f"{mc_text(r)} {r['choices'][r['answer']]}\n\n" for r in self.pool[:shots]
        )

    def items(self) -> list[Item]:
        return [Item(key=str(i), data=r) for i, r in enumerate(self.records[: self.limit])]

    def run(self, items: list[Item], model: EvalModel) -> Iterator[ItemResult]:
        for item in items:
            r = item.data
            scored = score_item(model, self.prefix + mc_text(r), r["choices"], r["answer"])
            yield ItemResult(item.key, scored["metrics"], scored["detail"])

    def config(self) -> dict[str, Any]:
        return {**super().config(), "file": self.path.name, "items": len(self.records)}
