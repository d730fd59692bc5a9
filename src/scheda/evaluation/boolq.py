"""BoolQ: a Wikipedia passage and a yes/no question about it.

lm-evaluation-harness's `boolq` (its SuperGLUE version): the prompt is
"{passage}\\nQuestion: {question}?\\nAnswer:", the choices "no" and "yes", scored on
the validation split; acc is the metric. 0-shot by default; exemplars, when asked for,
are the train split's first rows.

lm-eval reads SuperGLUE's copy, whose fields differ from BoolQ's own release and from
`google/boolq` on the Hub; they are mapped so:

- the answer: BoolQ's `answer` is a boolean, SuperGLUE's `label` 0 or 1 (false, true),
  the index of "no" or "yes": `label = int(answer)`;
- the passage: SuperGLUE joined each passage to its article's title as
  "{title} -- {passage}". The release's files keep `title` apart, and the join is made
  here, so their prompts are SuperGLUE's; `google/boolq` has no title at all, so from it
  the passage is the bare passage, without that first line's "{title} -- ";
- the question is the same in all three (lower case, no question mark: the prompt adds it).

Data: `google/boolq` on the Hub, or in a folder the original release's dev.jsonl and
train.jsonl ({"question", "title", "answer", "passage"}), or SuperGLUE's files
({"question", "passage", "label"}), or the Hub's own.
"""

from __future__ import annotations

from typing import ClassVar

from scheda.evaluation.choice import ChoiceTask, Doc, Record, Split
from scheda.evaluation.sources import Source
from scheda.evaluation.tasks import TASKS

HUB_DATASET = "google/boolq"
CHOICES = ["no", "yes"]


def question_text(passage: str, question: str) -> str:
    """lm-eval's `doc_to_text` for boolq."""
    return f"{passage}\nQuestion: {question}?\nAnswer:"


def boolq_doc(record: Record) -> Doc:
    passage = record.text("passage")
    if record.has("title"):  # the release: SuperGLUE's passage is the title, " -- ", this
        passage = f"{record.text('title')} -- {passage}"
    answer = record.value("label" if record.has("label") else "answer")
    if answer not in (0, 1):  # True and False are 1 and 0
        raise record.fail(f"the answer is {answer!r}, where it must be true or false (1 or 0)")
    return Doc(question_text(passage, record.text("question")), list(CHOICES), int(answer))


class BoolQ(ChoiceTask):
    name = "boolq"
    version = TASKS[name].version
    metrics = ("acc",)
    scored: ClassVar[Split] = Split(
        Source(name, "dev.jsonl (or the Hub's validation files)", HUB_DATASET, None, "validation"),
        ("dev.jsonl", "val.jsonl"),
    )
    fewshot: ClassVar[Split | None] = Split(
        Source(name, "train.jsonl (for the exemplars)", HUB_DATASET, None, "train"),
        ("train.jsonl",),
    )

    def doc(self, record: Record) -> Doc:
        return boolq_doc(record)
