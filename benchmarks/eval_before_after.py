"""`scheda eval` from two source trees, side by side: a change measured against the code before it.

    .venv/bin/python benchmarks/eval_before_after.py --baseline SRC [--model default]
        [--tasks mmlu,gsm8k] [--limit 2] [--data DIR] [--rounds 3]
        [--out docs/eval_before_after.json]

`SRC` is a checkout of the code before the change (`git archive BEFORE src | tar -x -C SRC`);
its `src/` is put first on the path, so the same installed libraries run both. Each round runs
both trees, one after the other (the order alternates each round, so a slow spell of the
machine falls on both alike), each a whole `scheda eval` process timed from start to exit in a
data folder of its own (nothing resumed). The figures: the median wall time per tree, their
ratio, and whether both trees stored the same per-item results (they must: the change is a
refactoring).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_once(src: Path | None, args: argparse.Namespace) -> tuple[float, list[tuple[Any, ...]]]:
    """One `scheda eval` process: its wall time and the per-item results it stored."""
    with tempfile.TemporaryDirectory() as data_dir:
        env = {**os.environ, "SCHEDA_DATA_DIR": data_dir}
        if src is not None:
            env["PYTHONPATH"] = str(src / "src")
        command = [sys.executable, "-m", "scheda", "eval", args.model, "--tasks", args.tasks]
        command += ["--limit", str(args.limit), "--json"]
        if args.data:
            command += ["--data", str(args.data)]
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True, cwd=ROOT)
        elapsed = time.perf_counter() - start
        return elapsed, stored_items(Path(data_dir))


def stored_items(data_dir: Path) -> list[tuple[Any, ...]]:
    """Every item result in the data folder's evaluation store, in a stable order."""
    rows: list[tuple[Any, ...]] = []
    for path in sorted(data_dir.glob("*.sqlite*")):
        if path.suffix not in (".sqlite", ".sqlite3"):
            continue
        with sqlite3.connect(path) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "results" in tables:  # run ids differ from run to run: the items do not
                query = "SELECT key, grp, metrics FROM results ORDER BY key"
                rows += [tuple(r) for r in db.execute(query)]
    return rows


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--baseline", type=Path, required=True, help="the source tree before")
    cli.add_argument("--model", default="default")
    cli.add_argument("--tasks", default="mmlu")
    cli.add_argument("--limit", type=int, default=2)
    cli.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    cli.add_argument("--rounds", type=int, default=3)
    cli.add_argument("--out", type=Path, default=ROOT / "docs" / "eval_before_after.json")
    args = cli.parse_args()

    times: dict[str, list[float]] = {"after": [], "before": []}
    items: dict[str, list[tuple[Any, ...]]] = {}
    trees = {"after": None, "before": args.baseline}
    for round_ in range(args.rounds):
        order = ["after", "before"] if round_ % 2 == 0 else ["before", "after"]
        for name in order:
            elapsed, stored = run_once(trees[name], args)
            times[name].append(elapsed)
            items.setdefault(name, stored)
            print(f"round {round_ + 1} {name}: {elapsed:.1f} s", flush=True)
    after, before = statistics.median(times["after"]), statistics.median(times["before"])
    result = {
        "machine": {"cpu_count": os.cpu_count(), "arch": platform.machine()},
        "python": platform.python_version(),
        "command": f"scheda eval {args.model} --tasks {args.tasks} --limit {args.limit}",
        "rounds": args.rounds,
        "seconds": times,
        "median_after_s": after,
        "median_before_s": before,
        "after_over_before": after / before,
        "same_items": items["after"] == items["before"],
        "items": len(items["after"]),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"after {after:.1f} s, before {before:.1f} s: {after / before:.3f}x;"
        f" same per-item results: {result['same_items']} ({result['items']} items)"
    )


if __name__ == "__main__":
    main()
