"""`scheda serve --all` and `--models-dir`: every model on the machine offered, each loaded on
its first request, unloaded when idle or for room, loaded and unloaded by hand.

The machine is real and small: a Hugging Face cache laid out as huggingface_hub lays it out
(blobs, snapshots, refs) holding the embedded GGUF as a repository and an encoder whose
weights are a sparse 7 GiB file (its header says so, its disk holds nothing), too large for
any budget here; and a models folder holding the embedded GGUF, the MiniLM folder, a file
that is no GGUF and a split whose parts cannot be read. One server serves it all with a
budget that holds one GGUF model at a time.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheda.errors import UsageError
from scheda.files import discover
from scheda.server.pool import served_model
from tests.serving import Server, wait_for

KEY = "sk-all"
CONTEXT = 2048  # room for an answer long enough to stay in flight while a test looks
SMOL = "SmolLM2-135M-Instruct.Q4_1"
CACHED = "test/smol:Q4_1"  # what `scheda pull test/smol:Q4_1` prints, and `scheda chat` takes
BIG = "test/big-encoder"
LONG = {
    "messages": [{"role": "user", "content": "Count to ten thousand."}],
    "max_tokens": 1900,
    "ignore_eos": True,
    "stream": True,
}


# -- the machine ------------------------------------------------------------------------------


def cached_repo(hub: Path, repo: str, files: dict[str, Path], kind: str = "models") -> Path:
    """A repository in the cache as huggingface_hub writes one: each file a blob (here a link
    to the real file), the snapshot's names links to the blobs, `refs/main` its commit."""
    root = hub / f"{kind}--{repo.replace('/', '--')}"
    commit = "0" * 39 + "1"
    snapshot = root / "snapshots" / commit
    for name, source in files.items():
        blob = root / "blobs" / hashlib.sha256(f"{repo}/{name}".encode()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.symlink_to(source)
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).symlink_to(os.path.relpath(blob, (snapshot / name).parent))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot


def sparse_encoder(folder: Path, minilm: Path) -> dict[str, Path]:
    """MiniLM's files with weights that claim 1.9 billion float32 parameters, in a sparse
    file: a header read finds a model of 7 GiB, the disk holds a few bytes."""
    folder.mkdir()
    rows = 5_000_000
    extent = 4 * rows * 384
    header = json.dumps(
        {
            "embeddings.word_embeddings.weight": {
                "dtype": "F32",
                "shape": [rows, 384],
                "data_offsets": [0, extent],
            }
        }
    ).encode()
    header += b" " * (-len(header) % 8)
    weights = folder / "model.safetensors"
    with weights.open("wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + extent)
    files = {p.name: p for p in minilm.iterdir() if p.is_file() and p.name != weights.name}
    return {**files, weights.name: weights}


@pytest.fixture(scope="module")
def machine(
    tmp_path_factory: pytest.TempPathFactory, smollm_path: Path, minilm_path: Path
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("machine")
    hub = root / "hf-home" / "hub"
    (root / "README.md").write_text("# smol\n")
    cached_repo(hub, "test/smol", {smollm_path.name: smollm_path, "README.md": root / "README.md"})
    cached_repo(hub, BIG, sparse_encoder(root / "big", minilm_path))
    cached_repo(hub, "test/data", {"train.csv": smollm_path}, kind="datasets")
    models = root / "models"
    models.mkdir()
    (models / smollm_path.name).symlink_to(smollm_path)
    (models / "minilm").symlink_to(minilm_path, target_is_directory=True)
    (models / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00 no more")
    (models / "notes.txt").write_text("not a model")
    (models / "split").mkdir()
    for part in (1, 2):  # two parts, neither a real part: one model, so one line
        (models / "split" / f"Parts-0000{part}-of-00002.gguf").symlink_to(smollm_path)
    return {"hub": hub, "models": models}


# -- finding the models -----------------------------------------------------------------------


def test_the_cache_s_models_are_named_as_references_name_them(
    machine: dict[str, Path], monkeypatch: pytest.MonkeyPatch, smollm_path: Path
) -> None:
    from huggingface_hub import constants

    from scheda.resolve import locate

    found = discover.in_hf_cache(machine["hub"])
    assert [f.id for f in found.found] == [BIG, CACHED]  # the dataset is no model
    assert found.skipped == []
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(machine["hub"]))
    for f in found.found:
        assert locate(f.id) == f.path  # the name a client sends is the one `scheda chat` takes
    assert found.found[1].path.resolve() == smollm_path.resolve()
    assert found.found[0].spec.kind == "encoder"


def test_a_folder_is_read_as_llama_cpp_s_router_reads_it(
    machine: dict[str, Path], minilm_path: Path
) -> None:
    started = time.perf_counter()
    found = discover.in_folder(machine["models"])
    took = time.perf_counter() - started
    assert [(f.id, f.path.name) for f in found.found] == [
        (SMOL, f"{SMOL}.gguf"),
        ("minilm", "minilm"),
    ]
    broken, split = found.skipped  # the text file is no model; the split's two parts are one
    assert "broken.gguf: skipped, it cannot be read (" in broken
    assert "Parts-00001-of-00002.gguf: skipped" in split
    assert took < 2, took  # headers only: nothing loads


def test_a_folder_alone_is_served_after_the_embedded_model(machine: dict[str, Path]) -> None:
    """`serve --models-dir DIR` naming no model: `default` first (the default), then the
    folder's; a model named is served once, under its own name, whatever the folder holds."""
    from scheda.server.main import build_pool

    lines: list[str] = []
    pool = build_pool([], folders=[machine["models"]], warn=lines.append)
    assert list(pool.models) == ["default", SMOL, "minilm"] and pool.default == "default"
    assert len(lines) == 2 and pool.loaded() == []  # nothing loads to be listed
    pool.close()
    named = str(machine["models"] / "minilm")
    pool = build_pool(["default", named], folders=[machine["models"]], warn=lines.append)
    assert list(pool.models) == ["default", "minilm", SMOL]
    pool.close()


def test_an_unknown_keep_alive_is_one_line() -> None:
    from scheda.cli.serve import keep_alive_seconds

    assert keep_alive_seconds("5m") == 300
    assert keep_alive_seconds("1h30m") == 5400
    assert keep_alive_seconds("30s") == 30
    assert keep_alive_seconds("1.5") == 1.5
    assert keep_alive_seconds("0") == 0
    assert keep_alive_seconds("-1") is None
    assert keep_alive_seconds("-5m") is None
    with pytest.raises(UsageError, match="--keep-alive takes a duration such as 5m"):
        keep_alive_seconds("five minutes")


# -- the server -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, machine: dict[str, Path], smollm_path: Path
) -> Iterator[Server]:
    gguf = served_model("default", context=CONTEXT, parallel=1).need
    minilm = served_model(str(machine["models"] / "minilm"), context=CONTEXT, parallel=1).need
    budget = max(gguf, minilm) + min(gguf, minilm) // 2  # each alone, never two GGUFs
    assert gguf * 2 > budget and minilm < budget
    data = tmp_path_factory.mktemp("serve-all")
    hf_home = str(machine["hub"].parent)
    args = [
        "--all",
        "--models-dir", str(machine["models"]),
        "--parallel", "1",
        "--context", str(CONTEXT),
        "--budget", f"{budget / 2**30:.9f}",
        "--keep-alive", "-1",
        "--threads", "1",  # a load's threads would wait on each other on a busy small host
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_HOME", hf_home)  # the server reads it once, as it starts
        s = Server(args, data, api_key=KEY)
    yield s
    s.stop()


def models(server: Server) -> dict[str, dict[str, Any]]:
    status, answer = server.request("GET", "/v1/models")
    assert status == 200
    return {m["id"]: m for m in answer["data"]}


def unloaded(server: Server, *ids: str) -> None:
    for model in ids:
        assert server.request("POST", "/models/unload", {"model": model})[0] == 200


def test_it_starts_warning_once_per_unreadable_file(server: Server) -> None:
    log = server.log.read_text()
    assert log.count("warning:") == 2, log
    assert "broken.gguf: skipped, it cannot be read" in log
    assert "Parts-00001-of-00002.gguf: skipped" in log


def test_v1_models_lists_every_model_marked(server: Server) -> None:
    listed = models(server)
    assert list(listed) == ["default", BIG, CACHED, SMOL, "minilm"]
    for model in listed.values():
        assert model["loaded"] is (model["status"] == "loaded")
        assert set(model["fit"]) == {"need", "budget", "fits"}
    assert listed[BIG]["fit"]["fits"] is False and listed[BIG]["kind"] == "embedding"
    assert all(listed[m]["fit"]["fits"] for m in listed if m != BIG)
    status, one = server.request("GET", f"/v1/models/{CACHED}")
    assert status == 200 and one["fit"] == listed[CACHED]["fit"]


def test_a_model_too_large_is_refused_with_the_numbers(server: Server) -> None:
    for path, body in (
        ("/v1/embeddings", {"model": BIG, "input": "hello"}),
        ("/models/load", {"model": BIG}),
    ):
        status, answer = server.request("POST", path, body)
        assert status == 400, answer
        message = answer["error"]["message"]
        assert message.startswith(f"{BIG} needs 7.") and "GiB at a context of 512" in message
        assert "budget: serve with a larger --budget or a smaller --context" in message
    assert server.request("GET", "/health")[1]["status"] == "ok"  # no crash


@pytest.fixture
def busy(server: Server) -> Iterator[http.client.HTTPResponse]:
    """`default` answering a long stream, its first words read; hung up after the test."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    conn.request("POST", "/v1/chat/completions", json.dumps(LONG), server.headers())
    answer = conn.getresponse()
    while b'"content"' not in answer.readline():
        pass
    try:
        yield answer
    finally:
        conn.close()
        assert wait_for(lambda: server.active() == 0, within=20)


def test_busy_models_are_not_unloaded_and_leave_no_room(
    server: Server, busy: http.client.HTTPResponse
) -> None:
    status, answer = server.request("POST", "/models/unload", {"model": "default"})
    assert status == 409 and "1 request in flight" in answer["error"]["message"]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/models/load", json.dumps({"model": SMOL}), server.headers())
    refused = conn.getresponse()
    assert refused.status == 503 and refused.getheader("Retry-After") == "1"
    assert "default busy" in json.loads(refused.read())["error"]["message"]
    conn.close()


def test_health_shows_each_slot_and_never_a_prompt(
    server: Server, busy: http.client.HTTPResponse
) -> None:
    status, health = server.request("GET", "/health", headers={"Accept": "*/*"})  # public
    assert status == 200
    default = health["models"]["default"]
    assert default["active"] == 1 and default["memory"] == models(server)["default"]["memory"]
    (slot,) = default["slots"]
    assert set(slot) == {"id", "state", "n_ctx", "decoded"}
    assert slot["state"] == "processing" and slot["n_ctx"] == CONTEXT and slot["decoded"] > 0
    assert health["memory"]["resident"] > 0 and health["memory"]["loaded"] >= default["memory"]
    assert "ten thousand" not in json.dumps(health)


def test_load_and_unload_by_hand(server: Server) -> None:
    assert server.request("POST", "/models/load", {"model": "default"})[0] == 200
    status, gone = server.request("POST", "/models/unload", {"model": "default"})
    assert status == 200 and gone["success"] and gone["unloaded"] is True
    assert gone["loaded"] is False and gone["status"] == "unloaded"
    status, again = server.request("POST", "/models/unload", {"model": "default"})
    assert status == 200 and again["unloaded"] is False
    unloaded(server, SMOL)
    status, loaded = server.request("POST", "/models/load", {"model": SMOL})
    assert status == 200 and loaded["success"] and loaded["loaded"] and loaded["loads"] >= 1
    status, missing = server.request("POST", "/models/load", {"model": "nope"})
    assert status == 404 and "nope" in missing["error"]["message"]
    assert server.request("POST", "/models/load", {"model": ""})[0] == 400
    anonymous = {"Content-Type": "application/json"}
    assert server.request("POST", "/models/load", {"model": SMOL}, headers=anonymous)[0] == 401
    foreign = {**server.headers(), "Origin": "http://evil.example"}
    assert server.request("POST", "/models/unload", {"model": SMOL}, headers=foreign)[0] == 403


def test_the_official_client_sees_no_error_only_a_slower_first_token(server: Server) -> None:
    import openai

    unloaded(server, CACHED)
    assert server.request("POST", "/models/load", {"model": SMOL})[0] == 200
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
    messages: Any = [{"role": "user", "content": "Hi"}]
    stream = client.chat.completions.create(
        model=CACHED, messages=messages, max_tokens=3, stream=True
    )
    chunks = list(stream)
    assert chunks and chunks[-1].choices[0].finish_reason == "length"
    # The budget holds one GGUF model: the one used least recently left for this one.
    assert [m for m, v in models(server).items() if v["loaded"]] == [CACHED]


def test_anthropic_s_client_sees_no_error_either(server: Server) -> None:
    import anthropic

    unloaded(server, SMOL)
    client = anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0)
    messages: Any = [{"role": "user", "content": "Hi"}]
    with client.messages.stream(model=SMOL, messages=messages, max_tokens=3) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert final.stop_reason == "max_tokens" and models(server)[SMOL]["loaded"]


def test_two_first_requests_wait_for_one_load_and_both_say_so(server: Server) -> None:
    """A chat completion and a studio chat turn, both streamed, both for a model not loaded:
    one load; each stream says that it loads (the second too, unless it came after)."""
    unloaded(server, SMOL)
    before = models(server)[SMOL]["loads"]
    status, session = server.request("POST", "/api/sessions", {"model": SMOL})
    assert status == 201
    chat_body = {"model": SMOL, "messages": [{"role": "user", "content": "Hi"}]}
    turn = {"content": "Hi", "params": {"max_tokens": 2}}
    asks = {
        "chat": ("/v1/chat/completions", {**chat_body, "max_tokens": 3, "stream": True}),
        "studio": (f"/api/sessions/{session['id']}/chat", turn),
    }
    answers: dict[str, str] = {}

    def ask(name: str) -> None:
        path, body = asks[name]
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        conn.request("POST", path, json.dumps(body), server.headers())
        answers[name] = conn.getresponse().read().decode()
        conn.close()

    threads = [threading.Thread(target=ask, args=(name,)) for name in asks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    chat, studio = answers["chat"], answers["studio"]
    said = [
        chat.startswith(f": loading {SMOL}\n\n"),
        studio.startswith(f'data: {{"loading":"{SMOL}"}}'),
    ]
    assert any(said), answers
    assert chat.startswith(("data: ", ": loading")) and chat.rstrip().endswith("data: [DONE]")
    assert '"error"' not in chat and '"done":true' in studio
    assert models(server)[SMOL]["loads"] == before + 1


def test_ray_is_refused_with_all_in_one_line(tmp_path: Path) -> None:
    from tests.commands import scheda

    result = scheda("serve", "--all", "--ray", data=tmp_path, timeout=60)
    assert result.returncode != 0
    assert "--all and --models-dir load models on demand" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.browser
def test_the_studio_marks_each_model_and_loads_and_unloads_it(server: Server) -> None:
    from playwright.sync_api import expect

    from tests.test_studio import CHROMIUM, CHROMIUM_ARGS, _playwright

    unloaded(server, "default")
    with _playwright()() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_context().new_page()
        page.set_default_timeout(60_000)
        page.add_init_script(f"localStorage.setItem('scheda.apiKey', '{KEY}')")
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{server.url}/#model")
        page.wait_for_selector("body[data-ready='true']", state="attached")
        chat = page.locator("#model-picker option")
        expect(chat).to_have_count(5)  # three chat models, then the two embedding ones
        expect(page.locator(f"#card-model option[value='{BIG}']")).to_have_text(
            f"{BIG} (too large)"
        )
        page.select_option("#card-model", BIG)
        expect(page.locator("#model-state")).to_contain_text("too large to load; needs 7.")
        expect(page.locator("#model-load")).to_be_disabled()
        page.select_option("#card-model", "default")
        expect(page.locator("#model-state")).to_contain_text("not loaded; needs ")
        page.click("#model-load")
        expect(page.locator("#model-load")).to_have_text("Unload")
        expect(page.locator("#model-state")).to_contain_text("loaded; needs ")
        expect(page.locator("#card-model option[value='default']")).to_have_text("default (loaded)")
        assert models(server)["default"]["loaded"]
        page.click("#model-load")
        expect(page.locator("#model-load")).to_have_text("Load")
        assert not models(server)["default"]["loaded"]
        browser.close()
    assert not errors, errors
