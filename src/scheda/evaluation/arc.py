"""ARC, the AI2 Reasoning Challenge: grade-school science questions, Challenge and Easy sets.

lm-evaluation-harness's `arc_challenge` and `arc_easy`: the prompt is
"Question: {question}\\nAnswer:", the choices are the answers' texts, the right one is
the answer whose label is `answerKey` (labels are A-E, or 1-5 on some rows), scored on
the test split; acc and acc_norm, acc_norm the figure the leaderboards give. The
exemplars are the train split's first rows (25 by default, as the Open LLM Leaderboard
ran it).

Data: `allenai/ai2_arc` on the Hub (configs ARC-Challenge and ARC-Easy), or in a folder
the original release's files (ARC-Challenge-Test.jsonl and ARC-Challenge-Train.jsonl,
each line {"question": {"stem", "choices": [{"label", "text"}]}, "answerKey"}) or the
Hub's own (ARC-Challenge/test-*.parquet, or JSONL in the Hub's fields: "question" a
string, "choices" {"text": [...], "label": [...]}).
"""

from __future__ import annotations

from typing import ClassVar

from scheda.evaluation.choice import ChoiceTask, Doc, Record, Split, headline_first
from scheda.evaluation.sources import Source
from scheda.evaluation.tasks import TASKS

HUB_DATASET = "allenai/ai2_arc"


def arc_split(task: str, config: str, split: str) -> Split:
    original = f"{config}-{split.capitalize()}.jsonl"  # ARC-Challenge-Test.jsonl
    source = Source(task, f"{original} (or the Hub's {split} files)", HUB_DATASET, config, split)
    return Split(source, (original,))


def question_text(question: str) -> str:
    """lm-eval's `doc_to_text` for arc_easy and arc_challenge."""
    return f"Question: {question}\nAnswer:"


def arc_doc(record: Record) -> Doc:
    """A record in the release's layout or the Hub's, as lm-eval's ARC sees it."""
    if isinstance(record.row.get("question"), dict):  # the release: the choices under it
        question = record.text("question.stem")
        options = record.records("question.choices")
        texts = [o.text("text") for o in options]
        labels = [o.text("label") for o in options]
    else:
        question = record.text("question")
        texts = record.texts("choices.text")
        labels = record.texts("choices.label")
    key = record.text("answerKey")
    if len(texts) != len(labels) or key not in labels:
        raise record.fail(f"answerKey {key!r} is not one of the choices' labels {labels}")
    return Doc(question_text(question), texts, labels.index(key))


class ArcChallenge(ChoiceTask):
    name = "arc_challenge"
    version = TASKS[name].version
    metrics = headline_first(name, ("acc", "acc_norm"))
    scored: ClassVar[Split] = arc_split(name, "ARC-Challenge", "test")
    fewshot: ClassVar[Split | None] = arc_split(name, "ARC-Challenge", "train")

    def doc(self, record: Record) -> Doc:
        return arc_doc(record)


class ArcEasy(ChoiceTask):
    name = "arc_easy"
    version = TASKS[name].version
    metrics = headline_first(name, ("acc", "acc_norm"))
    scored: ClassVar[Split] = arc_split(name, "ARC-Easy", "test")
    fewshot: ClassVar[Split | None] = arc_split(name, "ARC-Easy", "train")

    def doc(self, record: Record) -> Doc:
        return arc_doc(record)
