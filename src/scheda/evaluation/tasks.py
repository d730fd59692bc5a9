"""The tasks `scheda eval` knows, each declared once: here, and nowhere else.

A task's name (what `--tasks` takes), its default shots (the spec sheets' own:
MMLU 5-shot, GSM-8K 8-shot CoT, HumanEval 0-shot), the catalog's benchmark row
its figures are set beside, the version of its prompts and scoring, and the
class that runs it, named as "module:Class" and imported only when the task is
made (so this module imports no task, and every task may read its own entry).
Adding a task is adding one line to `TASKS`.
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
    published: str  # the catalog's benchmark row it matches (the spec sheets' own label)
    # Raised when the task's prompts or scoring change: from 2 on it is part of a run's
    # config, so a run stored by an earlier version is not resumed as this one.
    version: int
    runs: str  # "module:Class", the Task that scores it

    def make(self, shots: int | None, limit: int | None, data: Path | None, samples: int) -> Task:
        module, _, name = self.runs.partition(":")
        task_class: type[Task] = getattr(importlib.import_module(module), name)
        return task_class.made(self.shots if shots is None else shots, limit, data, samples)


# The tasks by name, in the order `--tasks` lists them.
TASKS: dict[str, TaskInfo] = {
    t.name: t
    for t in (
        TaskInfo("mmlu", 5, "MMLU (5-shot)", 1, "scheda.evaluation.multiple_choice:MMLU"),
        TaskInfo("gsm8k", 8, "GSM-8K (8-shot, CoT)", 1, "scheda.evaluation.gsm8k:GSM8K"),
        TaskInfo("humaneval", 0, "HumanEval (0-shot)", 1, "scheda.evaluation.humaneval:HumanEval"),
    )
}
