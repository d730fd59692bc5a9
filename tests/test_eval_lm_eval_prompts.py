"""BBH's and AGIEval's prompts are lm-evaluation-harness's own, string for string.

lm-eval (a test dependency) builds its prompts offline here: its own task YAMLs
(`tasks/bbh/cot_fewshot/<task>.yaml`, `tasks/agieval/<subset>.yaml`), loaded by
its own YAML loader, with the dataset swapped for rows in memory (the YAML's
`custom_dataset`), through its `ConfigurableTask`: `fewshot_context` for the
prompt, `construct_requests` for what the model is asked (continuations,
generation arguments), `doc_to_target`, `process_results`, its filters.

BBH: the rows are the release's `bbh/<task>.json` (the rows of SaylorTwift/bbh,
which lm-eval reads); the first 8 questions of each of the 27 tasks, 216 in
all. AGIEval: lm-eval reads hails/agieval-<subset>, whose rows are
{query, choices, gold} (and {query, answer} for math), made from the release
files by AGIEval's own zero-shot code; `reference_query` below restates that
code (`convert_zero_shot` of AGIEval's src/dataset_loader.py), every release
row is checked against it, and the hails-shaped rows it gives go through
lm-eval: the first 25 questions of each of the 9 subsets, 225 in all.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scheda.evaluation import agieval, bbh
from scheda.evaluation.base import Item
from tests.needs import SHARED_DATA, require, unavailable

BBH_DIR = SHARED_DATA / "bbh"
AGIEVAL_DIR = SHARED_DATA / "agieval"
BBH_PER_TASK = 8  # x 27 tasks = 216 questions
AGIEVAL_PER_SUBSET = 25  # x 9 subsets = 225 questions


@pytest.fixture(scope="module")
def lm_eval_tasks() -> Path:
    """lm-eval's bundled task folder, or a skip saying how to install it."""
    require(BBH_DIR / "tasks", AGIEVAL_DIR, what="BIG-Bench Hard and AGIEval data")
    try:
        tasks = importlib.import_module("lm_eval.tasks")
    except ImportError:
        unavailable("lm-evaluation-harness is not installed: make install-test")
    return Path(str(tasks.__file__)).parent


def lm_eval_task(yaml: Path, rows: list[dict[str, Any]]) -> Any:
    """lm-eval's task from its own YAML, its test split the rows given."""
    datasets = importlib.import_module("datasets")
    loader = importlib.import_module("lm_eval.tasks._yaml_loader")
    api = importlib.import_module("lm_eval.api.task")
    config = loader.load_yaml(yaml)
    table = datasets.Dataset.from_list(rows)
    config["custom_dataset"] = lambda **_: datasets.DatasetDict({"test": table})
    return api.ConfigurableTask(config=config)


# -- BBH ---------------------------------------------------------------------------------------


def test_bbh_prompts_are_lm_eval_s(lm_eval_tasks: Path) -> None:
    ours = bbh.BBH(limit=BBH_PER_TASK, data_dir=BBH_DIR)
    items = ours.items()
    compared = 0
    for subtask in bbh.SUBTASKS:
        rows = json.loads((BBH_DIR / "tasks" / f"{subtask}.json").read_text())["examples"]
        task = lm_eval_task(lm_eval_tasks / "bbh" / "cot_fewshot" / f"{subtask}.yaml", rows)
        mine = [i for i in items if i.group == subtask]
        docs = list(task.test_docs())[:BBH_PER_TASK]
        assert len(mine) == len(docs) == BBH_PER_TASK
        for doc, item in zip(docs, mine, strict=True):
            context = task.fewshot_context(doc, bbh.EXEMPLARS)
            assert ours.prompt(subtask, item.data["input"]) == context, item.key
            request = task.construct_requests(doc, context, metadata=(subtask, 0, 1))
            prompt, generation = request.arguments
            assert prompt == context
            assert generation["until"] == bbh.STOP
            assert generation["max_gen_toks"] == bbh.LM_EVAL_MAX_TOKENS
            assert generation["do_sample"] is False
            assert task.doc_to_target(doc) == item.data["target"]
            compared += 1
    assert compared == 216


def test_bbh_answers_are_read_as_lm_eval_s_filter_reads_them(lm_eval_tasks: Path) -> None:
    """The YAML's get-answer filter, lm-eval's RegexFilter then take_first, on the 81 worked
    answers of the prompts, every cut of them, and the edge cases; and its exact_match."""
    loader = importlib.import_module("lm_eval.tasks._yaml_loader")
    extraction = importlib.import_module("lm_eval.filters.extraction")
    metrics = importlib.import_module("lm_eval.api.metrics")
    template = loader.load_yaml(
        lm_eval_tasks / "bbh" / "cot_fewshot" / "_cot_fewshot_template_yaml"
    )
    [get_answer] = template["filter_list"]
    regex, first = get_answer["filter"]
    assert (regex["function"], first["function"]) == ("regex", "take_first")
    assert regex["regex_pattern"] == bbh.ANSWER.pattern
    lm_filter = extraction.RegexFilter(regex_pattern=regex["regex_pattern"])

    texts = ["", "So the answer is", "So the answer is T", "the answer is (A). the answer is (B)"]
    for subtask in bbh.SUBTASKS:
        for _, worked in bbh.parse_cot_prompt(bbh.shipped_prompt(subtask), subtask).exemplars:
            tail = worked[-60:]
            texts += [worked, worked + "\n" + worked] + [tail[:n] for n in range(len(tail))]
    # RegexFilter gives each response's reads; take_first keeps the first of them.
    read = [reads[0] for reads in lm_filter.apply([[t] for t in texts], [{}] * len(texts))]
    assert [bbh.extract_answer(t) for t in texts] == read
    assert len(texts) > 81 * 60

    for answer, target in (("(B)", "(B)"), ("(b)", "(B)"), ("True", "True "), ("[invalid]", "No")):
        lm = metrics.exact_match_hf_evaluate(predictions=[answer], references=[target])
        assert bbh.exact_match(answer, target) == lm["exact_match"]


# -- AGIEval -----------------------------------------------------------------------------------


def reference_query(line: dict[str, Any], dataset_name: str) -> str:
    """AGIEval's `convert_zero_shot` (src/dataset_loader.py, github.com/ruixiangcui/AGIEval),
    its English branches, restated statement for statement: the reference ours is held to.
    """
    passage: str = line["passage"] if line["passage"] is not None else ""
    question: str = line["question"]
    if dataset_name == "math":  # english_cloze_datasets
        return passage + "Q: " + question + "\n" + "A: The answer is"
    option_string = "ABCDEFG"
    count = len(line["options"])
    if count == 1:
        count = 5
    return (
        passage
        + "Q: "
        + question
        + " "
        + "Answer Choices: "
        + " ".join(line["options"])
        + "\n"
        + f"A: Among A through {option_string[count - 1]}, the answer is"
    )


def release_rows(subset: str) -> list[dict[str, Any]]:
    with (AGIEVAL_DIR / f"{subset}.jsonl").open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def hails_row(line: dict[str, Any], subset: str) -> dict[str, Any]:
    """A hails/agieval-<subset> row: the query, and the options and label's index, or the answer."""
    if subset == "math":
        return {"query": reference_query(line, subset), "answer": line["answer"]}
    return {
        "query": reference_query(line, subset),
        "choices": line["options"],
        "gold": [ord(line["label"]) - ord("A")],
    }


# Row counts of the hails/agieval-* datasets' cards (their `num_examples`): the release files
# here hold the same questions.
HAILS_ROWS = {"lsat-ar": 230, "lsat-lr": 510, "lsat-rc": 269, "sat-math": 220}


def test_agieval_queries_are_agieval_s_own_for_every_row(lm_eval_tasks: Path) -> None:
    task = agieval.AGIEval(data_dir=AGIEVAL_DIR)
    items = task.items()
    for subset in task.subsets:
        lines = release_rows(subset)
        mine = [i.data for i in items if i.group == subset]
        assert mine == [hails_row(line, subset) for line in lines], subset
        if subset in HAILS_ROWS:
            assert len(mine) == HAILS_ROWS[subset]
    assert len(items) == 3546  # the nine files' lines (the data's README)


def _lm_eval_agieval(lm_eval_tasks: Path, subset: str) -> Any:
    """lm-eval's task for the subset, on the hails-shaped rows of its first questions."""
    rows = [hails_row(line, subset) for line in release_rows(subset)[:AGIEVAL_PER_SUBSET]]
    return lm_eval_task(lm_eval_tasks / "agieval" / f"{subset}.yaml", rows)


def test_agieval_prompts_choices_and_scores_are_lm_eval_s(lm_eval_tasks: Path) -> None:
    ours = agieval.AGIEval(limit=AGIEVAL_PER_SUBSET, data_dir=AGIEVAL_DIR)
    items = ours.items()
    rng = np.random.default_rng(20230413)  # AGIEval's arXiv date: any seed would do
    compared = 0
    for subset in ours.subsets:
        task = _lm_eval_agieval(lm_eval_tasks, subset)
        mine: list[Item] = [i for i in items if i.group == subset]
        docs = list(task.test_docs())
        assert len(docs) == len(mine) == AGIEVAL_PER_SUBSET
        for doc, item in zip(docs, mine, strict=True):
            context = task.fewshot_context(doc, 0)
            assert context == item.data["query"], item.key
            requests = task.construct_requests(doc, context, metadata=(subset, 0, 1))
            if subset in agieval.CLOZE:
                prompt, generation = requests.arguments
                assert prompt == context
                assert generation["until"] == agieval.MATH_STOP
                assert generation["max_gen_toks"] == agieval.MATH_MAX_TOKENS
            else:
                # lm-eval asks for the log-likelihood of each " " + choice after the query.
                pairs = [r.arguments for r in requests]
                assert pairs == [(context, " " + c) for c in item.data["choices"]]
                assert task.doc_to_target(doc) == item.data["gold"]
                for _ in range(4):
                    logliks = [float(x) for x in rng.normal(-20, 8, len(pairs))]
                    expected = task.process_results(doc, [(x, False) for x in logliks])
                    choices, gold = item.data["choices"], item.data["gold"]
                    assert agieval.mcqa_metrics(logliks, choices, gold) == expected
            compared += 1
    assert compared == 225


def test_agieval_math_is_judged_as_lm_eval_judges_it(lm_eval_tasks: Path) -> None:
    """lm-eval's agieval_math process_results (parse_math_answer, is_equiv) against ours on
    every math question's worked solution, its endings and its answer, as generations."""
    task = _lm_eval_agieval(lm_eval_tasks, "math")
    utils = importlib.import_module("lm_eval.tasks.agieval.utils")
    lines = release_rows("math")
    judged = agreed = 0
    for line in lines:
        solution, answer = line["other"]["solution"], line["answer"]
        doc = {"query": reference_query(line, "math"), "answer": answer}
        for generation in (solution, solution[-50:], solution[-12:], " " + answer, "$" + answer):
            expected = task.process_results(doc, [generation])["acc"]
            ours = agieval.is_equiv(generation, answer)
            assert float(ours) == expected, (generation[-60:], answer)
            assert agieval.parse_math_answer(generation) == utils.parse_math_answer(generation)
            judged += 1
            agreed += expected
    assert judged == 5 * len(lines) == 5000
    assert 0 < agreed < judged  # both outcomes are exercised
