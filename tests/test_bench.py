"""`scheda bench` on the embedded model: real runs, real processes, a real PNG."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scheda.bench import PP_TOKENS, prompt_of
from scheda.engines import open_model

SCHEDA = Path(sys.executable).parent / "scheda"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCHEDA), "bench", "default", "--runs", "1", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "COLUMNS": "140"},
    )


def figures(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_bench_against_the_engine_gives_json_and_a_chart(tmp_path: Path) -> None:
    chart = tmp_path / "bench.png"
    data = figures(bench("--vs", "engine", "--json", "--chart", str(chart)))
    by_name = {r["contender"]: r for r in data["results"]}
    assert set(by_name) == {"scheda", "engine"}
    for r in by_name.values():
        assert r["load_s"] > 0 and r["pp_tokens_per_s"] > 0 and r["tg_tokens_per_s"] > 0
        assert r["first_token_s"] > 0 and r["peak_rss_mib"] > 50
    assert data["ratios"]["engine"]["tg_tokens_per_s"] > 0
    assert data["cold_first_token_s"] > 0
    assert data["machine"]["versions"]["xllamacpp"]
    assert chart.read_bytes().startswith(PNG_MAGIC) and chart.stat().st_size > 10_000


def test_bench_table_names_each_figure() -> None:
    done = bench()
    assert done.returncode == 0, done.stderr
    for header in ("load", "first token", "pp512 tok/s", "tg128 tok/s", "peak memory"):
        assert header in done.stdout
    assert "cold start to first token" in done.stdout


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed (the evaluation extra builds it)",
)
def test_bench_against_llama_cpp_python() -> None:
    data = figures(bench("--vs", "llama-cpp-python", "--json"))
    assert data["ratios"]["llama-cpp-python"]["tg_tokens_per_s"] > 0


def test_bench_against_the_transformers_pipeline(smollm_hf: Path) -> None:
    data = figures(bench("--vs", "transformers", "--hf-folder", str(smollm_hf), "--json"))
    (hf,) = [r for r in data["results"] if r["contender"] == "transformers"]
    assert hf["tg_tokens_per_s"] > 0 and hf["first_token_s"] is None


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
