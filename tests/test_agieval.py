"""AGIEval English: the zero-shot queries from the release files, lm-eval's math parsing, bad
data, a real run.

The release files are AGIEval's `data/v1/` (github.com/ruixiangcui/AGIEval at 5c77d07),
beside the project. The expected values of the math parsing are what lm-evaluation-harness
0.4.13's `lm_eval/tasks/agieval/utils.py` returns for the same strings (checked against it
on every real solution in tests/test_eval_lm_eval_prompts.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheda.errors import UsageError
from scheda.evaluation.agieval import (
    DEFAULT_SUBSETS,
    MATH_MAX_TOKENS,
    MATH_STOP,
    AGIEval,
    is_equiv,
    mcqa_metrics,
    parse_math_answer,
    zero_shot_query,
)
from scheda.evaluation.base import EvalModel
from scheda.evaluation.runner import make_task, summarize
from scheda.resolve import default_model_path
from tests.needs import SHARED_DATA, require

AGIEVAL_DIR = SHARED_DATA / "agieval"


@pytest.fixture
def agieval_data() -> Path:
    """AGIEval's English release files beside the project (skips without them; fails in CI)."""
    require(*(AGIEVAL_DIR / f"{s}.jsonl" for s in DEFAULT_SUBSETS), what="AGIEval data")
    return AGIEVAL_DIR


needs_data = pytest.mark.usefixtures("agieval_data")


def first_row(subset: str) -> dict[str, object]:
    with (AGIEVAL_DIR / f"{subset}.jsonl").open(encoding="utf-8") as lines:
        row: dict[str, object] = json.loads(next(lines))
        return row


# -- the zero-shot query ------------------------------------------------------------------------


@needs_data
def test_the_query_of_a_real_row() -> None:
    """sat-math's first question (its passage is ""), as AGIEval's convert_zero_shot writes it."""
    assert zero_shot_query(first_row("sat-math"), "sat-math") == (
        "Q: If $\\frac{x-1}{3}=k$ and $k=3$, what is the value of $x ?$ Answer Choices: "
        "(A)2 (B)4 (C)9 (D)10\nA: Among A through D, the answer is"
    )
    math = first_row("math")
    assert zero_shot_query(math, "math") == f"Q: {math['question']}\nA: The answer is"


def test_query_quirks_of_agieval_s_code() -> None:
    row = {"passage": "Passage.", "question": "Which?", "options": ["(A)x", "(B)y"]}
    # The passage runs straight into "Q: ", and the last letter follows the option count.
    assert zero_shot_query(row, "lsat-lr") == (
        "Passage.Q: Which? Answer Choices: (A)x (B)y\nA: Among A through B, the answer is"
    )
    # A single option is answered "among A through E" (AGIEval: `if count == 1: count = 5`).
    one = {"passage": None, "question": "Which?", "options": ["(A)x"]}
    assert zero_shot_query(one, "aqua-rat").endswith("Among A through E, the answer is")


@needs_data
def test_items_grouped_by_subset_with_gaokao_english_left_out() -> None:
    task = make_task("agieval", None, 3, SHARED_DATA)  # DIR holds agieval/: the runner finds it
    items = task.items()
    assert [i.group for i in items[::3]] == list(DEFAULT_SUBSETS)
    assert "gaokao-english" not in DEFAULT_SUBSETS and len(DEFAULT_SUBSETS) == 9
    [left_out] = task.config()["left_out"]
    assert left_out.startswith("gaokao-english: ")
    aqua = items[0]
    # aqua-rat's first question (data/v1/aqua-rat.jsonl): label A.
    assert aqua.key == "aqua-rat/0" and aqua.data["gold"] == [0]
    assert aqua.data["choices"][0] == "(A)5(√3 + 1)" and len(aqua.data["choices"]) == 5
    assert str(aqua.data["query"]).startswith("Q: A car is being driven")
    math = next(i for i in items if i.group == "math")
    assert set(math.data) == {"query", "answer"} and math.data["answer"] == "(3,4]"


def test_options_and_subsets_are_checked() -> None:
    for make, message in (
        (lambda: AGIEval(3), r"AGIEval: 3 shots asked; lm-eval's agieval_en is zero-shot"),
        (lambda: AGIEval(subsets=["gaokao-chinese"]), r"unknown AGIEval subset 'gaokao-chinese'"),
    ):
        with pytest.raises(UsageError, match=message) as error:
            make()
        assert "\n" not in str(error.value)


# -- acc and acc_norm, as lm-eval's process_results_mcqa ----------------------------------------


def test_acc_norm_divides_by_the_choice_s_own_length() -> None:
    """Per character of the choice without the " " delimiter: lm-eval counts len(choice)."""
    choices = ["(A)ab", "(B)abcdefghij"]  # 5 and 13 characters
    logliks = [-5.0, -10.0]  # per character: -1.0 and -0.77
    assert mcqa_metrics(logliks, choices, [0]) == {"acc": 1.0, "acc_norm": 0.0}
    assert mcqa_metrics(logliks, choices, [1]) == {"acc": 0.0, "acc_norm": 1.0}
    # The delimiter left out of the count decides this one: -3/3 = -1.0 against -8.5/9 = -0.94
    # picks (B); counting it, -3/4 = -0.75 against -8.5/10 = -0.85 would pick (A).
    assert mcqa_metrics([-3.0, -8.5], ["(A)", "(B)abcdef"], [1]) == {"acc": 0.0, "acc_norm": 1.0}
    # Several gold answers: either is right. Ties go to the first (np.argmax).
    assert mcqa_metrics([-1.0, -1.0], ["(A)x", "(B)y"], [1]) == {"acc": 0.0, "acc_norm": 0.0}
    assert mcqa_metrics([-2.0, -1.0], ["(A)x", "(B)y"], [0, 1])["acc"] == 1.0


# -- lm-eval's agieval math parsing -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("so it is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("\\boxed{x = 5}", "5"),  # after the last "="
        ("\\boxed{2} then \\boxed{\\sqrt{3}}", "\\sqrt{3}"),  # the last box
        ("\\boxed 5", None),  # a box without braces is no answer, and nothing else is tried
        ("The answer is $3$ and $x=7$ today", "7"),  # greedy $...$ on the line, after "="
        ("$\\frac{3}{4}$ of them", "\\frac{3}{4}"),
        ("x = 4.", "4"),  # no dollars: after the last "=", the full stop dropped
        ("We get 12 apples and 7 pears", "7"),  # else the last number
        ("cost is \\$4.50", "$4.50"),  # the number pattern takes a dollar sign before it
        ("\\frac{1}{2}", "2"),  # a bare fraction is read as its last number, as lm-eval does
        ("(3,4]", "4"),
        ("no numbers", None),
        ("$$", None),
    ],
)
def test_parse_math_answer(text: str, parsed: str | None) -> None:
    assert parse_math_answer(text) == parsed


@pytest.mark.parametrize(
    ("generated", "answer", "equal"),
    [
        ("The answer is $\\frac{1}{2}$", "$\\frac12$", True),  # \frac12 -> \frac{1}{2}
        ("$\\dfrac{1}{2}$", "$0.5$", True),  # dfrac -> frac; 0.5 -> \frac{1}{2}
        ("$3/4$", "$\\frac{3}{4}$", True),  # a/b of integers -> \frac{a}{b}
        ("$x = 3$", "3", True),
        ("$90^\\circ$", "90", True),
        ("$5\\%$", "5", True),
        ("$\\left( 3, 4 \\right)$", "$(3,4)$", True),  # \left, \right and spaces go
        ("$\\sqrt3$", "$\\sqrt{3}$", True),
        ("$2\\text{ cm}$", "2", True),  # units on the right go
        (" 18\nQ", "18", True),
        ("The answer is 18.", "$18$", True),
        ("$4$", "$5$", False),
        ("\\boxed{7}", "\\boxed{7.0}", False),  # textual, not numeric
        ("The answer is $0.5$.", "\\frac{1}{2}", False),  # the gold parses to its last "2"
        # lm-eval's quirks, kept: nothing parsed on both sides is equal; a normalisation that
        # fails (two "\text{ ", a \frac with nothing after it) compares the parses as they are.
        ("no", "neither", True),
        ("$1\\text{ a}\\text{ b}$", "$1\\text{ a}\\text{ b}$", True),
        ("$\\frac$", "$\\frac$", True),
    ],
)
def test_is_equiv(generated: str, answer: str, equal: bool) -> None:
    assert is_equiv(generated, answer) is equal


# -- bad data ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subset", "row", "message"),
    [
        ("lsat-ar", {"passage": "P", "options": ["(A)x"], "label": "A"}, r"no 'question' string"),
        ("lsat-ar", {"passage": "P", "question": "Q?", "label": "A"}, r"'options' must be a list"),
        ("lsat-ar", {"question": "Q?", "options": ["(A)x"]}, r"'label' must be the right option"),
        ("lsat-ar", {"question": "Q?", "options": ["(A)x"], "label": "C"}, r"label 'C' names no"),
        ("lsat-ar", {"question": "Q?", "passage": 3, "options": []}, r"'passage' must be a str"),
        ("math", {"passage": None, "question": "1+1?"}, r"no 'answer' string \(a math line"),
        ("math", ["1+1?", "2"], r"each line must be a JSON object"),
    ],
)
def test_a_data_file_missing_a_field_is_one_line(
    tmp_path: Path, subset: str, row: object, message: str
) -> None:
    (tmp_path / f"{subset}.jsonl").write_text(json.dumps(row) + "\n")
    task = AGIEval(data_dir=tmp_path, subsets=[subset])
    with pytest.raises(UsageError, match=rf"{subset}\.jsonl:1: {message}") as error:
        task.items()
    assert "\n" not in str(error.value)


def test_a_line_that_is_not_json_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "sat-math.jsonl").write_text('{"question": "Q?"\n')
    with pytest.raises(UsageError, match=r"sat-math\.jsonl:1: not a JSON line") as error:
        AGIEval(data_dir=tmp_path, subsets=["sat-math"]).items()
    assert "\n" not in str(error.value)


# -- a real run on the embedded model ---------------------------------------------------------


@pytest.mark.slow
@needs_data
def test_a_tiny_real_run() -> None:
    """Two sat-math questions by log-likelihood, two math questions generated."""
    task = AGIEval(limit=2, data_dir=AGIEVAL_DIR, subsets=["sat-math", "math"])
    items = task.items()
    model = EvalModel(default_model_path(), context=1024, parallel=2)
    try:
        results = list(task.run(items, model))
    finally:
        model.close()
    by_key = {r.key: r for r in results}
    assert sorted(by_key) == ["math/0", "math/1", "sat-math/0", "sat-math/1"]
    docs = {i.key: i.data for i in items}
    for key in ("sat-math/0", "sat-math/1"):
        result = by_key[key]
        logliks = result.detail["logliks"]
        assert len(logliks) == 4 and all(x < 0 for x in logliks)
        assert result.metrics == mcqa_metrics(logliks, docs[key]["choices"], docs[key]["gold"])
    for key in ("math/0", "math/1"):
        result = by_key[key]
        generation = result.detail["generation"]
        assert result.detail["finish_reason"] in ("stop", "length")
        assert MATH_STOP[0] not in generation and len(generation) < 8 * MATH_MAX_TOKENS
        assert result.metrics == {"acc": float(is_equiv(generation, docs[key]["answer"]))}
    summary = summarize(task, results)
    assert summary["metrics"]["acc"]["n"] == 4 and summary["metrics"]["acc_norm"]["n"] == 2
    assert list(summary["groups"]) == ["math", "sat-math"]
