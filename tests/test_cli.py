"""The installed command, as a user runs it: `scheda` and `python -m scheda`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCHEDA = Path(sys.executable).parent / "scheda"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": str(SCHEDA.parent), "COLUMNS": "160", "HF_HUB_OFFLINE": "1"},
    )


def test_console_script_prints_the_default_card() -> None:
    done = run(str(SCHEDA), "card", "default")
    assert done.returncode == 0, done.stderr
    assert "134,515,008" in done.stdout and "GQA, 9 heads over 3 KV heads (group 3)" in done.stdout
    assert done.stderr == ""  # llama.cpp's log stays out of the terminal


def test_python_dash_m_lists_the_commands() -> None:
    done = run(sys.executable, "-m", "scheda", "--help")
    assert done.returncode == 0
    for command in ("card", "fit", "tokens", "catalog"):
        assert command in done.stdout


def test_catalog_lists_every_row() -> None:
    done = run(str(SCHEDA), "catalog")
    assert done.returncode == 0
    assert "llama-3-70b" in done.stdout and "deepseek-coder-33b" in done.stdout


def test_unknown_option_is_a_usage_error_not_a_traceback() -> None:
    done = run(str(SCHEDA), "fit", "default", "--context", "-5")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "context" in done.stderr
