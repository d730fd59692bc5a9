"""`scheda search`: the Hub's model search, each repository read and judged on a target.

Every test talks to the loopback Hub (tests/hub.py) through `huggingface_hub`'s
own `list_models` and the remote reader, over real files: the embedded GGUF
(Q4_1), the same model requantized to Q8_0 and split in two parts, MiniLM's
folder, and repositories made from them under other names, with a truncated
GGUF and a repository without a model for the failures. The target is a
`--memory` budget on which the Q4_1 file fits at 4,096 tokens and the Q8_0 one
does not, so a ranking has both sides.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import pytest

from scheda.errors import HubError, UsageError
from scheda.formulas import hardware
from scheda.search import cache
from scheda.search.rows import Row, SearchResult, rank, search
from tests.conftest import GGUF_REPO, MINILM_REPO, SPLIT_REPO
from tests.hub import SEARCH, Hub, Meta

Q4 = "SmolLM2-135M-Instruct.Q4_1.gguf"
Q8 = "SmolLM2-135M-Instruct.Q8_0.gguf"
Q8_ONLY = "acme/SmolLM2-135M-Q8-GGUF"
BROKEN = "acme/SmolLM2-135M-broken-GGUF"
EMPTY = "acme/SmolLM2-135M-notes"
BUDGET_GB = 0.23  # 235 MiB: the Q4_1 file fits at 4,096 tokens, the Q8_0 file does not
MMLU_INDEX = {
    "model-index": [
        {
            "name": "SmolLM2-135M-Instruct",
            "results": [
                {
                    "task": {"type": "text-generation"},
                    "dataset": {"name": "MMLU", "type": "cais/mmlu"},
                    "metrics": [{"type": "acc", "value": 30.1, "name": "MMLU (5-shot)"}],
                }
            ],
        }
    ]
}


@pytest.fixture
def search_hub(
    online_hub: Hub,
    smollm_path: Path,
    gguf_variants: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Hub]:
    """The Hub with three more repositories whose names hold "SmolLM2" (the Q8_0 file alone,
    a truncated GGUF, a README alone), downloads set so that the Hub's order is not the
    ranking, and a search cache of the test's own."""
    monkeypatch.setenv("SCHEDA_CACHE_DIR", str(tmp_path / "scheda-cache"))
    hub = online_hub
    hub.add(Q8_ONLY, {Q8: gguf_variants["Q8_0"]}, meta=Meta(downloads=900, likes=9))
    hub.add(BROKEN, {Q4: smollm_path.read_bytes()[:200_000]}, meta=Meta(downloads=500))
    hub.add(EMPTY, {"README.md": b"# notes\n"}, meta=Meta(downloads=400))
    hub.meta[GGUF_REPO] = Meta(
        downloads=300, likes=30, card={**MMLU_INDEX, "license": "apache-2.0"}
    )
    hub.meta[SPLIT_REPO] = Meta(downloads=200, likes=2)
    try:
        yield hub
    finally:
        for name in (Q8_ONLY, BROKEN, EMPTY):
            hub.repos.pop(name, None)


def _reads(hub: Hub) -> list[tuple[str, str, str | None]]:
    """Requests that read a repository: all but the search's own."""
    return [r for r in hub.requests() if r[1] != SEARCH]


def _budget() -> hardware.Device:
    return hardware.custom(BUDGET_GB)


# -- the loopback Hub's search, as huggingface_hub's client sees it ----------------------------


@pytest.mark.hub
def test_the_search_answers_as_the_hub_does(search_hub: Hub) -> None:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=search_hub.url)
    found = list(api.list_models(search="smollm2", sort="downloads", limit=3, expand=["sha"]))
    assert [m.id for m in found] == [Q8_ONLY, BROKEN, EMPTY]  # by downloads, case-insensitive
    assert found[0].sha == search_hub.repos[Q8_ONLY].commit and found[0].downloads is None
    likes = [
        m.likes or 0 for m in api.list_models(search="SmolLM2", sort="likes", expand=["likes"])
    ]
    assert likes == sorted(likes, reverse=True) and likes[0] == 30
    full = next(iter(api.list_models(search="Instruct-GGUF", author="scheda-test", full=True)))
    assert (
        full.id == GGUF_REPO
        and full.siblings
        and {s.rfilename for s in full.siblings}
        == {
            Q4,
            Q8,
            "README.md",
        }
    )
    card = next(iter(api.list_models(search=GGUF_REPO, expand=["cardData", "tags"])))
    assert card.card_data is not None and card.card_data.to_dict()["license"] == "apache-2.0"
    assert card.tags is not None and {"gguf", "license:apache-2.0"} <= set(card.tags)
    assert {m.id for m in api.list_models(filter="safetensors")} == {MINILM_REPO}
    # Pages: two answers a page, followed by the Link header until the limit is reached.
    search_hub.page_size = 2
    search_hub.log.clear()
    assert len(list(api.list_models(search="SmolLM2", limit=5))) == 5
    assert len(search_hub.requests(SEARCH)) == 3
    with pytest.raises(Exception, match="Invalid sort parameter"):
        list(api.list_models(sort=cast(Any, "bogus")))  # the Hub refuses it


# -- ranking on a target ------------------------------------------------------------------------


@pytest.mark.hub
def test_rows_rank_what_fits_first_and_fits_leaves_the_rest_out(search_hub: Hub) -> None:
    result = search("SmolLM2", _budget())
    order = [r.repo for r in result.rows]
    # What fits (by downloads, no figure to rank by), then what does not, then the unreadable.
    assert order[:3] == [GGUF_REPO, SPLIT_REPO, Q8_ONLY]
    assert set(order[3:]) == {BROKEN, EMPTY}
    rows = {r.repo: r for r in result.rows}
    both = rows[GGUF_REPO]
    assert both.fits and both.format == "gguf" and both.file == Q4 and both.quant == "Q4_1"
    assert both.parameters == 134_515_008 and both.context == 8192
    assert both.licence == "apache-2.0" and both.downloads == 300 and both.likes == 30
    assert (both.memory or 0) <= _budget().usable < (rows[Q8_ONLY].memory or 0)
    assert rows[SPLIT_REPO].fits and rows[SPLIT_REPO].parts == 2
    assert not rows[Q8_ONLY].fits and rows[Q8_ONLY].quant == "Q8_0"
    assert "truncated" in str(rows[BROKEN].error).lower()
    assert "neither GGUF files nor an HF model" in str(rows[EMPTY].error)
    # On a bigger budget the Q8_0 file is the best that fits: the most bits per weight.
    roomy = search("SmolLM2", hardware.custom(1.0))
    assert {r.repo: r.quant for r in roomy.rows if r.fits}[GGUF_REPO] == "Q8_0"
    fitting = search("SmolLM2", _budget(), fits_only=True)
    assert [r.repo for r in fitting.rows] == [GGUF_REPO, SPLIT_REPO] and fitting.left_out == 3


@pytest.mark.hub
def test_a_safetensors_repository_shows_the_precisions_that_fit(search_hub: Hub) -> None:
    (row,) = search("MiniLM", hardware.custom(1.0)).rows
    assert row.repo == MINILM_REPO and row.format == "safetensors" and row.fits
    assert row.precisions[:2] == ["FP32", "FP16/BF16"]  # F32 as stored is FP32: said once
    assert row.precisions[-1] == "Q4_0" and row.parameters == 22_713_216
    tight = search("MiniLM", hardware.custom(0.05)).rows[0]
    assert "FP32" not in tight.precisions and tight.fits  # 51 MiB: 16-bit and less fit


@dataclass(frozen=True)
class Fig:
    """A figure as `scheda.search.figures.Figure` is: the fields its interface names."""

    name: str
    value: float
    unit: str
    kind: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("name", "value", "unit", "kind", "source")}


def test_the_headline_benchmark_ranks_and_every_figure_is_marked() -> None:
    from rich.console import Console

    from scheda.display.render_search import search_view

    declared = Fig("MMLU (5-shot)", 30.1, "%", "declared", "the repository's model-index")
    published = Fig("MMLU (5-shot)", 66.6, "%", "published", "Meta, model card (catalog)")
    kld = Fig("KLD vs F16", 0.0123, "", "published", "llama.cpp's Llama 3 8B scoreboard")
    speed = Fig("generation", 42.0, "tok/s", "predicted", "predicted from 20 GB/s measured here")

    def sized(row: Row) -> Row:  # a Q4_K_M file of 80 MiB that needs 150 MiB
        return replace(row, quant="Q4_K_M", size=80 << 20, memory=150 << 20)

    rows = [
        sized(Row("a/popular", None, "gguf", fits=True, downloads=10_000)),
        sized(Row("b/declared", None, "gguf", fits=True, downloads=5, quality=[declared])),
        sized(Row("c/big", None, "gguf", downloads=99_999, quality=[published])),
        Row("d/best", None, "gguf", fits=True, quality=[published], quant_cost=kld, speed=speed),
    ]
    ranked = rank(rows)
    assert [r.repo for r in ranked] == ["d/best", "b/declared", "a/popular", "c/big"]
    result = SearchResult("q", _budget(), None, "downloads", False, None, ranked)
    console = Console(width=300, record=True)
    console.print(search_view(result))
    text = console.export_text()
    # Sources numbered as the table first shows them: one number for one source.
    assert "MMLU (5-shot) 66.6% [p1]" in text and "MMLU (5-shot) 30.1% [d4]" in text
    assert "KLD vs F16 0.0123 [p2]" in text and "generation 42.0 tok/s [~3]" in text
    assert text.count("[p1]") == 2
    assert "Q4_K_M 80.0 MiB, needs 150.0 MiB" in text
    assert "no: the smallest, Q4_K_M 80.0 MiB, needs 150.0 MiB" in text
    for line in (
        "marks: p published by the model's makers or llama.cpp; d declared by the repository",
        "~ predicted, not measured",
        "1. Meta, model card (catalog)",
        "3. predicted from 20 GB/s measured here",
        "4. the repository's model-index",
    ):
        assert line in text
    data = json.loads(json.dumps(result.to_dict()))
    assert data["rows"][0]["speed"]["kind"] == "predicted"
    assert data["rows"][1]["quality"][0]["source"] == "the repository's model-index"


@pytest.mark.hub
def test_the_repository_figures_carry_their_kind(search_hub: Hub) -> None:
    """The model-index's figure is declared, the file's quantization cost and its speed here
    labelled as what they are."""
    rows = {r.repo: r for r in search("SmolLM2", _budget()).rows}
    declared = [f for f in rows[GGUF_REPO].quality if f.kind == "declared"]
    assert [f.value for f in declared] == [30.1]
    for row in rows.values():
        assert all(
            f.kind in ("published", "declared", "measured", "predicted") for f in row.figures()
        )
        assert all(f.source and "\n" not in f.source for f in row.figures())
    cost = rows[GGUF_REPO].quant_cost
    assert cost is not None and cost.kind in ("published", "measured")
    speed = rows[GGUF_REPO].speed  # it fits: its speed here is predicted
    assert speed is not None and speed.kind == "predicted" and speed.value > 0


# -- the cache ----------------------------------------------------------------------------------


@pytest.mark.hub
def test_a_repeated_search_reads_nothing_and_a_new_commit_is_read_again(
    search_hub: Hub,
) -> None:
    first = search("SmolLM2", _budget())
    assert first.from_cache == 0 and _reads(search_hub)
    search_hub.log.clear()
    again = search("SmolLM2", _budget())
    assert _reads(search_hub) == [] and len(search_hub.requests(SEARCH)) == 1
    assert again.from_cache == 5  # the truncated GGUF's failure is the file's: kept too
    assert [r.to_dict() | {"origin": "hub"} for r in again.rows] == [
        r.to_dict() for r in first.rows
    ]
    search_hub.repos[GGUF_REPO].salt = "a new push"
    search_hub.log.clear()
    third = search("SmolLM2", _budget())
    read = {r[1] for r in _reads(search_hub) if r[1].startswith("/api/")}
    assert read == {f"/api/models/{GGUF_REPO}"}  # only the repository whose commit moved
    assert {r.repo for r in third.rows if r.origin == "hub"} == {GGUF_REPO}
    assert len(list((cache.folder() / GGUF_REPO.replace("/", "--")).glob("*.json"))) == 1


@pytest.mark.hub
def test_a_gated_repository_is_one_row_and_read_again(search_hub: Hub, smollm_path: Path) -> None:
    search_hub.add("meta-test/SmolLM2-gated-GGUF", {Q4: smollm_path}, gated=True)
    rows = {r.repo: r for r in search("SmolLM2", _budget()).rows}
    gated = rows["meta-test/SmolLM2-gated-GGUF"]
    assert gated.gated and gated.error and "is gated (401)" in gated.error
    search_hub.log.clear()
    search("SmolLM2", _budget())  # a refusal may pass (a token, access granted): not kept
    assert {r[1] for r in _reads(search_hub) if r[1].startswith("/api/")} == {
        "/api/models/meta-test/SmolLM2-gated-GGUF"
    }


# -- the command ---------------------------------------------------------------------------------


def _scheda(
    hub: Hub, tmp: Path, *args: str, offline: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    env.update(HF_ENDPOINT=hub.url, COLUMNS="250", SCHEDA_CACHE_DIR=str(tmp / "scheda-cache"))
    env["HF_HOME"] = str(tmp / "hf-home")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "scheda", "search", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.hub
def test_the_command_prints_a_row_per_repository_and_json(search_hub: Hub, tmp_path: Path) -> None:
    done = _scheda(search_hub, tmp_path, "SmolLM2", "--memory", str(BUDGET_GB))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    unreadable = [line for line in lines if "cannot read:" in line]
    assert len(unreadable) == 2  # one line each, the reason on it
    assert any(BROKEN in line and "truncated" in line.lower() for line in unreadable)
    assert any(GGUF_REPO in line and "Q4_1 93.8 MiB, needs" in line for line in lines)
    assert "5 repositories" in done.stdout
    data = json.loads(
        _scheda(search_hub, tmp_path, "SmolLM2", "--memory", "0.23", "--fits", "--json").stdout
    )
    assert [r["repo"] for r in data["rows"]] == [GGUF_REPO, SPLIT_REPO]
    assert data["left_out"] == 3 and data["target"]["device"] == "custom"
    assert {r["origin"] for r in data["rows"]} == {"cache"}  # the first run kept them
    bad = _scheda(search_hub, tmp_path, "x", "--gpu", "t4", "--memory", "1")
    assert bad.returncode == 2 and bad.stderr == "error: give --gpu or --memory, not both\n"


@pytest.mark.hub
def test_offline_search_covers_the_local_cache_and_says_so(
    search_hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    from scheda.files.pull import plan, pull

    pull(plan(f"{GGUF_REPO}:Q4_1"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    search_hub.log.clear()
    result = search("smollm2", _budget())
    assert search_hub.requests() == [] and result.offline
    assert result.note and "HF_HUB_OFFLINE is set" in result.note and "local" in result.note
    (row,) = result.rows  # the one repository pulled, read from its files there
    assert row.repo == GGUF_REPO and row.fits and row.file == Q4 and row.origin == "local"
    assert row.downloads is None  # the cache does not know what the Hub counts
    assert search("MiniLM", _budget()).rows == []
    # What an online search kept answers offline too, for the files that are here: on a
    # budget the Q8_0 file fits, the Q4_1 one is still the file shown, the one pulled.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert search("SmolLM2", hardware.custom(1.0)).rows[0].quant == "Q8_0"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    (kept,) = search("SmolLM2", hardware.custom(1.0)).rows
    assert kept.quant == "Q4_1" and kept.origin == "cache" and kept.licence == "apache-2.0"


def test_bad_options_are_one_line() -> None:
    with pytest.raises(UsageError, match="--sort must be one of downloads, likes, recent"):
        search("x", _budget(), sort="stars")
    with pytest.raises(UsageError, match="--limit must be between 1 and 100"):
        search("x", _budget(), limit=0)


@pytest.mark.hub
def test_an_endpoint_that_is_no_hub_is_one_line(
    online_hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(An unreachable one is retried by huggingface_hub for about 20 s before the same line.)"""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", online_hub.storage)  # answers 404 to everything
    with pytest.raises(HubError) as raised:
        search("x", _budget())
    assert str(raised.value) == (
        f"{online_hub.storage} has no model search (/api/models answered 404): "
        "is HF_ENDPOINT a Hub?"
    )


# -- concurrency --------------------------------------------------------------------------------


@pytest.mark.hub
def test_twenty_repositories_are_read_at_once(search_hub: Hub, smollm_path: Path) -> None:
    """Every request answered after 100 ms: the reads overlap (the Hub saw many in flight at
    once), so the search costs a few round trips, not 20 repositories' worth
    (benchmarks/search_time.py times it)."""
    names = [f"speed-test/Model-{i:02d}-GGUF" for i in range(20)]
    for name in names:
        search_hub.add(name, {Q4: smollm_path})
    try:
        search_hub.delay_s = 0.1
        search_hub.peak = 0
        result = search("speed-test", _budget(), limit=20)
        assert sorted(r.repo for r in result.rows) == names and all(r.fits for r in result.rows)
        assert search_hub.peak >= 6  # 8 threads: at least six reads in flight together
    finally:
        for name in names:
            search_hub.repos.pop(name, None)
