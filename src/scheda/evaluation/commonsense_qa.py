"""CommonsenseQA: questions that need everyday knowledge, five answers, one right.

lm-evaluation-harness's `commonsense_qa`: the prompt lists the five answers lettered
A-E ("Question: {question}\\nA. ...\\nE. ...\\nAnswer:") and the choices scored are the
letters, so acc and acc_norm agree (acc is the metric). lm-eval scores the validation
split (the test split's answers are not public) and takes exemplars from train; the
registry's 7 shots are train's first 7 rows.

Data: `tau/commonsense_qa` on the Hub, or in a folder the original release's
dev_rand_split.jsonl and train_rand_split.jsonl (each line {"question": {"stem",
"choices": [{"label", "text"}]}, "answerKey"}), or the Hub's own files.
"""

from __future__ import annotations

from typing import ClassVar

from scheda.evaluation.choice import ChoiceTask, Doc, Record, Split
from scheda.evaluation.sources import Source
from scheda.evaluation.tasks import TASKS

HUB_DATASET = "tau/commonsense_qa"
LETTERS = ("A", "B", "C", "D", "E")


def question_text(question: str, answers: list[str]) -> str:
    """lm-eval's `doc_to_text` for commonsense_qa."""
    lines = [f"Question: {question.strip()}"]
    lines += [f"{letter}. {answer}" for letter, answer in zip(LETTERS, answers, strict=True)]
    return "\n".join(lines) + "\nAnswer:"


class CommonsenseQA(ChoiceTask):
    name = "commonsense_qa"
    version = TASKS[name].version
    metrics = ("acc",)
    scored: ClassVar[Split] = Split(
        Source(
            name,
            "dev_rand_split.jsonl (or the Hub's validation files)",
            HUB_DATASET,
            None,
            "validation",
        ),
        ("dev_rand_split.jsonl",),
    )
    fewshot: ClassVar[Split | None] = Split(
        Source(name, "train_rand_split.jsonl (for the exemplars)", HUB_DATASET, None, "train"),
        ("train_rand_split.jsonl",),
    )

    def doc(self, record: Record) -> Doc:
        if isinstance(record.row.get("question"), dict):  # the release: the choices under it
            question = record.text("question.stem")
            answers = [o.text("text") for o in record.records("question.choices")]
        else:
            question = record.text("question")
            answers = record.texts("choices.text")
        if len(answers) != len(LETTERS):
            raise record.fail(f"{len(answers)} choices where CommonsenseQA has 5")
        key = record.text("answerKey")
        if key not in LETTERS:
            raise record.fail(f"answerKey {key!r} is not one of A-E")
        # The letters are scored, not the answers: lm-eval's doc_to_choice.
        return Doc(question_text(question, answers), list(LETTERS), LETTERS.index(key))
