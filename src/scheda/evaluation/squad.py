"""SQuAD v1.1: answer a question about a Wikipedia paragraph, 1 shot; SQuAD's own EM and F1.

The prompt is lm-evaluation-harness's reading-comprehension prompt (its
`squadv2` task's `doc_to_text`; Meta has not published the prompt behind
the Llama cards' SQuAD figure):

    Title: {title}\\n\\nBackground: {context}\\n\\nQuestion: {question}\\n\\nAnswer:

An exemplar is that prompt, a space and the train row's answer; exemplars are
joined by a blank line and drawn once from the train split with a fixed seed
(lm-eval's own target for a shot has two spaces before the answer, its
target delimiter and the space its `doc_to_target` adds: one is kept here).
The answer is generated greedily up to the end of the line, as lm-eval's
`until: ["\\n"]`, and scored with SQuAD v1.1's official normalisation: exact
match and word F1, each the best over the question's gold answers
(evaluation/answer_match.py).

Data: `--data DIR` with the original release's `dev-v1.1.json` (and
`train-v1.1.json` for the shots), or `rajpurkar/squad` (plain_text) from the
Hugging Face Hub.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

from scheda.errors import UsageError
from scheda.evaluation import sources
from scheda.evaluation.answer_match import squad_scores
from scheda.evaluation.base import Item, ItemResult
from scheda.evaluation.generated import GeneratedTask, draw, field, list_field, text_field
from scheda.evaluation.tasks import TASKS

Row = dict[str, Any]  # id, title, context, question, answers (a list of strings)

FILES = {"validation": "dev-v1.1.json", "train": "train-v1.1.json"}
FEWSHOT_DELIMITER = "\n\n"


def source(split: str) -> sources.Source:
    return sources.Source(
        "squad",
        "SQuAD v1.1's dev-v1.1.json and train-v1.1.json",
        "rajpurkar/squad",
        "plain_text",
        split,
    )


def question_text(row: Row) -> str:
    """lm-eval's `squadv2` `doc_to_text`."""
    return (
        f"Title: {row['title']}\n\nBackground: {row['context']}\n\n"
        f"Question: {row['question']}\n\nAnswer:"
    )


def exemplar(row: Row) -> str:
    return f"{question_text(row)} {row['answers'][0]}"


def _answers(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise UsageError(f"{where}: 'answers' is not a list of answer texts")
    return list(value)


def original_rows(path: Path) -> list[Row]:
    """The questions of an original SQuAD file (data -> paragraphs -> qas), in file order."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable JSON file ({exc})") from None
    rows: list[Row] = []
    for a, article in enumerate(list_field(document, "data", str(path))):
        title = text_field(article, "title", f"{path}: data[{a}]")
        for p, paragraph in enumerate(list_field(article, "paragraphs", f"{path}: data[{a}]")):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            context = text_field(paragraph, "context", where)
            for q, qa in enumerate(list_field(paragraph, "qas", where)):
                at = f"{where}.qas[{q}]"
                texts = [text_field(answer, "text", at) for answer in list_field(qa, "answers", at)]
                rows.append(
                    {
                        "id": text_field(qa, "id", at),
                        "title": title,
                        "context": context,
                        "question": text_field(qa, "question", at),
                        "answers": _answers(texts, at),
                    }
                )
    return rows


def hub_rows(rows: list[Row], split: str) -> list[Row]:
    """The Hub's rows (answers as {text: [...], answer_start: [...]}) in this module's shape."""
    out = []
    for i, row in enumerate(rows):
        where = f"squad: {source(split).repo} {split} row {i}"
        out.append(
            {
                "id": text_field(row, "id", where),
                "title": text_field(row, "title", where),
                "context": text_field(row, "context", where),
                "question": text_field(row, "question", where),
                "answers": _answers(field(field(row, "answers", where), "text", where), where),
            }
        )
    return out


def load_split(data_dir: Path | None, split: str) -> list[Row]:
    """A split from `--data DIR` (the original file) or from the Hub."""
    name = FILES[split]
    return sources.load(
        source(split),
        data_dir,
        lambda folder: (folder / FILES["validation"]).is_file(),
        lambda folder: _original(folder / name),
        lambda rows: hub_rows(rows, split),
    )


def _original(path: Path) -> list[Row]:
    if not path.is_file():
        raise UsageError(f"squad: {path.parent} has no {path.name} (the shots come from it)")
    return original_rows(path)


class SQuAD(GeneratedTask):
    name = "squad"
    version = TASKS["squad"].version
    metrics = ("exact_match", "f1")
    stop = ("\n",)
    default_max_tokens = 32

    @cached_property
    def _validation(self) -> list[Row]:
        return load_split(self.data_dir, "validation")

    @cached_property
    def _train(self) -> list[Row]:
        """The rows a shot may be: those with an answer to show."""
        if not self.shots:
            return []
        return [row for row in load_split(self.data_dir, "train") if row["answers"]]

    @cached_property
    def _shots(self) -> list[Row]:
        """The exemplars, drawn from the train rows with the seed."""
        if not self.shots:
            return []
        return [self._train[i] for i in draw("squad", self.shots, len(self._train), self.seed)]

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
        exact, f1 = squad_scores(answer, item.data["answers"])
        return ItemResult(
            item.key,
            {"exact_match": exact, "f1": f1},
            detail={"gold": item.data["answers"], "answer": answer.strip()},
        )
