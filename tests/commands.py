"""`scheda` as a user runs it, in a process of its own, for the tests of `--ray` commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def scheda(*args: str, data: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m scheda ARGS` with its stores in `data`; RAY_ADDRESS is left out, so that
    `--ray` means what the command line says (a test names its cluster's address itself)."""
    env = {**os.environ, "SCHEDA_DATA_DIR": str(data)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "scheda", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
