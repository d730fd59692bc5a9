"""The studio's spec sheet measured: the card routes and a card run, end to end.

The real app (`create_app` over the embedded model's pool and real stores) is served by
uvicorn on loopback in this process; a card run scores the embedded model on a couple of
real MMLU subjects copied from the shared data (tests/needs.py), with `limit` 1 where it
should end quickly. The catalog's llama-3-8b card is the one named: the embedded model
is no catalog model, so it has no card of its own. The card's MMLU figure, 66.6, is
Meta's (the Llama 3 model card, base pretrained models, MMLU 5-shot), as
scheda/catalog.py holds it. The browser test drives the Evaluations tab in Chromium.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from scheda.evaluation.tasks import TASKS, card_tasks
from scheda.server.app import create_app
from scheda.server.card_run import eta_seconds
from scheda.server.main import build_pool
from scheda.stores.evals import EvalStore
from scheda.stores.sessions import SessionStore
from tests.conftest import minilm_folder
from tests.needs import MMLU_DIR, require
from tests.serving import free_port, http_request, wait_for
from tests.test_studio import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TIMEOUT_MS,
    _playwright,
    _save_screenshot,
    _studio_on,
)

KEY = "sk-card-runs"
CARD = "llama-3-8b"
PUBLISHED_MMLU = 66.6  # the Llama 3 model card (Meta), base models, MMLU 5-shot
SUBJECTS = ("abstract_algebra", "college_physics")
RUN_S = 180.0  # a card run of two MMLU items on a busy two-core host ends well within this


@dataclass
class Served:
    port: int
    evals: EvalStore
    key: str | None = KEY

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        sent = {"Content-Type": "application/json"}
        if self.key:
            sent["Authorization"] = f"Bearer {self.key}"
        sent.update(headers or {})
        data = None if body is None else json.dumps(body).encode()
        return http_request(self.port, method, path, data, sent, timeout=60)

    def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        got, answer = self.request(method, path, body)
        assert got == status, (method, path, got, answer)
        return answer

    def ended(self, within: float = RUN_S) -> dict[str, Any]:
        """The card run's progress once it has ended."""
        last: dict[str, Any] = {}

        def over() -> bool:
            last.update(self.ok("GET", "/api/evals/card/run"))
            return last["state"] in ("finished", "cancelled", "failed")

        assert wait_for(over, within), f"the card run did not end in {within:g} s: {last}"
        return last


@contextlib.contextmanager
def serve(folder: Path, key: str | None = KEY) -> Iterator[Served]:
    """The app over the embedded model (and MiniLM, which makes embeddings) on loopback."""
    pool = build_pool(["default", str(minilm_folder())])
    store = SessionStore(folder / "sessions.sqlite3")
    evals = EvalStore(folder / "evals.sqlite3")
    app = create_app(pool, store, api_key=key, evals=evals)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", http="h11")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started, within=60), "the app did not start"
    try:
        yield Served(port, evals, key)
    finally:
        server.should_exit = True  # the app's shutdown cancels a card run still going
        thread.join(timeout=60)
        pool.close()
        store.close()
        evals.close()


def mmlu_folder(root: Path, subjects: tuple[str, ...]) -> Path:
    """A data folder with a few real MMLU subjects (test files only: the first five rows
    of each are its exemplars), laid out as `--data DIR` reads it: DIR/mmlu/."""
    require(*(MMLU_DIR / f"{s}_test.csv" for s in subjects), what="MMLU data")
    mmlu = root / "mmlu"
    mmlu.mkdir(parents=True)
    for subject in subjects:
        shutil.copyfile(MMLU_DIR / f"{subject}_test.csv", mmlu / f"{subject}_test.csv")
    return root


def importable(task: str) -> bool:
    """Whether the module that runs a task is in this tree."""
    module = TASKS[task].runs.partition(":")[0]
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(tmp_path_factory.mktemp("card-runs")) as running:
        yield running


# -- the tests ---------------------------------------------------------------------------


def test_a_card_run_goes_to_the_end_and_its_figure_is_in_the_table(
    served: Served, tmp_path: Path
) -> None:
    data = mmlu_folder(tmp_path / "data", SUBJECTS)
    body = {"model": "default", "card": CARD, "limit": 1, "data": str(data)}
    started = served.ok("POST", "/api/evals/card", body, status=202)
    assert started["state"] == "running" and started["card"] == CARD
    expected = [t.name for t in card_tasks(_card_benchmarks())]
    assert [t["task"] for t in started["tasks"]] == expected
    assert started["tasks"][0]["benchmark"] == "MMLU (5-shot)"

    run = served.ended()
    assert run["state"] == "finished", run
    assert run["id"] == started["id"] and run["ended"] >= run["started"]
    assert run["eta_s"] is None  # nothing left
    by_task = {t["task"]: t for t in run["tasks"]}
    mmlu = by_task["mmlu"]
    assert mmlu["state"] == "finished" and mmlu["done"] == mmlu["total"] == len(SUBJECTS)
    for name, task in by_task.items():
        if name == "mmlu":
            continue
        # A task whose data is not in the folder (and the Hub is offline) does not stop
        # the run: it says where its data would come from.
        if importable(name):
            assert task["state"] == "no data", task
            assert task["why"] and "\n" not in task["why"]
        else:  # a task another part of scheda brings, absent from this build
            assert task["state"] == "unavailable" and "not in this build" in task["why"]

    # The run is the command's: in the store, finished, at the card's shots and the limit.
    stored = served.evals.get(mmlu["run"])
    assert stored.finished is not None and stored.summary is not None
    assert stored.model == "default" and stored.config["shots"] == 5
    assert stored.config["limit"] == 1 and stored.summary["items"] == len(SUBJECTS)
    accuracies = [r.metrics["acc"] for r in served.evals.results(stored.id)]
    assert len(accuracies) == len(SUBJECTS)

    # Started again, the card takes what it measured before: no new run, no item scored.
    served.ok("POST", "/api/evals/card", body, status=202)
    again = {t["task"]: t for t in served.ended()["tasks"]}["mmlu"]
    assert again["state"] == "measured before" and again["run"] == stored.id
    assert [r.id for r in served.evals.runs() if r.task == "mmlu"] == [stored.id]

    table = served.ok("GET", f"/api/evals/card?model=default&card={CARD}")
    assert table["model"] == "default" and table["card"] == CARD
    rows = {r["benchmark"]: r for r in table["rows"]}
    assert list(rows) == list(_card_benchmarks())
    row = rows["MMLU (5-shot)"]
    assert row["task"] == "mmlu" and row["shots"] == 5 and row["metric"] == "acc"
    assert row["published"] == PUBLISHED_MMLU
    # Points (percent): the mean of the items' accuracies as the store has them.
    assert row["yours"] == pytest.approx(100 * sum(accuracies) / len(accuracies))
    assert row["n"] == len(SUBJECTS)
    assert row["limit"] == 1 and row["quick_look"] is True
    assert row["difference"] == pytest.approx(row["yours"] - PUBLISHED_MMLU)
    assert row["method"] == TASKS["mmlu"].method and row["run"] == stored.id
    for name, task in by_task.items():
        if name != "mmlu":
            other = rows[task["benchmark"]]
            assert other["yours"] is None and other["why"] == task["why"]


def test_a_second_start_is_refused_a_cancel_stops_and_a_restart_resumes(
    served: Served, tmp_path: Path
) -> None:
    # One whole subject (95 items after its five exemplars): long enough to be stopped.
    data = mmlu_folder(tmp_path / "data", SUBJECTS[:1])
    body = {"model": "default", "card": CARD, "data": str(data)}
    first = served.ok("POST", "/api/evals/card", body, status=202)
    status, refused = served.request("POST", "/api/evals/card", body)
    assert status == 409, refused
    assert "card run is going" in refused["error"]["message"]
    assert "\n" not in refused["error"]["message"]

    def mmlu() -> dict[str, Any]:
        task: dict[str, Any] = served.ok("GET", "/api/evals/card/run")["tasks"][0]
        return task

    # Two items scored give a pace: the progress has an ETA for the items left.
    assert wait_for(lambda: served.ok("GET", "/api/evals/card/run")["eta_s"] is not None, RUN_S)
    served.ok("DELETE", "/api/evals/card/run")
    run = served.ended()
    assert run["state"] == "cancelled" and run["id"] == first["id"]
    task = run["tasks"][0]
    assert task["state"] == "cancelled" and 2 <= task["done"] < task["total"] == 95
    stored = served.evals.get(task["run"])
    assert stored.finished is None  # unfinished: the next run goes on from it
    kept = len(served.evals.results(stored.id))
    assert kept == task["done"]
    # The others were made before the first was scored: they are as they were then.
    assert all(t["state"] in ("no data", "unavailable") for t in run["tasks"][1:])

    # The same run started again goes on from the items stored, in the same stored run.
    served.ok("POST", "/api/evals/card", body, status=202)
    assert wait_for(lambda: mmlu()["run"] is not None, RUN_S)
    resumed = mmlu()
    assert resumed["run"] == stored.id and resumed["done"] >= kept
    served.ok("DELETE", "/api/evals/card/run")
    assert served.ended()["state"] == "cancelled"


def test_bad_input_is_a_one_line_4xx_and_starts_nothing(tmp_path: Path) -> None:
    with serve(tmp_path) as fresh:
        for method in ("GET", "DELETE"):
            status, answer = fresh.request(method, "/api/evals/card/run")
            assert status == 404 and "POST /api/evals/card" in answer["error"]["message"]
        cases: list[tuple[dict[str, Any], int, str | None, str]] = [
            ({"model": "nosuch", "card": CARD}, 404, "model", "nosuch"),
            ({"model": minilm_folder().name, "card": CARD}, 400, "model", "embeddings"),
            ({"model": "default"}, 400, None, "default"),  # no catalog card of its own
            ({"model": "default", "card": "llama-9-1b"}, 400, None, "llama-9-1b"),
            ({"card": CARD, "data": str(tmp_path / "nowhere")}, 400, "data", "not a folder"),
            ({"card": CARD, "limit": 0}, 400, "limit", "limit"),
            ({"card": CARD, "limit": "3"}, 400, "limit", "limit"),
        ]
        for body, status, param, words in cases:
            got, answer = fresh.request("POST", "/api/evals/card", body)
            assert got == status, (body, got, answer)
            error = answer["error"]
            assert words in error["message"] and "\n" not in error["message"], (body, error)
            if param:
                assert error["param"] == param, (body, error)
        for query, status in (("model=nosuch", 404), ("model=default&card=llama-9-1b", 400)):
            got, answer = fresh.request("GET", f"/api/evals/card?{query}")
            assert got == status and "\n" not in answer["error"]["message"], (query, answer)

        # The guard and the key stand in front of these routes as of every other.
        body = {"card": CARD, "limit": 1}
        got, answer = fresh.request(
            "POST", "/api/evals/card", body, {"Origin": "https://elsewhere.example"}
        )
        assert got == 403, answer
        fresh.key = None
        for method, path in (("GET", "/api/evals/card"), ("POST", "/api/evals/card")):
            got, answer = fresh.request(method, path, body if method == "POST" else None)
            assert got == 401 and answer["error"]["code"] == "invalid_api_key"
        fresh.key = KEY
        assert fresh.request("GET", "/api/evals/card/run")[0] == 404  # nothing was started
        assert fresh.evals.runs() == []


def test_the_eta_is_the_pace_of_the_items_scored_so_far() -> None:
    # Hand-made times: items scored at 10, 12, 14 and 16 s are 2 s apart; 5 left is 10 s,
    # less the 1 s gone since the last one.
    assert eta_seconds([10.0, 12.0, 14.0, 16.0], 5, 17.0) == 9.0
    assert eta_seconds([10.0], 5, 11.0) is None  # one item gives no pace
    assert eta_seconds([10.0, 12.0], 1, 30.0) == 0.0  # late, not negative


@pytest.mark.browser
def test_the_tab_starts_a_card_run_shows_its_progress_then_the_table(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    data = mmlu_folder(tmp_path / "data", SUBJECTS)
    sync_playwright = _playwright()
    with (
        serve(tmp_path / "server", key=None) as served,
        sync_playwright() as p,
    ):
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        url = f"http://127.0.0.1:{served.port}"
        with _studio_on(chromium, url) as studio:
            page = studio.page
            studio.open("/#eval")
            # The embedded model is no catalog model: the panel says so and asks for a card.
            message = page.locator("#evalcard-message")
            expect(message).to_be_visible()
            expect(message).to_contain_text("no card")
            page.fill("#evalcard-card", CARD)
            page.press("#evalcard-card", "Tab")  # a change reads the table again
            mmlu = page.locator("#evalcard-table tr[data-task='mmlu']")
            expect(mmlu).to_have_class("no-figure")
            expect(mmlu.locator(".evalcard-why")).to_contain_text("not measured yet")
            assert page.locator("#evalcard-table tbody tr").count() == len(_card_benchmarks())

            page.fill("#evalcard-limit", "1")
            page.fill("#evalcard-data", str(data))
            page.click("#evalcard-start")
            progress = page.locator("#evalcard-progress")
            # The answer to the start is the run going: the bar shows it before the first poll.
            page.wait_for_selector("#evalcard-progress[data-state='running']")
            expect(page.locator("#evalcard-cancel")).to_be_visible()
            assert page.locator("#evalcard-start").is_disabled()
            expect(progress).to_have_attribute("data-state", "finished", timeout=3 * TIMEOUT_MS)
            text = page.locator("#evalcard-progress-text")
            expect(text).to_contain_text(f"Finished: {CARD} on default, 2 / 2 items")
            bar = page.locator("#evalcard-bar")
            assert bar.get_attribute("value") == bar.get_attribute("max") == "2"
            expect(page.locator("#evalcard-tasks li[data-task='mmlu']")).to_have_attribute(
                "data-state", "finished"
            )

            # Then the table again, with the embedded model's figure: the API's, as drawn.
            table = served.ok("GET", f"/api/evals/card?model=default&card={CARD}")
            row = next(r for r in table["rows"] if r["task"] == "mmlu")
            expect(mmlu).not_to_have_class("no-figure")
            cells = [c.strip() for c in mmlu.locator("td").all_inner_texts()]
            stderr = "" if row["stderr"] is None else f" ± {row['stderr']:.1f}"
            assert cells[:3] == ["5", "acc", "66.6"], cells
            assert cells[3].startswith(f"{row['yours']:.1f}{stderr}"), cells
            assert "limit 1" in cells[3]
            assert cells[4] == f"{row['difference']:+.1f}", cells
            noise = {None: "— (no stderr)", True: "yes", False: "no"}[row["within_noise"]]
            assert cells[5] == noise, cells
            expect(page.locator("#evalcard-title")).to_contain_text("quick look")
            notes = page.locator("#evalcard-notes li").all_inner_texts()
            assert any(TASKS["mmlu"].method in n for n in notes), notes
            # The runs' list below was read again: the run is in it, and the figure opens it.
            run = served.ok("GET", "/api/evals/card/run")["tasks"][0]["run"]
            assert row["run"] == run
            expect(page.locator(f"#eval-list tr[data-run-id='{run}']")).to_be_visible()
            mmlu.locator("a.score-value").click()
            expect(page.locator("#eval-detail")).to_have_attribute("data-run-id", run)
            _save_screenshot(page, tmp_path, "studio-card.png")
        chromium.close()


def _card_benchmarks() -> dict[str, float]:
    from scheda.catalog import lookup

    found = lookup(CARD)
    assert found is not None
    return found[0].benchmarks
