"""Generated answers on parallel slots against one at a time: questions per second, same answers.

    .venv/bin/python benchmarks/eval_batching.py [--tasks gsm8k,bbh] [--items 32]
        [--parallel 8] [--rounds 2] [--data DIR] [--out docs/eval_batching.json]

The tasks whose answers are generated (GSM8K, BBH, MATH, SQuAD, DROP, QuAC)
hand their prompts to `evaluation/generation.generate_all`, which keeps
`parallel` of them in flight on llama.cpp's slots, so that its continuous
batching decodes them together. This runs each task's first `--items` items
(the task's own prompts, greedy decoding) on the embedded model twice per
round, in one process, alternating which goes first:

- one at a time: an engine with 1 slot, the items answered in turn;
- together: an engine with `--parallel` slots, the items in flight together.

Both engines are loaded, and each of their slots has answered one of the
task's last items (so it holds the few-shot prefix, as it does after the
first few questions of a real run), before either is timed. It reports
questions per second both ways, the speed-up, and how many answers
are identical. Greedy decoding gives the same answer both ways unless a near
tie between two tokens falls differently: llama.cpp's batched computation is
not bit-identical to a single sequence's, so a handful may differ.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from scheda import engines
from scheda.evaluation.base import EvalModel, Item, Task
from scheda.evaluation.runner import make_task

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"


def answers(task: Task, items: list[Item], model: EvalModel) -> tuple[float, dict[str, str]]:
    """Wall seconds to answer every item, and each item's generated text."""
    start = time.perf_counter()
    texts = {r.key: str(r.detail.get("generation", r.detail)) for r in task.run(items, model)}
    return time.perf_counter() - start, texts


def measure(name: str, args: argparse.Namespace, path: Path) -> dict[str, Any]:
    task = make_task(name, None, None, args.data)
    items = task.items()[: args.items]
    models = {
        1: EvalModel(path, parallel=1),
        args.parallel: EvalModel(path, parallel=args.parallel),
    }
    try:
        # Load both, and give every slot the task's shared few-shot prefix, before timing
        # either: a whole run of hundreds of items pays that once per slot.
        for slots, model in models.items():
            list(task.run(task.items()[-slots:], model))
        times: dict[int, list[float]] = {p: [] for p in models}
        texts: dict[int, dict[str, str]] = {}
        for round_ in range(args.rounds):
            order = list(models) if round_ % 2 == 0 else list(reversed(models))
            for slots in order:
                seconds, texts[slots] = answers(task, items, models[slots])
                times[slots].append(seconds)
                print(
                    f"{name} round {round_ + 1}: {slots} slot(s) {seconds:.1f} s", file=sys.stderr
                )
    finally:
        for model in models.values():
            model.close()
    one, many = (statistics.median(times[p]) for p in models)
    same = sum(texts[1][k] == texts[args.parallel][k] for k in texts[1])
    return {
        "task": name,
        "items": len(items),
        "parallel": args.parallel,
        "seconds_one_at_a_time": times[1],
        "seconds_together": times[args.parallel],
        "questions_per_s_one_at_a_time": len(items) / one,
        "questions_per_s_together": len(items) / many,
        "speedup": one / many,
        "identical_answers": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="gsm8k,bbh")
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "eval_batching.json")
    args = parser.parse_args()
    _, path = engines.choose(args.model)
    results = [measure(t.strip(), args, path) for t in args.tasks.split(",") if t.strip()]
    table = Table(title=f"generated answers, {args.parallel} slots against 1 (medians)")
    for column in ("task", "items", "q/s one", "q/s together", "speed-up", "identical"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for r in results:
        table.add_row(
            r["task"],
            str(r["items"]),
            f"{r['questions_per_s_one_at_a_time']:.2f}",
            f"{r['questions_per_s_together']:.2f}",
            f"{r['speedup']:.2f}x",
            f"{r['identical_answers']}/{r['items']}",
        )
    Console().print(table)
    machine = {"python": platform.python_version(), "machine": platform.machine()}
    args.out.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
