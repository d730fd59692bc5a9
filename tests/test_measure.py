"""The fit estimate against the memory llama.cpp really takes, on the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scheda.cli import app

MiB = 1 << 20
# The bar: within 10% of the measured figure, or 50 MiB, whichever is larger.
RELATIVE, ABSOLUTE = 0.10, 50 * MiB


@pytest.mark.slow
def test_estimate_within_tolerance_at_512_2048_and_8192(smollm_path: Path) -> None:
    result = CliRunner().invoke(app, ["fit", "default", "--measure", "--gpu", "host", "--json"])
    assert result.exit_code == 0, result.output
    measured = json.loads(result.stdout)["measured"]
    assert [m["context"] for m in measured] == [512, 2048, 8192]
    for m in measured:
        tolerance = max(RELATIVE * m["measured"], ABSOLUTE)
        assert abs(m["estimate"] - m["measured"]) <= tolerance, m
    # A longer context costs more memory, measured as well as estimated.
    assert measured[0]["measured"] < measured[1]["measured"] < measured[2]["measured"]
    # The KV cache alone grows by 2 x 30 x 3 x 64 x 2 bytes a position: the measured growth
    # from 2048 to 8192 is at least that.
    kv_growth = 2 * 30 * 3 * 64 * 2 * (8192 - 2048)
    assert measured[2]["measured"] - measured[1]["measured"] >= 0.9 * kv_growth


def test_measure_refuses_a_catalog_name() -> None:
    result = CliRunner().invoke(app, ["fit", "llama-3-8b", "--measure"])
    assert result.exit_code != 0
    assert "needs a .gguf file" in str(result.exception)
