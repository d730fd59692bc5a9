"""Winogrande: a sentence with a blank and two options that could fill it; one makes sense.

lm-evaluation-harness's `winogrande` scores it by partial evaluation: each option fills
the blank and what comes after the blank is the continuation, the same for both, so the
two options are two contexts, not two continuations ("The trophy doesn't fit into the
brown suitcase because the trophy" and "... because the suitcase", each followed by
" is too large."). The option under which the sentence's end is likelier is the answer;
acc is the metric (acc_norm would divide the same continuation's length out of both).

In lm-eval's terms, `doc_to_choice` gives the two contexts, `doc_to_target` the
continuation and `doc_to_text` the right option's index; an exemplar is the sentence
filled with its right option, " ", and its end. The `winogrande_xl` configuration's
validation split is scored, the exemplars are train's first rows (5 by default).

Data: `allenai/winogrande` on the Hub (config winogrande_xl), or in a folder the
original release's dev.jsonl and train_xl.jsonl (each line {"sentence", "option1",
"option2", "answer": "1" or "2"}; the Hub's rows have the same fields).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from scheda.evaluation.base import EvalModel
from scheda.evaluation.choice import TARGET_DELIMITER, ChoiceTask, Doc, Record, Split
from scheda.evaluation.sources import Source
from scheda.evaluation.tasks import TASKS

HUB_DATASET = "allenai/winogrande"
HUB_CONFIG = "winogrande_xl"


def partial_doc(sentence: str, options: list[str], gold: int) -> Doc:
    """lm-eval's preprocess_winogrande: the sentence cut at its blank ("_"), each option
    ending one context, the rest after the blank (stripped) the shared continuation."""
    blank = sentence.index("_")
    contexts = [sentence[:blank] + option for option in options]
    return Doc(sentence[blank + 1 :].strip(), contexts, gold)


class Winogrande(ChoiceTask):
    name = "winogrande"
    version = TASKS[name].version
    metrics = ("acc",)
    scored: ClassVar[Split] = Split(
        Source(
            name, "dev.jsonl (or the Hub's validation files)", HUB_DATASET, HUB_CONFIG, "validation"
        ),
        ("dev.jsonl",),
    )
    fewshot: ClassVar[Split | None] = Split(
        Source(name, "train_xl.jsonl (for the exemplars)", HUB_DATASET, HUB_CONFIG, "train"),
        ("train_xl.jsonl",),
    )

    def doc(self, record: Record) -> Doc:
        sentence = record.text("sentence")
        if "_" not in sentence:
            raise record.fail("'sentence' has no blank (_) for the options to fill")
        options = [record.text("option1"), record.text("option2")]
        answer = str(record.value("answer"))
        if answer not in ("1", "2"):
            raise record.fail(f"'answer' is {answer!r}, where it must be 1 or 2")
        return partial_doc(sentence, options, int(answer) - 1)

    def exemplar(self, doc: Doc) -> str:
        # The sentence with its right option in the blank, then its end.
        return doc.choices[doc.gold] + TARGET_DELIMITER + doc.text

    def item_data(self, prefix: str, doc: Doc) -> dict[str, Any]:
        return {
            "contexts": [prefix + context for context in doc.choices],
            "continuation": TARGET_DELIMITER + doc.text,
            "gold": doc.gold,
        }

    def score(self, model: EvalModel, data: dict[str, Any]) -> dict[str, Any]:
        """One scorer call per context: the same continuation after each."""
        logliks = [
            model.scorer.choices(context, [data["continuation"]])[0].total
            for context in data["contexts"]
        ]
        pick = int(np.argmax(logliks))
        return {
            "metrics": {"acc": float(pick == data["gold"])},
            "detail": {"gold": data["gold"], "pred": pick, "logliks": logliks},
        }
