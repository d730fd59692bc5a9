"""QuAC: questions asked in a dialogue about a hidden Wikipedia section; 1 shot; QuAC's F1.

Each question of a dialogue is one item. Its prompt is HELM's QuAC prompt
(lm-evaluation-harness has no QuAC task): the page's title, its first
paragraph, the section's title and text, then the dialogue so far, each
earlier question with the teacher's own answer to it, then the question:

    Title: {title}\\n\\nBackground: {background}\\n\\nSection: {section_title}
    Passage: {context}\\n\\nQuestion: {q1}\\nAnswer: {a1}\\n\\n...Question: {qk}\\nAnswer:

An earlier answer the teacher could not give reads "CANNOTANSWER", as the
data writes it, so the model sees how to say it. The shot is one whole train
dialogue in the same form, drawn once with a fixed seed, followed by a blank
line. The answer is generated greedily to the end of the line and scored with
QuAC's official F1 (SQuAD's normalisation and word F1, the best over the
references after QuAC's `handle_cannot`; evaluation/answer_match.py). The
official scorer also reports a leave-one-reference-out F1 and leaves out the
questions where the annotators disagree (human F1 below 0.4); neither is done
here.

Data: `--data DIR` with QuAC's original `val_v0.2.json` (and `train_v0.2.json`
for the shot), or `allenai/quac` from the Hub in its schema (dialogue_id,
wikipedia_page_title, background, section_title, context, turn_ids, questions,
answers and orig_answers, each {texts, answer_starts}). Its main branch holds
only its loading script, so the rows are the Hub's own conversion
(refs/convert/parquet, plain_text/SPLIT/0000.parquet; see docs/eval.md).
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

from scheda.errors import UsageError
from scheda.evaluation import sources
from scheda.evaluation.answer_match import CANNOTANSWER, quac_f1
from scheda.evaluation.base import Item, ItemResult
from scheda.evaluation.generated import (
    GeneratedTask,
    draw,
    field,
    list_field,
    text_field,
)
from scheda.evaluation.tasks import TASKS

# id, title, background, section_title, context, turns: [{id, question, answer, references}]
Dialogue = dict[str, Any]

FILES = {"validation": "val_v0.2.json", "train": "train_v0.2.json"}
FEWSHOT_DELIMITER = "\n\n"
# The original data ends every section with this, the span a teacher picked for "no answer".
CANNOT_SUFFIX = " " + CANNOTANSWER


def source(split: str) -> sources.Source:
    return sources.Source(
        "quac",
        "QuAC's val_v0.2.json and train_v0.2.json",
        "allenai/quac",
        "plain_text",
        split,
    )


def header(dialogue: Dialogue) -> str:
    """The page and the section, as HELM's QuAC scenario writes them."""
    return (
        f"Title: {dialogue['title']}\n\nBackground: {dialogue['background']}\n\n"
        f"Section: {dialogue['section_title']}\nPassage: {dialogue['context']}\n\n"
    )


def turn_text(turn: dict[str, Any]) -> str:
    return f"Question: {turn['question']}\nAnswer:"


def dialogue_text(dialogue: Dialogue, upto: int) -> str:
    """The dialogue's first `upto` turns answered, then turn `upto` asked."""
    answered = "".join(
        f"{turn_text(turn)} {turn['answer']}\n\n" for turn in dialogue["turns"][:upto]
    )
    return header(dialogue) + answered + turn_text(dialogue["turns"][upto])


def exemplar(dialogue: Dialogue) -> str:
    """A whole dialogue, every question answered."""
    last = len(dialogue["turns"]) - 1
    return f"{dialogue_text(dialogue, last)} {dialogue['turns'][last]['answer']}"


def _section(context: str) -> str:
    return context.removesuffix(CANNOT_SUFFIX)


def original_dialogues(path: Path) -> list[Dialogue]:
    """The dialogues of an original QuAC file (data -> paragraphs -> qas), in file order."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable JSON file ({exc})") from None
    dialogues: list[Dialogue] = []
    for a, article in enumerate(list_field(document, "data", str(path))):
        at = f"{path}: data[{a}]"
        page = {
            "title": text_field(article, "title", at),
            "background": text_field(article, "background", at),
            "section_title": text_field(article, "section_title", at),
        }
        for p, paragraph in enumerate(list_field(article, "paragraphs", at)):
            where = f"{at}.paragraphs[{p}]"
            turns = [
                _original_turn(qa, f"{where}.qas[{q}]")
                for q, qa in enumerate(list_field(paragraph, "qas", where))
            ]
            dialogues.append(
                {
                    "id": text_field(paragraph, "id", where),
                    **page,
                    "context": _section(text_field(paragraph, "context", where)),
                    "turns": turns,
                }
            )
    return dialogues


def _original_turn(qa: Any, where: str) -> dict[str, Any]:
    return {
        "id": text_field(qa, "id", where),
        "question": text_field(qa, "question", where),
        "answer": text_field(field(qa, "orig_answer", where), "text", where),
        "references": [text_field(a, "text", where) for a in list_field(qa, "answers", where)],
    }


def hub_dialogues(rows: list[dict[str, Any]], split: str) -> list[Dialogue]:
    """The Hub's rows (one dialogue each, its turns as parallel lists) in this module's shape."""
    dialogues = []
    for i, row in enumerate(rows):
        where = f"quac: {source(split).repo} {split} row {i}"
        ids = list_field(row, "turn_ids", where)
        questions = list_field(row, "questions", where)
        answers = list_field(field(row, "orig_answers", where), "texts", where)
        references = list_field(field(row, "answers", where), "texts", where)
        if not len(ids) == len(questions) == len(answers) == len(references):
            raise UsageError(f"{where}: its turns, questions and answers differ in number")
        turns = [
            {"id": str(t), "question": str(q), "answer": str(a), "references": list(r)}
            for t, q, a, r in zip(ids, questions, answers, references, strict=True)
        ]
        dialogues.append(
            {
                "id": text_field(row, "dialogue_id", where),
                "title": text_field(row, "wikipedia_page_title", where),
                "background": text_field(row, "background", where),
                "section_title": text_field(row, "section_title", where),
                "context": _section(text_field(row, "context", where)),
                "turns": turns,
            }
        )
    return dialogues


def load_split(data_dir: Path | None, split: str) -> list[Dialogue]:
    """A split from `--data DIR` (the original file) or from the Hub."""
    path_name = FILES[split]

    def read_local(folder: Path) -> list[Dialogue]:
        path = folder / path_name
        if not path.is_file():
            raise UsageError(f"quac: {folder} has no {path_name} (the shot comes from it)")
        return original_dialogues(path)

    return sources.load(
        source(split),
        data_dir,
        lambda folder: (folder / FILES["validation"]).is_file(),
        read_local,
        lambda rows: hub_dialogues(rows, split),
    )


class QuAC(GeneratedTask):
    name = "quac"
    version = TASKS["quac"].version
    metrics = ("f1",)
    stop = ("\n",)
    default_max_tokens = 64  # QuAC's answers are sentences, up to 30 words or so

    @cached_property
    def _validation(self) -> list[Dialogue]:
        return load_split(self.data_dir, "validation")

    @cached_property
    def _shots(self) -> list[Dialogue]:
        """The exemplar dialogues, drawn from the train split with the seed."""
        if not self.shots:
            return []
        train = [d for d in load_split(self.data_dir, "train") if d["turns"]]
        return [train[i] for i in draw("quac", self.shots, len(train), self.seed)]

    def exemplars(self) -> list[Any]:
        return [dialogue["id"] for dialogue in self._shots]

    def prefix(self) -> str:
        return "".join(exemplar(dialogue) + FEWSHOT_DELIMITER for dialogue in self._shots)

    def question(self, item: Item) -> str:
        return dialogue_text(item.data["dialogue"], item.data["turn"])

    def items(self) -> list[Item]:
        """Every question of every dialogue, in order: a dialogue's questions share its text."""
        items = [
            Item(turn["id"], {"dialogue": dialogue, "turn": k})
            for dialogue in self._validation
            for k, turn in enumerate(dialogue["turns"])
        ]
        return items if self.limit is None else items[: self.limit]

    def score(self, item: Item, answer: str) -> ItemResult:
        references = item.data["dialogue"]["turns"][item.data["turn"]]["references"]
        return ItemResult(
            item.key,
            {"f1": quac_f1(answer, references)},
            detail={"gold": references, "answer": answer.strip()},
        )
