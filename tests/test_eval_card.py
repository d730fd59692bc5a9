"""`scheda eval --card`: a catalog card's benchmark rows beside the figures measured here.

The published figures are Meta's Llama 3 model card's, as `scheda.catalog` holds them
(MMLU 5-shot: 66.6 for Llama 3 8B, 82.0 for Llama 3 70B Instruct, 52.9 for Llama 2 70B
chat). The model is the real embedded one (SmolLM2-135M-Instruct, which no card
describes: it is measured against a card named on the command line), and MMLU's data
is the real test split beside the project, two of its subjects copied so that a quick
look stays quick. The 1.96 of "inside the noise" is the standard normal's two-sided 95%
point.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from scheda.cli import ray_alone
from scheda.cli.eval import CARD_ALONE, card_alone
from scheda.display.render_card import notes, title
from scheda.errors import UsageError
from scheda.evaluation.card import card_for, card_rows, cards, says_instruct
from scheda.evaluation.tasks import TASKS, card_tasks
from scheda.resolve import resolve
from scheda.stores.evals import EvalStore
from tests.commands import run_scheda, scheda
from tests.needs import MMLU_DIR, require

LLAMA_3_8B = card_for(None, "llama-3-8b")
MMLU = "MMLU (5-shot)"


def summary(value: float, stderr: float | None, n: int, limit: int | None = None) -> dict[str, Any]:
    """A summary in `runner.summarize`'s shape, as `scheda eval` hands it to `card_rows`."""
    figure = {"value": value, "stderr": stderr, "n": n}
    return {"task": "mmlu", "shots": 5, "items": n, "metrics": {"acc": figure}, "limit": limit}


# -- the rows, from hand-made summaries -------------------------------------------------------


def test_difference_and_noise_are_in_points_against_the_published_figure() -> None:
    # 70.0 ± 2.0 against 66.6: 3.4 points off, inside 1.96 x 2.0 = 3.92.
    [inside] = card_rows({MMLU: 66.6}, {"mmlu": summary(0.70, 0.02, 100)})
    assert inside.yours == pytest.approx(70.0)
    assert (inside.stderr, inside.n) == (2.0, 100)
    assert inside.difference == pytest.approx(3.4)
    assert inside.within_noise is True
    # 72.0 ± 2.0: 5.4 points off, outside 3.92.
    [outside] = card_rows({MMLU: 66.6}, {"mmlu": summary(0.72, 0.02, 100)})
    assert outside.difference == pytest.approx(5.4) and outside.within_noise is False
    # Below the card counts the same: 62.7 is 3.9 under, inside 3.92; 62.6 (4.0) is not.
    [under] = card_rows({MMLU: 66.6}, {"mmlu": summary(0.627, 0.02, 100)})
    assert under.difference == pytest.approx(-3.9) and under.within_noise is True
    [further] = card_rows({MMLU: 66.6}, {"mmlu": summary(0.626, 0.02, 100)})
    assert further.within_noise is False


def test_a_figure_without_a_stderr_has_no_verdict() -> None:
    [row] = card_rows({MMLU: 66.6}, {"mmlu": summary(1.0, None, 1, limit=1)})
    assert row.difference == pytest.approx(33.4)
    assert row.within_noise is None and row.stderr is None
    assert row.quick_look and row.limit == 1
    assert row.to_dict()["quick_look"] is True


def test_every_row_of_the_card_in_its_order_with_the_registrys_method() -> None:
    results: dict[str, Any] = {
        "mmlu": summary(0.5, 0.05, 100),
        "agieval": "agieval: no data here: pass --data DIR with the AGIEval files",
    }
    rows = card_rows(LLAMA_3_8B.benchmarks, results)
    assert [r.benchmark for r in rows] == list(LLAMA_3_8B.benchmarks)
    mmlu, agieval, *rest = rows
    assert (mmlu.task, mmlu.metric, mmlu.published) == ("mmlu", TASKS["mmlu"].metric, 66.6)
    assert mmlu.method == TASKS["mmlu"].method and not mmlu.quick_look
    # A row whose task could not run says why, with no figure, and keeps its method.
    assert agieval.yours is agieval.difference is agieval.within_noise is None
    assert agieval.why == results["agieval"]
    assert agieval.differs == TASKS["agieval"].differs and agieval.shots == TASKS["agieval"].shots
    assert all(r.why == "not run" and r.yours is None for r in rest)
    json.dumps([r.to_dict() for r in rows])  # JSON-able as it is


def test_a_row_no_task_measures_says_so() -> None:
    [row] = card_rows({"Some Benchmark (2-shot)": 50.0}, {})
    assert row.task is None and row.why == "no task in scheda measures this row"


def test_a_run_without_the_headline_metric_has_no_figure() -> None:
    empty = {"task": "mmlu", "shots": 5, "items": 0, "metrics": {}, "limit": None}
    [row] = card_rows({MMLU: 66.6}, {"mmlu": empty})
    assert row.yours is None and row.why == "the run has no acc figure"


def test_the_notes_give_the_method_what_differs_and_why_not() -> None:
    rows = card_rows(LLAMA_3_8B.benchmarks, {"mmlu": summary(0.5, 0.05, 100)})
    lines = notes(rows)
    assert len(lines) == len(rows)
    assert lines[0] == f"[1] mmlu: {TASKS['mmlu'].method}."
    assert f"Differs from the card: {TASKS['agieval'].differs}." in lines[1]
    assert lines[1].startswith("[2] agieval: no figure: not run.")
    assert "quick look, 1 item per task" in title("m", "llama-3-8b", 1)
    assert title("m", "llama-3-8b", None) == "m against the llama-3-8b card"


# -- which card ------------------------------------------------------------------------------


def test_a_card_by_name_base_or_instruct() -> None:
    assert LLAMA_3_8B.label == "llama-3-8b" and not LLAMA_3_8B.instruct
    assert LLAMA_3_8B.benchmarks[MMLU] == 66.6
    assert [t.name for t in card_tasks(LLAMA_3_8B.benchmarks)][:2] == ["mmlu", "agieval"]
    instruct = card_for(None, "llama-3-70b-instruct")
    assert instruct.instruct and instruct.benchmarks[MMLU] == 82.0
    assert "HumanEval (0-shot)" in instruct.benchmarks
    assert card_for(None, "Meta-Llama-2-70b-chat").label == "llama-2-70b-chat"


def test_the_models_own_card_base_or_instruct_as_it_is() -> None:
    assert card_for(resolve("llama-3-8b"), None).label == "llama-3-8b"
    assert card_for(resolve("llama-3-70b-instruct"), None).benchmarks[MMLU] == 82.0
    # A file matched by its numbers gets the base row; its name says it is the chat model.
    chat = replace(resolve("llama-2-70b"), name="Llama-2-70b-chat-hf")
    chat_card = card_for(chat, None)
    assert chat_card.label == "llama-2-70b-chat" and chat_card.benchmarks[MMLU] == 52.9
    # A name given wins over the model's own.
    assert card_for(chat, "llama-3-8b") == LLAMA_3_8B


@pytest.mark.parametrize(
    ("name", "instruct"),
    [
        ("Meta-Llama-3-8B-Instruct", True),
        ("Llama-2-70b-chat-hf", True),
        ("gemma-7b-it", True),
        ("Meta-Llama-3-8B", False),
        ("Split-Llama-3-8B", False),  # "it" inside a word is not the word
    ],
)
def test_instruct_is_read_from_the_words_of_the_name(name: str, instruct: bool) -> None:
    assert says_instruct(replace(resolve("llama-3-8b"), name=name)) is instruct


def test_no_card_is_one_line_listing_the_cards_and_the_tasks(smollm_path: Path) -> None:
    with pytest.raises(UsageError) as unknown_family:
        card_for(resolve("default"), None)
    with pytest.raises(UsageError) as unknown_name:
        card_for(None, "llama-9b")
    with pytest.raises(UsageError) as no_figures:  # the catalog has no 8B instruct figures
        card_for(None, "llama-3-8b-instruct")
    for error in (unknown_family, unknown_name, no_figures):
        message = str(error.value)
        assert "\n" not in message
        assert ", ".join(cards()) in message and ", ".join(TASKS) in message
    assert "no card of its own" in str(unknown_family.value)
    assert str(unknown_name.value).startswith("no card 'llama-9b'")
    assert "llama-3-70b-instruct" in cards() and "llama-3-8b" in cards()
    assert "gemma-2b" not in cards()  # no published figures in the catalog


# -- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "given"),
    [
        (["eval", "m.gguf", "--card"], ["eval", "m.gguf", "--card", CARD_ALONE]),
        (["eval", "m.gguf", "--card", "llama-3-8b"], ["eval", "m.gguf", "--card", "llama-3-8b"]),
        (["eval", "--card", "default"], ["eval", "--card", CARD_ALONE, "default"]),
        (["eval", "--card", "org/name"], ["eval", "--card", CARD_ALONE, "org/name"]),
        (["eval", "--card", "m.gguf"], ["eval", "--card", CARD_ALONE, "m.gguf"]),
        (
            ["eval", "m", "--card", "--limit", "1"],
            ["eval", "m", "--card", CARD_ALONE, "--limit", "1"],
        ),
        (["fit", "--card"], ["fit", "--card"]),  # only eval has the option
    ],
)
def test_card_alone_stands_for_the_models_own_card(args: list[str], given: list[str]) -> None:
    assert card_alone(args) == given


def test_card_alone_and_ray_alone_together() -> None:
    args = ["eval", "m.gguf", "--ray", "--card"]
    assert card_alone(ray_alone(args)) == ["eval", "m.gguf", "--ray", "local", "--card", ""]


def one_line_error(done: Any) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return str(lines[0])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--card", "llama-9b"], "error: no card 'llama-9b': the catalog's cards are"),
        (["--card"], "error: default (SmolLM2-135M-Instruct Q4_1): the catalog knows no family"),
        (["--card", "llama-3-8b", "--tasks", "mmlu"], "error: --card runs the card's own tasks"),
        (["--card", "llama-3-8b", "--shots", "1"], "error: --card runs each task with the card's"),
    ],
)
def test_cli_bad_card_is_one_line_and_stores_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = scheda("eval", "default", *args, data=tmp_path)
    assert one_line_error(done).startswith(message)
    assert json.loads(scheda("eval", "list", "--json", data=tmp_path).stdout) == []


@pytest.mark.slow
def test_cli_measures_the_card_then_reuses_the_measurement(
    smollm_path: Path, tmp_path: Path
) -> None:
    require(MMLU_DIR, what="MMLU data")
    data = tmp_path / "data"
    (data / "mmlu").mkdir(parents=True)
    for subject in ("world_religions", "elementary_mathematics"):  # the shortest prompts
        shutil.copy(MMLU_DIR / f"{subject}_test.csv", data / "mmlu")
    home = tmp_path / "home"
    command = ("eval", "default", "--card", "llama-3-8b", "--limit", "1", "--data", str(data))

    done = scheda(*command, "--json", data=home)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["card"], report["instruct"], report["limit"]) == ("llama-3-8b", False, 1)
    rows = report["rows"]
    assert [r["benchmark"] for r in rows] == list(LLAMA_3_8B.benchmarks)
    mmlu, *others = rows
    # One item per subject, two subjects: 0, 50 or 100 points against the card's 66.6.
    assert (mmlu["task"], mmlu["shots"], mmlu["metric"], mmlu["n"]) == ("mmlu", 5, "acc", 2)
    assert mmlu["published"] == 66.6 and mmlu["yours"] in (0.0, 50.0, 100.0)
    assert mmlu["difference"] == pytest.approx(mmlu["yours"] - 66.6)
    assert mmlu["within_noise"] == (abs(mmlu["difference"]) <= 1.96 * mmlu["stderr"])
    assert mmlu["quick_look"] and mmlu["why"] is None
    # The other rows' data is nowhere here (the Hub is off in the tests): each says why.
    for row in others:
        assert row["yours"] is None and row["difference"] is None
        assert row["why"], row

    # Again, as a table: nothing is measured again (the run is the first one).
    env = {**os.environ, "SCHEDA_DATA_DIR": str(home), "COLUMNS": "400"}
    env.pop("RAY_ADDRESS", None)
    table = run_scheda(*command, env=env)
    assert table.returncode == 0, table.stderr
    out = table.stdout
    assert "against the llama-3-8b card: a quick look, 1 item per task" in out
    [line] = [line for line in out.splitlines() if "MMLU (5-shot) [1]" in line]
    cells = [c.strip() for c in line.strip("│ ").split("│")]
    verdict = "yes" if mmlu["within_noise"] else "no"
    yours = f"{mmlu['yours']:.1f} ± {mmlu['stderr']:.1f}"
    assert cells == [
        "MMLU (5-shot) [1]",
        "5",
        "acc",
        "66.6",
        yours,
        f"{mmlu['difference']:+.1f}",
        verdict,
    ]
    assert f"Differs from the card: {TASKS['agieval'].differs}." in out
    [run] = json.loads(scheda("eval", "list", "--json", data=home).stdout)
    assert run["id"] == mmlu["run"] and run["task"] == "mmlu" and run["items"] == 2


def test_the_store_finds_only_a_finished_run_of_the_same_identity(tmp_path: Path) -> None:
    store = EvalStore(tmp_path / "evals.sqlite3")
    model = tmp_path / "model.gguf"
    model.write_bytes(b"weights")
    run = store.start("m", model, "mmlu", {"shots": 5, "limit": 1}, 2)
    assert store.finished_run(model, "mmlu", {"shots": 5, "limit": 1}) is None  # unfinished
    store.finish(run.id, {"items": 2})
    found = store.finished_run(model, "mmlu", {"shots": 5, "limit": 1})
    assert found is not None and found.id == run.id and found.summary == {"items": 2}
    assert store.finished_run(model, "mmlu", {"shots": 5, "limit": 2}) is None
    assert store.finished_run(model, "gsm8k", {"shots": 5, "limit": 1}) is None
    store.close()
