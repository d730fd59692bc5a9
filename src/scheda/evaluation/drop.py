"""DROP: questions that need counting, sorting or arithmetic over a paragraph; 3 shots; DROP's F1.

The prompt follows lm-evaluation-harness's `drop` task: its `doc_to_text`
"{passage} {question}", exemplars joined by a blank line, and the generated
answer scored by its `process_results` (DROP's official exact match and
bag-of-spans F1 against each gold answer, the best of them; see
evaluation/answer_match.py). Three things differ, each where lm-eval's
configuration does not do what it means to:

- an exemplar's target is its gold answer (a number, a date "day month year",
  or its spans joined by ", "): lm-eval's `{{answer|join(',')}}` joins the
  keys of the answer's record, so its shots read "number,date,spans"
  (lm-evaluation-harness issue #2137);
- a space separates an exemplar's question from its answer, lm-eval's usual
  target delimiter (the task's own "" glues the answer to the question mark);
- generation stops at a line break as well as at lm-eval's ".": a model that
  answers and starts a new paragraph is otherwise scored on the answer glued to
  the next passage's first words, which DROP's normaliser reads as one token
  (the Open LLM Leaderboard's DROP analysis of November 2023).

The exemplars are drawn once from the train split with a fixed seed (leaving
out the few train questions with an empty answer); the run config names them
by their query ids.

Data: `--data DIR` with the original release's `drop_dataset_dev.json` (and
`drop_dataset_train.json` for the shots), or `ucinlp/drop` from the Hugging
Face Hub. The originals keep every answer's spans together, and the gold
answers are the question's `answer` and its `validated_answers`, as lm-eval
reads them. The Hub's copy flattens the validated answers of a question into
one list of strings (its loading script), so there each string is scored as a
one-span answer: exact for the numbers, dates and single spans that most
questions have; a question whose answer has several spans is scored against
each span alone.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

from scheda.errors import UsageError
from scheda.evaluation import sources
from scheda.evaluation.answer_match import DropAnswer, drop_scores
from scheda.evaluation.base import Item, ItemResult
from scheda.evaluation.generated import (
    GeneratedTask,
    draw,
    field,
    list_field,
    text_field,
)
from scheda.evaluation.tasks import TASKS

# id, passage, question, answers (gold answers, each a list of spans), target (a shot's answer)
Row = dict[str, Any]

FILES = {"validation": "drop_dataset_dev.json", "train": "drop_dataset_train.json"}
FEWSHOT_DELIMITER = "\n\n"


def source(split: str) -> sources.Source:
    return sources.Source(
        "drop",
        "DROP's drop_dataset_dev.json and drop_dataset_train.json",
        "ucinlp/drop",
        None,
        split,
    )


def question_text(row: Row) -> str:
    """lm-eval's `drop` `doc_to_text`."""
    return f"{row['passage']} {row['question']}"


def exemplar(row: Row) -> str:
    return f"{question_text(row)} {row['target']}"


def parse_answer(answer: Any, where: str) -> DropAnswer:
    """lm-eval's `parse_answer`: a number, else the spans, else the date as "day month year"."""
    number = field(answer, "number", where)
    if number != "":
        return (str(number),)
    spans = list_field(answer, "spans", where)
    if spans:
        return tuple(str(span) for span in spans)
    date = field(answer, "date", where)
    parts = [str(field(date, part, where)) for part in ("day", "month", "year")]
    return (" ".join(parts).strip(),)


def gold_answers(qa: Any, where: str) -> list[DropAnswer]:
    """lm-eval's `get_answers`: the answer, then the validated answers, each once."""
    candidates = [field(qa, "answer", where), *qa.get("validated_answers", [])]
    answers: list[DropAnswer] = []
    for candidate in candidates:
        parsed = parse_answer(candidate, where)
        if parsed not in answers:
            answers.append(parsed)
    return answers


def target(answer: DropAnswer) -> str:
    return ", ".join(answer)


def original_rows(path: Path) -> list[Row]:
    """The questions of an original DROP file (section -> qa_pairs), in file order."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(document, dict):
        raise UsageError(f"{path}: expected DROP's object of sections")
    rows: list[Row] = []
    for section_id, section in document.items():
        passage = text_field(section, "passage", f"{path}: {section_id}")
        for q, qa in enumerate(list_field(section, "qa_pairs", f"{path}: {section_id}")):
            where = f"{path}: {section_id}.qa_pairs[{q}]"
            answers = gold_answers(qa, where)
            rows.append(
                {
                    "id": text_field(qa, "query_id", where),
                    "passage": passage,
                    "question": text_field(qa, "question", where),
                    "answers": [list(a) for a in answers],
                    "target": target(answers[0]),
                }
            )
    return rows


def hub_rows(rows: list[Row], split: str) -> list[Row]:
    """The Hub's rows ({answers_spans: {spans, types}}) in this module's shape."""
    out = []
    for i, row in enumerate(rows):
        where = f"drop: {source(split).repo} {split} row {i}"
        spans = [str(s) for s in list_field(field(row, "answers_spans", where), "spans", where)]
        if not spans:
            raise UsageError(f"{where}: the record has no answer spans")
        out.append(
            {
                "id": text_field(row, "query_id", where),
                "passage": text_field(row, "passage", where),
                "question": text_field(row, "question", where),
                "answers": [[span] for span in dict.fromkeys(spans)],
                # A train row holds one answer: its spans are that answer's.
                "target": ", ".join(spans),
            }
        )
    return out


def load_split(data_dir: Path | None, split: str) -> list[Row]:
    """A split from `--data DIR` (the original file) or from the Hub."""
    path_name = FILES[split]

    def read_local(folder: Path) -> list[Row]:
        path = folder / path_name
        if not path.is_file():
            raise UsageError(f"drop: {folder} has no {path_name} (the shots come from it)")
        return original_rows(path)

    return sources.load(
        source(split),
        data_dir,
        lambda folder: (folder / FILES["validation"]).is_file(),
        read_local,
        lambda rows: hub_rows(rows, split),
    )


class DROP(GeneratedTask):
    name = "drop"
    version = TASKS["drop"].version
    metrics = ("f1", "exact_match")
    stop = (".", "\n")
    default_max_tokens = 32

    @cached_property
    def _validation(self) -> list[Row]:
        return load_split(self.data_dir, "validation")

    @cached_property
    def _train(self) -> list[Row]:
        """The rows a shot may be: a few train questions have an empty answer."""
        if not self.shots:
            return []
        return [row for row in load_split(self.data_dir, "train") if row["target"].strip()]

    @cached_property
    def _shots(self) -> list[Row]:
        """The exemplars, drawn from the train rows with the seed."""
        if not self.shots:
            return []
        return [self._train[i] for i in draw("drop", self.shots, len(self._train), self.seed)]

    def exemplars(self) -> list[Any]:
        return [row["id"] for row in self._shots]

    def prefix(self) -> str:
        return "".join(exemplar(row) + FEWSHOT_DELIMITER for row in self._shots)

    def question(self, item: Item) -> str:
        return question_text(item.data)

    def items(self) -> list[Item]:
        rows = self._validation if self.limit is None else self._validation[: self.limit]
        return [Item(row["id"], row) for row in rows]

    def score(self, item: Item, answer: str) -> ItemResult:
        exact, f1 = drop_scores(answer, [tuple(a) for a in item.data["answers"]])
        return ItemResult(
            item.key,
            {"f1": f1, "exact_match": exact},
            detail={"gold": item.data["answers"], "answer": answer},
        )
