"""`scheda bench` on the embedded model: real runs, real processes, a real PNG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scheda.engines import open_model
from scheda.measurement.bench import PP_TOKENS, prompt_of

SCHEDA = Path(sys.executable).parent / "scheda"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def bench(*args: str, data: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`scheda bench default`, keeping its results in `data` (else storing none)."""
    store = ["--no-store"] if data is None else []
    return subprocess.run(
        [str(SCHEDA), "bench", "default", "--runs", "1", *store, *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "COLUMNS": "140", "SCHEDA_DATA_DIR": str(data or "")},
    )


def figures(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


@pytest.mark.slow
def test_bench_against_every_contender_gives_json_and_a_chart(
    smollm_hf: Path, tmp_path: Path
) -> None:
    """One run, every contender beside scheda: the engine called directly, llama-cpp-python
    (`make test` installs the evaluation extra, which builds it) and the transformers
    pipeline."""
    chart = tmp_path / "bench.png"
    contenders = ["engine", "llama-cpp-python", "transformers"]
    vs = [arg for name in contenders for arg in ("--vs", name)]
    # Small sizes: the test proves every contender runs and reports, not how fast.
    sizes = ("--pp", "128", "--tg", "32")
    data = figures(
        bench(*vs, *sizes, "--hf-folder", str(smollm_hf), "--json", "--chart", str(chart))
    )
    by_name = {r["contender"]: r for r in data["results"]}
    assert set(by_name) == {"scheda", *contenders}
    for name in ("scheda", "engine", "llama-cpp-python"):
        r = by_name[name]
        assert r["load_s"] > 0 and r["pp_tokens_per_s"] > 0 and r["tg_tokens_per_s"] > 0
        assert r["first_token_s"] > 0 and r["peak_rss_mib"] > 50
    hf = by_name["transformers"]
    assert hf["tg_tokens_per_s"] > 0 and hf["first_token_s"] is None  # the pipeline has no stream
    for name in contenders:
        assert data["ratios"][name]["tg_tokens_per_s"] > 0
    assert data["cold_first_token_s"] > 0
    assert (data["pp_tokens"], data["tg_tokens"]) == (128, 32)
    assert data["machine"]["versions"]["xllamacpp"]
    assert chart.read_bytes().startswith(PNG_MAGIC) and chart.stat().st_size > 10_000


@pytest.mark.slow
def test_bench_table_names_each_figure(tmp_path: Path) -> None:
    done = bench("--pp", "64", "--tg", "16", "--no-store", data=tmp_path)  # sizes name columns
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == []  # --no-store: nothing kept
    for header in ("load", "first token", "pp64 tok/s", "tg16 tok/s", "peak memory"):
        assert header in done.stdout
    assert "cold start to first token" in done.stdout


def test_an_unknown_contender_is_a_one_line_error() -> None:
    done = bench("--vs", "ollama")
    assert done.returncode == 2
    assert "--vs 'ollama': choose from engine, llama-cpp-python, transformers" in done.stderr


def test_prompts_have_the_asked_size_and_differ_per_run(smollm_path: Path) -> None:
    with open_model(smollm_path, "llama.cpp", context=1024) as engine:
        first = prompt_of(engine.count_tokens, PP_TOKENS, seed=1)
        second = prompt_of(engine.count_tokens, PP_TOKENS, seed=2)
        assert PP_TOKENS - 3 <= engine.count_tokens(first) <= PP_TOKENS
        assert first.split()[:5] != second.split()[:5]  # no shared prefix for the prompt cache
