"""The web studio end to end: a real `scheda serve default` and a real browser.

Chromium runs headless through Playwright against the page the server ships
(`/`); the answers come from the embedded model, so streaming, the stop
button and the saved sessions are the real ones. Sessions made through
`SessionStore` on the server's own SQLite file stand for sessions begun in
the terminal with `scheda chat`, and evaluation runs written through
`EvalStore` on its evaluation file stand for runs of `scheda eval`. The sampling
controls are checked against the server's own declarations (`GET /api/sampling`),
and against a second engine with a tiny transformers model served beside the
embedded one.

Chromium is Debian's (/usr/bin/chromium). Without it these tests skip, or
fail where the CI variable is set, since CI must run them.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from scheda import sampling as options
from scheda.errors import SessionNotFoundError
from scheda.evaluation.base import ItemResult
from scheda.evaluation.multiple_choice import MMLU
from scheda.evaluation.runner import summarize
from scheda.server.app import STATIC
from scheda.stores.comparisons import ComparisonStore
from scheda.stores.evals import FILENAME as EVALS_FILENAME
from scheda.stores.evals import EvalStore
from scheda.stores.sessions import FILENAME, SessionStore
from tests.conftest import GGUF_REPO
from tests.hub import Hub
from tests.needs import unavailable

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60.0
TIMEOUT_MS = 60_000  # any one wait in the page: an answer takes a second, more on a busy host
QUICK = {"temperature": "0", "max_tokens": "24", "seed": "7"}


def _playwright() -> Any:
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing: install Debian's chromium package")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is missing: pip install playwright")
    return sync_playwright


# -- the server --------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    sessions: Path  # the SQLite file the server and `scheda chat` share
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def evals(self) -> Path:
        """The SQLite file of the evaluation runs, beside the sessions (`scheda eval`'s)."""
        return self.sessions.parent / EVALS_FILENAME

    def api(self, method: str, path: str, body: Any = None, key: str | None = None) -> Any:
        """A JSON request to the running server."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


@contextlib.contextmanager
def _serve(data: Path, *extra: str, hub: str | None = None) -> Iterator[Server]:
    """`scheda serve default` on a free loopback port, until /v1/models answers; stopped after.
    Offline, unless `hub` is the URL of a Hub to reach (tests/hub.py), with a cache of its own."""
    port = _free_port()
    env = {**os.environ, "SCHEDA_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1"}
    env.pop("SCHEDA_API_KEY", None)
    if hub is not None:
        env.pop("HF_HUB_OFFLINE")
        env.update(HF_ENDPOINT=hub, HF_HOME=str(data / "hf-home"))
    log = data / "server.log"
    command = [sys.executable, "-m", "scheda", "serve", "default", "--port", str(port), *extra]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", data / FILENAME, process, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"scheda serve exited with {process.returncode}:\n{_log_tail(log)}")
            try:
                with urllib.request.urlopen(server.url + "/v1/models", timeout=2):
                    break
            except urllib.error.HTTPError as answer:
                answer.close()
                break  # it answers (401 with a key): it is up
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"scheda serve did not answer in {START_TIMEOUT_S:g} s")
                time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with _serve(tmp_path_factory.mktemp("studio-data")) as running:
        yield running


# -- the browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_playwright = _playwright()
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Studio:
    """A browser page on the studio, with what the page did that a test must not see."""

    page: Any
    url: str
    dialogs: list[str]
    errors: list[str]

    def open(self, path: str = "/") -> None:
        self.page.goto(self.url + path)
        self.ready()

    def ready(self) -> None:
        self.page.wait_for_selector("body[data-ready='true']", state="attached")

    def sampling(self, **fields: str) -> None:
        for name, value in fields.items():
            self.page.fill(f"#{name.replace('_', '-')}", value)

    def send(self, text: str) -> Any:
        """Send a message; returns the locator of the answer it starts."""
        before = self.page.locator(".message.assistant").count()
        self.page.fill("#message-input", text)
        self.page.click("#send")
        answer = self.page.locator(".message.assistant").nth(before)
        answer.wait_for(state="attached")
        return answer

    def wait_state(self, answer: Any, state: str = "done") -> None:
        """Wait until an answer is done, stopped or failed (its data-state)."""
        from playwright.sync_api import expect

        expect(answer).to_have_attribute("data-state", state, timeout=TIMEOUT_MS)

    def session_item(self, session_id: str) -> Any:
        return self.page.locator(f"#session-list [data-session-id='{session_id}']")

    def controls(self) -> list[dict[str, Any]]:
        """The sampling controls shown, in order, as the page has them."""
        inputs = self.page.locator("#sampling-fields [data-param]")
        return cast(
            list[dict[str, Any]],
            inputs.evaluate_all(
                """inputs => inputs.map(i => ({
              name: i.dataset.param, id: i.id, type: i.type, value: i.value,
              placeholder: i.placeholder, min: i.min, max: i.max, step: i.step,
              title: i.title, disabled: i.disabled, label: i.labels[0]?.textContent ?? "",
            }))"""
            ),
        )

    def turn_params(self, text: str) -> tuple[dict[str, Any], Any]:
        """Send a message; the sampling options its request carried, and the answer."""
        with self.page.expect_request(
            lambda r: r.method == "POST" and r.url.endswith("/chat")
        ) as request:
            answer = self.send(text)
        return request.value.post_data_json["params"], answer


@contextlib.contextmanager
def _studio_on(browser: Any, url: str) -> Iterator[Studio]:
    """A fresh browser context (no saved key or options) on the studio at `url`."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    dialogs: list[str] = []
    errors: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield Studio(page, url, dialogs, errors)
    context.close()
    assert not errors, f"the page threw: {errors}"


@pytest.fixture
def studio(browser: Any, server: Server) -> Iterator[Studio]:
    with _studio_on(browser, server.url) as studio:
        yield studio


def _save_screenshot(page: Any, tmp_path: Path, name: str) -> None:
    """Into the test's tmp folder and the artefacts folder.

    The folder is $SCHEDA_TEST_ARTIFACTS, else test-artifacts/ at the repository root.
    """
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    folder = Path(os.environ.get("SCHEDA_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, folder / name)


def _session_titled(server: Server, title: str) -> str:
    """The id of the saved session that a first message of `title` named."""
    ids: list[str] = [s["id"] for s in server.api("GET", "/api/sessions") if s["title"] == title]
    assert len(ids) == 1, f"expected one session titled {title!r}, found {len(ids)}"
    return ids[0]


def _mmlu_run(
    server: Server,
    folder: Path,
    scores: dict[str, list[float]],
    scored: int | None = None,
) -> str:
    """An MMLU run in the server's evaluation store, as `scheda eval` leaves one.

    A real `MMLU` task over a tiny data folder (one question per score, per
    subject) gives the items; `scores` are their accuracies. With `scored`, only
    that many items are stored and the run stays unfinished, as an interrupted one.
    """
    for split, count in (("test", None), ("dev", 5)):
        (folder / split).mkdir(parents=True)
        for subject, accs in scores.items():
            rows = [[f"{subject} question {i}?", "w", "x", "y", "z", "A"] for i in range(len(accs))]
            with (folder / split / f"{subject}_{split}.csv").open("w", newline="") as f:
                csv.writer(f).writerows(rows[:count])
    task = MMLU(5, None, folder)
    items = task.items()
    acc_of = {item.key: acc for item, acc in zip(items, _by_subject(task, scores), strict=True)}
    with contextlib.closing(EvalStore(server.evals)) as store:
        run = store.start("default", folder / "model.gguf", task.name, task.config(), len(items))
        for item in items[:scored]:
            pred = 0 if acc_of[item.key] else 1
            detail = {"gold": 0, "pred": pred, "logliks": [-1.0, -2.0, -3.0, -4.0]}
            store.add(run.id, ItemResult(item.key, {"acc": acc_of[item.key]}, detail, item.group))
        if scored is None:
            store.finish(run.id, summarize(task, store.results(run.id)))
    return run.id


def _by_subject(task: MMLU, scores: dict[str, list[float]]) -> list[float]:
    """The scores in the task's item order (subjects sorted, questions in file order)."""
    return [acc for subject in task.subjects for acc in scores[subject]]


# Physics 2 of 3 right, algebra 1 of 5: 3 of 8 in all (37.5 ± 18.3), macro 43.3 ± 19.4.
EVAL_SCORES = {
    "high_school_physics": [1.0, 1.0, 0.0],
    "abstract_algebra": [1.0, 0.0, 0.0, 0.0, 0.0],
}


# -- the tests ---------------------------------------------------------------------------


def test_chat_streams_counts_and_keeps_the_session(
    studio: Studio, server: Server, tmp_path: Path
) -> None:
    page = studio.page
    studio.open()
    page.select_option("#model-picker", "default")
    studio.sampling(**QUICK)
    # Record the answer's length at every change, with its state, from inside the page:
    # polling from here could miss a stream this short.
    page.evaluate(
        """() => {
          window.__samples = [];
          const list = document.getElementById("messages");
          new MutationObserver(() => {
            const answers = list.querySelectorAll(".message.assistant");
            const last = answers[answers.length - 1];
            if (last) window.__samples.push(
              [last.dataset.state, last.querySelector(".message-body").textContent.length]);
          }).observe(list, {subtree: true, childList: true, characterData: true, attributes: true});
        }"""
    )
    question = "Write three sentences about the sea."
    answer = studio.send(question)
    studio.wait_state(answer)

    samples = page.evaluate("window.__samples")
    streaming = [n for state, n in samples if state == "streaming" and n > 0]
    final = len(answer.locator(".message-body").text_content() or "")
    assert streaming, f"no text was seen before the answer ended: {samples}"
    assert final > streaming[0], "the answer did not grow after its first piece"

    counters = page.locator("#counters").inner_text()
    tokens = re.search(r"(\d+) tokens", counters)
    assert tokens and 0 < int(tokens.group(1)) <= 24, counters
    assert re.search(r"[\d.]+ tok/s", counters), counters
    assert re.search(r"first token [\d.]+ s", counters), counters
    _save_screenshot(page, tmp_path, "studio-chat.png")

    session_id = _session_titled(server, question)
    saved = server.api("GET", f"/api/sessions/{session_id}")["messages"]
    assert [m["role"] for m in saved] == ["user", "assistant"]
    assert saved[0]["content"] == question

    # A reload comes back to the open session (it is in the URL) ...
    page.reload()
    studio.ready()
    assert page.locator(".message").count() == 2
    # ... and from a new chat, the session is in the list and opens with both messages.
    page.click("#new-session")
    assert page.locator(".message").count() == 0
    item = studio.session_item(session_id)
    assert question in item.inner_text()
    item.locator(".session-open").click()
    page.locator(".message.assistant").wait_for()
    assert page.locator(".message.user .message-body").text_content() == question
    shown = page.locator(".message.assistant .message-body").text_content() or ""
    assert shown.strip() and shown.split()[0] in saved[1]["content"]
    assert page.get_attribute(f"#session-list [data-session-id='{session_id}']", "aria-current")
    assert not studio.dialogs


def test_stop_keeps_the_partial_answer(studio: Studio, server: Server) -> None:
    page = studio.page
    studio.open()
    studio.sampling(temperature="0", max_tokens="2000", seed="1")
    question = "Tell me a very long story about a lighthouse keeper."
    answer = studio.send(question)
    page.wait_for_function(
        "el => el.querySelector('.message-body').textContent.length > 20",
        arg=answer.element_handle(),
    )
    assert page.is_enabled("#stop")
    page.click("#stop")
    studio.wait_state(answer, "stopped")
    assert page.is_enabled("#send") and not page.is_enabled("#stop")

    session_id = _session_titled(server, question)
    deadline = time.monotonic() + 10
    while True:  # the server saves the partial answer when it sees the client gone
        saved = server.api("GET", f"/api/sessions/{session_id}")["messages"]
        if len(saved) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [m["role"] for m in saved] == ["user", "assistant"]
    assert 0 < len(saved[1]["content"]) < 4000


HOSTILE_USER = (
    "<img src=x onerror=alert(1)> <script>window.__pwned=1</script> [x](javascript:alert(1))"
)
HOSTILE_ANSWER = """Here is **bold** and a [safe link](https://example.com/docs).

<img src=x onerror="alert('img')">
<script>window.__pwned = 1</script>
<iframe src="javascript:alert('iframe')"></iframe>
<a href="javascript:alert('a')">raw anchor</a> and [bad](javascript:alert('md'))
and [data](data:text/html,<script>alert(1)</script>)

```html
<b onmouseover="alert('code')">not bold</b>
```
"""


def test_model_and_user_text_never_runs_as_html(studio: Studio, server: Server) -> None:
    page = studio.page
    studio.open()
    studio.sampling(temperature="0", max_tokens="8", seed="1")
    answer = studio.send(HOSTILE_USER)
    studio.wait_state(answer)

    assert page.locator(".message.user .message-body").text_content() == HOSTILE_USER
    assert page.locator("#messages img, #messages script, #messages iframe").count() == 0
    assert page.locator("#messages a[href^='javascript']").count() == 0

    # An answer stored with raw HTML in it, as a model might write one.
    session = server.api("POST", "/api/sessions", {"model": "default"})
    with SessionStore(server.sessions) as store:
        store.add_message(session["id"], "user", "Show me some HTML.")
        store.add_message(session["id"], "assistant", HOSTILE_ANSWER)
    studio.open()
    studio.session_item(session["id"]).locator(".session-open").click()
    body = page.locator(".message.assistant .message-body")
    body.wait_for()
    page.wait_for_timeout(300)  # time for an onerror handler to fire, were there one

    assert page.locator("#messages img, #messages script, #messages iframe").count() == 0
    text = body.text_content() or ""
    assert "<img src=x onerror=\"alert('img')\">" in text
    assert "<script>window.__pwned = 1</script>" in text
    assert "[bad](javascript:alert('md'))" in text
    assert body.locator("strong").text_content() == "bold"
    assert body.locator("pre code").text_content() == (
        "<b onmouseover=\"alert('code')\">not bold</b>"
    )
    links = body.locator("a")
    assert links.count() == 1
    assert links.get_attribute("href") == "https://example.com/docs"
    assert links.get_attribute("target") == "_blank"
    assert "noopener" in (links.get_attribute("rel") or "")

    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert not studio.dialogs, studio.dialogs


def test_terminal_session_continues_renames_and_deletes(studio: Studio, server: Server) -> None:
    page = studio.page
    with SessionStore(server.sessions) as store:
        made = store.create("default", "You answer in one short sentence.", {"max_tokens": 6})
        store.add_turn(made.id, "What is the capital of France?", "It is **Paris**.")
    studio.open()
    item = studio.session_item(made.id)
    assert "What is the capital of France?" in item.inner_text()
    item.locator(".session-open").click()
    page.locator(".message.assistant").wait_for()
    assert page.locator(".message.user .message-body").text_content() == (
        "What is the capital of France?"
    )
    assert page.locator(".message.assistant strong").text_content() == "Paris"
    assert page.input_value("#system-prompt") == "You answer in one short sentence."
    assert page.input_value("#max-tokens") == "6"

    # It goes on in the browser, into the same stored session.
    page.fill("#temperature", "0")
    studio.wait_state(studio.send("And of Italy?"))
    with SessionStore(server.sessions) as store:
        roles = [m.role for m in store.messages(made.id)]
    assert roles == ["user", "assistant", "user", "assistant"]

    # Rename through the list.
    item.locator(".session-rename").click()
    page.fill(".session-title-input", "Capitals")
    page.press(".session-title-input", "Enter")
    page.wait_for_function(
        "id => document.querySelector(`[data-session-id='${id}'] .session-title`)"
        "?.textContent === 'Capitals'",
        arg=made.id,
    )
    assert server.api("GET", f"/api/sessions/{made.id}")["title"] == "Capitals"
    assert page.locator("#chat-title").text_content() == "Capitals"

    # Delete: the first click asks, the second deletes.
    item.locator(".session-delete").click()
    assert item.locator(".session-delete").text_content() == "Delete?"
    item.locator(".session-delete").click()
    item.wait_for(state="detached")
    with SessionStore(server.sessions) as store, pytest.raises(SessionNotFoundError):
        store.get(made.id)
    assert page.locator("#chat-title").text_content() == "New chat"
    assert page.locator(".message").count() == 0


def test_every_module_is_served_as_javascript(server: Server) -> None:
    """The page is ES modules: each is served with a JavaScript type, from static/ itself.

    A browser refuses a module of any other type, and the package data takes the
    files of static/ (`server/static/*`), not its subfolders.
    """
    page = (STATIC / "index.html").read_text()
    modules = {STATIC / "studio.js"}
    for module in sorted(STATIC.glob("*.js")):
        for name in re.findall(r'from "\./([^"]+)"', module.read_text()):
            modules.add(STATIC / name)
    assert '<script type="module" src="/static/studio.js">' in page
    assert modules == set(STATIC.glob("*.js")), "a module is missing, or imported by none"
    for module in sorted(modules):
        with urllib.request.urlopen(f"{server.url}/static/{module.name}", timeout=30) as response:
            kind = response.headers.get_content_type()
            assert kind == "text/javascript", (module.name, kind)
            assert response.read() == module.read_bytes()


def _number_or_empty(text: str) -> float | None:
    return None if text in ("", "any") else float(text)


def test_sampling_controls_are_the_servers_declarations(
    studio: Studio, server: Server, tmp_path: Path
) -> None:
    """One control per option the server declares for the studio, with its bounds and default.

    Nothing of the options is written in the studio's files: an option added to
    `scheda.sampling.Sampling` with studio=True shows here as this test reads it.
    """
    page = studio.page
    declared = [o for o in server.api("GET", "/api/sampling") if o["studio"]]
    engine = {m["id"]: m["engine"] for m in server.api("GET", "/api/models")}["default"]
    studio.open()
    shown = studio.controls()
    assert [c["name"] for c in shown] == [o["name"] for o in declared]
    for control, option in zip(shown, declared, strict=True):
        name = option["name"]
        assert control["label"].strip(), name
        assert control["title"] == option["help"], name
        assert control["disabled"] is (engine not in option["engines"]), name
        if option["type"] not in ("integer", "number"):
            continue
        assert control["type"] == "number", name
        assert _number_or_empty(control["value"]) == option["default"], name
        assert _number_or_empty(control["min"]) == option["minimum"], name
        assert _number_or_empty(control["max"]) == option["maximum"], name
        assert _number_or_empty(control["step"]) == option["step"], name
        if option["nullable"]:
            assert control["placeholder"] == "none", name
    _save_screenshot(page, tmp_path, "studio-sampling.png")

    # A turn sends every control's value (an empty nullable one is left out: none).
    studio.sampling(**QUICK)
    params, answer = studio.turn_params("Say hello.")
    expected = {o["name"]: o["default"] for o in declared if o["default"] is not None}
    expected.update({k: float(v) for k, v in QUICK.items()})
    assert params == expected
    studio.wait_state(answer)

    # Reset puts the declared defaults back; the options last used are kept in this browser.
    page.click("#new-session")
    page.click("#reset-params")
    assert [_number_or_empty(c["value"]) for c in studio.controls()] == [
        o["default"] for o in declared
    ]
    page.fill("#top-k", "12")
    page.dispatch_event("#top-k", "change")
    page.reload()
    studio.ready()
    assert page.input_value("#top-k") == "12"
    assert page.input_value("#temperature") == str(
        next(o["default"] for o in declared if o["name"] == "temperature")
    )


TINY_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def test_a_control_the_engine_lacks_is_marked_and_left_at_its_default(
    browser: Any, tiny_llama: Path, tmp_path: Path
) -> None:
    """Two models, two engines: transformers has no OpenAI penalties, llama.cpp has them."""
    tiny = tmp_path / "tiny-chat"
    shutil.copytree(tiny_llama, tiny)
    config = json.loads((tiny / "tokenizer_config.json").read_text())
    (tiny / "tokenizer_config.json").write_text(
        json.dumps({**config, "chat_template": TINY_TEMPLATE})
    )
    data = tmp_path / "data"
    data.mkdir()
    with _serve(data, str(tiny)) as two, _studio_on(browser, two.url) as studio:
        engines = {m["id"]: m["engine"] for m in two.api("GET", "/api/models")}
        assert engines == {"default": "llama.cpp", "tiny-chat": "transformers"}
        declared = [o for o in two.api("GET", "/api/sampling") if o["studio"]]
        lacking = {o["name"] for o in declared if "transformers" not in o["engines"]}
        assert lacking, "every studio option is honoured by transformers: nothing to mark"
        name = sorted(lacking)[0]
        field = f"#{name.replace('_', '-')}"
        page = studio.page
        studio.open()
        page.select_option("#model-picker", "default")
        assert not any(c["disabled"] for c in studio.controls())
        page.fill(field, "0.5")  # a value llama.cpp honours ...

        page.select_option("#model-picker", "tiny-chat")  # ... and transformers would refuse
        for control in studio.controls():
            off = control["name"] in lacking
            assert control["disabled"] is off, control
            if off:
                assert "transformers" in control["title"] and control["name"] in control["title"]
                assert "not in transformers" in control["label"]
        _save_screenshot(page, tmp_path, "studio-sampling-transformers.png")

        # The turn sends the option at its default, which the engine does anyway; it answers.
        studio.sampling(temperature="0", max_tokens="4", seed="1")
        params, answer = studio.turn_params("Hello?")
        for option in declared:
            if option["name"] in lacking:
                assert params[option["name"]] == option["default"], params
        studio.wait_state(answer)

        # Back on llama.cpp the control is live again, with the value it had.
        page.select_option("#model-picker", "default")
        assert page.is_enabled(field)
        assert page.input_value(field) == "0.5"


def test_spec_sheet_and_fit_calculator(studio: Studio, tmp_path: Path) -> None:
    page = studio.page
    studio.open()
    page.click("#tab-model")
    layers = page.locator("#card tr", has_text="Layers")
    layers.wait_for()
    assert layers.locator("td").text_content() == "30"
    assert "Attention" in (page.locator("#card").text_content() or "")

    assert page.locator("#fit-gpu option").count() >= 2
    page.select_option("#fit-gpu", "t4")
    page.wait_for_function(
        "() => /NVIDIA T4/.test(document.getElementById('fit-note').textContent)"
    )
    rows = page.locator("#fit-bars .fit-row[data-precision]")
    assert rows.count() >= 5
    fp16 = page.locator("#fit-bars .fit-row[data-precision='FP16/BF16']")
    for part in ("weights", "kv", "engine"):
        assert fp16.locator(f"[data-testid='{part}']").count() == 1
    assert fp16.locator(".fit-limit").count() == 1
    assert fp16.locator(".fit-verdict").text_content() == "fits"

    kv = fp16.locator("[data-testid='kv']")

    def slide(to: str) -> tuple[int, float]:
        """Move the context slider to its min or max; the KV cache's bytes and drawn width."""
        before = kv.get_attribute("data-bytes")
        page.locator("#fit-context").evaluate(
            "(el, to) => { el.value = el[to]; el.dispatchEvent(new Event('input')) }", to
        )
        page.wait_for_function(
            "([before]) => document.querySelector(\"#fit-bars .fit-row[data-precision='FP16/BF16']"
            " [data-testid='kv']\").dataset.bytes !== before",
            arg=[before],
        )
        page.wait_for_timeout(250)  # the bars' width transition
        box = kv.bounding_box()
        return int(kv.get_attribute("data-bytes") or 0), box["width"] if box else 0.0

    small_bytes, small_width = slide("min")
    assert page.locator("#fit-context-value").text_content() == "256 tokens"
    big_bytes, big_width = slide("max")
    assert page.locator("#fit-context-value").text_content() == "8,192 tokens"
    assert big_bytes == small_bytes * 32
    assert big_width > small_width * 4
    _save_screenshot(page, tmp_path, "studio-fit.png")


ITALIAN = "ChatGPT è incredibile!"
PIECES_SHOWN = """panels => panels.map(panel => ({
  id: panel.dataset.model,
  ids: panel.querySelector(".tokens-ids").textContent,
  pieces: [...panel.querySelectorAll(".piece")].map(span => ({
    text: span.dataset.text, ids: span.dataset.ids, shown: span.textContent, hover: span.title,
  })),
}))"""


def test_tokens_side_by_side_are_the_command_s(
    browser: Any, minilm_path: Path, tmp_path: Path
) -> None:
    """Two models, typed text: the pieces and ids shown are `scheda tokens --json`'s."""
    command = [sys.executable, "-m", "scheda", "tokens", "default", str(minilm_path), ITALIAN]
    done = subprocess.run([*command, "--json"], capture_output=True, check=True, timeout=120)
    expected = json.loads(done.stdout)["models"]
    data = tmp_path / "data"
    data.mkdir()
    with _serve(data, str(minilm_path)) as two, _studio_on(browser, two.url) as studio:
        served = [m["id"] for m in two.api("GET", "/api/models")]
        page = studio.page
        studio.open()
        page.click("#tab-tokens")
        page.locator("#tokens-input").fill("")
        page.locator("#tokens-input").press_sequentially(ITALIAN)
        # Answers come as the text is typed; the last one splits the whole sentence.
        page.wait_for_function(
            """([text, count]) => {
              const panels = document.querySelectorAll("#tokens-results [data-model]");
              const pieces = document.querySelectorAll("[data-model='default'] .piece");
              return panels.length === count
                && [...pieces].map(span => span.dataset.text).join("") === text;
            }""",
            arg=[ITALIAN, 2],
        )
        shown = page.locator("#tokens-results [data-model]").evaluate_all(PIECES_SHOWN)
        _save_screenshot(page, tmp_path, "studio-tokens.png")

        assert [m["id"] for m in shown] == served
        for panel, want in zip(shown, expected, strict=True):
            assert panel["ids"] == "ids: " + " ".join(map(str, want["ids"]))
            assert [(p["text"], [int(i) for i in p["ids"].split()]) for p in panel["pieces"]] == [
                (p["text"], p["ids"]) for p in want["pieces"]
            ]
            for piece in panel["pieces"]:
                assert piece["shown"] == piece["text"].replace(" ", "␣")
                assert " + ".join(piece["ids"].split()) in piece["hover"]
        # "è" is two byte-level tokens in the GGUF, one piece with both ids.
        assert {"text": " è", "ids": "5549 118", "shown": "␣è"}.items() <= next(
            p for p in shown[0]["pieces"] if p["text"] == " è"
        ).items()
        # Neither model was loaded to answer: the vocabularies did.
        assert not any(m["loaded"] for m in two.api("GET", "/api/models"))

        # The route itself: every served model when none is named; an unknown one is a 404.
        answer = two.api("POST", "/api/tokens", {"text": ITALIAN})
        assert [m["id"] for m in answer["models"]] == served
        assert [m["pieces"] for m in answer["models"]] == [m["pieces"] for m in expected]
        with pytest.raises(urllib.error.HTTPError) as missing:
            two.api("POST", "/api/tokens", {"text": "x", "models": ["nope"]})
        missing.value.close()  # its socket, or the collector warns in a later test
        assert missing.value.code == 404


def test_api_key_is_asked_for_and_kept(browser: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with _serve(data, "--api-key", "s3cret") as keyed:
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(keyed.url + "/")
        page.locator("#auth-form").wait_for()
        page.fill("#api-key", "wrong")
        page.click("#api-key-save")
        page.wait_for_function(
            "() => /refused/.test(document.getElementById('auth-error').textContent)"
        )
        page.fill("#api-key", "s3cret")
        page.click("#api-key-save")
        page.wait_for_selector("body[data-ready='true']", state="attached")
        assert page.locator("#auth").is_hidden()
        assert page.locator("#model-picker option[value='default']").count() == 1
        assert page.evaluate("localStorage.getItem('scheda.apiKey')") == "s3cret"
        # Kept: a new visit does not ask again.
        page.reload()
        page.wait_for_selector("body[data-ready='true']", state="attached")
        assert page.locator("#auth").is_hidden()
        context.close()


def test_evaluation_runs_and_their_figures(studio: Studio, server: Server, tmp_path: Path) -> None:
    page = studio.page
    studio.open()
    if not server.api("GET", "/api/evals"):  # this module's server starts with no runs
        page.click("#tab-evals")
        empty = page.locator("#eval-empty")
        empty.wait_for()
        assert "scheda eval MODEL --tasks mmlu" in (empty.text_content() or "")
        assert page.locator("#eval-list").is_hidden()

    finished = _mmlu_run(server, tmp_path / "finished", EVAL_SCORES)
    unfinished = _mmlu_run(server, tmp_path / "unfinished", EVAL_SCORES, scored=2)
    page.click("#tab-evals")
    page.click("#eval-refresh")
    row = page.locator(f"#eval-list tr[data-run-id='{finished}']")
    row.wait_for()
    cells = [c.strip() for c in row.locator("td").all_inner_texts()]
    assert cells[:4] == ["default", "mmlu", "5", "8"], cells
    assert cells[4].startswith("37.5 ± 18.3"), cells
    assert cells[6] == finished
    late = page.locator(f"#eval-list tr[data-run-id='{unfinished}']")
    assert "unfinished" in late.inner_text() and "2 / 8" in late.inner_text()
    # Newest first: the interrupted run was made last.
    ids = page.locator("#eval-list tbody tr").evaluate_all("rows => rows.map(r => r.dataset.runId)")
    assert ids.index(unfinished) < ids.index(finished)

    row.click()
    page.wait_for_selector(f"#eval-detail[data-run-id='{finished}']")
    assert row.get_attribute("aria-current") == "true"
    assert page.locator("#eval-note").is_hidden()
    figures = page.locator("#eval-figures")
    acc = [t.strip() for t in figures.locator("tr[data-metric='acc'] td").all_inner_texts()]
    assert acc == ["37.5", "18.3", "8"], acc
    macro = [t.strip() for t in figures.locator("tr[data-metric='macro'] td").all_inner_texts()]
    assert macro == ["43.3", "19.4", "8"], macro

    bars = page.locator("#eval-groups .eval-bar[data-group]")
    assert bars.count() == 2  # one per subject, best first
    order = bars.evaluate_all("rows => rows.map(r => r.dataset.group)")
    assert order == ["high_school_physics", "abstract_algebra"]
    physics, algebra = bars.nth(0), bars.nth(1)
    assert physics.locator(".eval-value").text_content() == "66.7 ± 33.3"
    assert algebra.locator(".eval-value").text_content() == "20.0 ± 20.0"
    for bar, share in ((physics, 2 / 3), (algebra, 1 / 5)):
        track = bar.locator(".eval-track").bounding_box()
        fill = bar.locator(".eval-fill").bounding_box()
        assert track and fill and abs(fill["width"] / track["width"] - share) < 0.01
        assert bar.locator(".eval-whisker").count() == 1
        assert bar.locator(".eval-macro").count() == 1
        assert bar.locator(".eval-chance").count() == 1  # MMLU: four choices, 25% by chance
    assert "below-chance" in (algebra.get_attribute("class") or "")
    _save_screenshot(page, tmp_path, "studio-evals.png")

    # The run is in the URL: a reload comes back to it.
    page.reload()
    studio.ready()
    page.wait_for_selector(f"#eval-detail[data-run-id='{finished}']")
    assert page.get_attribute("#tab-evals", "aria-selected") == "true"

    # The interrupted run says so, with its figures over the items scored so far.
    page.locator(f"#eval-list tr[data-run-id='{unfinished}']").click()
    page.wait_for_selector(f"#eval-detail[data-run-id='{unfinished}']")
    assert "2 of 8 items scored" in (page.locator("#eval-note").text_content() or "")
    partial = page.locator("#eval-figures tr[data-metric='acc'] td").first.text_content()
    assert partial == "50.0"  # the first two items, both algebra: 1 right, 1 wrong
    assert page.locator("#eval-groups .eval-bar[data-group]").count() == 1


# The tab table's ids and the word each tab's hash starts with (studio.js declares them).
TAB_HASHES = {
    "chat": "",
    "model": "#model",
    "tokens": "#tokens",
    "evals": "#eval",
    "compare": "#compare",
    "arena": "#arena",
}


def _tab_shown(page: Any, tab: str) -> None:
    """Wait until `tab` is the one selected, its pane the one view shown."""
    page.wait_for_selector(f"#tab-{tab}[aria-selected='true']")
    shown = page.locator("main[id^='view-']:not([hidden])").evaluate_all(
        "views => views.map(v => v.id)"
    )
    assert shown == [f"view-{tab}"], shown
    assert page.locator(".tab[aria-selected='true']").count() == 1


def test_each_tab_opens_from_its_hash_and_back_and_forward_go_through_them(
    studio: Studio,
) -> None:
    page = studio.page
    # The tab bar is made from the tab table: one button per tab, in its order.
    studio.open()
    tabs = page.locator("#tabs .tab").evaluate_all("tabs => tabs.map(t => t.dataset.view)")
    assert tabs == list(TAB_HASHES)
    for tab, hash in TAB_HASHES.items():
        studio.open("/" + hash)  # a new page on the hash
        _tab_shown(page, tab)
    for tab, hash in reversed(TAB_HASHES.items()):
        page.evaluate("hash => { location.hash = hash }", hash or "#")  # a hash followed
        _tab_shown(page, tab)

    # Each tab pressed is a step in the history: back and forward retrace them.
    studio.open()
    pressed = ["model", "evals", "tokens", "compare"]
    for tab in pressed:
        page.click(f"#tab-{tab}")
        _tab_shown(page, tab)
        assert page.evaluate("location.hash").startswith(TAB_HASHES[tab]), tab
    for tab in reversed(["chat", *pressed[:-1]]):
        page.go_back()
        _tab_shown(page, tab)
    assert page.evaluate("location.hash") == ""
    for tab in pressed[:2]:
        page.go_forward()
        _tab_shown(page, tab)
    page.click("#tab-evals")  # the tab shown: no new step
    page.go_back()
    _tab_shown(page, "model")


def _comparison(server: Server, name: str) -> str:
    """A comparison in the server's store as `scheda compare` leaves one: F16 against Q8_0."""
    kld = {"mean": 0.0012, "uncertainty": 0.0001, "median": 0.0005, "p99": 0.01, "max": 0.05}
    record = {
        "created": time.time(),
        "reference": f"{name}.F16.gguf",
        "context": 128,
        "text": {"name": "gsm8k-test-60", "tokens": 1024, "chunks": 8, "scored": 1000},
        "rows": [
            {
                "role": "reference",
                "path": f"{name}.F16.gguf",
                "type": "F16",
                "size": 2**28,
                "bits_per_weight": 16.0,
            },
            {
                "role": "candidate",
                "path": f"{name}.Q8_0.gguf",
                "type": "Q8_0",
                "size": 2**27,
                "bits_per_weight": 8.5,
                "kld": kld,
            },
        ],
        "how": {},
        "cache": {"how": "kept", "bytes": 2**20},
        "machine": {"cpu": "cpu", "physical_cores": 2, "memory_gib": 8, "versions": {}},
    }
    with ComparisonStore(server.evals) as store:
        return store.add(record)


def test_the_item_chosen_in_a_list_is_in_the_url(
    studio: Studio, server: Server, tmp_path: Path
) -> None:
    """Evaluations and comparisons share one list and detail: the item chosen (not the
    newest, shown by default) is in the hash, a reload keeps it, and so does leaving the tab."""
    page = studio.page
    runs = [_mmlu_run(server, tmp_path / f"run{i}", EVAL_SCORES) for i in range(2)]
    comparisons = [_comparison(server, f"model{i}") for i in range(2)]
    chosen = {
        "evals": ("eval", "runId", runs[0]),
        "compare": ("compare", "comparisonId", comparisons[0]),
    }
    studio.open()
    for tab, (prefix, key, item) in chosen.items():
        attribute = re.sub("([A-Z])", r"-\1", key).lower()
        page.click(f"#tab-{tab}")
        row = page.locator(f"#{prefix}-list tr[data-{attribute}='{item}']")
        row.click()
        page.wait_for_selector(f"#{prefix}-detail[data-{attribute}='{item}']")
        assert page.evaluate("location.hash") == f"{TAB_HASHES[tab]}={item}"
        assert row.get_attribute("aria-current") == "true"
        assert page.locator(f"#{prefix}-list tr[aria-current]").count() == 1

        page.reload()
        studio.ready()
        _tab_shown(page, tab)
        page.wait_for_selector(f"#{prefix}-detail[data-{attribute}='{item}']")
        assert row.get_attribute("aria-current") == "true"

    # Back on the evaluations, the run chosen there; forward, the comparison.
    page.go_back()
    _tab_shown(page, "evals")
    page.wait_for_selector(f"#eval-detail[data-run-id='{runs[0]}']")
    assert page.evaluate("location.hash") == f"#eval={runs[0]}"
    page.go_forward()
    _tab_shown(page, "compare")
    page.wait_for_selector(f"#compare-detail[data-comparison-id='{comparisons[0]}']")


def test_the_chat_answers_at_the_servers_length(studio: Studio, server: Server) -> None:
    """The studio keeps no default of its own: its chat sends the answer length the server
    declares for a chat, the one `scheda chat` uses, observed in the request."""
    page = studio.page
    declared = {o["name"]: o["default"] for o in server.api("GET", "/api/sampling")}
    assert declared["max_tokens"] == options.CHAT_DEFAULTS["max_tokens"]
    studio.open()
    assert page.input_value("#max-tokens") == str(declared["max_tokens"])
    studio.sampling(temperature="0", seed="1")
    params, answer = studio.turn_params("Count from one to ten.")
    assert params["max_tokens"] == declared["max_tokens"]
    page.click("#stop")  # the length is what this test is about, not the answer
    page.wait_for_function("el => el.dataset.state !== 'streaming'", arg=answer.element_handle())


def test_evaluation_routes(server: Server, tmp_path: Path) -> None:
    first = _mmlu_run(server, tmp_path / "first", EVAL_SCORES)
    second = _mmlu_run(server, tmp_path / "second", EVAL_SCORES, scored=3)

    runs = server.api("GET", "/api/evals")
    ids = [r["id"] for r in runs]
    assert ids.index(second) < ids.index(first)  # newest first
    listed = runs[ids.index(first)]
    assert listed["model"] == "default" and listed["task"] == "mmlu"
    assert listed["items"] == listed["scored"] == 8
    assert listed["config"]["shots"] == 5 and listed["finished"] >= listed["created"]
    assert listed["summary"]["metrics"]["acc"]["value"] == 3 / 8
    assert listed["summary"]["macro"]["value"] == (2 / 3 + 1 / 5) / 2
    assert runs[ids.index(second)]["summary"] is None
    assert runs[ids.index(second)]["scored"] == 3

    run = server.api("GET", f"/api/evals/{first}")
    assert run["id"] == first and run["summary"] == listed["summary"]
    assert run["partial"] is None and run["scored"] == 8
    assert len(run["results"]) == 8
    assert all(set(r) == {"key", "group", "metrics"} for r in run["results"])
    groups = {r["group"] for r in run["results"]}
    assert groups == {"high_school_physics", "abstract_algebra"}
    detailed = server.api("GET", f"/api/evals/{first[:6]}?detail=1")  # a unique prefix will do
    assert detailed["id"] == first
    assert all(r["detail"]["gold"] == 0 for r in detailed["results"])

    partial = server.api("GET", f"/api/evals/{second}")
    assert partial["finished"] is None and len(partial["results"]) == 3
    assert partial["partial"]["items"] == 3
    assert partial["partial"]["metrics"]["acc"]["value"] == 1 / 3

    for missing in ("nosuchrun", "zz"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            server.api("GET", f"/api/evals/{missing}")
        assert caught.value.code == 404
        error = json.loads(caught.value.read())["error"]
        caught.value.close()
        assert error["type"] == "not_found_error" and missing in error["message"]


@pytest.mark.hub
def test_a_hub_repository_read_then_pulled_joins_the_pickers(
    browser: Any, hub_server: Hub, tmp_path: Path
) -> None:
    """The model tab reads a repository on the Hub (tests/hub.py) without downloading it,
    lists its files with a verdict each, pulls one with a progress bar, and serves it."""
    from playwright.sync_api import expect

    data = tmp_path / "data"
    data.mkdir()
    q4 = "SmolLM2-135M-Instruct.Q4_1.gguf"
    with _serve(data, hub=hub_server.url) as served, _studio_on(browser, served.url) as studio:
        page = studio.page
        studio.open()
        page.click("#tab-model")
        page.fill("#hub-repo", GGUF_REPO)
        page.click("#hub-look")
        rows = page.locator("#hub-files tbody tr")
        expect(rows).to_have_count(2)
        expect(page.locator("#hub-note")).to_contain_text("in 3 requests, the listing included")
        assert page.locator("#hub-card tr", has_text="Layers").locator("td").text_content() == "30"
        row = page.locator(f"#hub-files tr[data-file='{q4}']")
        assert row.locator(".hub-verdict").first.text_content() == "fits"
        assert not list((data / "hf-home").rglob("*.gguf"))  # looked at, not downloaded

        row.locator("[data-testid='hub-pull']").click()
        expect(page.locator("#hub-progress")).to_have_attribute(
            "data-state", "done", timeout=TIMEOUT_MS
        )
        expect(page.locator("#hub-progress-text")).to_contain_text("downloaded and checked")
        assert page.locator("#hub-bar").evaluate("bar => bar.value") == 1
        reference = f"{GGUF_REPO}:Q4_1"
        expect(page.locator(f"#model-picker option[value='{reference}']")).to_have_count(1)
        expect(page.locator(f"#card-model option[value='{reference}']")).to_have_count(1)
        assert reference in [m["id"] for m in served.api("GET", "/api/models")]
        _save_screenshot(page, tmp_path, "studio-hub.png")

        # The routes read Hub repositories only, never a path on the server's machine.
        with pytest.raises(urllib.error.HTTPError) as refused:
            served.api("GET", "/api/hub/card?repo=/etc/passwd")
        refused.value.close()
        assert refused.value.code == 400
