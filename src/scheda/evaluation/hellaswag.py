"""HellaSwag: the start of a scene (ActivityNet captions, WikiHow steps) and four endings.

lm-evaluation-harness's `hellaswag`: the context is "{activity_label}: {ctx_a}
{ctx_b.capitalize()}" and the choices the four endings, each passed through lm-eval's
`preprocess` (WikiHow's " [title]" becomes ". ", other bracketed markers such as
"[header]" and "[step]" go, double spaces become one). Scored on the validation split
(the test split's labels are not public); acc_norm is the figure the leaderboards give.
The exemplars are train's first rows (10 by default, as the Open LLM Leaderboard ran it).

Data: `Rowan/hellaswag` on the Hub, or in a folder the original release's
hellaswag_val.jsonl and hellaswag_train.jsonl (the Hub's rows have the same fields:
activity_label, ctx_a, ctx_b, endings, and label, a string). The dataset's main branch
holds only its loading script, so from the Hub the rows are the Hub's own conversion
(refs/convert/parquet, default/SPLIT/0000.parquet; see docs/eval.md).
"""

from __future__ import annotations

import re
from typing import ClassVar

from scheda.evaluation.choice import ChoiceTask, Doc, Record, Split, headline_first
from scheda.evaluation.sources import Source
from scheda.evaluation.tasks import TASKS

HUB_DATASET = "Rowan/hellaswag"
BRACKETED = re.compile(r"\[.*?\]")


def preprocess(text: str) -> str:
    """lm-eval's hellaswag `preprocess`, step for step (its order matters: " [title]" is
    replaced before the other bracketed markers are removed)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = BRACKETED.sub("", text)
    return text.replace("  ", " ")


def hellaswag_doc(record: Record) -> Doc:
    """lm-eval's `process_docs`: the query and the cleaned endings."""
    context = record.text("ctx_a") + " " + record.text("ctx_b").capitalize()
    endings = record.texts("endings")
    label = str(record.value("label"))
    if not label.isdigit() or not int(label) < len(endings):
        raise record.fail(f"'label' is {label!r}, not the index of one of the endings")
    query = preprocess(record.text("activity_label") + ": " + context)
    return Doc(query, [preprocess(e) for e in endings], int(label))


class HellaSwag(ChoiceTask):
    name = "hellaswag"
    version = TASKS[name].version
    metrics = headline_first(name, ("acc", "acc_norm"))
    scored: ClassVar[Split] = Split(
        Source(
            name,
            "hellaswag_val.jsonl (or the Hub's validation files)",
            HUB_DATASET,
            None,
            "validation",
        ),
        ("hellaswag_val.jsonl",),
    )
    fewshot: ClassVar[Split | None] = Split(
        Source(name, "hellaswag_train.jsonl (for the exemplars)", HUB_DATASET, None, "train"),
        ("hellaswag_train.jsonl",),
    )

    def doc(self, record: Record) -> Doc:
        return hellaswag_doc(record)
