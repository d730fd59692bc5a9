"""Generated answers several at once against one at a time: questions per second, same answers.

    .venv/bin/python benchmarks/eval_batching.py [--tasks gsm8k,bbh] [--items 32]
        [--parallel 8] [--rounds 2] [--data DIR] [--out docs/eval_batching.json]

The tasks whose answers are generated (GSM8K, BBH, MATH, SQuAD, DROP, QuAC)
hand their prompts to `evaluation/generation.generate_all`. This runs each
task's first `--items` items (the task's own prompts, greedy decoding) on the
embedded model four ways per round, in one process, the order turned each round:

- `slots, 1`: llama.cpp's server engine with 1 slot, the items answered in turn
  (how `scheda eval` answered before the prefix was shared);
- `slots, P`: the same engine with `--parallel` slots, the items in flight together;
- `shared prefix, 1` and `shared prefix, P`: `BatchGenerator`
  (evaluation/generation_llamacpp.py), what `scheda eval` now uses for a GGUF:
  the few-shot prefix decoded once and shared, 1 or `--parallel` answers at once.

No side pays for the few-shot prefix in its timing: both engines are loaded, and
each of their slots has answered one of the task's last items (so it holds the
prefix, as it does after the first few questions of a real run), before any is
timed; the generator decodes its prefix once per call, and that time
(`BatchGenerator.prefix_seconds`) is taken out of its figure. It reports
questions per second each way, the speed-ups, and how many answers are
identical to one at a time on the slots. Greedy decoding gives the same answer
every way unless a near tie between two tokens falls differently: llama.cpp's
batched computation is not bit-identical to a single sequence's.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from importlib import metadata
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
    """Wall seconds to answer every item (less any prefix the generator decoded), and each
    item's generated text."""
    generator = model.generator()
    before = generator.prefix_seconds if generator else 0.0
    start = time.perf_counter()
    texts = {r.key: str(r.detail.get("generation", r.detail)) for r in task.run(items, model)}
    seconds = time.perf_counter() - start
    return seconds - ((generator.prefix_seconds - before) if generator else 0.0), texts


def measure(name: str, args: argparse.Namespace, path: Path) -> dict[str, Any]:
    task = make_task(name, None, None, args.data)
    items = task.items()[: args.items]
    p = args.parallel
    models = {
        "slots, 1": EvalModel(path, parallel=1, shared_prefix=False),
        f"slots, {p}": EvalModel(path, parallel=p, shared_prefix=False),
        "shared prefix, 1": EvalModel(path, parallel=1),
        f"shared prefix, {p}": EvalModel(path, parallel=p),
    }
    try:
        # Load every side, and give every slot the task's shared few-shot prefix, before
        # timing any: a whole run of hundreds of items pays that once per slot.
        for model in models.values():
            list(task.run(task.items()[-model.parallel :], model))
        times: dict[str, list[float]] = {way: [] for way in models}
        texts: dict[str, dict[str, str]] = {}
        for round_ in range(args.rounds):
            order = list(models) if round_ % 2 == 0 else list(reversed(models))
            for way in order:
                seconds, texts[way] = answers(task, items, models[way])
                times[way].append(seconds)
                print(f"{name} round {round_ + 1}: {way}: {seconds:.1f} s", file=sys.stderr)
    finally:
        for model in models.values():
            model.close()
    median = {way: statistics.median(times[way]) for way in models}
    one = "slots, 1"
    return {
        "task": name,
        "items": len(items),
        "parallel": p,
        "seconds": times,
        "questions_per_s": {way: len(items) / median[way] for way in models},
        "speedup_over_slots_1": {way: median[one] / median[way] for way in models},
        "speedup_over_shared_1": median["shared prefix, 1"] / median[f"shared prefix, {p}"],
        "identical_to_slots_1": {
            way: sum(texts[one][k] == texts[way][k] for k in texts[one]) for way in models
        },
        "answer_chars": {way: _chars(texts[way]) for way in models},
    }


def _chars(texts: dict[str, str]) -> int:
    """The answers' total length in characters (answers that differ differ in length too)."""
    return sum(len(t) for t in texts.values())


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
    p = args.parallel
    table = Table(title=f"generated answers, {p} at once against 1 (medians)")
    for column in ("task", "items", "way", "q/s", "over slots, 1", "identical", "chars"):
        table.add_column(column, justify="left" if column in ("task", "way") else "right")
    for r in results:
        for way, rate in r["questions_per_s"].items():
            table.add_row(
                r["task"],
                str(r["items"]),
                way,
                f"{rate:.2f}",
                f"{r['speedup_over_slots_1'][way]:.2f}x",
                f"{r['identical_to_slots_1'][way]}/{r['items']}",
                str(r["answer_chars"][way]),
            )
        print(f"{r['task']}: shared prefix, {p} over its own 1: {r['speedup_over_shared_1']:.2f}x")
    Console().print(table)
    machine = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "llama_cpp_python": metadata.version("llama_cpp_python"),
        "xllamacpp": metadata.version("xllamacpp"),
    }
    out = {"model": path.name, "machine": machine, "results": results}
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
