"""The soak's two-minute version: `benchmarks/soak.py` against a real `scheda serve`.

The half-hour run is recorded in docs/benchmarks.md; here the same script runs
for two minutes with its clocks scaled down (a burst over the queue every 20 s,
the second model, not loaded, asked for every 25 s), and what must hold at any length
is asserted: no status or error beyond the documented 503s, no session message
lost, a request for a model that had been unloaded answered, and the server's
resident memory after the warm-up within 5% of its start. The latency
windows of a two-minute run hold too few requests for a p99 to mean
anything; the long run checks them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SOAK = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"

# slow: two minutes of traffic is the point of it; one worker of `pytest -n` runs it once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("soak")]


# For the session: `pytest -n` may run another module's tests between these on their worker,
# which would end a module's fixture, and the soak would run twice.
@pytest.fixture(scope="session")
def soak(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("soak") / "soak.json"
    done = subprocess.run(
        [sys.executable, str(SOAK), "--minutes", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "120"},
        check=False,
    )
    assert out.exists(), f"the soak wrote nothing:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def test_no_status_or_error_beyond_the_documented_503(soak: dict[str, Any]) -> None:
    verdicts = soak["verdicts"]
    assert verdicts["failure_count"] == 0, verdicts["failures"]
    assert set(verdicts["by_status"]) <= {"200", "503"}
    # Every kind of request was sent, and the bursts overflowed the queue.
    assert set(verdicts["by_kind"]) >= {"chat_stream", "tools", "echo", "session_hangup", "burst"}
    assert verdicts["refused_503"] > 0


def test_no_session_message_is_lost(soak: dict[str, Any]) -> None:
    verdicts = soak["verdicts"]
    assert verdicts["sessions"] >= 5
    assert verdicts["lost_messages"] == []


def test_a_model_not_loaded_is_loaded_on_request_every_time(soak: dict[str, Any]) -> None:
    """The second model, unloaded after each of its requests (`POST /models/unload`), was
    loaded again by the next: once per request, warm-up included, and never an error."""
    verdicts = soak["verdicts"]
    assert verdicts["cold_requests"] >= 3
    assert verdicts["by_kind_and_status"].get("cold 200") == verdicts["cold_requests"]
    assert verdicts["loads"]["other"] == verdicts["cold_requests"] + 1


def test_resident_memory_stays_within_5_percent_after_warm_up(soak: dict[str, Any]) -> None:
    memory = soak["verdicts"]["memory"]
    assert memory["ratio"] is not None, memory
    assert abs(memory["ratio"] - 1) <= 0.05, memory
