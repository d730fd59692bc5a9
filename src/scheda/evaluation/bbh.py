"""BIG-Bench Hard: 27 reasoning tasks, 3-shot chain of thought, exact match on the final answer.

The prompts are lm-evaluation-harness's `bbh_cot_fewshot_<task>` (its
`tasks/bbh/cot_fewshot/` YAMLs), built here from the original release's files
(github.com/suzgunmirac/BIG-Bench-Hard): `cot-prompts/<task>.txt` gives the
task's description and its three worked exemplars, `bbh/<task>.json` the
questions. A prompt is

    {description}\\n\\n
    Q: {exemplar input}\\nA: Let's think step by step.\\n{exemplar answer}\\n\\n   (x 3)
    Q: {input}\\nA: Let's think step by step.\\n

exactly as lm-eval renders it: its description ends in a blank line, its
target delimiter is "" and its few-shot delimiter a blank line. A cot-prompts
file is the canary line, "-----", the description (which may run over several
paragraphs, as snarks' does) and the exemplars, each beginning "Q: " after a
blank line; an exemplar's answer is what follows "A: Let's think step by
step." with the whitespace around it stripped (sports_understanding's file
keeps it on the same line; lm-eval's YAML, and so its prompt, puts it on the
next).

Generation is greedy and stops at lm-eval's `until`: "</s>", "Q" (any capital
Q: the model starting a new question) or a blank line. lm-eval allows 1,024
new tokens; on a CPU that is minutes per question for a model that rambles,
so the default here is `DEFAULT_MAX_TOKENS` (256: the exemplars' answers are
at most a few hundred tokens), set per run and kept in its config. The answer
is read as lm-eval's `get-answer` filter reads it: the first match of
`(?<=the answer is )(.*)(?=.)` (the rest of the line after "the answer is",
less its last character, the full stop), stripped, or "[invalid]"; it must
equal the target exactly (lm-eval's `exact_match`: case and punctuation
count).

Items are grouped by task (`Item.group`); `limit` applies per task, as
lm-eval's --limit does. The headline figure is the mean over every item (the
`bbh_cot_fewshot` group's `weight_by_size` average); the summary adds the
per-task figures and their macro average.

Data: `--data DIR` with the release's `bbh/` layout (`tasks/<task>.json`,
and `cot-prompts/<task>.txt`, in DIR/bbh/ or DIR), or else, from the Hugging
Face Hub, the dataset lm-eval reads, `SaylorTwift/bbh` (one config per task,
its test split: the same rows). The Hub's copy holds the questions only; the
exemplars then come from the release's cot-prompts shipped with scheda
(`scheda/texts/bbh-cot-prompts/`, MIT, see LICENSE-bbh.txt).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from scheda.errors import UsageError
from scheda.evaluation.base import EvalModel, Item, ItemResult, Task
from scheda.evaluation.generation import generate_all
from scheda.evaluation.sources import Row, Source, load
from scheda.evaluation.tasks import TASKS
from scheda.sampling import Sampling

# The 27 tasks, in lm-eval's order (alphabetical, as its `bbh_cot_fewshot` group lists them).
SUBTASKS = (
    "boolean_expressions",
    "causal_judgement",
    "date_understanding",
    "disambiguation_qa",
    "dyck_languages",
    "formal_fallacies",
    "geometric_shapes",
    "hyperbaton",
    "logical_deduction_five_objects",
    "logical_deduction_seven_objects",
    "logical_deduction_three_objects",
    "movie_recommendation",
    "multistep_arithmetic_two",
    "navigate",
    "object_counting",
    "penguins_in_a_table",
    "reasoning_about_colored_objects",
    "ruin_names",
    "salient_translation_error_detection",
    "snarks",
    "sports_understanding",
    "temporal_sequences",
    "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects",
    "tracking_shuffled_objects_three_objects",
    "web_of_lies",
    "word_sorting",
)

HUB_DATASET = "SaylorTwift/bbh"  # lm-eval's `dataset_path` for every bbh task
EXEMPLARS = 3  # each cot-prompts file holds three
LM_EVAL_MAX_TOKENS = 1024  # lm-eval's max_gen_toks
DEFAULT_MAX_TOKENS = 256

# lm-eval's _cot_fewshot_template_yaml: generation_kwargs.until, and the get-answer filter.
STOP = ["</s>", "Q", "\n\n"]
ANSWER = re.compile(r"(?<=the answer is )(.*)(?=.)")
INVALID = "[invalid]"  # lm-eval's RegexFilter fallback

SEPARATOR = "\n-----\n"  # between a cot-prompts file's canary line and its prompt
QUESTION = "\n\nQ: "  # where each exemplar begins
STEP = "\nA: Let's think step by step."
SHIPPED = "bbh-cot-prompts"  # the folder of scheda/texts holding the release's cot-prompts


@dataclass(frozen=True)
class CotPrompt:
    """One task's cot-prompts file: the description and the worked exemplars (input, answer)."""

    description: str
    exemplars: tuple[tuple[str, str], ...]

    def prefix(self, shots: int) -> str:
        """The description and the first `shots` exemplars: the part every question shares."""
        solved = "".join(
            question_text(question) + answer + "\n\n" for question, answer in self.exemplars[:shots]
        )
        return self.description + "\n\n" + solved


def question_text(question: str) -> str:
    """lm-eval's `doc_to_text` for bbh_cot_fewshot."""
    return f"Q: {question}\nA: Let's think step by step.\n"


def parse_cot_prompt(text: str, where: str) -> CotPrompt:
    """A cot-prompts file as lm-eval's YAML holds it: description and (input, target) pairs."""
    prompt = text.split(SEPARATOR)[-1]
    description, *shots = prompt.split(QUESTION)
    exemplars = []
    for shot in shots:
        question, found, answer = shot.partition(STEP)
        if not found:
            raise UsageError(f"{where}: an exemplar without {STEP.strip()!r}")
        exemplars.append((question, answer.strip()))
    if len(exemplars) < EXEMPLARS or not description.strip():
        raise UsageError(
            f"{where}: not a BIG-Bench Hard cot-prompts file (a description, then "
            f"{EXEMPLARS} exemplars each beginning 'Q: ')"
        )
    return CotPrompt(description, tuple(exemplars))


def extract_answer(generation: str) -> str:
    """The answer as lm-eval's get-answer filter reads it (regex, then take_first)."""
    found: list[str] = ANSWER.findall(generation)
    return found[0].strip() if found else INVALID


def exact_match(answer: str, target: str) -> float:
    """lm-eval's exact_match with no options: the strings are equal."""
    return float(answer == target)


# -- data ------------------------------------------------------------------------------------


def source(subtask: str) -> Source:
    return Source(
        "bbh",
        f"BIG-Bench Hard's tasks/{subtask}.json",
        HUB_DATASET,
        config=subtask,
    )


def _is_release(folder: Path) -> bool:
    """The release's layout: a tasks/ folder of <task>.json files."""
    return (folder / "tasks").is_dir()


def _checked(rows: list[Any], where: str) -> list[dict[str, str]]:
    """Each row's input and target, or one line naming the row that lacks them."""
    checked = []
    for number, row in enumerate(rows):
        if not isinstance(row, dict):
            raise UsageError(f"{where}: example {number} is not an object with input and target")
        missing = [f for f in ("input", "target") if not isinstance(row.get(f), str)]
        if missing:
            raise UsageError(f"{where}: example {number} has no {' or '.join(missing)} string")
        checked.append({"input": row["input"], "target": row["target"]})
    if not checked:
        raise UsageError(f"{where}: no examples")
    return checked


def read_release(path: Path) -> list[dict[str, str]]:
    """A release file: {"examples": [{"input", "target"}, ...]}."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file (BIG-Bench Hard's tasks/<task>.json)")
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UsageError(f"{path}: not JSON ({exc})") from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("examples"), list):
        raise UsageError(f'{path}: expected {{"examples": [{{"input", "target"}}, ...]}}')
    return _checked(loaded["examples"], str(path))


def shipped_prompt(subtask: str) -> str:
    return resources.files("scheda").joinpath("texts", SHIPPED, f"{subtask}.txt").read_text("utf-8")


@dataclass
class SubtaskData:
    rows: list[dict[str, str]]
    prompt: CotPrompt
    prompt_from: str  # "data" (cot-prompts/ beside tasks/) or "shipped"


def load_subtask(subtask: str, data_dir: Path | None) -> SubtaskData:
    """A task's questions (from DIR or the Hub) and its cot prompt (DIR's, else shipped)."""
    folder: list[Path] = []

    def read_local(found: Path) -> list[dict[str, str]]:
        folder.append(found)
        return read_release(found / "tasks" / f"{subtask}.json")

    def read_hub(rows: list[Row]) -> list[dict[str, str]]:
        return _checked(rows, f"{HUB_DATASET} ({subtask})")

    rows = load(source(subtask), data_dir, _is_release, read_local, read_hub)
    beside = folder[0] / "cot-prompts" / f"{subtask}.txt" if folder else None
    if beside is not None and beside.is_file():
        text, where, origin = beside.read_text(encoding="utf-8"), str(beside), "data"
    else:
        text, where, origin = shipped_prompt(subtask), f"{SHIPPED}/{subtask}.txt", "shipped"
    return SubtaskData(rows, parse_cot_prompt(text, where), origin)


# -- the task --------------------------------------------------------------------------------


class BBH(Task):
    name = "bbh"
    version = TASKS["bbh"].version
    metrics = ("exact_match",)
    output = "generate"

    def __init__(
        self,
        shots: int = TASKS["bbh"].shots,
        limit: int | None = None,
        data_dir: Path | None = None,
        subtasks: list[str] | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        if not 0 <= shots <= EXEMPLARS:
            raise UsageError(
                f"BBH: {shots} shots asked; its prompts hold {EXEMPLARS} exemplars per task"
            )
        unknown = sorted(set(subtasks or []) - set(SUBTASKS))
        if unknown:
            raise UsageError(f"unknown BBH task {unknown[0]!r}: there are {len(SUBTASKS)}")
        if max_tokens < 1:
            raise UsageError(f"BBH: max_tokens must be at least 1, not {max_tokens}")
        super().__init__(shots, limit)
        self.data_dir = data_dir
        self.subtasks = [s for s in SUBTASKS if not subtasks or s in subtasks]
        self.max_tokens = max_tokens
        self._data: dict[str, SubtaskData] = {}

    @classmethod
    def made(cls, shots: int, limit: int | None, data: Path | None, samples: int) -> BBH:
        task = cls(shots, limit, data)
        task.items()  # data missing or bad fails here, before the model loads
        return task

    def subtask(self, name: str) -> SubtaskData:
        if name not in self._data:
            self._data[name] = load_subtask(name, self.data_dir)
        return self._data[name]

    def prompt(self, subtask: str, question: str) -> str:
        return self.subtask(subtask).prompt.prefix(self.shots) + question_text(question)

    def sampling(self) -> Sampling:
        return Sampling(temperature=0.0, max_tokens=self.max_tokens, stop=list(STOP), seed=0)

    def items(self) -> list[Item]:
        items = []
        for name in self.subtasks:
            rows = self.subtask(name).rows
            for index, row in enumerate(rows[: self.limit]):
                items.append(Item(f"{name}/{index}", dict(row), group=name))
        return items

    def score(self, item: Item, generation: str) -> ItemResult:
        answer = extract_answer(generation)
        target = item.data["target"]
        return ItemResult(
            item.key,
            {"exact_match": exact_match(answer, target)},
            detail={"target": target, "answer": answer, "generation": generation},
            group=item.group,
        )

    def run(self, items: list[Item], model: EvalModel) -> Iterator[ItemResult]:
        def prompt(item: Item) -> str:
            return self.prompt(item.group, item.data["input"])

        for item, generation in generate_all(items, model, prompt, self.sampling()):
            result = self.score(item, generation.text)
            # "length": cut at max_tokens before the model wrote "the answer is".
            result.detail["finish_reason"] = generation.finish_reason
            result.detail["completion_tokens"] = generation.completion_tokens
            yield result

    def config(self) -> dict[str, Any]:
        origins = sorted({self.subtask(s).prompt_from for s in self.subtasks})
        return {
            "shots": self.shots,
            "limit": self.limit,
            "subtasks": len(self.subtasks),
            "max_tokens": self.max_tokens,  # lm-eval's is LM_EVAL_MAX_TOKENS
            "stop": list(STOP),
            "temperature": 0.0,
            "prompts": "+".join(origins),  # cot-prompts beside the data ("data"), or scheda's copy
        }
