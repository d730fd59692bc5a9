"""`make run` on a fresh clone with empty caches: seconds until the studio answers.

Clones the project into a temporary folder, points uv's and pip's caches at empty folders
(so every wheel is downloaded again, as on a new machine), runs `make run`, and polls the
URL it prints until the studio's page answers 200. Prints the time of each step as the
Makefile runs it and the total, then stops the server. Run it from the project root:

    python3 benchmarks/make_run.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600


def one_run() -> tuple[float, list[tuple[float, str]]]:
    with tempfile.TemporaryDirectory(prefix="scheda-make-run-") as tmp:
        work = Path(tmp)
        subprocess.run(["git", "clone", "-q", str(ROOT), str(work / "clone")], check=True)
        env = {
            **os.environ,
            "UV_CACHE_DIR": str(work / "uv-cache"),
            "PIP_NO_CACHE_DIR": "1",
        }
        start = time.perf_counter()
        process = subprocess.Popen(
            ["make", "run"],
            cwd=work / "clone",
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        steps: list[tuple[float, str]] = []
        url = None
        try:
            assert process.stdout is not None
            for line in process.stdout:
                steps.append((time.perf_counter() - start, line.rstrip()[:100]))
                found = re.search(r"studio: (http://\S+)", line)
                if found:
                    url = found.group(1)
                    break
            if url is None:
                raise RuntimeError("make run ended without printing the studio's URL")
            while time.perf_counter() - start < TIMEOUT_S:
                try:
                    with urllib.request.urlopen(url, timeout=5) as answer:
                        if answer.status == 200:
                            return time.perf_counter() - start, steps
                except OSError:
                    time.sleep(0.1)
            raise RuntimeError(f"{url} did not answer in {TIMEOUT_S} s")
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
            shutil.rmtree(work / "clone", ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    totals = []
    for i in range(runs):
        total, steps = one_run()
        totals.append(total)
        print(f"run {i + 1}: {total:.1f} s to the studio's first answer")
        for at, line in steps:
            print(f"  {at:6.1f} s  {line}")
    print(f"median of {runs}: {statistics.median(totals):.1f} s")


if __name__ == "__main__":
    main()
