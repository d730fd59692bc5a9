"""What some tests need from outside the project: the benchmark data beside it, a browser.

Where it is missing they skip, saying what to install or where to put it. In CI (the `CI`
variable set, as `.ci/run` does) they fail instead: CI must run every test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The shared benchmark data: $SCHEDA_TEST_DATA, or ../shared/data beside the project.
SHARED_DATA = Path(
    os.environ.get("SCHEDA_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
MMLU_DIR = SHARED_DATA / "mmlu"
GSM8K_DIR = SHARED_DATA / "gsm8k"


def unavailable(reason: str) -> None:
    """Skip, saying why; in CI, fail."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this test must run)")
    pytest.skip(reason)


def require(*paths: Path, what: str) -> None:
    """Every path exists, or the test cannot run."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        unavailable(
            f"{what} not found at {missing[0]}: set SCHEDA_TEST_DATA to the folder "
            "that holds mmlu/ and gsm8k/"
        )
