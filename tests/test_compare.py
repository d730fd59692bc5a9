"""`scheda compare`: the embedded model's F16 (the reference) against its Q8_0, on real text.

The figures are held to an independent computation from the scorer's raw logits
with numpy, on the same chunks as llama-perplexity cuts them. The text is the
start of the one scheda ships, at a small context, so that a pass takes seconds.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from scheda.errors import ModelFileError, UsageError
from scheda.evaluation.compare import DEFAULT_TEXT, Comparison, Text, load_text, run_compare
from scheda.evaluation.divergence import compare_chunk, compare_rows
from scheda.evaluation.logit_cache import ARRAYS, LogitCache, encode, encode_rows
from scheda.evaluation.scorer_llamacpp import LlamaCppScorer
from scheda.stores.comparisons import ComparisonStore
from scheda.stores.evals import EvalStore
from tests import test_studio as studio_tests
from tests.conftest import COMPARE_CONTEXT as CONTEXT
from tests.needs import GSM8K_DIR, require

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def record(
    smollm_quants: dict[str, Path], text_file: Path, cache_dir: Path, tmp_path_factory: Any
) -> Comparison:
    store = EvalStore(tmp_path_factory.mktemp("compare-store") / "evals.sqlite3")
    try:
        return run_compare(
            smollm_quants["F16"],
            [smollm_quants["Q8_0"]],
            load_text(text_file),
            context=CONTEXT,
            bench_runs=0,
            threads=2,
            store=store,
        )
    finally:
        store.close()


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    top = x.max(axis=1, keepdims=True)
    result: np.ndarray = x - top - np.log(np.exp(x - top).sum(axis=1, keepdims=True))
    return result


def _independent(reference: Path, candidate: Path, text: str) -> dict[str, Any]:
    """llama-perplexity's two-pass figures, from each model's raw logits with numpy alone."""
    rows: dict[str, list[np.ndarray]] = {"ref": [], "cand": []}
    targets = []
    for key, path in (("ref", reference), ("cand", candidate)):
        with LlamaCppScorer(path, CONTEXT, threads=2) as scorer:
            tokens = scorer.tokenize(text, add_special=True)
            count = len(tokens) // CONTEXT
            first = CONTEXT // 2
            for i in range(count):
                chunk = tokens[i * CONTEXT : (i + 1) * CONTEXT]
                rows[key].append(_log_softmax(scorer.chunk_logits(chunk, first)))
                if key == "ref":
                    targets.append(np.array(chunk[first + 1 :]))
    ref, cand, target = (np.concatenate(v) for v in (rows["ref"], rows["cand"], targets))
    at = np.arange(len(target))
    kld = (np.exp(ref) * (ref - cand)).sum(axis=1)
    dp = np.exp(cand[at, target]) - np.exp(ref[at, target])
    return {
        "scored": len(target),
        "ppl_ref": math.exp(-ref[at, target].mean()),
        "ppl": math.exp(-cand[at, target].mean()),
        "kld": kld,
        "same_top": float((ref.argmax(axis=1) == cand.argmax(axis=1)).mean()),
        "rms_dp": math.sqrt(float(np.mean(dp * dp))),
    }


def test_figures_equal_an_independent_computation(
    record: Comparison, smollm_quants: dict[str, Path], text_file: Path
) -> None:
    exact = _independent(smollm_quants["F16"], smollm_quants["Q8_0"], text_file.read_text())
    reference, candidate = record["rows"]
    assert record["text"]["scored"] == exact["scored"] == candidate["tokens"]
    assert record["text"]["chunks"] == record["text"]["tokens"] // CONTEXT >= 2
    # Perplexity, same top token and RMS Δp come from the raw logits: equal to rounding (the
    # normalizer's exponentials are float32, their sum float64: 1e-7 relative).
    assert reference["perplexity"]["value"] == pytest.approx(exact["ppl_ref"], rel=1e-7)
    assert candidate["perplexity"]["value"] == pytest.approx(exact["ppl"], rel=1e-7)
    ratio = exact["ppl"] / exact["ppl_ref"]
    assert candidate["perplexity_ratio"]["value"] == pytest.approx(ratio, rel=1e-7)
    assert candidate["same_top"]["value"] == pytest.approx(exact["same_top"], abs=1e-12)
    assert candidate["rms_delta_p"]["value"] == pytest.approx(exact["rms_dp"], rel=1e-6)
    # KLD: against the cached reference (log-probabilities kept to 2.4e-4 nats, the tokens
    # more than 16 nats below the top as one): within 0.1% of the full sum, and never above it.
    kld = candidate["kld"]
    assert kld["mean"] == pytest.approx(exact["kld"].mean(), rel=1e-3)
    assert kld["mean"] <= exact["kld"].mean() * (1 + 1e-6)
    assert kld["median"] == pytest.approx(np.median(exact["kld"]), rel=1e-2, abs=1e-6)
    assert kld["max"] == pytest.approx(exact["kld"].max(), rel=1e-2)
    assert kld["p99"] == pytest.approx(np.percentile(exact["kld"], 99), rel=1e-2)
    assert 0 < kld["uncertainty"] < kld["mean"]
    assert 0.5 < candidate["same_top"]["value"] <= 1


def test_the_reference_runs_once(
    record: Comparison, smollm_quants: dict[str, Path], text_file: Path, cache_dir: Path
) -> None:
    assert record["rows"][0]["cached"] is False
    again = run_compare(
        smollm_quants["F16"],
        [smollm_quants["Q8_0"]],
        load_text(text_file),
        context=CONTEXT,
        bench_runs=0,
        threads=2,
    )
    assert again["rows"][0]["cached"] is True
    for key in ("perplexity", "kld", "same_top", "rms_delta_p"):
        assert again["rows"][1][key] == record["rows"][1][key]
    # Compact: well under a third of float32 logits, nothing hidden left behind.
    cache = record["cache"]
    assert cache["bytes"] < 0.3 * record["text"]["scored"] * 49152 * 4
    folders = [p.name for p in (cache_dir / "logits").iterdir()]
    assert folders == [cache["key"]]
    other = LogitCache(smollm_quants["F16"], "llama.cpp", "another text", CONTEXT)
    assert not other.complete and other.key != cache["key"]


def test_rows_compared_in_threads_equal_one_pass_bit_for_bit(
    smollm_quants: dict[str, Path], text_file: Path
) -> None:
    """The reference's encoding and a candidate's comparison are split over threads by rows;
    every array they give is the one a single pass gives, to the last bit."""
    scorer = LlamaCppScorer(smollm_quants["Q8_0"], context=CONTEXT, threads=2)
    try:
        tokens = scorer.tokenize(text_file.read_text())[:CONTEXT]
        logits = np.array(scorer.chunk_logits(tokens, CONTEXT // 2 - 1))
    finally:
        scorer.close()
    targets = np.asarray(tokens[CONTEXT // 2 :])
    whole = encode(logits, targets)
    for parts in (2, 3):
        split = encode_rows(logits, targets, parts)
        for name in ARRAYS:
            assert np.array_equal(getattr(split, name), getattr(whole, name)), name
    candidate = logits[:, ::-1].copy()  # another distribution over the same vocabulary
    one = compare_chunk(candidate, whole, targets)
    many = compare_rows(candidate, whole, targets, parts=3)
    for field in ("nll", "kld", "same_top", "delta_p"):
        assert np.array_equal(getattr(many, field), getattr(one, field)), field
    assert one.kld.mean() > 1  # the reversed logits are far from the reference


def test_every_figure_says_how_it_was_obtained(record: Comparison) -> None:
    kinds = {key: how["kind"] for key, how in record["how"].items()}
    assert kinds["size"] == kinds["bits_per_weight"] == "read"
    assert kinds["memory"] == kinds["kld"] == kinds["perplexity"] == "computed"
    assert kinds["bench"] == kinds["pass"] == "measured"
    reference, candidate = record["rows"]
    assert reference["type"] == "F16" and candidate["type"] == "Q8_0"
    ref_bits, bits = reference["bits_per_weight"], candidate["bits_per_weight"]
    ref_size, size = reference["size"], candidate["size"]
    assert ref_bits is not None and bits is not None and ref_size is not None and size is not None
    assert ref_bits > 15 and 8 < bits < 9
    assert ref_size > size > 0
    assert reference["memory"] > candidate["memory"] > size
    assert "versions" in record["machine"]
    timing = candidate["pass"]
    assert timing is not None
    assert timing["tokens_evaluated"] == record["text"]["chunks"] * CONTEXT
    assert timing["decode_seconds"] <= timing["seconds"]


def _scheda(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheda", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200", **env},
    )


def test_cli_table_json_markdown_chart_and_list(
    smollm_quants: dict[str, Path],
    text_file: Path,
    cache_dir: Path,
    record: Comparison,
    tmp_path: Path,
) -> None:
    assert record["rows"][0]["cached"] is False  # the module's own pass made the cache
    env = {"SCHEDA_DATA_DIR": str(tmp_path / "data"), "SCHEDA_CACHE_DIR": str(cache_dir)}
    chart = tmp_path / "chart.png"
    models = [str(smollm_quants["F16"]), str(smollm_quants["Q8_0"])]
    options = ["--text", str(text_file), "--context", str(CONTEXT), "--no-bench"]
    done = _scheda("compare", *models, *options, "--json", "--chart", str(chart), env=env)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert [r["role"] for r in printed["rows"]] == ["reference", "candidate"]
    assert printed["rows"][0]["cached"] is True  # read back from the module's pass
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    listed = _scheda("compare", "list", "--json", env=env)
    assert [r["id"] for r in json.loads(listed.stdout)] == [printed["id"]]
    shown = _scheda("compare", "show", printed["id"][:4], "--markdown", env=env)
    assert shown.returncode == 0, shown.stderr
    header = shown.stdout.splitlines()[0]
    for column in ("model", "size", "bits/weight", "memory", "pp512", "PPL ratio", "KLD mean"):
        assert column in header
    assert "| SmolLM2-135M-Instruct.F16 (reference) | F16 |" in shown.stdout
    assert "kld: computed:" in shown.stdout and "size: read:" in shown.stdout
    table = _scheda("compare", "show", printed["id"], env=env)
    assert "What quantization costs" in table.stdout and "Q8_0" in table.stdout


def _one_line(done: subprocess.CompletedProcess[str], message: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def test_bad_input_is_one_line_and_leaves_nothing(
    smollm_quants: dict[str, Path], text_file: Path, tmp_path: Path, tiny_llama: Path
) -> None:
    cache = tmp_path / "cache"
    env = {"SCHEDA_DATA_DIR": str(tmp_path / "data"), "SCHEDA_CACHE_DIR": str(cache)}
    ref, cand = str(smollm_quants["F16"]), str(smollm_quants["Q8_0"])
    options = ["--text", str(text_file), "--context", str(CONTEXT), "--no-bench"]
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a model at all")
    _one_line(_scheda("compare", ref, str(fake), *options, env=env), "not a GGUF file")
    short = tmp_path / "short.txt"
    short.write_text("Janet's ducks lay 16 eggs per day.")
    done = _scheda("compare", ref, cand, "--text", str(short), "--no-bench", env=env)
    _one_line(done, "shorter than two chunks of --context 512")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("perché".encode("latin-1"))
    _one_line(_scheda("compare", ref, cand, "--text", str(latin1), env=env), "not UTF-8")
    done = _scheda("compare", ref, str(tiny_llama), *options, env=env)
    _one_line(done, "do not share a vocabulary")
    # Refused before any pass: no cache was begun, none half-written.
    assert not (cache / "logits").exists() or not any((cache / "logits").iterdir())
    assert json.loads(_scheda("compare", "list", "--json", env=env).stdout) == []


def test_the_reference_is_never_a_candidate(smollm_quants: dict[str, Path]) -> None:
    with pytest.raises(UsageError, match="named twice"):
        run_compare(smollm_quants["F16"], [smollm_quants["F16"]], load_text(None))
    with pytest.raises(ModelFileError, match="not a GGUF file or an HF model folder"):
        run_compare(smollm_quants["F16"], [Path("/nonexistent/model")], load_text(None))


def test_a_gguf_against_the_hf_folder_it_came_from(
    smollm_hf: Path, smollm_quants: dict[str, Path], text_file: Path, cache_dir: Path
) -> None:
    """transformers (float32 on the CPU) as the reference, llama.cpp's F16 file as the
    candidate: the same weights, so what is left is the two engines' arithmetic."""
    compared = run_compare(
        smollm_hf,
        [smollm_quants["F16"]],
        load_text(text_file),
        context=CONTEXT,
        bench_runs=0,
        threads=2,
    )
    reference, f16 = compared["rows"]
    assert reference["engine"] == "transformers" and f16["engine"] == "llama.cpp"
    assert reference["type"] == "F16"  # the folder's safetensors
    assert 0 < f16["kld"]["mean"] < 0.01 and f16["same_top"]["value"] > 0.9


def test_accuracy_delta_from_stored_eval_runs(
    smollm_quants: dict[str, Path], text_file: Path, cache_dir: Path, tmp_path: Path
) -> None:
    questions = tmp_path / "capitals.jsonl"
    rows = [
        ("The capital of France is", ["Paris", "Rome", "Berlin", "Madrid"], 0),
        ("The capital of Italy is", ["Paris", "Rome", "Berlin", "Madrid"], 1),
        ("The capital of Germany is", ["Paris", "Rome", "Berlin", "Madrid"], 2),
        ("The capital of Spain is", ["Paris", "Rome", "Berlin", "Madrid"], 3),
        ("Two plus two is", ["three", "four", "five", "six"], 1),
        ("Water freezes at zero degrees", ["Celsius", "Kelvin", "Rankine", "Newton"], 0),
    ]
    questions.write_text(
        "".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in rows)
    )
    store = EvalStore(tmp_path / "evals.sqlite3")
    try:
        compared = run_compare(
            smollm_quants["F16"],
            [smollm_quants["Q8_0"]],
            load_text(text_file),
            context=CONTEXT,
            bench_runs=0,
            threads=2,
            store=store,
            tasks=[str(questions)],
        )
        accuracy = compared["rows"][1]["accuracy"]
        assert accuracy is not None
        runs = {Path(r.path).name: r for r in store.runs()}
        assert accuracy["items"] == len(rows) and accuracy["task"] == "capitals"
        by_model = {
            name: {x.key: x.metrics["acc"] for x in store.results(run.id)}
            for name, run in runs.items()
        }
        ref = by_model[smollm_quants["F16"].name]
        cand = by_model[smollm_quants["Q8_0"].name]
        diffs = [cand[k] - ref[k] for k in ref]
        assert accuracy["delta"] == pytest.approx(sum(diffs) / len(diffs))
        assert accuracy["gained"] == sum(d > 0 for d in diffs)
        assert accuracy["lost"] == sum(d < 0 for d in diffs)
        assert accuracy["run"] == runs[smollm_quants["Q8_0"].name].id
    finally:
        store.close()


def test_a_quantization_arena_puts_the_comparison_beside_the_votes(
    record: Comparison, smollm_quants: dict[str, Path], tmp_path: Path
) -> None:
    """docs/arena.md's quantization arena: the reference against its quantized file, blind,
    in the terminal; then the leaderboard, with the KLD `scheda compare` measured beside
    the votes, matched by the file."""
    data = tmp_path / "data"
    with ComparisonStore(data / "evals.sqlite3") as comparisons:
        comparisons.add(copy.deepcopy(cast(dict[str, Any], record)))  # as `compare` stores it
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is two plus two?\nName a colour.\n", encoding="utf-8")
    reference, candidate = smollm_quants["F16"], smollm_quants["Q8_0"]
    env = {
        **os.environ,
        "SCHEDA_DATA_DIR": str(data),
        "SCHEDA_CACHE_DIR": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
    }
    scheda = [sys.executable, "-m", "scheda", "arena"]
    duel = subprocess.run(
        [*scheda, str(reference), str(candidate), "--prompts", str(prompts), "--max-tokens", "6"],
        input="a\nb\n",  # A is better, then B is better
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert duel.returncode == 0, duel.stderr
    board = subprocess.run(
        [*scheda, "leaderboard", "--json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert board.returncode == 0, board.stderr
    rows = {Path(r["path"]).name: r for r in json.loads(board.stdout)["standings"]}
    measured = record["rows"][1]["kld"]["mean"]
    assert rows[candidate.name]["kld"]["mean"] == pytest.approx(measured)
    assert rows[reference.name]["kld"] is None  # the reference is no comparison's candidate
    assert rows[candidate.name]["games"] == rows[reference.name]["games"] == 2


def test_the_shipped_text_is_gsm8ks_with_its_licence() -> None:
    require(GSM8K_DIR / "test.jsonl", what="GSM8K data")
    text = load_text(None)
    assert text.name == DEFAULT_TEXT and "MIT" in text.about
    lines = (GSM8K_DIR / "test.jsonl").read_text(encoding="utf-8").splitlines()
    problems = [json.loads(line) for line in lines[:60]]
    derived = "\n\n".join(
        p["question"].strip() + "\n" + re.sub(r"<<[^>]*>>", "", p["answer"]).strip()
        for p in problems
    )
    assert text.content == derived + "\n"
    licence = Path(sys.modules["scheda"].__file__ or "").parent / "texts" / "LICENSE-gsm8k.txt"
    assert "MIT License" in licence.read_text() and "OpenAI" in licence.read_text()
    assert isinstance(text, Text)


# -- the studio's tab ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[studio_tests.Server]:
    """`scheda serve default`, as the studio's own tests start it."""
    with studio_tests._serve(tmp_path_factory.mktemp("studio-data")) as running:
        yield running


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    sync_playwright = studio_tests._playwright()
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(studio_tests.CHROMIUM), args=studio_tests.CHROMIUM_ARGS
        )
        yield browser
        browser.close()


def _stored(server: studio_tests.Server, record: Comparison) -> str:
    with ComparisonStore(server.evals) as store:
        return store.add(cast(dict[str, Any], copy.deepcopy(record)))


def test_comparison_routes(served: studio_tests.Server, record: Comparison) -> None:
    import urllib.error

    comparison = _stored(served, record)
    listed = served.api("GET", "/api/comparisons")
    assert listed[0]["id"] == comparison
    assert listed[0]["largest_kld"] == record["rows"][1]["kld"]["mean"]
    whole = served.api("GET", f"/api/comparisons/{comparison[:5]}")
    assert whole["rows"][1]["kld"] == record["rows"][1]["kld"]
    with pytest.raises(urllib.error.HTTPError) as caught:
        served.api("GET", "/api/comparisons/nosuch")
    assert caught.value.code == 404
    caught.value.close()


def test_the_studio_shows_a_stored_comparison(
    chromium: Any, served: studio_tests.Server, record: Comparison, tmp_path: Path
) -> None:
    comparison = _stored(served, record)
    with studio_tests._studio_on(chromium, served.url) as studio:
        page = studio.page
        studio.open()
        page.click("#tab-compare")
        page.click("#compare-refresh")
        page.locator(f"#compare-list tr[data-comparison-id='{comparison}']").click()
        page.wait_for_selector(f"#compare-detail[data-comparison-id='{comparison}']")
        rows = page.locator("#compare-table tbody tr")
        assert rows.count() == 2
        assert rows.nth(0).get_attribute("data-role") == "reference"
        cells = [c.strip() for c in rows.nth(1).locator("td").all_inner_texts()]
        assert cells[0] == "Q8_0"
        assert cells[9].startswith(f"{record['rows'][1]['kld']['mean']:.5f} ± ")
        chart = page.locator("#compare-chart svg")
        assert chart.locator("circle.compare-point").count() == 2  # Q8_0 on both panels
        assert chart.locator(".compare-reference-line").count() == 1
        assert "size: read" in (page.locator("#compare-how").text_content() or "")
        studio_tests._save_screenshot(page, tmp_path, "studio-compare.png")
        page.reload()  # the URL names the comparison
        studio.ready()
        page.wait_for_selector(f"#compare-detail[data-comparison-id='{comparison}']")
        assert page.get_attribute("#tab-compare", "aria-selected") == "true"


def test_a_candidate_that_splits_the_text_otherwise_is_refused(smollm_path: Path) -> None:
    """The check after loading: same vocabulary size, yet other tokens (or other logits)."""
    from scheda.evaluation.compare import check_vocabulary
    from scheda.evaluation.scorer import open_scorer

    text = Text("t", "Janet's ducks lay 16 eggs per day.", "a short text")
    scorer = open_scorer(smollm_path, CONTEXT, None)
    try:
        plain = scorer.tokenize(text.content, add_special=False)
        check_vocabulary(scorer, "cand", "ref", plain, scorer.vocab_size, text)  # agrees
        other = [*plain[:3], plain[3] + 1, *plain[4:]]
        with pytest.raises(UsageError, match="split the text differently from token 3 on"):
            check_vocabulary(scorer, "cand", "ref", other, scorer.vocab_size, text)
        with pytest.raises(UsageError, match="logits over 49,152 tokens against 100"):
            check_vocabulary(scorer, "cand", "ref", plain, 100, text)
    finally:
        scorer.close()
