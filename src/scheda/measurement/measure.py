"""Measure the memory llama.cpp really uses for a model at a context.

Each measurement runs in a fresh child process (`python -m scheda.measurement.measure
PATH CONTEXT`), so that nothing else in the process muddies the figure: the
resident memory after loading the model and decoding a few tokens (which
touches every weight page of the memory map and the buffers), minus the
resident memory just before loading.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil

from scheda.errors import EngineError

MEASURE_TIMEOUT_S = 300


def measure(path: Path, context: int) -> int:
    """Bytes the engine added to a fresh process to load the model at this context."""
    command = [sys.executable, "-m", "scheda.measurement.measure", str(path), str(context)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=MEASURE_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise EngineError(
            f"measuring {path} at context {context} took over {MEASURE_TIMEOUT_S} s"
        ) from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise EngineError(f"measuring {path} at context {context} failed: {last}")
    return int(json.loads(done.stdout.strip().splitlines()[-1])["bytes"])


def _child(path: str, context: int) -> None:
    # Imported before the baseline, as any user of the engine has them.
    import xllamacpp  # noqa: F401

    import scheda.engines.llamacpp  # noqa: F401
    from scheda.engines import open_model
    from scheda.sampling import Sampling

    process = psutil.Process()
    before = process.memory_info().rss
    engine = open_model(Path(path), "llama.cpp", context=context, warmup=True)
    engine.generate("The capital of Italy is", Sampling(max_tokens=4, temperature=0))
    after = process.memory_info().rss
    print(
        json.dumps({"context": context, "before": before, "after": after, "bytes": after - before})
    )
    engine.close()


if __name__ == "__main__":
    try:
        _child(sys.argv[1], int(sys.argv[2]))
    except Exception as exc:  # reported to the parent as one line
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
