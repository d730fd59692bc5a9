"""`scheda` as a user runs it, in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_scheda(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`python -m scheda ARGS` in `env` (the whole environment), its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "scheda", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


def scheda(*args: str, data: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m scheda ARGS` with its stores in `data`; RAY_ADDRESS is left out, so that
    `--ray` means what the command line says (a test names its cluster's address itself)."""
    env = {**os.environ, "SCHEDA_DATA_DIR": str(data)}
    env.pop("RAY_ADDRESS", None)
    return run_scheda(*args, env=env, timeout=timeout)
