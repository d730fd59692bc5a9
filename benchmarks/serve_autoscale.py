"""`scheda serve --ray --replicas MIN:MAX`: Serve's autoscaler adding a replica under load.

    .venv/bin/python benchmarks/serve_autoscale.py [--replicas 1:2] [--clients 4]
        [--max-tokens 700] [--every 5]

A real `scheda serve default --ray --replicas 1:2` (a local Ray cluster started by the
command; one slot and one thread per replica, so that each replica's target of ongoing
requests is one) gets `--clients` long answers at once; the script polls `/health`
every `--every` seconds and prints the replicas the server counts and what each holds,
until every answer is in. Serve's defaults decide when: it looks at the load every 10 s
and adds a replica after 30 s above the target. Scaling down (600 s after the load ends,
Serve's default) is not waited for.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.serving import Server  # noqa: E402 - the suite's own server helper

LONG = {
    "model": "default",
    "messages": [{"role": "user", "content": "Count to ten thousand."}],
    "ignore_eos": True,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", default="1:2")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=700)
    parser.add_argument("--every", type=float, default=5.0)
    args = parser.parse_args()

    started = time.monotonic()
    options = ["--ray", "--replicas", args.replicas, "--parallel", "1", "--threads", "1"]
    server = Server(
        ["default", *options, "--context", "1024"],
        Path(tempfile.mkdtemp(prefix="scheda-autoscale-")),
        start_timeout=400,
    )
    print(f"serving after {time.monotonic() - started:.0f} s", flush=True)
    answers: list[int] = []

    def ask() -> None:
        status, _ = server.request(
            "POST", "/v1/chat/completions", {**LONG, "max_tokens": args.max_tokens}
        )
        answers.append(status)

    clients = [threading.Thread(target=ask) for _ in range(args.clients)]
    try:
        for client in clients:
            client.start()
        begin = time.monotonic()
        most = 0
        while any(c.is_alive() for c in clients):
            replicas = server.request("GET", "/health")[1].get("replicas", {}).get("default", {})
            most = max(most, len(replicas))
            print(f"{time.monotonic() - begin:5.0f} s  {len(replicas)} replicas  "
                  f"{json.dumps(replicas)}", flush=True)  # fmt: skip
            time.sleep(args.every)
        print(f"answers: {sorted(answers)}; most replicas at once: {most}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
