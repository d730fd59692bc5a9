"""The long fuzzing run: schemathesis against a live `scheda serve`, from its own description.

    .venv/bin/python benchmarks/fuzz_api.py [--minutes 10] [--context 256]
        [--checks not_a_server_error,status_code_conformance] [--seed N]

Run from the project's root. The server serves the embedded model (one slot,
`--context` tokens) and the MiniLM folder, behind an API key, in a process of its
own with a fresh data folder. schemathesis reads `/openapi.json` and runs its
coverage phase (each field's edges, each documented status), then its fuzzing
phase until the time is spent; generated answers are capped at a few tokens by
tests/openapi_hooks.py, so the time goes on cases rather than on decoding.
tests/test_openapi.py is the one-minute version in the suite.

It passes when no case gets a server error or a status the description does not
list, and the server's log holds no traceback (a traceback there is a bug in
scheda; a client's mistake is one line). The answer statuses the server logged
are tallied at the end.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import minilm_folder  # noqa: E402
from tests.serving import Server  # noqa: E402

KEY = "sk-fuzz"
LOG_LINE = re.compile(r"^([A-Z]+) \S.* (\d{3}) ")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--checks", default="not_a_server_error,status_code_conformance")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fuzz-api-") as folder:
        data = Path(folder)
        server = Server(
            ["default", str(minilm_folder()), "--parallel", "1", "--context", str(args.context)],
            data,
            api_key=KEY,
        )
        try:
            started = time.monotonic()
            code = fuzz(server, args, data)
            print(f"\nschemathesis: exit {code} after {time.monotonic() - started:.0f} s")
        finally:
            server.stop()
        log = server.log.read_text(errors="replace")
    tally = collections.Counter(
        f"{m.group(1)} {m.group(2)}" for line in log.splitlines() if (m := LOG_LINE.match(line))
    )
    print("error answers the server logged:", dict(sorted(tally.items())) or "none")
    if "Traceback" in log:
        print("the server's log holds a traceback (a bug in scheda):\n" + log[-6000:])
        return 1
    return code


def fuzz(server: Server, args: argparse.Namespace, data: Path) -> int:
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json",
        "--header", f"Authorization: Bearer {KEY}",
        "--phases", "coverage,fuzzing",
        "--checks", args.checks,
        "--max-time", str(int(args.minutes * 60)),
        "--request-timeout", "120",
        "--workers", "1",
        "--suppress-health-check", "all",
    ]  # fmt: skip
    if args.seed is not None:
        command += ["--seed", str(args.seed)]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.openapi_hooks",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(command, cwd=data, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
