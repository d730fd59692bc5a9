"""The studio's Hub search: `GET /api/hub/search` and the model tab's search box, end to end.

The real app (`create_app` over the embedded model's pool and real stores, with an API key)
is served by uvicorn on loopback in this process, and reads the loopback Hub (tests/hub.py)
through `huggingface_hub`, as `scheda search` does: the repositories of tests/test_search.py
(the embedded GGUF as Q4_1 and Q8_0, its split copy, the Q8_0 file alone, a truncated GGUF,
a README alone), judged on the budget on which the Q4_1 file fits at 4,096 tokens and the
Q8_0 file does not. The browser test drives the model tab in Chromium: a query, the rows best
first, "fits only", a row's card with its verdicts, and a pull of the real file.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from scheda.formulas import hardware
from scheda.search import rows
from scheda.server.app import create_app
from scheda.server.main import build_pool
from scheda.stores.arena import ArenaStore
from scheda.stores.evals import EvalStore
from scheda.stores.sessions import SessionStore
from tests import test_search
from tests.conftest import GGUF_REPO, SPLIT_REPO
from tests.hub import Hub
from tests.serving import free_port, http_request, wait_for
from tests.test_search import BROKEN, BUDGET_GB, EMPTY, Q4, Q8, Q8_ONLY
from tests.test_studio import CHROMIUM_ARGS, TIMEOUT_MS, Studio, _playwright, _save_screenshot

KEY = "sk-hub-search"
SEARCH = f"/api/hub/search?q=SmolLM2&memory={BUDGET_GB}"
LEAVING = "leave-test"  # the repositories of the test whose client leaves mid-search
QUIET_S = 1.5  # no request to the Hub for this long: the server has stopped reading

# The Hub with the search's repositories (tests/test_search.py), a fixture shared by name.
search_hub = test_search.search_hub


@dataclass
class Served:
    url: str
    port: int

    def get(self, path: str, key: str | None = KEY) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return http_request(self.port, "GET", path, None, headers, timeout=120)

    def ok(self, path: str) -> Any:
        status, answer = self.get(path)
        assert status == 200, (path, status, answer)
        return answer

    def error(self, path: str, status: int) -> dict[str, Any]:
        got, answer = self.get(path)
        assert got == status, (path, got, answer)
        error: dict[str, Any] = answer["error"]
        return error


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The app over the embedded model on loopback, in this process: it reads the Hub the
    test's `online_hub` points huggingface_hub at."""
    folder = tmp_path_factory.mktemp("hub-search")
    with pytest.MonkeyPatch.context() as env:
        # The figures read the data folder's stores (eval runs, comparisons): this one's.
        env.setenv("SCHEDA_DATA_DIR", str(folder))
        yield from _serving(folder)


def _serving(folder: Path) -> Iterator[Served]:
    pool = build_pool(["default"])
    stores = (
        SessionStore(folder / "sessions.sqlite3"),
        EvalStore(folder / "evals.sqlite3"),
        ArenaStore(folder / "arena.sqlite3"),
    )
    app = create_app(pool, stores[0], api_key=KEY, evals=stores[1], arena=stores[2])
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", http="h11")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started, within=60), "the app did not start"
    try:
        yield Served(f"http://127.0.0.1:{port}", port)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        pool.close()
        for store in stores:
            store.close()


def _without_origin(data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "origin"} for row in data]


# -- the route ----------------------------------------------------------------------------------


@pytest.mark.hub
def test_the_route_answers_the_rows_of_scheda_search_json(search_hub: Hub, served: Served) -> None:
    answer = served.ok(SEARCH)
    assert [r["repo"] for r in answer["rows"][:3]] == [GGUF_REPO, SPLIT_REPO, Q8_ONLY]
    assert {r["repo"] for r in answer["rows"][3:]} == {BROKEN, EMPTY}
    assert {r["origin"] for r in answer["rows"]} == {"hub"}  # read now, and kept
    # What the command's steps give (read from the cache the route filled), field for field.
    direct = rows.search("SmolLM2", hardware.custom(BUDGET_GB)).to_dict()
    assert _without_origin(answer["rows"]) == _without_origin(direct["rows"])
    assert {k: v for k, v in answer.items() if k != "rows"} == {
        k: v for k, v in direct.items() if k != "rows"
    }
    first = answer["rows"][0]
    assert first["fits"] and first["file"] == Q4 and first["memory"] <= answer["target"]["usable"]
    assert answer["target"] == {
        "device": "custom",
        "name": f"{BUDGET_GB:g} GB of memory",
        "memory": int(BUDGET_GB * 2**30),
        "usable": int(BUDGET_GB * 2**30),
    }
    fitting = served.ok(SEARCH + "&fits=true&sort=likes&context=4096")
    assert [r["repo"] for r in fitting["rows"]] == [GGUF_REPO, SPLIT_REPO]
    assert fitting["left_out"] == 3 and fitting["context"] == 4096 and fitting["sort"] == "likes"
    assert {r["origin"] for r in fitting["rows"]} == {"cache"}
    # The target: this host unless a GPU or a budget is named; a GPU name means its smallest.
    assert served.ok("/api/hub/search?q=MiniLM")["target"]["device"] == "host"
    a100 = served.ok("/api/hub/search?q=SmolLM2&limit=2&gpu=a100")
    assert a100["target"]["device"] == "a100-40" and len(a100["rows"]) == 2


def test_bad_searches_are_one_line(served: Served) -> None:
    """Refused before the Hub is asked: these need no Hub."""
    assert served.get("/api/hub/search?q=x", key=None)[0] == 401  # behind the key
    both = served.error("/api/hub/search?q=x&gpu=t4&memory=8", 400)
    assert both["message"] == "give gpu or memory, not both" and both["param"] == "memory"
    gpu = served.error("/api/hub/search?q=x&gpu=nonesuch", 400)
    assert gpu["message"].startswith("unknown GPU 'nonesuch': known are") and gpu["param"] == "gpu"
    for query, param in (
        ("sort=stars", "sort"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("memory=0", "memory"),
        ("context=8", "context"),
        ("fits=perhaps", "fits"),
    ):
        error = served.error(f"/api/hub/search?q=x&{query}", 400)
        assert error["param"] == param and "\n" not in error["message"], (query, error)


@pytest.mark.hub
def test_a_hub_that_fails_is_a_502_in_one_line(online_hub: Hub, served: Served) -> None:
    from huggingface_hub import constants

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "ENDPOINT", online_hub.storage)  # answers 404 to everything
        error = served.error("/api/hub/search?q=x", 502)
    assert error["message"] == (
        f"{online_hub.storage} has no model search (/api/models answered 404): "
        "is HF_ENDPOINT a Hub?"
    )


def _listed(hub: Hub) -> set[str]:
    """The repositories of the leaving test whose listing the Hub was asked for."""
    prefix = f"/api/models/{LEAVING}/"
    return {"/".join(r[1].split("/")[3:5]) for r in hub.requests(prefix)}


def _quiet(hub: Hub) -> None:
    """Wait until the Hub has had no request in flight, and none new, for `QUIET_S`."""
    seen, since = -1, time.monotonic()
    deadline = since + 60
    while time.monotonic() < deadline:
        count = len(hub.requests())
        if count != seen or hub.in_flight:
            seen, since = count, time.monotonic()
        elif time.monotonic() - since >= QUIET_S:
            return
        time.sleep(0.05)
    pytest.fail("the Hub was still being read a minute later")


@pytest.mark.hub
def test_a_client_that_leaves_stops_the_search(
    search_hub: Hub, served: Served, smollm_path: Path
) -> None:
    """Every request answered after 0.25 s: reading 24 repositories takes three batches of
    eight, about a second each. The client hangs up during the first; the server finishes
    that batch (kept in the cache) and reads no more. Asked again, it reads only the rest."""
    names = [f"{LEAVING}/Model-{i:02d}-GGUF" for i in range(24)]
    for name in names:
        search_hub.add(name, {Q4: smollm_path})
    try:
        _leave_then_ask_again(search_hub, served, names)
    finally:
        for name in names:
            search_hub.repos.pop(name, None)


def _leave_then_ask_again(hub: Hub, served: Served, names: list[str]) -> None:
    hub.delay_s = 0.25
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    query = urllib.parse.urlencode({"q": f"{LEAVING}/Model", "limit": len(names)})
    headers = {"Authorization": f"Bearer {KEY}"}
    connection.request("GET", f"/api/hub/search?{query}", headers=headers)
    assert wait_for(lambda: len(_listed(hub)) > 0, within=30), "no repository was read"
    connection.close()  # the client leaves mid-search
    _quiet(hub)
    read_before = _listed(hub)
    assert 0 < len(read_before) <= rows.WORKERS, read_before  # the batch in flight, no more
    hub.delay_s = 0.0
    hub.log.clear()
    answer = served.ok(f"/api/hub/search?{query}")
    assert sorted(r["repo"] for r in answer["rows"]) == names
    assert _listed(hub) == set(names) - read_before  # what the first one read was kept
    assert {r["repo"] for r in answer["rows"] if r["origin"] == "cache"} == read_before


@pytest.mark.hub
def test_the_card_and_the_pull_judge_a_budget_too(online_hub: Hub, served: Served) -> None:
    """A search row's card is judged on the search's target: here a budget in GB."""
    card = served.ok(f"/api/hub/card?repo={GGUF_REPO}&file={Q4}&memory={BUDGET_GB}")
    assert [d["key"] for d in card["devices"]] == ["host", "custom"]
    fits = {f["file"]: f["fits"]["custom"] for f in card["files"]}
    assert fits == {Q4: True, Q8: False}
    status, refused = http_request(
        served.port,
        "POST",
        "/api/hub/pull",
        json.dumps({"repo": GGUF_REPO, "file": Q8, "memory": BUDGET_GB}).encode(),
        {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert status == 409 and "0.23 GB of memory" in refused["error"]["message"], refused


# -- the model tab ------------------------------------------------------------------------------


@pytest.fixture
def studio(served: Served) -> Iterator[Studio]:
    sync_playwright = _playwright()
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = chromium.new_context(viewport={"width": 1400, "height": 1200})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        yield Studio(page, served.url, [], errors)
        context.close()
        chromium.close()
    assert not errors, f"the page threw: {errors}"


@pytest.mark.browser
@pytest.mark.hub
def test_the_model_tab_searches_opens_a_row_and_pulls_it(
    search_hub: Hub, studio: Studio, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = studio.page
    page.goto(f"{studio.url}/#model")
    page.fill("#api-key", KEY)
    page.click("#api-key-save")
    studio.ready()
    page.fill("#hub-query", "SmolLM2")
    page.select_option("#hub-target", "memory")
    page.fill("#hub-memory", str(BUDGET_GB))
    page.click("#hub-search")
    found = page.locator("#hub-search-rows tbody tr")
    expect(found).to_have_count(5)
    order = found.evaluate_all("rows => rows.map(r => r.dataset.repo)")
    assert order[:3] == [GGUF_REPO, SPLIT_REPO, Q8_ONLY] and set(order[3:]) == {BROKEN, EMPTY}
    first = page.locator(f"#hub-search-rows tr[data-repo='{GGUF_REPO}']")
    # The same words as the CLI's table.
    expect(first.locator(".hub-search-fit")).to_have_text(
        re.compile(r"^Q4_1 93.8 MiB, needs \S+ MiB$")
    )
    expect(first).to_contain_text("135M parameters · context 8,192 · apache-2.0")
    expect(first.locator(".hub-search-fit")).to_have_class("hub-search-fit fits")
    q8 = page.locator(f"#hub-search-rows tr[data-repo='{Q8_ONLY}'] .hub-search-fit")
    expect(q8).to_contain_text("no: the smallest, Q8_0 138.1 MiB, needs")
    broken = page.locator(f"#hub-search-rows tr[data-repo='{BROKEN}']")
    expect(broken).to_contain_text("cannot read:")
    assert broken.locator("[data-testid='hub-search-open']").is_disabled()
    expect(page.locator("#hub-search-note")).to_contain_text(
        "5 repositories on 0.23 GB of memory, context 4,096"
    )
    # The model-index's MMLU, declared, its source under the table.
    declared = first.locator("[data-testid='hub-figure'][data-kind='declared']")
    expect(declared).to_contain_text("MMLU")
    expect(declared).to_contain_text("30.1")
    expect(declared.locator(".hub-kind")).to_have_text("declared")
    source = declared.get_attribute("title") or ""
    assert source.startswith("declared: ") and "model-index" in source
    expect(page.locator("#hub-search-sources li").first).to_be_visible()
    sources = page.locator("#hub-search-sources li").all_inner_texts()
    assert source.removeprefix("declared: ") in sources
    # Every figure shows its kind, and its source by number under the table.
    for chip in page.locator("[data-testid='hub-figure']").all():
        kind = chip.get_attribute("data-kind")
        assert kind in ("published", "declared", "measured", "predicted")
        assert chip.locator(".hub-kind").inner_text() == kind
        number = int(chip.locator("sup").inner_text())
        assert chip.get_attribute("title") == f"{kind}: {sources[number - 1]}"

    page.locator("#hub").evaluate("hub => hub.scrollIntoView()")
    _save_screenshot(page, tmp_path, "studio-hub-search.png")

    page.check("#hub-fits")  # asks again: what does not fit is left out
    expect(found).to_have_count(2)
    assert found.evaluate_all("rows => rows.map(r => r.dataset.repo)") == [GGUF_REPO, SPLIT_REPO]
    expect(page.locator("#hub-search-note")).to_contain_text("3 that do not fit left out")

    # A row opens its card below: the file the search chose, each file judged on the budget.
    first.locator("[data-testid='hub-search-open']").click()
    files = page.locator("#hub-files tbody tr")
    expect(files).to_have_count(2)
    expect(page.locator("#hub-files thead")).to_contain_text("0.23 GB of memory")
    q4_row = page.locator(f"#hub-files tr[data-file='{Q4}']")
    expect(q4_row.locator(".hub-verdict").last).to_have_text("fits")
    expect(page.locator(f"#hub-files tr[data-file='{Q8}'] .hub-verdict").last).to_have_text(
        "too big"
    )
    expect(page.locator("#hub-repo")).to_have_value(GGUF_REPO)
    expect(page.locator("#hub-card")).to_contain_text("Q4_1")  # the header read: the row's file
    q4_row.locator("[data-testid='hub-pull']").click()
    expect(page.locator("#hub-progress")).to_have_attribute(
        "data-state", "done", timeout=TIMEOUT_MS
    )
    expect(page.locator("#hub-progress-text")).to_contain_text("downloaded and checked")
    reference = f"{GGUF_REPO}:Q4_1"
    expect(page.locator(f"#model-picker option[value='{reference}']")).to_have_count(1)
