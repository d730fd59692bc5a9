"""The studio's Arena tab end to end: a real server, two real models, a real browser.

The real app (`create_app` over a pool of real models and real stores, with an API key)
is served by uvicorn on loopback in this process. The two contenders are the embedded
model under two names (hard links of its GGUF, named so that no answer can contain the
name by chance), which is what a battle between a model and its own copy is. Chromium
drives the tab: a blind battle, watched for any sign of who answered until the vote;
both answers streaming at once; a side by side; a battle whose answer fails.

The screenshots of a revealed battle and of the leaderboard are the README's
(docs/images/); like every studio screenshot they are written to the artefacts folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from scheda.server.app import create_app
from scheda.server.main import build_pool
from scheda.stores.arena import ArenaStore
from scheda.stores.evals import EvalStore
from scheda.stores.sessions import SessionStore
from tests.serving import free_port, http_request, wait_for
from tests.test_studio import CHROMIUM, CHROMIUM_ARGS, ROOT, TIMEOUT_MS, Studio, _playwright

pytestmark = pytest.mark.browser

KEY = "sk-arena-studio"
KESTREL, PLOVER = "zqxkestrel", "zqxplover"  # names no answer of the model will say by chance
GONE = "zqxvanished"  # served, then its file deleted before it ever loads
SETTINGS = {"#arena-max-tokens": "24", "#arena-temperature": "0.8"}
# At temperature 0 the embedded model counts on past 60 tokens, and tells a story past 400:
# answers long enough that the two columns overlap in time, and that a stop comes first.
COUNTING = "Count from 1 to 40, separated by commas."
STORY = "Write a long story about a fox who learns to sail."
# Both columns answered: a few seconds on an idle machine, more on a worker sharing its cores.
ANSWERED_MS = 60_000


@dataclass
class Served:
    url: str
    port: int
    arena: ArenaStore
    models: dict[str, Path]  # id -> its file

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
        return http_request(self.port, method, path, data, headers, timeout=120)

    def get(self, path: str) -> Any:
        status, answer = self.request("GET", path)
        assert status == 200, (path, status, answer)
        return answer

    def post(self, path: str, body: Any) -> Any:
        status, answer = self.request("POST", path, body)
        assert status == 200, (path, status, answer)
        return answer

    def secrets(self, model: str) -> list[str]:
        """Every string that would tell which model answered: id, file name, path, SHA-256."""
        path = self.models[model]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return [model, path.name, str(path), digest, digest[:12]]


def _contenders(folder: Path, source: Path, *names: str) -> dict[str, Path]:
    """The embedded GGUF under other names: hard links where the file system allows."""
    models = {}
    for name in names:
        path = folder / f"{name}.gguf"
        try:
            os.link(source, path)
        except OSError:
            path.write_bytes(source.read_bytes())
        models[name] = path
    return models


@contextlib.contextmanager
def _serve(folder: Path, models: dict[str, Path]) -> Iterator[Served]:
    pool = build_pool([str(p) for p in models.values()], parallel=2)
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
        yield Served(f"http://127.0.0.1:{port}", port, stores[2], models)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        pool.close()
        for store in stores:
            store.close()


def _warm(served: Served) -> None:
    """Load each model once, so that no battle waits for a load (one token each)."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    for model in served.models:
        body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        status, answer = http_request(
            served.port, "POST", "/v1/chat/completions", json.dumps(body).encode(), headers, 120
        )
        assert status == 200, answer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, smollm_path: Path) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("arena-studio")
    with _serve(folder, _contenders(folder, smollm_path, KESTREL, PLOVER)) as running:
        _warm(running)
        yield running


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with _playwright()() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def studio(chromium: Any, served: Served) -> Iterator[Studio]:
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield Studio(page, served.url, [], errors)
    context.close()
    assert not errors, f"the page threw: {errors}"


def _open_arena(studio: Studio, hash: str = "#arena") -> None:
    """The studio on the arena, the key typed into the form it asks for (then kept)."""
    page = studio.page
    page.goto(f"{studio.url}/{hash}")
    page.fill("#api-key", KEY)
    page.click("#api-key-save")
    studio.ready()
    page.wait_for_selector("#tab-arena[aria-selected='true']")


def _settings(page: Any, prompt: str | None = None) -> None:
    if prompt is not None:
        page.fill("#arena-prompt", prompt)
    for field, value in SETTINGS.items():
        page.fill(field, value)


def _html(page: Any) -> str:
    return str(page.evaluate("document.documentElement.outerHTML"))


def _save(locator: Any, name: str) -> None:
    """A screenshot of one part of the page, into the artefacts folder (as the studio's others)."""
    folder = Path(os.environ.get("SCHEDA_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    locator.screenshot(path=str(folder / name))


@dataclass
class Seen:
    """A response the page received: what it could read of it."""

    url: str
    headers: str
    body: str


def _record(page: Any) -> tuple[list[Any], list[str]]:
    """Start keeping every response (read once the page is done with it) and request."""
    responses: list[Any] = []
    requests: list[str] = []
    page.on("response", lambda r: responses.append(r))
    page.on("request", lambda r: requests.append(f"{r.method} {r.url}"))
    return responses, requests


def _read(responses: list[Any]) -> list[Seen]:
    seen = []
    for response in responses:
        kind = response.headers.get("content-type", "")
        textual = any(t in kind for t in ("text", "json", "event-stream"))
        body = response.text() if textual else ""
        seen.append(Seen(response.url, json.dumps(response.headers), body))
    return seen


def test_a_blind_battle_names_no_model_until_the_vote(studio: Studio, served: Served) -> None:
    from playwright.sync_api import expect

    page = studio.page
    _open_arena(studio)
    expect(page.locator("#arena-board-empty")).to_be_visible()  # no votes yet
    # A prompt drawn from the set scheda ships, with its tag.
    shipped = served_prompts(served)
    page.click("#arena-draw")
    expect(page.locator("#arena-prompt")).not_to_have_value("")
    drawn = {"prompt": page.input_value("#arena-prompt"), "tag": page.input_value("#arena-tag")}
    assert drawn in shipped
    _settings(page)
    assert page.input_value("#arena-first") == page.input_value("#arena-second") == ""  # any two

    # What the page holds before the battle: the served models, listed in its pickers.
    secrets = [s for model in served.models for s in served.secrets(model)]
    before = _html(page)
    responses, requests = _record(page)
    page.click("#arena-fight")
    battle = page.locator("#arena-battle")
    expect(battle).to_have_attribute("data-state", "answered", timeout=ANSWERED_MS)
    expect(page.locator(".arena-vote-button").first).to_be_enabled()

    # Just before the vote: the page asked for the battle alone, and nothing it received
    # (headers, the stream, any body) or holds names a model where it held none before.
    battle_id = battle.get_attribute("data-battle-id")
    assert battle_id and page.evaluate("location.hash") == f"#arena={battle_id}"
    assert requests == [f"POST {served.url}/api/arena/battles"], requests
    seen = _read(responses)
    assert [s.url for s in seen] == [f"{served.url}/api/arena/battles"]
    assert '"side":"a"' in seen[0].body and '"side":"b"' in seen[0].body
    for secret in secrets:
        for response in seen:
            assert secret not in response.headers and secret not in response.body, secret
    html = _html(page)
    columns = battle.evaluate("node => node.outerHTML")
    for secret in secrets:
        assert secret not in columns, secret
        assert html.count(secret) == before.count(secret), secret
    for model in served.models:
        # The models the page listed before, and nothing more: the pickers' options.
        assert html.count(model) == before.count(model) > 0
    assert all(
        page.locator(f".arena-column[data-column='{c}'] .arena-answer").inner_text() for c in "ab"
    )

    # The vote reveals who answered, in each column's heading.
    page.click(".arena-vote-button[data-outcome='a']")
    expect(battle).to_have_attribute("data-state", "voted")
    stored = served.arena.get(battle_id)
    assert stored.vote == "a" and stored.prompt == drawn["prompt"] and stored.tag == drawn["tag"]
    assert stored.sampling["max_tokens"] == 24
    winner, loser = stored.a, stored.b
    _expect_revealed(page, winner.model, loser.model, served)
    # The leaderboard counts the vote: the winner's one win, the loser's one loss.
    _expect_standing(page, winner.model, "1 / 0 / 0")
    _expect_standing(page, loser.model, "0 / 0 / 1")
    expect(page.locator(f"#arena-history tr[data-battle-id='{battle_id}']")).to_contain_text(
        winner.model
    )
    _save(battle, "arena-battle.png")

    # A reload keeps the battle, revealed and voted, and the leaderboard.
    page.reload()
    studio.ready()
    expect(battle).to_have_attribute("data-state", "voted")
    _expect_revealed(page, winner.model, loser.model, served)
    expect(page.locator(".arena-vote-button[data-outcome='a']")).to_have_attribute(
        "aria-pressed", "true"
    )
    for button in page.locator(".arena-vote-button").all():
        expect(button).to_be_disabled()
    _expect_standing(page, winner.model, "1 / 0 / 0")
    assert page.locator("#arena-standings tbody tr").first.get_attribute("data-model") == (
        winner.model
    )
    expect(page.locator("#arena-chart svg circle")).to_have_count(2)
    expect(page.locator("#arena-matrix tbody td:not(:empty)")).to_have_count(2)

    # The export is every battle as JSONL, fetched with the key.
    with page.expect_download() as download:
        page.click("#arena-export")
    lines = Path(download.value.path()).read_text().splitlines()
    exported = [json.loads(line) for line in lines]
    assert [b["id"] for b in exported] == [battle_id]
    assert exported[0]["winner"] == winner.model

    # Four more votes (through the API), and Refresh: the table is the server's leaderboard.
    for favourite in (loser.model, None, winner.model, "bad"):
        _battle_voted(served, favourite)
    page.click("#arena-refresh")
    _expect_standing(page, winner.model, "2 / 2 / 1", games=5)  # T counts both bad too
    board = served.get("/api/arena/leaderboard")
    for rank, standing in enumerate(board["standings"], 1):
        cells = page.locator(f"#arena-standings tr[data-model='{standing['model']}'] td")
        assert cells.nth(0).inner_text() == str(rank)
        assert cells.nth(1).inner_text() == f"{standing['rating']:.0f}"
        assert cells.nth(2).inner_text() == f"{standing['lower']:.0f} – {standing['upper']:.0f}"
        assert cells.nth(5).inner_text() == str(standing["both_bad"]) == "1"
    _save(page.locator("#arena-board"), "arena-leaderboard.png")

    # Filtered by the drawn prompt's tag, the board counts that battle alone.
    page.select_option("#arena-board-tag", drawn["tag"])
    _expect_standing(page, winner.model, "1 / 0 / 0")
    _expect_standing(page, loser.model, "0 / 0 / 1")
    expect(page.locator("#arena-board-note")).to_contain_text(
        f"1 voted battle tagged {drawn['tag']}"
    )


def _battle_voted(served: Served, favourite: str | None) -> None:
    """A short battle between the two, through the API, voted for `favourite`: a model, a
    tie (None) or both bad ("bad")."""
    body = {"models": [KESTREL, PLOVER], "prompt": "Say hi.", "params": {"max_tokens": 4}}
    status, answer = served.request("POST", "/api/arena/battles", body)
    assert status == 200, answer
    first = json.loads(answer.split("\n", 1)[0].removeprefix("data: "))
    battle = served.arena.get(first["battle"]["id"])
    assert battle.state == "answered", battle.state
    outcome = "tie" if favourite is None else favourite
    if favourite in served.models:
        outcome = "a" if battle.a.model == favourite else "b"
    served.post(f"/api/arena/battles/{battle.id}/vote", {"outcome": outcome})


def served_prompts(served: Served) -> list[dict[str, str]]:
    headers = {"Authorization": f"Bearer {KEY}"}
    status, answer = http_request(served.port, "GET", "/api/arena/prompts", None, headers, 30)
    assert status == 200 and answer, answer
    return [{"prompt": p["prompt"], "tag": p.get("tag", "")} for p in answer]


def _expect_revealed(page: Any, a: str, b: str, served: Served) -> None:
    from playwright.sync_api import expect

    for column, model in (("a", a), ("b", b)):
        who = page.locator(f".arena-column[data-column='{column}'] .arena-column-who")
        expect(who.locator(".arena-model")).to_have_text(model)
        digest = served.secrets(model)[4]
        expect(who.locator(".arena-model-facts")).to_have_text(f"llama.cpp · sha256 {digest}")


def _expect_standing(page: Any, model: str, wtl: str, games: int = 1) -> None:
    from playwright.sync_api import expect

    row = page.locator(f"#arena-standings tr[data-model='{model}']")
    expect(row.locator(".arena-games")).to_have_text(str(games))
    expect(row.locator(".arena-wtl")).to_have_text(wtl)


def test_both_answers_stream_at_once_and_an_unvoted_battle_waits_for_its_vote(
    studio: Studio, served: Served
) -> None:
    from playwright.sync_api import expect

    page = studio.page
    _open_arena(studio)
    _settings(page, COUNTING)
    page.fill("#arena-max-tokens", "60")
    page.fill("#arena-temperature", "0")
    page.select_option("#arena-first", KESTREL)
    page.select_option("#arena-second", PLOVER)
    # When each column first shows text and when it ends, and whether its live figures showed
    # while it streamed, from inside the page: polling from here could miss them.
    page.evaluate(
        """() => {
          window.__times = {};
          window.__live = {};
          const columns = document.getElementById("arena-columns");
          new MutationObserver(() => {
            const now = performance.now();
            for (const column of columns.querySelectorAll(".arena-column")) {
              const key = column.dataset.column;
              const times = (window.__times[key] ??= {});
              const text = column.querySelector(".arena-answer").textContent;
              if (text && times.first == null) times.first = now;
              if (column.dataset.state === "done" && times.end == null) times.end = now;
              const stats = column.querySelector(".arena-stats").textContent;
              if (column.dataset.state === "streaming" && /tokens · [\\d.]+ tok\\/s/.test(stats))
                window.__live[key] = stats;
            }
          }).observe(columns, {subtree: true, childList: true, characterData: true,
                              attributes: true});
        }"""
    )
    page.click("#arena-fight")
    battle = page.locator("#arena-battle")
    expect(battle).to_have_attribute("data-state", "answered", timeout=ANSWERED_MS)
    times = page.evaluate("window.__times")
    assert times["a"]["first"] < times["b"]["end"], times
    assert times["b"]["first"] < times["a"]["end"], times
    live = page.evaluate("window.__live")
    assert set(live) == {"a", "b"}, live
    for column in "ab":
        stats = page.locator(f".arena-column[data-column='{column}'] .arena-stats").inner_text()
        assert re.search(r"\d+ tokens · [\d.]+ tok/s · first token [\d.]+ s", stats), stats

    # Reloaded before its vote, the battle shows its answers, unnamed, and waits for the vote.
    battle_id = battle.get_attribute("data-battle-id")
    answers = [
        page.locator(f".arena-column[data-column='{c}'] .arena-answer").text_content() for c in "ab"
    ]
    page.reload()
    studio.ready()
    expect(battle).to_have_attribute("data-battle-id", str(battle_id))
    expect(battle).to_have_attribute("data-state", "answered", timeout=ANSWERED_MS)
    for column, answer in zip("ab", answers, strict=True):
        shown = page.locator(f".arena-column[data-column='{column}']")
        expect(shown.locator(".arena-answer")).to_have_text(str(answer))
        expect(shown.locator(".arena-model")).to_have_count(0)
    for button in page.locator(".arena-vote-button").all():
        expect(button).to_be_enabled()
    row = page.locator(f"#arena-history tr[data-battle-id='{battle_id}']")
    expect(row).to_contain_text("hidden")
    for secret in served.secrets(KESTREL)[3:] + served.secrets(PLOVER)[3:]:
        assert secret not in _html(page)


def test_stop_keeps_what_was_said_and_the_battle_can_be_voted(
    studio: Studio, served: Served
) -> None:
    from playwright.sync_api import expect

    page = studio.page
    _open_arena(studio)
    _settings(page, STORY)
    page.fill("#arena-max-tokens", "400")
    page.fill("#arena-temperature", "0")
    page.click("#arena-fight")
    for column in "ab":
        expect(page.locator(f".arena-column[data-column='{column}']")).to_have_attribute(
            "data-state", "streaming"
        )
    page.click("#arena-stop")
    battle = page.locator("#arena-battle")
    expect(battle).to_have_attribute("data-state", "answered", timeout=ANSWERED_MS)
    stored = served.arena.get(str(battle.get_attribute("data-battle-id")))
    for side, column in ((stored.a, "a"), (stored.b, "b")):
        assert side.finish_reason == "cancelled" and side.answer, side
        assert (side.completion_tokens or 0) < 400
        shown = page.locator(f".arena-column[data-column='{column}']")
        expect(shown).to_have_attribute("data-state", "stopped")
        expect(shown.locator(".arena-model")).to_have_count(0)
    for button in page.locator(".arena-vote-button").all():
        expect(button).to_be_enabled()


def test_side_by_side_names_each_model_in_its_column(studio: Studio, served: Served) -> None:
    from playwright.sync_api import expect

    page = studio.page
    _open_arena(studio)
    page.click("#arena-mode-side")
    for model in served.models:
        page.check(f"#arena-several-models input[value='{model}']")
    _settings(page, "Name a colour.")
    stored = len(served.arena.battles())
    _, requests = _record(page)
    page.click("#arena-fight")
    for model in served.models:
        column = page.locator(f".arena-column[data-column='{model}']")
        expect(column).to_have_attribute("data-state", "done")
        expect(column.locator(".arena-column-title")).to_have_text(model)
        expect(column.locator(".arena-column-who")).to_have_text("llama.cpp")
        assert column.locator(".arena-answer").inner_text().strip()
        assert re.search(r"\d+ tokens · [\d.]+ tok/s", column.locator(".arena-stats").inner_text())
    assert sorted(requests) == [f"POST {served.url}/v1/chat/completions"] * 2
    # Side by side is not a battle: nothing is stored, and the URL names no item.
    assert len(served.arena.battles()) == stored
    assert page.evaluate("location.hash") == "#arena"


def test_a_failed_answer_says_why_and_offers_a_new_battle(
    chromium: Any, tmp_path: Path, smollm_path: Path
) -> None:
    from playwright.sync_api import expect

    models = _contenders(tmp_path, smollm_path, KESTREL, GONE)
    with _serve(tmp_path, models) as served:
        models[GONE].unlink()  # served, but its file is gone before it ever loads
        context = chromium.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        studio = Studio(page, served.url, [], [])
        page.on("pageerror", lambda error: studio.errors.append(str(error)))
        _open_arena(studio)
        _settings(page, "Say hello.")
        page.click("#arena-fight")
        battle = page.locator("#arena-battle")
        expect(battle).to_have_attribute("data-state", "failed")
        failed = page.locator(".arena-column[data-state='error']")
        expect(failed).to_have_count(1)
        message = failed.locator(".message-error").inner_text()
        assert message and GONE not in message and "\n" not in message
        for button in page.locator(".arena-vote-button").all():
            expect(button).to_be_disabled()
        expect(page.locator("#arena-status")).to_contain_text("cannot be voted")
        page.click("#arena-new")
        expect(battle).to_be_hidden()
        assert page.evaluate("location.hash") == "#arena"
        context.close()
        assert not studio.errors, studio.errors
