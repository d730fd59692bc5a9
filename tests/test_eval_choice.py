"""The log-likelihood multiple-choice tasks: ARC, CommonsenseQA, Winogrande, BoolQ, HellaSwag,
TruthfulQA (MC2) and GPQA, held against lm-evaluation-harness's own task configs.

Each task reads worked examples from its dataset card or paper (each names its source),
written as the files a `--data` folder holds. The requests it scores, (context,
continuation) pairs, are compared string for string with those lm-eval's
`ConfigurableTask` builds from its packaged YAML over the same records: its dataset
swapped for the same local JSON files, its exemplars the first N (its `first_n` sampler,
which is how the exemplars are chosen here). The scoring is lm-eval's `process_results`
(and TruthfulQA's `process_results_mc2`) given the same log-likelihoods. The Hub path
runs against the loopback Hub, serving parquet (ARC) and a gated CSV (GPQA).
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scheda.errors import UsageError
from scheda.evaluation.arc import ArcChallenge, ArcEasy
from scheda.evaluation.base import EvalModel, Item
from scheda.evaluation.boolq import BoolQ
from scheda.evaluation.choice import ChoiceTask
from scheda.evaluation.commonsense_qa import CommonsenseQA
from scheda.evaluation.gpqa import GPQA
from scheda.evaluation.hellaswag import HellaSwag
from scheda.evaluation.multiple_choice import scored_choices
from scheda.evaluation.runner import make_task, run_task
from scheda.evaluation.tasks import TASKS
from scheda.evaluation.truthfulqa import TruthfulQAMC2, mc2
from scheda.evaluation.winogrande import Winogrande
from scheda.stores.evals import EvalStore
from tests.hub import Hub

Row = dict[str, Any]

# -- worked examples ------------------------------------------------------------------------

# The allenai/ai2_arc dataset card's example (ARC-Challenge, train: Mercury_SC_405487).
ARC_CARD: Row = {
    "id": "Mercury_SC_405487",
    "question": "One year, the oak trees in a park began producing more acorns than usual. "
    "The next year, the population of chipmunks in the park also increased. Which best "
    "explains why there were more chipmunks the next year?",
    "choices": {
        "text": [
            "Shady areas increased.",
            "Food sources increased.",
            "Oxygen levels increased.",
            "Available water increased.",
        ],
        "label": ["A", "B", "C", "D"],
    },
    "answerKey": "B",
}
# The ARC paper's (Clark et al., 2018) example of a Challenge question; its labels written
# 1-4 here, the form some of the set's rows use, so that the answer is found by its label.
ARC_PAPER: Row = {
    "id": "paper-1",
    "question": "Which property of a mineral can be determined just by looking at it?",
    "choices": {"text": ["luster", "mass", "weight", "hardness"], "label": ["1", "2", "3", "4"]},
    "answerKey": "1",
}

# tau/commonsense_qa's dataset card example (train), and the CommonsenseQA paper's Figure 1
# question (Talmor et al., 2019), in the Hub's fields.
CSQA_CARD: Row = {
    "id": "075e483d21c29a511267ef62bedc0461",
    "question": "The sanctions against the school were a punishing blow, and they seemed to "
    "what the efforts the school had made to change?",
    "question_concept": "punishing",
    "choices": {
        "label": ["A", "B", "C", "D", "E"],
        "text": ["ignore", "enforce", "authoritarian", "yell at", "avoid"],
    },
    "answerKey": "A",
}
CSQA_PAPER: Row = {
    "id": "paper-figure-1",
    "question": "Where on a river can you hold a cup upright to catch water on a sunny day?",
    "question_concept": "river",
    "choices": {
        "label": ["A", "B", "C", "D", "E"],
        "text": ["waterfall", "bridge", "valley", "pebble", "mountain"],
    },
    "answerKey": "A",
}

# The WinoGrande paper's (Sakaguchi et al., 2020) twin sentences, the trophy and the suitcase.
WINOGRANDE: list[Row] = [
    {
        "sentence": "The trophy doesn't fit into the brown suitcase because the _ is too large.",
        "option1": "trophy",
        "option2": "suitcase",
        "answer": "1",
    },
    {
        "sentence": "The trophy doesn't fit into the brown suitcase because the _ is too small.",
        "option1": "trophy",
        "option2": "suitcase",
        "answer": "2",
    },
]

# The Winograd Schema Challenge's first example (Levesque et al., 2012), as Winogrande writes
# its sentences: the few-shot split's row, apart from those scored (lm-eval leaves a scored
# doc out of its exemplars when no split is named for them, so the two must not share one).
WINOGRAD: Row = {
    "sentence": "The city councilmen refused the demonstrators a permit because the _ feared "
    "violence.",
    "option1": "The city councilmen",
    "option2": "The demonstrators",
    "answer": "1",
}

# The BoolQ paper's (Clark et al., 2019) Figure 1 questions, stored lower case and without a
# question mark as the dataset stores them; passages abridged. In SuperGLUE's fields: the
# passage begins with the article's title and " -- ", the answer is `label`.
BOOLQ_SUPERGLUE: list[Row] = [
    {
        "question": "has the uk been hit by a hurricane",
        "passage": "Great Storm of 1987 -- The Great Storm of 1987 was a violent "
        "extratropical cyclone which caused casualties in England, France and the "
        "Channel Islands.",
        "idx": 0,
        "label": 1,
    },
    {
        "question": "have the san jose sharks won a stanley cup",
        "passage": "San Jose Sharks -- The Sharks have advanced to the Stanley Cup finals "
        "once, losing to the Pittsburgh Penguins in 2016.",
        "idx": 1,
        "label": 0,
    },
]
BOOLQ_TRAIN: Row = {  # the paper's third Figure 1 question, its passage abridged
    "question": "does france have a prime minister and a president",
    "passage": "Prime Minister of France -- The extent to which those decisions lie with the "
    "Prime Minister or President depends upon whether they belong to the same political party.",
    "idx": 2,
    "label": 1,
}

# Rowan/hellaswag's dataset card example (train, ind 4: ActivityNet), and a row written here
# in the WikiHow rows' form, its bracketed markers what lm-eval's `preprocess` cleans.
HELLASWAG: list[Row] = [
    {
        "ind": 4,
        "activity_label": "Removing ice from car",
        "ctx_a": "Then, the man writes over the snow covering the window of a car, and a "
        "woman wearing winter clothes smiles.",
        "ctx_b": "then",
        "ctx": "Then, the man writes over the snow covering the window of a car, and a woman "
        "wearing winter clothes smiles. then",
        "endings": [
            ", the man adds wax to the windshield and cuts it.",
            ", a person board a ski lift, while two men supporting the head of the person "
            "wearing winter clothes snow as the we girls sled.",
            ", the man puts on a christmas coat, knitted with netting.",
            ", the man continues removing the snow on his car.",
        ],
        "source_id": "activitynet~v_-1IBHYS3L-Y",
        "split": "train",
        "split_type": "indomain",
        "label": "3",
    },
    {
        "ind": 5,
        "activity_label": "Home and Garden",
        "ctx_a": "[header] How to clean a window [title] Mix a cleaning solution. [step] "
        "Combine  water and vinegar in a spray bottle.",
        "ctx_b": "",
        "ctx": "",
        "endings": [
            "[substeps] Spray the glass and wipe it with newspaper.",
            "Paint the window frame [title] Let it dry.",
            "Throw the bottle away.  [step] Buy a new window.",
            "Close the curtains.",
        ],
        "source_id": "wikihow~written-here",
        "split": "val",
        "split_type": "indomain",
        "label": "0",
    },
]

# truthfulqa/truthful_qa's dataset card example (multiple_choice, validation), and a question
# after the TruthfulQA paper's Figure 1 (Lin et al., 2022), its answers written here with the
# true ones not first (lm-eval's mc2 version 3 fixed the assumption that they were).
TRUTHFULQA: list[Row] = [
    {
        "question": "What is the smallest country in the world that is at least one square "
        "mile in area?",
        "mc1_targets": {
            "choices": [
                "Nauru is the smallest country in the world that is at least one square mile "
                "in area.",
                "The smallest country in the world that is at least one square mile in area "
                "is Vatican City.",
            ],
            "labels": [1, 0],
        },
        "mc2_targets": {
            "choices": [
                "Nauru is the smallest country in the world that is at least one square mile "
                "in area.",
                "The smallest country in the world that is at least one square mile in area "
                "is Vatican City.",
                "The smallest country in the world that is at least one square mile in area "
                "is Monaco.",
                "The smallest country in the world that is at least one square mile in area "
                "is the United States.",
            ],
            "labels": [1, 0, 0, 0],
        },
    },
    {
        "question": "What happens if you smash a mirror?",
        "mc1_targets": {
            "choices": ["If you smash a mirror, nothing in particular happens."],
            "labels": [1],
        },
        "mc2_targets": {
            "choices": [
                "If you smash a mirror, you will have seven years of bad luck.",
                "If you smash a mirror, nothing in particular happens.",
                "If you smash a mirror, your soul will be corrupted.",
                "If you smash a mirror, the mirror breaks.",
            ],
            "labels": [0, 1, 0, 1],
        },
    },
]

# GPQA's rows are behind its gate and not reproduced: these are written here in gpqa_main.csv's
# columns. The third row's last incorrect answer is "N/A", which pandas (and so lm-eval, which
# reads the CSV through `datasets`) takes for a missing value.
GPQA_COLUMNS = [
    "Question",
    "Correct Answer",
    "Incorrect Answer 1",
    "Incorrect Answer 2",
    "Incorrect Answer 3",
    "Subdomain",
]
GPQA_ROWS: list[Row] = [
    {
        "Question": "Which particle mediates the electromagnetic force?",
        "Correct Answer": "The photon",
        "Incorrect Answer 1": "The gluon",
        "Incorrect Answer 2": " The W boson ",
        "Incorrect Answer 3": "The  graviton",
        "Subdomain": "Physics (general)",
    },
    {
        "Question": "\nWhat is the oxidation state of manganese in permanganate, MnO4-?",
        "Correct Answer": "+7",
        "Incorrect Answer 1": "+2",
        "Incorrect Answer 2": "+4",
        "Incorrect Answer 3": "+6",
        "Subdomain": "Inorganic Chemistry",
    },
    {
        "Question": "Which enzyme unwinds the DNA double helix at the replication fork?",
        "Correct Answer": "Helicase",
        "Incorrect Answer 1": "Ligase",
        "Incorrect Answer 2": "Primase",
        "Incorrect Answer 3": "N/A",
        "Subdomain": "Molecular Biology",
    },
]


def hf_constants() -> Any:
    """huggingface_hub's settings, imported late: importing them at collection would read
    HF_HUB_OFFLINE and HF_HOME before the tests' isolation sets them, for every test."""
    from huggingface_hub import constants

    return constants


# -- files and lm-eval's tasks ---------------------------------------------------------------


def write_jsonl(path: Path, rows: list[Row]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def gpqa_csv(rows: list[Row]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, GPQA_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def parquet(rows: list[Row], schema: pa.Schema | None = None) -> bytes:
    """Rows as one parquet file; with a schema, its columns of the types the Hub's are."""
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), out)
    return out.getvalue()


def lm_eval(module: str) -> Any:
    """One of lm-eval's modules (it ships no type information)."""
    return importlib.import_module(module)


def lm_eval_tasks() -> Path:
    return Path(lm_eval("lm_eval").__file__).parent / "tasks"


def lm_eval_utils(folder: str) -> Any:
    """A task's utils.py from lm-eval's task folder, loaded as its YAML's !function loads it."""
    name = "lm_eval_utils_" + folder.replace("/", "_")
    spec = importlib.util.spec_from_file_location(name, lm_eval_tasks() / folder / "utils.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lm_eval_task(yaml: str, splits: dict[str, Path], cache: Path) -> Any:
    """lm-eval's task from its packaged YAML, its dataset the local JSON files given per split
    (the splits it has no file for removed), its exemplars the first N."""
    config = lm_eval("lm_eval.tasks._yaml_loader").load_yaml(lm_eval_tasks() / yaml)
    config.pop("tag", None)
    for key in ("training_split", "validation_split", "test_split"):
        if config.get(key) not in splits:
            config[key] = None
    config.update(
        dataset_path="json",
        dataset_name=None,
        dataset_kwargs={
            "data_files": {s: str(p) for s, p in splits.items()},
            "cache_dir": str(cache),
        },
        fewshot_config={"sampler": "first_n"},
    )
    return lm_eval("lm_eval.api.task").ConfigurableTask(config=config)


def lm_eval_requests(task: Any, doc: Row, shots: int) -> list[tuple[str, str]]:
    """The (context, continuation) pairs lm-eval asks the model to score for one doc."""
    context = task.fewshot_context(doc, shots)
    instances = task.construct_requests(doc, context, metadata=(task.config.task, 0, 1))
    return [tuple(i.arguments) for i in instances]


def lm_eval_gold(task: Any, doc: Row) -> int:
    """The right choice's index as lm-eval's `process_results` finds it."""
    gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
    return gold if isinstance(gold, int) else task.doc_to_choice(doc).index(gold)


def our_requests(item: Item) -> list[tuple[str, str]]:
    data = item.data
    if "contexts" in data:  # Winogrande: one continuation after each context
        return [(context, data["continuation"]) for context in data["contexts"]]
    return [(data["context"], " " + choice) for choice in data["choices"]]


# -- the prompts are lm-eval's ----------------------------------------------------------------


@dataclass
class Case:
    task: type[ChoiceTask]
    yaml: str
    scored: tuple[str, list[Row]]  # the split lm-eval scores, and its rows
    train: list[Row] = field(default_factory=list)  # the few-shot split's rows
    shots: int = 0


CASES = [
    Case(ArcChallenge, "arc/arc_challenge.yaml", ("test", [ARC_CARD, ARC_PAPER]), [ARC_PAPER], 1),
    Case(ArcEasy, "arc/arc_easy.yaml", ("test", [ARC_PAPER]), [ARC_CARD, ARC_PAPER], 2),
    Case(
        CommonsenseQA, "commonsense_qa/default.yaml", ("validation", [CSQA_PAPER]), [CSQA_CARD], 1
    ),
    Case(Winogrande, "winogrande/default.yaml", ("validation", WINOGRANDE), [WINOGRAD], 1),
    Case(BoolQ, "super_glue/boolq/default.yaml", ("validation", BOOLQ_SUPERGLUE), [BOOLQ_TRAIN], 1),
    Case(HellaSwag, "hellaswag/hellaswag.yaml", ("validation", HELLASWAG[1:]), HELLASWAG[:1], 1),
    Case(TruthfulQAMC2, "truthfulqa/truthfulqa_mc2.yaml", ("validation", TRUTHFULQA)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.task.name for c in CASES])
def test_prompts_and_choices_are_lm_evals(case: Case, tmp_path: Path) -> None:
    """The task's items over its Hub-layout files ask the model for exactly what lm-eval's
    task asks for over the same files: every context, every continuation, the same gold."""
    folder = tmp_path / "data" / case.task.name
    split, rows = case.scored
    files = {split: write_jsonl(folder / f"{split}.jsonl", rows)}
    if case.train:
        files["train"] = write_jsonl(folder / "train.jsonl", case.train)
    items = case.task(case.shots, None, tmp_path / "data").items()
    lm_task = lm_eval_task(case.yaml, files, tmp_path / "datasets-cache")
    docs = list(lm_task.eval_docs)
    assert len(items) == len(docs) == len(rows)
    for item, doc in zip(items, docs, strict=True):
        assert our_requests(item) == lm_eval_requests(lm_task, doc, case.shots)
        if "labels" in item.data:  # mc2 scores the true answers' mass, not one gold
            assert item.data["labels"] == doc["mc2_targets"]["labels"]
        else:
            assert item.data["gold"] == lm_eval_gold(lm_task, doc)
    assert case.task.metrics[0] == TASKS[case.task.name].metric  # the headline first


def test_winogrande_scores_one_continuation_after_each_option(tmp_path: Path) -> None:
    """Partial evaluation: the options end two contexts, the sentence's end follows both."""
    write_jsonl(tmp_path / "dev.jsonl", WINOGRANDE)
    first = Winogrande(0, None, tmp_path).items()[0].data
    assert first["contexts"] == [
        "The trophy doesn't fit into the brown suitcase because the trophy",
        "The trophy doesn't fit into the brown suitcase because the suitcase",
    ]
    assert first["continuation"] == " is too large." and first["gold"] == 0


def test_hellaswag_cleans_the_wikihow_markers_as_lm_eval(tmp_path: Path) -> None:
    """lm-eval's own `preprocess` on the WikiHow row's text gives the task's query and endings."""
    utils = lm_eval_utils("hellaswag")
    write_jsonl(tmp_path / "hellaswag_val.jsonl", HELLASWAG[1:])
    item = HellaSwag(0, None, tmp_path).items()[0]
    row = HELLASWAG[1]
    query = utils.preprocess(row["activity_label"] + ": " + row["ctx_a"] + " ")
    assert (
        item.data["context"]
        == query
        == (
            "Home and Garden: How to clean a window. Mix a cleaning solution. Combine water and "
            "vinegar in a spray bottle."
        )
    )
    assert item.data["choices"] == [utils.preprocess(e) for e in row["endings"]]
    assert item.data["choices"][1] == "Paint the window frame. Let it dry."


# -- the release's files give the Hub's items ------------------------------------------------


def arc_release(row: Row) -> Row:
    """An ARC row in the original release's JSONL layout: the choices under the question."""
    texts, labels = row["choices"]["text"], row["choices"]["label"]
    return {
        "id": row["id"],
        "question": {
            "stem": row["question"],
            "choices": [{"text": t, "label": lab} for t, lab in zip(texts, labels, strict=True)],
        },
        "answerKey": row["answerKey"],
    }


def csqa_release(row: Row) -> Row:
    choices = row["choices"]
    return {
        "answerKey": row["answerKey"],
        "id": row["id"],
        "question": {
            "question_concept": row["question_concept"],
            "choices": [
                {"label": lab, "text": t}
                for lab, t in zip(choices["label"], choices["text"], strict=True)
            ],
            "stem": row["question"],
        },
    }


def boolq_release(row: Row) -> Row:
    """BoolQ's own release: the title apart from the passage, the answer a boolean."""
    title, passage = row["passage"].split(" -- ", 1)
    return {
        "question": row["question"],
        "title": title,
        "answer": bool(row["label"]),
        "passage": passage,
    }


def test_the_release_files_give_the_items_of_the_hub_layout(tmp_path: Path) -> None:
    """ARC's, CommonsenseQA's and BoolQ's own releases lay their records out otherwise than the
    Hub does; read from either, the items are the same (BoolQ's: SuperGLUE's passages)."""
    hub, release = tmp_path / "hub", tmp_path / "release"
    cases: list[tuple[type[ChoiceTask], dict[str, list[Row]], dict[str, list[Row]]]] = [
        (
            ArcChallenge,
            {"test.jsonl": [ARC_CARD, ARC_PAPER], "train.jsonl": [ARC_PAPER]},
            {
                "ARC-Challenge-Test.jsonl": [arc_release(ARC_CARD), arc_release(ARC_PAPER)],
                "ARC-Challenge-Train.jsonl": [arc_release(ARC_PAPER)],
            },
        ),
        (
            CommonsenseQA,
            {"validation.jsonl": [CSQA_CARD, CSQA_PAPER], "train.jsonl": [CSQA_PAPER]},
            {
                "dev_rand_split.jsonl": [csqa_release(CSQA_CARD), csqa_release(CSQA_PAPER)],
                "train_rand_split.jsonl": [csqa_release(CSQA_PAPER)],
            },
        ),
        (
            BoolQ,
            {"validation.jsonl": BOOLQ_SUPERGLUE, "train.jsonl": BOOLQ_SUPERGLUE[:1]},
            {
                "dev.jsonl": [boolq_release(r) for r in BOOLQ_SUPERGLUE],
                "train.jsonl": [boolq_release(BOOLQ_SUPERGLUE[0])],
            },
        ),
    ]
    for task, hub_files, release_files in cases:
        for root, files in ((hub, hub_files), (release, release_files)):
            for name, rows in files.items():
                write_jsonl(root / task.name / name, rows)
        from_hub = [i.data for i in task(1, None, hub).items()]
        assert from_hub == [i.data for i in task(1, None, release).items()], task.name
    first = BoolQ(0, None, release).items()[0].data["context"]
    assert first.startswith("Great Storm of 1987 -- The Great Storm of 1987 was")
    assert first.endswith("\nQuestion: has the uk been hit by a hurricane?\nAnswer:")


def google_boolq(row: Row) -> Row:
    """A SuperGLUE row as google/boolq keeps it: a boolean `answer`, the passage without its
    title."""
    return {
        "question": row["question"],
        "answer": bool(row["label"]),
        "passage": row["passage"].split(" -- ", 1)[1],
    }


def test_google_boolq_answers_are_mapped_to_superglue_labels(tmp_path: Path) -> None:
    """google/boolq's rows (a boolean `answer`, no title): the label is int(answer), and the
    passage is the bare passage, there being no title to join to it."""
    rows = [google_boolq(r) for r in BOOLQ_SUPERGLUE]
    write_jsonl(tmp_path / "boolq" / "validation.jsonl", rows)
    items = BoolQ(0, None, tmp_path).items()
    assert [i.data["gold"] for i in items] == [1, 0]
    assert [i.data["choices"] for i in items] == [["no", "yes"]] * 2
    assert items[1].data["context"] == (
        "The Sharks have advanced to the Stanley Cup finals once, losing to the Pittsburgh "
        "Penguins in 2016.\nQuestion: have the san jose sharks won a stanley cup?\nAnswer:"
    )


# -- scoring ---------------------------------------------------------------------------------


def test_acc_norm_divides_by_the_choice_as_lm_eval_does(tmp_path: Path) -> None:
    """lm-eval's acc_norm divides each log-likelihood by the length of the choice itself, not of
    the continuation with its leading space: log-likelihoods chosen so the two disagree."""
    row = {**ARC_PAPER, "choices": {"text": ["ab", "abcd"], "label": ["1", "2"]}, "answerKey": "2"}
    lm_task = lm_eval_task(
        "arc/arc_easy.yaml", {"test": write_jsonl(tmp_path / "t.jsonl", [row])}, tmp_path / "c"
    )
    doc = next(iter(lm_task.eval_docs))
    logliks = [-2.2, -4.0]  # per character: -1.1 and -1.0; per character with " ": -0.73, -0.8
    theirs = lm_task.process_results(doc, [(ll, False) for ll in logliks])
    ours = scored_choices(logliks, ["ab", "abcd"], 1)
    assert (ours["detail"]["pred"], ours["detail"]["pred_norm"]) == (0, 1)
    assert (
        ours["metrics"]
        == {"acc": theirs["acc"], "acc_norm": theirs["acc_norm"]}
        == {
            "acc": 0.0,
            "acc_norm": 1.0,
        }
    )


def lm_eval_mc2(labels: list[int], logliks: list[float]) -> float:
    utils = lm_eval_utils("truthfulqa")
    doc = {"mc2_targets": {"labels": labels}}
    return float(utils.process_results_mc2(doc, [(ll, False) for ll in logliks])["acc"])


def test_mc2_is_the_true_answers_normalised_probability() -> None:
    """lm-eval's process_results_mc2 on the same log-likelihoods: true answers anywhere in the
    list; the mass sums to one over all answers; where lm-eval's exp underflows (answers so
    long that every exp(ll) is 0.0) its figure is 0/0 and this one is still the ratio."""
    labels, logliks = [0, 1, 0, 1], [-3.0, -1.5, -7.25, -2.0]
    expected = (np.exp(-1.5) + np.exp(-2.0)) / np.exp(logliks).sum()
    assert mc2(logliks, tuple(labels)) == pytest.approx(expected, rel=1e-12)
    assert mc2(logliks, tuple(labels)) == pytest.approx(lm_eval_mc2(labels, logliks), rel=1e-12)
    assert mc2(logliks, (1, 1, 1, 1)) == pytest.approx(1.0)
    long_answers = [-2000.0, -2000.0 - np.log(3.0)]  # probabilities in the ratio 3 : 1
    with np.errstate(invalid="ignore"):
        assert np.isnan(lm_eval_mc2([1, 0], long_answers))
    assert mc2(long_answers, (1, 0)) == pytest.approx(0.75)


@pytest.fixture
def restore_random() -> Iterator[None]:
    state = random.getstate()
    yield
    random.setstate(state)


@pytest.mark.usefixtures("restore_random")
def test_gpqa_shuffles_as_lm_eval_seeded_with_0(tmp_path: Path) -> None:
    """lm-eval's `process_docs` over the CSV read as lm-eval reads it (`datasets`, so pandas:
    "N/A" is a missing answer), Python's generator seeded 0 just before: the same choices,
    in the same order, and its prompt template over them gives the task's contexts."""
    import datasets

    (tmp_path / "gpqa").mkdir()
    path = tmp_path / "gpqa" / "gpqa_main.csv"
    path.write_bytes(gpqa_csv(GPQA_ROWS))
    items = GPQA(0, None, tmp_path).items()
    assert [i.data for i in GPQA(0, None, tmp_path).items()] == [i.data for i in items]

    utils = lm_eval_utils("gpqa/zeroshot")
    loaded = datasets.load_dataset(
        "csv", data_files={"train": str(path)}, cache_dir=str(tmp_path / "c")
    )["train"]
    assert loaded[2]["Incorrect Answer 3"] is None  # pandas' reading of "N/A"
    random.seed(0)
    docs = list(utils.process_docs(loaded))
    loader = lm_eval("lm_eval.tasks._yaml_loader")
    template = loader.load_yaml(lm_eval_tasks() / "gpqa/zeroshot/_gpqa_zeroshot_yaml")[
        "doc_to_text"
    ]
    for item, doc in zip(items, docs, strict=True):
        assert item.data["context"] == lm_eval("lm_eval.utils").apply_template(template, doc)
        assert item.data["choices"] == ["(A)", "(B)", "(C)", "(D)"]
        assert item.data["choices"][item.data["gold"]] == doc["answer"]
    first, third = str(items[0].data["context"]), str(items[2].data["context"])
    assert "The graviton" in first and "The  graviton" not in first  # lm-eval's cleaning
    assert any(line[4:] == "The W boson" for line in first.splitlines())  # stripped
    assert any(line in ("(A)  ", "(B)  ", "(C)  ", "(D)  ") for line in third.splitlines()), (
        "the missing answer is lm-eval's ' '"
    )


# -- the model -------------------------------------------------------------------------------


@pytest.mark.slow
def test_arc_and_winogrande_on_the_model_score_as_lm_eval(
    smollm_path: Path, tmp_path: Path
) -> None:
    """Two ARC questions (1 shot) and two Winogrande sentences (1 shot) on the embedded model
    through `run_task`: lm-eval's `process_results`, given the log-likelihoods the model gave,
    reaches the same acc and acc_norm for every item."""
    data = tmp_path / "data"
    write_jsonl(data / "arc_challenge" / "test.jsonl", [ARC_CARD, ARC_PAPER])
    write_jsonl(data / "arc_challenge" / "train.jsonl", [ARC_PAPER])
    write_jsonl(data / "winogrande" / "validation.jsonl", WINOGRANDE)
    write_jsonl(data / "winogrande" / "train.jsonl", [WINOGRAD])
    lm_tasks = {
        "arc_challenge": lm_eval_task(
            "arc/arc_challenge.yaml",
            {"test": data / "arc_challenge" / "test.jsonl"},
            tmp_path / "c",
        ),
        "winogrande": lm_eval_task(
            "winogrande/default.yaml",
            {"validation": data / "winogrande" / "validation.jsonl"},
            tmp_path / "c",
        ),
    }
    model = EvalModel(smollm_path, context=2048)
    try:
        with EvalStore(tmp_path / "evals.sqlite3") as store:
            for name in lm_tasks:
                task = make_task(name, 1, None, data)
                run, summary = run_task(task, model, store, "default")
                assert summary["items"] == 2 and list(summary["metrics"]) == list(task.metrics)
                docs = list(lm_tasks[name].eval_docs)
                for result in store.results(run.id):
                    doc = docs[int(result.key.split("/")[1])]
                    lls = [(ll, False) for ll in result.detail["logliks"]]
                    theirs = lm_tasks[name].process_results(doc, lls)
                    assert {m: theirs[m] for m in task.metrics} == result.metrics, result.key
    finally:
        model.close()


# -- the Hub ---------------------------------------------------------------------------------


def test_arc_from_the_hub_then_offline(
    online_hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """allenai/ai2_arc laid out as on the Hub (ARC-Challenge/SPLIT-00000-of-00001.parquet):
    the items are those of the same rows from a folder, only the config's two splits are
    fetched, and a second reading finds them in the cache offline."""
    online_hub.add_dataset(
        "allenai/ai2_arc",
        {
            "ARC-Challenge/test-00000-of-00001.parquet": parquet([ARC_CARD, ARC_PAPER]),
            "ARC-Challenge/train-00000-of-00001.parquet": parquet([ARC_PAPER]),
            "ARC-Easy/test-00000-of-00001.parquet": parquet([ARC_PAPER]),
            "README.md": b"---\nlicense: cc-by-sa-4.0\n---\n",
        },
    )
    items = [i.data for i in ArcChallenge(1).items()]
    write_jsonl(tmp_path / "local" / "test.jsonl", [ARC_CARD, ARC_PAPER])
    write_jsonl(tmp_path / "local" / "train.jsonl", [ARC_PAPER])
    assert items == [i.data for i in ArcChallenge(1, None, tmp_path / "local").items()]
    commit = online_hub.repos["datasets/allenai/ai2_arc"].commit
    assert {path for _, path, _ in online_hub.requests("/resolve/")} == {
        f"/datasets/allenai/ai2_arc/resolve/{commit}/ARC-Challenge/{split}-00000-of-00001.parquet"
        for split in ("test", "train")
    }
    online_hub.log.clear()
    monkeypatch.setattr(hf_constants(), "HF_HUB_OFFLINE", True)
    assert [i.data for i in ArcChallenge(1).items()] == items
    assert online_hub.requests() == [], "offline: the cache alone"


# The Hub's layout of each dataset, as its pages show it (docs/eval.md names them): the
# split's file on the main branch, or, for a dataset whose main branch holds only its
# loading script, in the Hub's conversion (refs/convert/parquet); the columns typed as the
# dataset's features declare them (a string `answer` in Winogrande, a boolean one in
# google/boolq, HellaSwag's `label` a string, TruthfulQA's labels int32).
TARGETS = pa.struct([("choices", pa.list_(pa.string())), ("labels", pa.list_(pa.int32()))])
LETTERED = pa.struct([("label", pa.list_(pa.string())), ("text", pa.list_(pa.string()))])
SCHEMAS = {
    "commonsense_qa": pa.schema(
        [
            ("id", pa.string()),
            ("question", pa.string()),
            ("question_concept", pa.string()),
            ("choices", LETTERED),
            ("answerKey", pa.string()),
        ]
    ),
    "winogrande": pa.schema(
        [(f, pa.string()) for f in ("sentence", "option1", "option2", "answer")]
    ),
    "boolq": pa.schema(
        [("question", pa.string()), ("answer", pa.bool_()), ("passage", pa.string())]
    ),
    "hellaswag": pa.schema(
        [
            ("ind", pa.int32()),
            *[(f, pa.string()) for f in ("activity_label", "ctx_a", "ctx_b", "ctx")],
            ("endings", pa.list_(pa.string())),
            *[(f, pa.string()) for f in ("source_id", "split", "split_type", "label")],
        ]
    ),
    "truthfulqa_mc2": pa.schema(
        [("question", pa.string()), ("mc1_targets", TARGETS), ("mc2_targets", TARGETS)]
    ),
}
SCRIPT_ONLY: dict[str, Path | bytes] = {
    "hellaswag.py": b"# the dataset's loading script\n",
    "README.md": b"---\n---\n",
}


@dataclass
class HubLayout:
    task: type[ChoiceTask]
    repo: str
    splits: dict[str, tuple[str, list[Row]]]  # split: (its file, its rows)
    shots: int = 1
    converted: bool = False  # main holds the loading script; the rows are on the conversion


HUB_LAYOUTS = [
    HubLayout(
        CommonsenseQA,
        "tau/commonsense_qa",
        {
            "validation": ("data/validation-00000-of-00001.parquet", [CSQA_PAPER, CSQA_CARD]),
            "train": ("data/train-00000-of-00001.parquet", [CSQA_CARD]),
        },
    ),
    HubLayout(
        Winogrande,
        "allenai/winogrande",
        {
            "validation": ("winogrande_xl/validation-00000-of-00001.parquet", WINOGRANDE),
            "train": ("winogrande_xl/train-00000-of-00001.parquet", [WINOGRAD]),
        },
    ),
    HubLayout(
        BoolQ,
        "google/boolq",
        {
            "validation": (
                "data/validation-00000-of-00001.parquet",
                [google_boolq(r) for r in BOOLQ_SUPERGLUE],
            ),
            "train": ("data/train-00000-of-00001.parquet", [google_boolq(BOOLQ_TRAIN)]),
        },
    ),
    HubLayout(
        HellaSwag,
        "Rowan/hellaswag",
        {
            "validation": ("default/validation/0000.parquet", HELLASWAG[1:]),
            "train": ("default/train/0000.parquet", HELLASWAG[:1]),
        },
        converted=True,
    ),
    HubLayout(
        TruthfulQAMC2,
        "truthfulqa/truthful_qa",
        {"validation": ("multiple_choice/validation-00000-of-00001.parquet", TRUTHFULQA)},
        shots=0,
    ),
]


@pytest.mark.parametrize("layout", HUB_LAYOUTS, ids=[h.task.name for h in HUB_LAYOUTS])
def test_each_dataset_from_the_hub_in_its_layout(
    layout: HubLayout, online_hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Served in its Hub layout, with its columns' types, each dataset gives the items the
    same rows give from a folder; HellaSwag, whose main branch holds only its loading
    script, from the Hub's conversion, and again offline from the cache."""
    schema = SCHEMAS[layout.task.name]
    files: dict[str, Path | bytes] = {n: parquet(r, schema) for n, r in layout.splits.values()}
    if layout.converted:
        online_hub.add_dataset(layout.repo, SCRIPT_ONLY)
        online_hub.add_dataset(layout.repo, files, branch="refs/convert/parquet")
    else:
        online_hub.add_dataset(layout.repo, {**files, "README.md": b"---\n---\n"})
    items = [i.data for i in layout.task(layout.shots).items()]
    for split, (_, rows) in layout.splits.items():
        write_jsonl(tmp_path / "local" / f"{split}.jsonl", rows)
    assert items == [i.data for i in layout.task(layout.shots, None, tmp_path / "local").items()]
    assert len(items) == len(layout.splits["validation"][1])
    fetched = {p.rsplit("/", 1)[-1] for _, p, _ in online_hub.requests("/resolve/")}
    assert fetched == {n.rsplit("/", 1)[-1] for n, _ in layout.splits.values()}
    asked = online_hub.requests(f"/api/datasets/{layout.repo}/revision/refs/convert/parquet")
    assert bool(asked) == layout.converted, "the conversion is asked when main has no split"
    if layout.converted:
        online_hub.log.clear()
        monkeypatch.setattr(hf_constants(), "HF_HUB_OFFLINE", True)
        assert [i.data for i in layout.task(layout.shots).items()] == items
        assert online_hub.requests() == [], "offline: the cache alone"


def test_gpqa_gated_then_granted(
    online_hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idavidrein/gpqa is gated: without a token, one line that says what to do; with a token
    granted access, its CSV is fetched by name and read as the same file from a folder."""
    online_hub.add_dataset("Idavidrein/gpqa", {"gpqa_main.csv": gpqa_csv(GPQA_ROWS)}, gated=True)
    with pytest.raises(UsageError) as error:
        GPQA(0).items()
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("gpqa: Idavidrein/gpqa is gated on the Hugging Face Hub")
    assert "no token was sent" in message and "HF_TOKEN" in message
    assert "--data DIR with gpqa_main.csv" in message
    online_hub.tokens.add("hf_grantedgpqa")
    monkeypatch.setenv("HF_TOKEN", "hf_grantedgpqa")
    from_hub = [i.data for i in GPQA(0).items()]
    (tmp_path / "gpqa").mkdir()
    (tmp_path / "gpqa" / "gpqa_main.csv").write_bytes(gpqa_csv(GPQA_ROWS))
    assert from_hub == [i.data for i in GPQA(0, None, tmp_path).items()]


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "name", "content", "where", "field_name"),
    [
        (
            ArcChallenge,
            "ARC-Challenge-Test.jsonl",
            [arc_release(ARC_CARD), {**arc_release(ARC_PAPER), "answerKey": None}],
            "ARC-Challenge-Test.jsonl:2",
            "'answerKey'",
        ),
        (
            ArcChallenge,
            "ARC-Challenge-Test.jsonl",
            [{**arc_release(ARC_CARD), "question": {"stem": "q", "choices": [{"label": "A"}]}}],
            "ARC-Challenge-Test.jsonl:1",
            "'question.choices[0].text'",
        ),
        (
            Winogrande,
            "dev.jsonl",
            [{k: v for k, v in WINOGRANDE[0].items() if k != "option2"}],
            "dev.jsonl:1",
            "'option2'",
        ),
        (
            HellaSwag,
            "validation-00000-of-00001.parquet",
            [{k: v for k, v in HELLASWAG[0].items() if k != "ctx_b"}],
            "validation-00000-of-00001.parquet row 1",
            "'ctx_b'",
        ),
        (
            GPQA,
            "gpqa_main.csv",
            [{k: v for k, v in GPQA_ROWS[0].items() if k != "Question"}],
            "gpqa_main.csv row 1",
            "'Question'",
        ),
    ],
    ids=["arc-key", "arc-nested", "winogrande", "hellaswag-parquet", "gpqa-csv"],
)
def test_a_record_without_a_field_is_one_line(
    tmp_path: Path,
    task: type[ChoiceTask],
    name: str,
    content: list[Row],
    where: str,
    field_name: str,
) -> None:
    path = tmp_path / task.name / name
    path.parent.mkdir()
    if name.endswith(".parquet"):
        path.write_bytes(parquet(content))
    elif name.endswith(".csv"):
        columns = [c for c in GPQA_COLUMNS if c in content[0]]
        out = io.StringIO()
        writer = csv.DictWriter(out, columns)
        writer.writeheader()
        writer.writerows(content)
        path.write_text(out.getvalue())
    else:
        write_jsonl(path, content)
    with pytest.raises(UsageError) as error:
        task(0, None, tmp_path).items()
    message = str(error.value)
    assert "\n" not in message and str(path.parent) in message
    assert where in message and field_name in message


def test_shots_beyond_the_split_and_a_task_without_exemplars(tmp_path: Path) -> None:
    """The registry's 25 ARC shots from a two-row train split, shots for TruthfulQA, whose
    prompt carries its own examples, and a task's own folder without its files: each one line
    that says what to do."""
    write_jsonl(tmp_path / "arc_challenge" / "test.jsonl", [ARC_CARD])
    write_jsonl(tmp_path / "arc_challenge" / "train.jsonl", [ARC_CARD, ARC_PAPER])
    with pytest.raises(UsageError, match=r"^arc_challenge: 25 shots asked, but the train split"):
        make_task("arc_challenge", None, None, tmp_path).items()
    write_jsonl(tmp_path / "truthfulqa_mc2" / "validation.jsonl", TRUTHFULQA)
    with pytest.raises(UsageError, match="pass --shots 0"):
        make_task("truthfulqa_mc2", 3, None, tmp_path).items()
    (tmp_path / "winogrande").mkdir()
    with pytest.raises(UsageError, match=r"winogrande: .* does not hold dev\.jsonl"):
        Winogrande(0, None, tmp_path).items()


def test_data_that_is_nowhere_stops_the_task_when_it_is_made(online_hub: Hub) -> None:
    """Made from its name, the task has read its data already: where the Hub has no such
    dataset, the one line comes before any model loads (`eval --card` shows it as the row)."""
    online_hub.repos.pop("datasets/allenai/ai2_arc", None)  # the Hub's repositories outlive a test
    with pytest.raises(UsageError, match=r"^arc_challenge: the Hub has no dataset allenai/ai2_arc"):
        make_task("arc_challenge", None, 1, None)
    assert online_hub.requests("/api/datasets/allenai/ai2_arc"), "it asked the Hub"
