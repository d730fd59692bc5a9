"""MATH (Hendrycks et al.): competition problems, Minerva's 4-shot prompt, answers checked for
equivalence with math-verify.

The prompt is lm-evaluation-harness's `minerva_math`: the four solved
problems of the Minerva paper (Lewkowycz et al., 2022, appendix D; lm-eval's
`minerva_math/utils.py` `list_fewshot_samples`), each "Problem:\\n{problem}
\\n\\nSolution: {solution}" ending "Final Answer: The final answer is X. I
hope it is correct.", joined by blank lines, then "Problem:\\n{problem}\\n\\n
Solution:" for the scored one. The solution is generated greedily until the
model starts another "Problem:", or `max_tokens` (lm-eval's default 256).

The answer is read as Minerva reads it: X of the last "Final Answer: The final
answer is X. I hope it is correct." (lm-eval's `get_unnormalized_answer`), and
where the model wrote no such line, the last \\boxed{...} of its solution. The
gold answer is the last \\boxed{...} of the reference solution. The two are
compared with math-verify (`parse` and `verify`), which reads the LaTeX into
sympy and checks that they are equal as numbers, expressions, intervals or
sets: 0.5 and \\frac{1}{2}, \\sqrt{8} and 2\\sqrt{2} are the same answer.
Strings are never compared. lm-eval's own `exact_match` compares sympy's
parse of Minerva's normalised strings; its `math_verify` metric parses the
whole generation; here math-verify judges the extracted answer.

Items are grouped by subject (the seven of the Hub's configs); `limit`
applies per subject, as lm-eval's `--limit` does per subtask.

Data: `--data DIR` with the original release (`MATH/test/<subject>/*.json`,
or `test/<subject>/*.json` in DIR), or the Hub's layout of parquet files
(`<subject>/test-*.parquet`); or `EleutherAI/hendrycks_math` from the
Hugging Face Hub.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from scheda.errors import UsageError, install_hint
from scheda.evaluation import sources
from scheda.evaluation.base import Item, ItemResult
from scheda.evaluation.generated import SEED, GeneratedTask, text_field
from scheda.evaluation.tasks import TASKS

SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)
REPO = "EleutherAI/hendrycks_math"
FILES = "MATH's test/<subject>/*.json files or the Hub's <subject>/test-*.parquet"
FEWSHOT_DELIMITER = "\n\n"

# Minerva's four solved problems, as lm-eval's `minerva_math/utils.py` lists them.
MINERVA_SHOTS = (
    {
        "problem": "Find the domain of the expression  $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.",
        "solution": "The expressions inside each square root must be non-negative. Therefore, "
        "$x-2 \\ge 0$, so $x\\ge2$, and $5 - x \\ge 0$, so $x \\le 5$. Also, the denominator "
        "cannot be equal to zero, so $5-x>0$, which gives $x<5$. Therefore, the domain of the "
        "expression is $\\boxed{[2,5)}$.\nFinal Answer: The final answer is $[2,5)$. I hope it "
        "is correct.",
    },
    {
        "problem": "If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find "
        "$\\det (\\mathbf{A} \\mathbf{B}).$",
        "solution": "We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})"
        "(\\det \\mathbf{B}) = (2)(12) = \\boxed{24}.$\nFinal Answer: The final answer is "
        "$24$. I hope it is correct.",
    },
    {
        "problem": "Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound "
        "weights instead, how many times must Terrell lift them in order to lift the same "
        "total weight?",
        "solution": "If Terrell lifts two 20-pound weights 12 times, he lifts a total of "
        "$2\\cdot 12\\cdot20=480$ pounds of weight.  If he lifts two 15-pound weights instead "
        "for $n$ times, he will lift a total of $2\\cdot15\\cdot n=30n$ pounds of weight.  "
        "Equating this to 480 pounds, we can solve for $n$:\n\\begin{align*}\n30n&=480\\\\\n"
        "\\Rightarrow\\qquad n&=480/30=\\boxed{16}\n\\end{align*}\nFinal Answer: The final "
        "answer is $16$. I hope it is correct.",
    },
    {
        "problem": "If the system of equations\n\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n"
        "\\end{align*}has a solution $(x, y)$ where $x$ and $y$ are both nonzero,\nfind "
        "$\\frac{a}{b},$ assuming $b$ is nonzero.",
        "solution": "If we multiply the first equation by $-\\frac{3}{2}$, we obtain\n\n"
        "$$6y-9x=-\\frac{3}{2}a.$$Since we also know that $6y-9x=b$, we have\n\n"
        "$$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=\\boxed{-\\frac{2}{3}}.$$\nFinal Answer: "
        "The final answer is $-\\frac{2}{3}$. I hope it is correct.",
    },
)

# lm-eval's `get_unnormalized_answer`: its dots are any character, as there.
FINAL_ANSWER = re.compile(r"Final Answer: The final answer is(.*?). I hope it is correct.")
HOPE = "I hope it is correct."


def question_text(problem: str) -> str:
    """lm-eval's `minerva_math` `doc_to_text`."""
    return "Problem:\n" + problem + "\n\nSolution:"


def exemplar(shot: dict[str, str]) -> str:
    return f"{question_text(shot['problem'])} {shot['solution']}"


def last_boxed(text: str) -> str | None:
    """What the last \\boxed{...} (or \\fbox{...}) holds, its braces balanced; for the
    brace-less "\\boxed 5", what follows up to the next "$". None when there is none."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    body = start + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
    if text.startswith(" ", body):
        return text[body + 1 :].split("$")[0].strip()
    if not text.startswith("{", body):
        return None
    depth = 0
    for end in range(body, len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if depth == 0:
            return text[body + 1 : end]
    return None  # never closed: the generation was cut off inside it


def final_answer(text: str) -> str | None:
    """X of Minerva's "Final Answer: The final answer is X. I hope it is correct.", read as
    lm-eval reads it (the closing sentence may be missing: the model is stopped there)."""
    match = FINAL_ANSWER.search(text + HOPE)
    return match.group(1).strip() if match else None


def extract_answer(generation: str) -> str | None:
    """The model's answer: Minerva's final-answer line, else the last \\boxed{...}."""
    answer = final_answer(generation)
    if answer is None:
        answer = last_boxed(generation)
    return answer


def _latex(answer: str) -> str:
    """An answer as math-verify reads it best: boxed in one pair of dollars (an answer in
    "$X$", as Minerva's line writes it, loses its own)."""
    inner = answer.strip()
    if len(inner) > 1 and inner.startswith("$") and inner.endswith("$"):
        inner = inner.strip("$").strip()
    return f"$\\boxed{{{inner}}}$"


def equivalent(gold: str, answer: str | None) -> bool:
    """math-verify's judgement that the answer equals the gold one (never a string match)."""
    if answer is None or not answer.strip():
        return False
    try:
        from math_verify import parse, verify
    except ImportError:
        hint = install_hint("eval")
        raise UsageError(f"MATH's answers are checked with math-verify: {hint}") from None
    # math-verify bounds its work with SIGALRM, which only the main thread may set; elsewhere
    # (a server's worker thread) it runs unbounded rather than failing every answer.
    limit = 5 if threading.current_thread() is threading.main_thread() else None
    parsed_gold = parse(_latex(gold), parsing_timeout=limit)
    parsed = parse(_latex(answer), parsing_timeout=limit)
    return bool(verify(parsed_gold, parsed, timeout_seconds=limit))


def gold_answer(solution: str, where: str) -> str:
    answer = last_boxed(solution)
    if answer is None:
        raise UsageError(f"{where}: the solution has no \\boxed{{}} answer")
    return answer


# -- data -----------------------------------------------------------------------------------


def source(subject: str) -> sources.Source:
    return sources.Source("math", FILES, REPO, subject, "test")


def _original_folder(folder: Path) -> Path | None:
    """The release's test/ folder, in the folder or in its MATH/."""
    for candidate in (folder / "test", folder / "MATH" / "test"):
        if any((candidate / subject).is_dir() for subject in SUBJECTS):
            return candidate
    return None


def _holds_data(folder: Path) -> bool:
    hub_layout = any(any((folder / s).glob("test-*.parquet")) for s in SUBJECTS)
    return hub_layout or _original_folder(folder) is not None


def _record(row: Any, where: str) -> dict[str, str]:
    problem, solution = text_field(row, "problem", where), text_field(row, "solution", where)
    return {"problem": problem, "solution": solution, "answer": gold_answer(solution, where)}


def _original_subject(folder: Path) -> list[tuple[str, dict[str, str]]]:
    """A subject's problems, one JSON file each, in the order of their numbers."""

    def number(path: Path) -> tuple[int, str]:
        return (int(path.stem), "") if path.stem.isdigit() else (0, path.stem)

    rows = []
    for path in sorted(folder.glob("*.json"), key=number):
        try:
            row = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path}: not a readable JSON file ({exc})") from None
        rows.append((path.stem, _record(row, str(path))))
    return rows


def read_local(folder: Path) -> dict[str, list[tuple[str, dict[str, str]]]]:
    """Each subject's problems (key, record) from the original release or the Hub's layout."""
    original = _original_folder(folder)
    by_subject: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for subject in SUBJECTS:
        if original is not None and (original / subject).is_dir():
            by_subject[subject] = _original_subject(original / subject)
        elif any((folder / subject).glob("test-*.parquet")):
            rows = sources.parquet_rows(list((folder / subject).glob("test-*.parquet")))
            by_subject[subject] = _numbered(rows, f"{folder / subject}")
    return by_subject


def _numbered(rows: list[Any], where: str) -> list[tuple[str, dict[str, str]]]:
    return [(str(i), _record(row, f"{where} row {i}")) for i, row in enumerate(rows)]


def load(data_dir: Path | None) -> dict[str, list[tuple[str, dict[str, str]]]]:
    """The test problems by subject: from `--data DIR`, else the Hub's seven configs."""
    folder = sources.local_folder(source(SUBJECTS[0]), data_dir, _holds_data)
    if folder is not None:
        return read_local(folder)
    return {
        subject: _numbered(sources.hub_rows(source(subject)), f"math: {REPO} ({subject})")
        for subject in SUBJECTS
    }


class MATH(GeneratedTask):
    name = "math"
    version = TASKS["math"].version
    metrics = ("exact_match",)
    stop = ("Problem:",)
    default_max_tokens = 256  # lm-eval's default for generation

    def __init__(
        self,
        shots: int | None = None,
        limit: int | None = None,
        data_dir: Path | None = None,
        seed: int = SEED,
        max_tokens: int | None = None,
    ) -> None:
        super().__init__(shots, limit, data_dir, seed, max_tokens)
        if self.shots > len(MINERVA_SHOTS):
            raise UsageError(
                f"math: Minerva's prompt has {len(MINERVA_SHOTS)} shots, not {self.shots}"
            )

    @cached_property
    def _problems(self) -> dict[str, list[tuple[str, dict[str, str]]]]:
        return load(self.data_dir)

    def exemplars(self) -> list[Any]:
        return [f"minerva/{i}" for i in range(self.shots)]

    def prefix(self) -> str:
        return "".join(exemplar(s) + FEWSHOT_DELIMITER for s in MINERVA_SHOTS[: self.shots])

    def question(self, item: Item) -> str:
        return question_text(item.data["problem"])

    def items(self) -> list[Item]:
        return list(self._items())

    def _items(self) -> Iterator[Item]:
        for subject, rows in self._problems.items():
            for key, row in rows[: self.limit]:
                yield Item(f"{subject}/{key}", row, group=subject)

    def score(self, item: Item, answer: str) -> ItemResult:
        extracted = extract_answer(answer)
        correct = equivalent(item.data["answer"], extracted)
        return ItemResult(
            item.key,
            {"exact_match": float(correct)},
            detail={"gold": item.data["answer"], "extracted": extracted},
            group=item.group,
        )
