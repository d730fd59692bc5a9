"""The studio's quantization arena: a stored comparison's reference against its quantized files.

Real comparisons (`run_compare`: the embedded model's F16 against its Q8_0, and against
the Q8_0 and the Q4_1 it was made from, on the start of the text scheda ships) go into the
app's evaluation file before the page opens, and the files are served by the real app on
loopback (tests/test_studio_arena.py's server). Chromium chooses a comparison, which sets
the two pickers; the battle is fought blind and voted; the candidate's revealed column
then shows its KLD from that comparison.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from scheda.evaluation.compare import Comparison, load_text, run_compare
from scheda.stores.comparisons import ComparisonStore
from scheda.stores.evals import EvalStore
from tests.test_studio import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, Studio, _playwright
from tests.test_studio_arena import Served, _open_arena, _save, _serve

# slow: each test runs a real comparison (a pass of every file over the text) and a browser
pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Three chunks of 64 tokens from the start of the shipped text: each pass over them (every
# token's distribution over the vocabulary) takes seconds; the F16's is cached for the module.
CONTEXT = 64
TEXT_CHARS = 700


@pytest.fixture(scope="module")
def short_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("quant-arena-text") / "start.txt"
    path.write_text(load_text(None).content[:TEXT_CHARS], encoding="utf-8")
    return path


def _compared(reference: Path, candidates: list[Path], text: Path, folder: Path) -> Comparison:
    store = EvalStore(folder / "evals.sqlite3")
    try:
        return run_compare(
            reference,
            candidates,
            load_text(text),
            context=CONTEXT,
            bench_runs=0,
            threads=2,
            store=store,
        )
    finally:
        store.close()


@pytest.fixture(scope="module")
def record(
    smollm_quants: dict[str, Path], short_text: Path, cache_dir: Path, tmp_path_factory: Any
) -> Comparison:
    """The F16 against its Q8_0."""
    folder = tmp_path_factory.mktemp("quant-arena-compare")
    return _compared(smollm_quants["F16"], [smollm_quants["Q8_0"]], short_text, folder)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with _playwright()() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def kld_text(value: float) -> str:
    """A mean KLD as the page writes it: four decimals, two significant digits when smaller."""
    if value >= 1e-4 or value == 0:
        return f"{value:.4f}"
    digits = f"{value:.1e}"  # JavaScript's toPrecision(2), between 1e-7 and 1e-4
    mantissa, exponent = digits.split("e")
    return f"0.{'0' * (-int(exponent) - 1)}{mantissa.replace('.', '')}"


def test_kld_text_writes_as_the_page_does() -> None:
    assert kld_text(0.01234) == "0.0123"
    assert kld_text(0.0001) == "0.0001"
    assert kld_text(0.0000423) == "0.000042"
    assert kld_text(0.0) == "0.0000"


def _stored(folder: Path, record: Comparison) -> str:
    """The comparison in the app's evaluation file, as `scheda compare` stores it; its id."""
    with ComparisonStore(folder / "evals.sqlite3") as comparisons:
        return comparisons.add(copy.deepcopy(cast(dict[str, Any], record)))


@contextlib.contextmanager
def _arena(chromium: Any, served: Served) -> Iterator[Any]:
    """A page on the served studio's Arena tab; it must throw nothing."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    studio = Studio(page, served.url, [], [])
    page.on("pageerror", lambda error: studio.errors.append(str(error)))
    _open_arena(studio)
    try:
        yield page
    finally:
        context.close()
    assert not studio.errors, studio.errors


def _fight_and_vote(page: Any, served: Served) -> tuple[str, str]:
    """A short battle at temperature 0, blind until the tie is voted; its two models."""
    from playwright.sync_api import expect

    page.fill("#arena-prompt", "Name a colour.")
    page.fill("#arena-max-tokens", "8")
    page.fill("#arena-temperature", "0")
    page.click("#arena-fight")
    battle = page.locator("#arena-battle")
    # The first battle loads both models (expect's own wait is 5 s).
    expect(battle).to_have_attribute("data-state", "answered", timeout=TIMEOUT_MS)
    expect(page.locator(".arena-model, .arena-model-kld")).to_have_count(0)  # blind
    page.click(".arena-vote-button[data-outcome='tie']")
    expect(battle).to_have_attribute("data-state", "voted")
    stored = served.arena.get(str(battle.get_attribute("data-battle-id")))
    assert stored.vote == "tie" and stored.sampling["max_tokens"] == 8
    return stored.a.model, stored.b.model


def _expect_kld(page: Any, model: str, shown: str | None) -> None:
    """The revealed column of `model` names it, with this KLD line (or none)."""
    from playwright.sync_api import expect

    column = page.locator(f".arena-column[data-model='{model}']")
    expect(column.locator(".arena-model")).to_have_text(model)
    if shown is None:
        expect(column.locator(".arena-model-kld")).to_have_count(0)
    else:
        expect(column.locator(".arena-model-kld")).to_have_text(shown)


def test_a_battle_from_a_comparison_shows_the_candidate_kld_after_the_vote(
    chromium: Any, record: Comparison, smollm_quants: dict[str, Path], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    reference, candidate = smollm_quants["F16"], smollm_quants["Q8_0"]
    comparison = _stored(tmp_path, record)
    kld = record["rows"][1]["kld"]
    assert record["text"]["chunks"] == 3 and kld is not None and kld["mean"] > 0

    models = {reference.stem: reference, candidate.stem: candidate}
    with _serve(tmp_path, models) as served, _arena(chromium, served) as page:
        # The comparison is offered, named by its files and date, and sets both pickers.
        picker = page.locator("#arena-comparison")
        expect(page.locator("#arena-from")).to_be_visible()
        expect(picker.locator("option")).to_have_count(2)  # none, and the one stored
        offered = picker.locator(f"option[value='{comparison}']")
        expect(offered).to_contain_text(f"{reference.name} against {candidate.name} · ")
        assert page.input_value("#arena-first") == page.input_value("#arena-second") == ""
        picker.select_option(comparison)
        expect(page.locator("#arena-first")).to_have_value(reference.stem)
        expect(page.locator("#arena-second")).to_have_value(candidate.stem)
        expect(page.locator("#arena-candidate-label")).to_be_hidden()  # one candidate alone

        assert set(_fight_and_vote(page, served)) == set(models)
        _expect_kld(page, candidate.stem, f"KLD {kld_text(kld['mean'])} vs F16")
        _expect_kld(page, reference.stem, None)  # the reference has none
        _save(page.locator("#view-arena"), "arena-from-comparison.png")
        # The leaderboard beside it shows the same comparison's KLD, rounded alike.
        row = page.locator(f"#arena-standings tr[data-model='{candidate.stem}']")
        expect(row.locator("td").nth(6)).to_contain_text(f"{kld['mean']:.4f}")

        # A picker changed by hand to a pair the comparison does not hold lets it go.
        page.select_option("#arena-first", "")
        expect(picker).to_have_value("")
        expect(page.locator("#arena-second option").first).to_have_text("Any")


def test_several_candidates_any_of_them_or_one(
    chromium: Any,
    smollm_quants: dict[str, Path],
    smollm_path: Path,
    short_text: Path,
    cache_dir: Path,
    tmp_path: Path,
) -> None:
    """The F16 against its Q8_0 and the Q4_1 it was made from: a candidate's picker, "Any
    candidate" drawn at Fight, and each candidate's own KLD."""
    from playwright.sync_api import expect

    reference, candidates = smollm_quants["F16"], [smollm_quants["Q8_0"], smollm_path]
    record = _compared(reference, candidates, short_text, tmp_path)
    comparison = _stored(tmp_path, record)
    klds = {Path(r["path"]).stem: r["kld"]["mean"] for r in record["rows"][1:] if r["kld"]}
    assert len(set(klds.values())) == 2, klds  # two files, two different figures

    models = {p.stem: p for p in (reference, *candidates)}
    with _serve(tmp_path, models) as served, _arena(chromium, served) as page:
        page.select_option("#arena-comparison", comparison)
        expect(page.locator("#arena-candidate-label")).to_be_visible()
        options = page.locator("#arena-candidate option")
        expect(options).to_have_text(["Any candidate", *(p.stem for p in candidates)])
        # "Any candidate" first: the second picker says so, and the draw waits for Fight.
        expect(page.locator("#arena-first")).to_have_value(reference.stem)
        expect(page.locator("#arena-second")).to_have_value("")
        expect(page.locator("#arena-second option").first).to_have_text("Any candidate")
        # One candidate chosen sets the second picker; a candidate picked there, the other.
        page.select_option("#arena-candidate", candidates[1].stem)
        expect(page.locator("#arena-second")).to_have_value(candidates[1].stem)
        page.select_option("#arena-second", candidates[0].stem)
        expect(page.locator("#arena-candidate")).to_have_value(candidates[0].stem)
        expect(page.locator("#arena-comparison")).to_have_value(comparison)
        page.select_option("#arena-candidate", "")

        fought = _fight_and_vote(page, served)
        assert reference.stem in fought
        drawn = next(model for model in fought if model != reference.stem)
        assert drawn in klds
        _expect_kld(page, drawn, f"KLD {kld_text(klds[drawn])} vs F16")
        _expect_kld(page, reference.stem, None)
