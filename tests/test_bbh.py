"""BIG-Bench Hard: the answer extraction, the prompts from the release files, bad data, a real run.

The release files are BIG-Bench-Hard's (github.com/suzgunmirac/BIG-Bench-Hard,
`bbh/` and `cot-prompts/`), beside the project; that the prompts are
lm-evaluation-harness's own, string for string, is tests/test_eval_lm_eval_prompts.py's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheda.errors import UsageError
from scheda.evaluation.base import EvalModel
from scheda.evaluation.bbh import (
    BBH,
    DEFAULT_MAX_TOKENS,
    INVALID,
    SHIPPED,
    STOP,
    SUBTASKS,
    exact_match,
    extract_answer,
    parse_cot_prompt,
    read_release,
    shipped_prompt,
)
from scheda.evaluation.runner import make_task, summarize
from scheda.resolve import default_model_path
from tests.needs import SHARED_DATA, require

BBH_DIR = SHARED_DATA / "bbh"


@pytest.fixture
def bbh_data() -> Path:
    """The BIG-Bench Hard release beside the project (skips without it; fails in CI)."""
    require(BBH_DIR / "tasks", BBH_DIR / "cot-prompts", what="BIG-Bench Hard data")
    return BBH_DIR


needs_data = pytest.mark.usefixtures("bbh_data")


# -- the answer, as lm-eval's get-answer filter reads it ---------------------------------------
# The filter (lm_eval/tasks/bbh/cot_fewshot/_cot_fewshot_template_yaml): the regex
# `(?<=the answer is )(.*)(?=.)`, its first match, stripped; "[invalid]" when none.


@pytest.mark.parametrize(
    ("generation", "answer"),
    [
        ("not False = True. So the answer is True.", "True"),  # the exemplars' own ending
        ("So the answer is (B).\n", "(B)"),
        ("So the answer is 24.", "24"),
        # No full stop: the regex still drops the last character, as lm-eval's does.
        ("So the answer is False", "Fals"),
        ("So the answer is no.  ", "no."),  # the last space is what is dropped
        # Two answers: the first counts, even where the model changes its mind.
        ("So the answer is Yes.\nWait, so the answer is No.", "Yes"),
        ("the answer is (A). And the answer is (C).", "(A). And the answer is (C)"),
        ("Let's see: 3 + 4 = 7.", INVALID),  # no "the answer is"
        ("So The Answer Is True.", INVALID),  # case counts
        ("So the answer is", INVALID),  # nothing after it
        ("So the answer is T", ""),  # one character: (.*) matches empty before it
        ("", INVALID),
    ],
)
def test_answer_extraction(generation: str, answer: str) -> None:
    assert extract_answer(generation) == answer


def test_exact_match_is_string_equality() -> None:
    """lm-eval's exact_match with its defaults: no case folding, no punctuation stripped."""
    assert exact_match("(B)", "(B)") == 1.0
    assert exact_match("(b)", "(B)") == 0.0
    assert exact_match("True", "True ") == 0.0
    assert exact_match(INVALID, "True") == 0.0


@needs_data
def test_every_exemplar_answer_yields_its_own_target_format() -> None:
    """The 81 worked answers of the paper's prompts end "So the answer is X.": each is read."""
    for subtask in SUBTASKS:
        text = (BBH_DIR / "cot-prompts" / f"{subtask}.txt").read_text(encoding="utf-8")
        prompt = parse_cot_prompt(text, subtask)
        assert len(prompt.exemplars) == 3
        for _, worked in prompt.exemplars:
            assert extract_answer(worked) != INVALID, (subtask, worked[-80:])


@needs_data
def test_exemplar_answers_match_the_targets_of_real_questions() -> None:
    """Per task, the answers the exemplars teach look like the release's targets: for tasks
    with a closed set of answers, each exemplar's is one of the targets."""
    closed = ("boolean_expressions", "navigate", "sports_understanding", "web_of_lies")
    for subtask in closed:
        targets = {r["target"] for r in read_release(BBH_DIR / "tasks" / f"{subtask}.json")}
        prompt = parse_cot_prompt(shipped_prompt(subtask), subtask)
        assert {extract_answer(a) for _, a in prompt.exemplars} <= targets, subtask


# -- the prompts -------------------------------------------------------------------------------


@needs_data
def test_the_shipped_prompts_are_the_release_files() -> None:
    """The copy used for data from the Hub is the release's cot-prompts, byte for byte."""
    for subtask in SUBTASKS:
        release = (BBH_DIR / "cot-prompts" / f"{subtask}.txt").read_text(encoding="utf-8")
        assert shipped_prompt(subtask) == release, subtask
    assert len(SUBTASKS) == 27  # the paper's 27 tasks (Suzgun et al., 2022, table 1)


@needs_data
def test_prompt_layout_for_one_task() -> None:
    """boolean_expressions: description, three solved exemplars, then the question."""
    task = BBH(limit=1, data_dir=BBH_DIR, subtasks=["boolean_expressions"])
    [item] = task.items()
    # The release's first question of the task (bbh/boolean_expressions.json).
    assert item.key == "boolean_expressions/0" and item.group == "boolean_expressions"
    assert item.data == {"input": "not ( True ) and ( True ) is", "target": "False"}
    prompt = task.prompt(item.group, item.data["input"])
    assert prompt.startswith("Evaluate the result of a random Boolean expression.\n\nQ: not (")
    assert prompt.count("\nA: Let's think step by step.\n") == 4
    assert prompt.count("So the answer is") == 3
    assert prompt.endswith(
        "So the answer is True.\n\nQ: not ( True ) and ( True ) is\nA: Let's think step by step.\n"
    )
    # Fewer shots: the first exemplars, the description kept.
    none = BBH(0, limit=1, data_dir=BBH_DIR, subtasks=["boolean_expressions"])
    assert none.prompt(item.group, item.data["input"]) == (
        "Evaluate the result of a random Boolean expression.\n\n"
        "Q: not ( True ) and ( True ) is\nA: Let's think step by step.\n"
    )


@needs_data
def test_items_are_grouped_by_task_and_limited_per_task() -> None:
    task = make_task("bbh", None, 2, SHARED_DATA)  # DIR holds bbh/: the runner finds it
    items = task.items()
    assert len(items) == 2 * 27
    assert [i.group for i in items[:4]] == ["boolean_expressions"] * 2 + ["causal_judgement"] * 2
    assert len({i.key for i in items}) == len(items)
    config = task.config()
    assert config["max_tokens"] == DEFAULT_MAX_TOKENS and config["stop"] == STOP
    assert config["prompts"] == "data" and config["shots"] == 3


def test_bad_options_are_one_line() -> None:
    for make, message in (
        (lambda: BBH(4), r"4 shots asked; its prompts hold 3 exemplars"),
        (lambda: BBH(subtasks=["chess"]), r"unknown BBH task 'chess'"),
        (lambda: BBH(max_tokens=0), r"max_tokens must be at least 1"),
    ):
        with pytest.raises(UsageError, match=message) as error:
            make()
        assert "\n" not in str(error.value)


# -- bad data ----------------------------------------------------------------------------------


def _release(folder: Path, examples: object, prompt: str | None = None) -> Path:
    (folder / "tasks").mkdir(parents=True)
    (folder / "tasks" / "navigate.json").write_text(json.dumps({"examples": examples}))
    if prompt is not None:
        (folder / "cot-prompts").mkdir()
        (folder / "cot-prompts" / "navigate.txt").write_text(prompt)
    return folder


@pytest.mark.parametrize(
    ("examples", "message"),
    [
        ([{"input": "Take 1 step."}], r"navigate\.json: example 0 has no target string"),
        ([{"input": "a", "target": "No"}, {"target": "Yes"}], r"example 1 has no input string"),
        ([{"input": "a", "target": 1}], r"example 0 has no target string"),
        (["Take 1 step."], r"example 0 is not an object with input and target"),
        ([], r"navigate\.json: no examples"),
    ],
)
def test_a_data_file_missing_a_field_is_one_line(
    tmp_path: Path, examples: object, message: str
) -> None:
    task = BBH(data_dir=_release(tmp_path, examples), subtasks=["navigate"])
    with pytest.raises(UsageError, match=message) as error:
        task.items()
    assert "\n" not in str(error.value)


def test_other_bad_files_are_one_line(tmp_path: Path) -> None:
    folder = _release(tmp_path / "a", [{"input": "a", "target": "No"}], prompt="no exemplars")
    with pytest.raises(UsageError, match=r"navigate\.txt: not a BIG-Bench Hard cot-prompts"):
        BBH(data_dir=folder, subtasks=["navigate"]).items()
    folder = _release(tmp_path / "b", [])
    (folder / "tasks" / "navigate.json").write_text("{not json")
    with pytest.raises(UsageError, match=r"navigate\.json: not JSON"):
        BBH(data_dir=folder, subtasks=["navigate"]).items()
    (folder / "tasks" / "navigate.json").unlink()
    with pytest.raises(UsageError, match=r"navigate\.json: no such file"):
        BBH(data_dir=folder, subtasks=["navigate"]).items()
    (tmp_path / "c" / "bbh").mkdir(parents=True)  # DIR/bbh/ meant for this task, empty
    with pytest.raises(UsageError, match=r"bbh: .*bbh does not hold BIG-Bench Hard's tasks/"):
        BBH(data_dir=tmp_path / "c", subtasks=["navigate"]).items()


def test_a_release_folder_without_cot_prompts_uses_the_shipped_ones(tmp_path: Path) -> None:
    folder = _release(tmp_path, [{"input": "Take 1 step. Turn around.", "target": "No"}])
    task = BBH(data_dir=folder, subtasks=["navigate"])
    [item] = task.items()
    assert task.config()["prompts"] == "shipped"
    assert task.prompt("navigate", item.data["input"]).startswith(
        "Given a series of navigation instructions, determine whether one would end up back at "
    )
    assert SHIPPED == "bbh-cot-prompts"


# -- a real run on the embedded model ---------------------------------------------------------

# Two questions of the task with the shortest prompt (sports_understanding's, ~200 tokens of
# exemplars), and few new tokens: the model's reasoning is cut short, which is what a
# `length` finish says; what matters here is the path from prompt to score.
RUN_TOKENS = 24


@pytest.mark.slow
@needs_data
def test_a_tiny_real_run() -> None:
    task = BBH(limit=2, data_dir=BBH_DIR, subtasks=["sports_understanding"], max_tokens=RUN_TOKENS)
    items = task.items()
    model = EvalModel(default_model_path(), context=1024, parallel=2)
    try:
        results = list(task.run(items, model))
    finally:
        model.close()
    assert sorted(r.key for r in results) == ["sports_understanding/0", "sports_understanding/1"]
    targets = {i.key: i.data["target"] for i in items}
    for result in results:
        detail = result.detail
        assert result.group == "sports_understanding"
        assert detail["target"] == targets[result.key] and detail["target"] in ("yes", "no")
        assert detail["finish_reason"] in ("stop", "length")
        assert 0 < detail["completion_tokens"] <= RUN_TOKENS
        assert not any(stop in detail["generation"] for stop in STOP), "cut at the stops"
        assert detail["answer"] == extract_answer(detail["generation"])
        assert result.metrics == {"exact_match": exact_match(detail["answer"], detail["target"])}
    summary = summarize(task, results)
    assert summary["items"] == 2 and list(summary["groups"]) == ["sports_understanding"]
