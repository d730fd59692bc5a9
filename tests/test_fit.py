"""Fit formulas: the KV cache by hand, the breakdown, devices and the CLI answer."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from scheda.cli import app
from scheda.errors import UsageError
from scheda.formulas import fit, hardware
from scheda.formulas.fit_report import fit_report
from scheda.resolve import resolve
from scheda.spec import ModelSpec

runner = CliRunner()
MiB = 1 << 20


def test_kv_cache_formula_on_the_embedded_model(smollm: ModelSpec) -> None:
    # 2 (K, V) x 30 layers x 3 KV heads x 64 dims x 2048 positions x 2 bytes = 45 MiB,
    # the figure llama.cpp prints for this model at n_ctx 2048.
    assert fit.kv_cache_bytes(smollm, 2048) == 2 * 30 * 3 * 64 * 2048 * 2 == 45 * MiB
    assert fit.kv_cache_bytes(smollm, 2048, batch=4) == 4 * 45 * MiB


def test_gqa_shrinks_the_kv_cache_by_its_group() -> None:
    llama2_70b, llama3_70b = resolve("llama-2-70b"), resolve("llama-3-70b")
    # Same layers and head dim, 8 KV heads each: the same cache; an MHA twin would be 8x.
    assert fit.kv_cache_bytes(llama2_70b, 4096) == fit.kv_cache_bytes(llama3_70b, 4096)
    mha = resolve("llama-2-13b")
    assert fit.kv_cache_bytes(mha, 4096) == 2 * 40 * 40 * 128 * 4096 * 2


def test_sliding_window_caps_mistral_kv_cache() -> None:
    mistral = resolve("mistral-7b")
    assert fit.kv_cache_bytes(mistral, 32768) == fit.kv_cache_bytes(mistral, 4096)
    assert fit.kv_cache_bytes(mistral, 2048) < fit.kv_cache_bytes(mistral, 4096)


def test_encoders_have_no_kv_cache(minilm: ModelSpec) -> None:
    assert fit.kv_cache_bytes(minilm, 512) == 0


def test_weights_at_each_precision(smollm: ModelSpec) -> None:
    n, vectors = smollm.parameters, smollm.vector_parameters
    assert n is not None and vectors is not None
    assert fit.weight_bytes(smollm, "file") == smollm.tensor_bytes
    assert fit.weight_bytes(smollm, "FP32") == n * 4
    assert fit.weight_bytes(smollm, "FP16/BF16") == (n - vectors) * 2 + vectors * 4
    # Q8_0 is 34 bytes per 32 weights: 8.5 bits, not 8.
    assert fit.weight_bytes(smollm, "Q8_0") == round((n - vectors) * 8.5 / 8 + vectors * 4)
    sizes = [fit.weight_bytes(smollm, p) for p in ("FP32", "FP16/BF16", "Q8_0", "Q4_K_M", "Q4_0")]
    assert sizes == sorted(sizes, reverse=True)


def test_breakdown_adds_up(smollm: ModelSpec) -> None:
    b = fit.estimate(smollm, "file", 2048)
    assert b.total == b.weights + b.kv_cache + b.compute_buffer + b.output_buffer + b.runtime
    assert b.output_buffer == 49152 * 4  # one row of logits, as llama.cpp reserves
    # llama.cpp reserves a 16.64 MiB compute buffer for this model at 2048 (its log).
    assert abs(b.compute_buffer - 16.64 * MiB) < 0.5 * MiB
    # For a small model the engine's own buffers are not negligible beside the weights.
    assert b.engine > 0.2 * b.weights


def test_rule_of_thumb_for_a_7b_model() -> None:
    spec = resolve("llama-2-7b")
    assert fit.rule_of_thumb_bytes(spec, "FP16/BF16") == round(6.738415616 * 2.5e9)
    assert fit.rule_of_thumb_bytes(spec, "Q4_0") is None


def test_longest_context_is_the_largest_that_fits(smollm: ModelSpec) -> None:
    budget = fit.estimate(smollm, "file", 4096).total
    longest = fit.longest_context(smollm, "file", budget)
    assert longest == 4096
    assert fit.estimate(smollm, "file", longest + 256).total > budget
    assert fit.longest_context(smollm, "file", 1 * MiB) is None
    assert fit.longest_context(smollm, "file", 10 * 2**30) == 8192


def test_llama_3_70b_on_a_t4_says_nothing_fits_and_what_would() -> None:
    result = runner.invoke(app, ["fit", "llama-3-70b", "--gpu", "t4"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "nothing fits" in out
    assert "It would fit:" in out and "A100 40GB at Q4_0" in out  # at 4,096, the default
    assert "Models that fit here at Q4_K_M: qwen1.5-14b" in out  # the largest first
    assert "llama-3-70b," not in out


def test_fit_json_reports_devices_and_alternatives() -> None:
    result = runner.invoke(app, ["fit", "llama-3-70b", "--gpu", "t4", "--json"])
    data = json.loads(result.stdout)
    assert [p["precision"] for p in data["precisions"]] == [
        "FP32",
        "FP16/BF16",
        "Q8_0",
        "Q4_K_M",
        "Q4_0",
    ]
    assert data["devices"][0]["device"] == "t4"
    assert not any(data["devices"][0]["fits"].values())
    assert data["alternatives"]["smallest_precision"] == "Q4_0"
    names = [d["device"] for d in data["alternatives"]["devices_that_fit"]]
    assert "a100-40" in names and "t4" not in names


def test_fit_with_a_memory_budget_and_host(smollm: ModelSpec) -> None:
    report = fit_report(smollm, 8192, 1, [hardware.custom(0.3)])
    fits = report.devices[0].fits
    assert fits["Q4_0"] and not fits["FP32"]
    host = hardware.host()
    assert 0 < host.usable <= host.memory


def test_host_memory_is_what_psutil_says() -> None:
    import psutil

    total, available = hardware._memory()  # /proc/meminfo on Linux, psutil's source there
    memory = psutil.virtual_memory()
    assert total == memory.total
    assert abs(available - memory.available) < 2**30  # it moves while other processes run


def test_devices_by_name() -> None:
    assert [d.key for d in hardware.find("a100")] == ["a100-40", "a100-80"]
    assert hardware.find("4090")[0].key == "rtx-4090"
    assert hardware.find("T4")[0].memory == 16 * 2**30
    assert hardware.find("apple-32")[0].usable == int(32 * 2**30 * 0.75)
    with pytest.raises(UsageError, match="unknown GPU"):
        hardware.find("voodoo2")
    with pytest.raises(UsageError):
        hardware.custom(-1)


def test_fit_markdown_has_the_breakdown_table() -> None:
    result = runner.invoke(app, ["fit", "qwen1.5-7b", "--context", "4096", "--markdown"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("| precision | weights | KV cache | engine buffers | total |")
