"""AGIEval, English: lm-evaluation-harness's `agieval_en` group, zero-shot.

The subsets are the English ones of AGIEval v1 (Zhong et al., 2023): eight
of multiple choice (aqua-rat, logiqa-en, lsat-ar, lsat-lr, lsat-rc, sat-math,
sat-en, sat-en-without-passage) and `math`, whose answers are written out.
lm-eval's group also holds gaokao-english; the release files this task was
built on do not, so it is left out unless asked for by name (`subsets`), and
the run's config says so.

lm-eval reads the `hails/agieval-<subset>` datasets, whose `query` was made by
AGIEval's own zero-shot prompt code from the same release files (the dataset
cards: "processed as in that repo"). That construction is followed here
exactly: AGIEval's `src/dataset_loader.py`, `convert_zero_shot`
(github.com/ruixiangcui/AGIEval), for an English multiple-choice row the two
lines

    {passage}Q: {question} Answer Choices: {the options, joined by " "}
    A: Among A through {L}, the answer is

with the passage as it is (nothing between it and "Q: "; "" when null) and
{L} the letter of the last option (E when a row has a single option, as its
code has it); for `math`, "{passage}Q: {question}\\nA: The answer is". The
choices are the options as the release writes them ("(A)5(√3 + 1)"), the gold
is the label's index (hails' `gold`, a list).

Multiple choice is scored by log-likelihood as lm-eval's
`process_results_mcqa` scores it: each choice is the continuation " " +
choice (lm-eval's target delimiter); `acc` is right when the likeliest choice
is a gold one, `acc_norm` when the likeliest per character of the choice is
(its length without the delimiter, as lm-eval counts it).

`math` is generated, greedy, at most 32 new tokens and stopping at "Q:"
(lm-eval's `agieval_math`), and marked right when lm-eval's `is_equiv` holds
between the generation and the answer: both are parsed by
`parse_math_answer` (the last \\boxed{...}, else the last $...$, else what
follows the last "=", else the last number), then normalised by the MATH
paper's `_strip_string` and compared as strings. Those functions are
lm-eval's `tasks/agieval/utils.py` (themselves AGIEval's `post_process.py`
and Hendrycks et al.'s `math_equivalence.py`), re-stated below with their
quirks kept: a parse that finds nothing on both sides counts as equal, and a
normalisation that fails compares the parsed strings as they are.

The headline `acc` is the mean over every item of every subset (the group's
`weight_by_size` average, math included); `acc_norm` is over the
multiple-choice items; the summary adds each subset's `acc` and their macro
average.

Data: `--data DIR` holding the release's `<subset>.jsonl` files (AGIEval's
`data/v1/`: passage, question, options, label, answer per line), in
DIR/agieval/ or DIR; or else `hails/agieval-<subset>` from the Hugging Face
Hub (query, choices, gold; query and answer for math).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from scheda.errors import UsageError
from scheda.evaluation.base import EvalModel, Item, ItemResult, Task
from scheda.evaluation.generation import generate_all
from scheda.evaluation.sources import Row, Source, load
from scheda.evaluation.tasks import TASKS
from scheda.sampling import Sampling

# lm-eval's agieval_en group, in its order; gaokao-english is not among the files here.
SUBSETS = (
    "aqua-rat",
    "gaokao-english",
    "logiqa-en",
    "lsat-ar",
    "lsat-lr",
    "lsat-rc",
    "math",
    "sat-en-without-passage",
    "sat-en",
    "sat-math",
)
NOT_IN_RELEASE_FILES = ("gaokao-english",)
DEFAULT_SUBSETS = tuple(s for s in SUBSETS if s not in NOT_IN_RELEASE_FILES)
CLOZE = ("math",)  # AGIEval's english_cloze_datasets; the rest are its english_qa_datasets

HUB_PREFIX = "hails/agieval-"  # lm-eval's dataset_path, per subset
OPTION_LETTERS = "ABCDEFG"  # AGIEval's option_string

# lm-eval's agieval_math generation_kwargs.
MATH_STOP = ["Q:"]
MATH_MAX_TOKENS = 32


# -- AGIEval's zero-shot prompts --------------------------------------------------------------


def zero_shot_query(row: dict[str, Any], subset: str) -> str:
    """AGIEval's `convert_zero_shot` for an English subset: the query hails' datasets hold."""
    passage = row.get("passage") or ""  # null (or, as in sat-math, "") is no passage
    if subset in CLOZE:
        return f"{passage}Q: {row['question']}\nA: The answer is"
    options: list[str] = row["options"]
    count = 5 if len(options) == 1 else len(options)  # AGIEval's own special case
    return (
        f"{passage}Q: {row['question']} Answer Choices: {' '.join(options)}\n"
        f"A: Among A through {OPTION_LETTERS[count - 1]}, the answer is"
    )


def mcqa_metrics(logliks: list[float], choices: list[str], gold: list[int]) -> dict[str, float]:
    """lm-eval's `process_results_mcqa`: argmax of the log-likelihoods, and of them per
    character of the choice (np.argmax: the first of equal ones), each right when in gold."""
    lls = np.array(logliks)
    lengths = np.array([float(len(c)) for c in choices])
    return {
        "acc": float(int(np.argmax(lls)) in gold),
        "acc_norm": float(int(np.argmax(lls / lengths)) in gold),
    }


# -- lm-eval's agieval_math answer parsing ----------------------------------------------------


def _last_boxed(text: str) -> str | None:
    """The last \\boxed{...} (or \\fbox{...}) with its braces balanced, or None."""
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return None
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


def _unboxed(boxed: str | None) -> str | None:
    """What a "\\boxed{...}" holds (after its last "=", if any); None if it is not one."""
    left = "\\boxed{"
    if boxed is None or not boxed.startswith(left) or not boxed.endswith("}"):
        return None
    inside = boxed[len(left) : -1]
    return inside.split("=")[-1].lstrip(" ") if "=" in inside else inside


def _in_dollars(text: str) -> str | None:
    """The last $...$ of any line (greedy within it), after its last "=" if any."""
    found: list[str] = re.findall(r"\$(.*)\$", text)
    if not found:
        return None
    last = found[-1]
    return last.split("=")[-1].lstrip(" ") if "=" in last else last


def _without_dollars(text: str) -> str | None:
    """What follows the last "=" (to a literal backslash-n), else the last number."""
    if "=" in text:
        last = text.split("=")[-1].lstrip(" ").rstrip(".")
        # A literal backslash and n, as the original code tests, not a newline.
        return last.split("\\n")[0] if "\\n" in last else last
    numbers: list[str] = re.findall(r"(?:\$)?\d+(?:\.\d+)?(?![\w\d])", text)
    return numbers[-1] if numbers else None


def parse_math_answer(text: str) -> str | None:
    """lm-eval's agieval `parse_math_answer`: the answer a text ends on, or None."""
    if "\\boxed" in text:
        return _unboxed(_last_boxed(text))
    return _in_dollars(text) or _without_dollars(text)


def _fix_fracs(text: str) -> str:
    """\\frac12 -> \\frac{1}{2}, \\frac1b -> \\frac{1}{b}, \\frac1{72} -> \\frac{1}{72}.
    A \\frac with nothing after it raises IndexError, as the original does."""
    first, *rest = text.split("\\frac")
    out = first
    for part in rest:
        out += "\\frac"
        if part[0] == "{":
            out += part
            continue
        if len(part) < 2:
            return text
        numerator, second = part[0], part[1]
        if second != "{":
            out += "{" + numerator + "}{" + second + "}" + part[2:]
        else:
            out += "{" + numerator + "}" + second + part[2:]
    return out


def _fix_a_slash_b(text: str) -> str:
    """ "3/4" -> "\\frac{3}{4}" when both sides are plain integers, as int() writes them."""
    parts = text.split("/")
    if len(parts) != 2:
        return text
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return text
    return "\\frac{" + str(a) + "}{" + str(b) + "}" if text == f"{a}/{b}" else text


def _remove_right_units(text: str) -> str:
    """Drop a trailing "\\text{ unit}"; more than one raises ValueError (the original asserts)."""
    if "\\text{ " not in text:
        return text
    parts = text.split("\\text{ ")
    if len(parts) != 2:
        raise ValueError("more than one \\text{ ")
    return parts[0]


def _fix_sqrt(text: str) -> str:
    """\\sqrt3 -> \\sqrt{3}. A \\sqrt with nothing after it raises IndexError, as the original."""
    if "\\sqrt" not in text:
        return text
    first, *rest = text.split("\\sqrt")
    out = first
    for part in rest:
        out += "\\sqrt" + part if part[0] == "{" else "\\sqrt{" + part[0] + "}" + part[1:]
    return out


def strip_string(text: str) -> str:
    """The MATH paper's `_strip_string` normalisation, as lm-eval's agieval utils hold it."""
    for old, new in (
        ("\n", ""),
        ("\\!", ""),
        ("\\\\", "\\"),
        ("tfrac", "frac"),
        ("dfrac", "frac"),
        ("\\left", ""),
        ("\\right", ""),
        ("^{\\circ}", ""),
        ("^\\circ", ""),
        ("\\$", ""),
    ):
        text = text.replace(old, new)
    text = _remove_right_units(text)
    text = text.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not text:
        return text
    if text[0] == ".":
        text = "0" + text
    sides = text.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # "k = 3" -> "3"
        text = sides[1]
    text = _fix_sqrt(text).replace(" ", "")
    text = _fix_fracs(text)
    if text == "0.5":
        text = "\\frac{1}{2}"
    return _fix_a_slash_b(text)


def is_equiv(generated: str | None, answer: str | None) -> bool:
    """lm-eval's agieval `is_equiv`: both parsed, normalised and compared."""
    if generated is None or answer is None:
        return generated is None and answer is None
    first, second = parse_math_answer(generated), parse_math_answer(answer)
    if first is None or second is None:
        # The original normalises None, fails, and compares the parses as they are.
        return first == second
    try:
        return strip_string(first) == strip_string(second)
    except (IndexError, ValueError):
        return first == second


# -- data ------------------------------------------------------------------------------------


def source(subset: str) -> Source:
    return Source("agieval", f"AGIEval's {subset}.jsonl", HUB_PREFIX + subset)


def _gold(label: Any, options: list[str], where: str) -> list[int]:
    """The label's letters as option indices (hails' gold)."""
    if not isinstance(label, str) or not label:
        raise UsageError(f"{where}: 'label' must be the right option's letter")
    gold = [ord(letter) - ord("A") for letter in label]
    if not all(0 <= g < len(options) for g in gold):
        raise UsageError(f"{where}: label {label!r} names no option of {len(options)}")
    return gold


def release_item(row: Any, subset: str, where: str) -> dict[str, Any]:
    """A release line as lm-eval's doc: query and choices and gold, or query and answer."""
    if not isinstance(row, dict):
        raise UsageError(f"{where}: each line must be a JSON object")
    if not isinstance(row.get("question"), str):
        raise UsageError(f"{where}: no 'question' string")
    if not isinstance(row.get("passage"), str | None):
        raise UsageError(f"{where}: 'passage' must be a string or null")
    if subset in CLOZE:
        if not isinstance(row.get("answer"), str):
            raise UsageError(f"{where}: no 'answer' string (a {subset} line needs one)")
        return {"query": zero_shot_query(row, subset), "answer": row["answer"]}
    options = row.get("options")
    if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
        raise UsageError(f"{where}: 'options' must be a list of strings")
    return {
        "query": zero_shot_query(row, subset),
        "choices": list(options),
        "gold": _gold(row.get("label"), options, where),
    }


def hub_item(row: Row, subset: str, where: str) -> dict[str, Any]:
    """A hails/agieval-* row, checked: the same doc, already built."""
    if not isinstance(row.get("query"), str):
        raise UsageError(f"{where}: no 'query' string")
    if subset in CLOZE:
        if not isinstance(row.get("answer"), str):
            raise UsageError(f"{where}: no 'answer' string")
        return {"query": row["query"], "answer": row["answer"]}
    choices, gold = row.get("choices"), row.get("gold")
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise UsageError(f"{where}: 'choices' must be a list of strings")
    if (
        not isinstance(gold, list)
        or not gold
        or not all(isinstance(g, int) and 0 <= g < len(choices) for g in gold)
    ):
        raise UsageError(f"{where}: 'gold' must list indices of choices")
    return {"query": row["query"], "choices": list(choices), "gold": list(gold)}


def read_release(path: Path, subset: str) -> list[dict[str, Any]]:
    docs = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise UsageError(f"{path}:{number}: not a JSON line ({exc})") from None
            docs.append(release_item(row, subset, f"{path}:{number}"))
    if not docs:
        raise UsageError(f"{path}: no questions")
    return docs


def load_subset(subset: str, data_dir: Path | None) -> list[dict[str, Any]]:
    """A subset's docs from the release file in DIR, else from hails' dataset on the Hub."""

    def read_hub(rows: list[Row]) -> list[dict[str, Any]]:
        where = HUB_PREFIX + subset
        return [hub_item(row, subset, f"{where} row {i}") for i, row in enumerate(rows)]

    return load(
        source(subset),
        data_dir,
        lambda folder: (folder / f"{subset}.jsonl").is_file(),
        lambda folder: read_release(folder / f"{subset}.jsonl", subset),
        read_hub,
    )


# -- the task --------------------------------------------------------------------------------


class AGIEval(Task):
    name = "agieval"
    version = TASKS["agieval"].version
    metrics = ("acc", "acc_norm")
    output = "generate"  # math is generated (the slot count is part of a run's config)

    def __init__(
        self,
        shots: int = TASKS["agieval"].shots,
        limit: int | None = None,
        data_dir: Path | None = None,
        subsets: list[str] | None = None,
    ) -> None:
        if shots != 0:
            raise UsageError(
                f"AGIEval: {shots} shots asked; lm-eval's agieval_en is zero-shot (--shots 0)"
            )
        unknown = sorted(set(subsets or []) - set(SUBSETS))
        if unknown:
            raise UsageError(f"unknown AGIEval subset {unknown[0]!r}: known are {SUBSETS}")
        super().__init__(shots, limit)
        self.data_dir = data_dir
        wanted = subsets or DEFAULT_SUBSETS
        self.subsets = [s for s in SUBSETS if s in wanted]
        self._docs: dict[str, list[dict[str, Any]]] = {}

    @classmethod
    def made(cls, shots: int, limit: int | None, data: Path | None, samples: int) -> AGIEval:
        task = cls(shots, limit, data)
        task.items()  # data missing or bad fails here, before the model loads
        return task

    def docs(self, subset: str) -> list[dict[str, Any]]:
        if subset not in self._docs:
            self._docs[subset] = load_subset(subset, self.data_dir)
        return self._docs[subset]

    def items(self) -> list[Item]:
        return [
            Item(f"{subset}/{index}", doc, group=subset)
            for subset in self.subsets
            for index, doc in enumerate(self.docs(subset)[: self.limit])
        ]

    def score_choices(self, item: Item, model: EvalModel) -> ItemResult:
        doc = item.data
        continuations = [" " + c for c in doc["choices"]]  # lm-eval's target delimiter " "
        logliks = [s.total for s in model.scorer.choices(doc["query"], continuations)]
        return ItemResult(
            item.key,
            mcqa_metrics(logliks, doc["choices"], doc["gold"]),
            detail={"gold": doc["gold"], "logliks": logliks},
            group=item.group,
        )

    def score_math(self, item: Item, generation: str) -> ItemResult:
        answer = item.data["answer"]
        return ItemResult(
            item.key,
            {"acc": float(is_equiv(generation, answer))},
            detail={
                "answer": answer,
                "generation": generation,
                "parsed": parse_math_answer(generation),
                "parsed_answer": parse_math_answer(answer),
            },
            group=item.group,
        )

    def math_sampling(self) -> Sampling:
        return Sampling(temperature=0.0, max_tokens=MATH_MAX_TOKENS, stop=list(MATH_STOP), seed=0)

    def run(self, items: list[Item], model: EvalModel) -> Iterator[ItemResult]:
        # In order: a subset's questions share their passages' openings less often than
        # MMLU's prefix, but one subset after another keeps the scorer's cache warm.
        for item in items:
            if item.group not in CLOZE:
                yield self.score_choices(item, model)
        cloze = [item for item in items if item.group in CLOZE]
        for item, generation in generate_all(
            cloze, model, lambda i: str(i.data["query"]), self.math_sampling()
        ):
            result = self.score_math(item, generation.text)
            result.detail["finish_reason"] = generation.finish_reason
            yield result

    def config(self) -> dict[str, Any]:
        return {
            "shots": self.shots,
            "limit": self.limit,
            "subsets": list(self.subsets),
            "left_out": [
                f"{s}: lm-eval's agieval_en holds it; the AGIEval release files read here do not"
                for s in SUBSETS
                if s not in self.subsets
            ],
            "math": {"max_tokens": MATH_MAX_TOKENS, "stop": list(MATH_STOP), "temperature": 0.0},
        }
