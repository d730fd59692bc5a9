"""Choices scored together against one at a time: wall time and the numbers both give.

    .venv/bin/python benchmarks/choices_batching.py [--data DIR] [--items 200]
        [--shots 0] [--out docs/choices_batching.json]

Multiple choice whose answers are several tokens long (ARC, HellaSwag, MMLU's
answer texts rather than its letters): every choice of a question is scored
after the same context. The items here are MMLU test rows with the answer
*texts* as the choices (" Paris", " Rome", ...), the shape of lm-eval's
continuation-style tasks; `--items` of them, taken evenly from every subject.

For each scorer (the embedded GGUF through llama.cpp, and its converted HF
folder through transformers), the same items are scored twice in one process,
alternating item by item so that a slow spell of the machine falls on both:

- together: `Scorer.choices`, which decodes a question's choices in one batch
  (llama.cpp: one sequence per choice, each a copy of the context's KV;
  transformers: the context's cache repeated along the batch);
- one at a time: the base class's `branches`, each choice decoded after the
  context on its own, the context's KV reused.

The JSON keeps each scorer's wall times, the speed-up, the mean and largest
difference in a choice's total log-likelihood between the two ways, how many
answers differ, and, for the GGUF, how far each way's totals are from the
float32 folder's (neither way should be nearer).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from scheda.evaluation.scorer import Scored, Scorer, open_scorer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mmlu"


@dataclass
class Item:
    context: str
    choices: list[str]
    answer: int


def read_items(data: Path, count: int) -> list[Item]:
    """`count` MMLU rows spread over the subjects, answer texts as the choices."""
    files = sorted(data.glob("*_test.csv"))
    if not files:
        sys.exit(f"no <subject>_test.csv in {data}: pass --data with the MMLU CSV folder")
    per_subject = max(1, -(-count // len(files)))
    items: list[Item] = []
    for path in files:
        subject = path.name.removesuffix("_test.csv").replace("_", " ")
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [r for r in csv.reader(handle) if len(r) == 6][:per_subject]
        for question, *choices, letter in rows:
            items.append(
                Item(
                    f"The following is a question about {subject}.\n\n"
                    f"Question: {question.strip()}\nAnswer:",
                    [" " + c.strip() for c in choices],
                    "ABCD".index(letter.strip()),
                )
            )
    return items[:count]


def one_at_a_time(scorer: Scorer, context: str, choices: list[str]) -> list[Scored]:
    """`choices` with the base class's branches: each choice decoded on its own."""
    pairs = [scorer.split(context, c) for c in choices]
    heads = {tuple(whole[:start]) for whole, start in pairs}
    if len(heads) == 1:
        head = list(next(iter(heads)))
        return Scorer.branches(scorer, head, [whole[start:] for whole, start in pairs])
    return [scorer.score(whole, start) for whole, start in pairs]


def compare(scorer: Scorer, items: list[Item], label: str) -> dict[str, Any]:
    walls = {"together": 0.0, "one_at_a_time": 0.0}
    totals: dict[str, list[float]] = {"together": [], "one_at_a_time": []}
    differ = 0
    tokens = 0
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    ) as bar:
        task = bar.add_task(label, total=len(items))
        for number, item in enumerate(items):
            results: dict[str, list[Scored]] = {}
            # Alternate which goes first, so that neither always finds the context warm.
            order = ["together", "one_at_a_time"]
            if number % 2:
                order.reverse()
            for way in order:
                scorer.score(scorer.tokenize("A cold start."), 1)  # neither reuses the last item
                start = time.perf_counter()
                if way == "together":
                    results[way] = scorer.choices(item.context, item.choices)
                else:
                    results[way] = one_at_a_time(scorer, item.context, item.choices)
                walls[way] += time.perf_counter() - start
            a, b = results["together"], results["one_at_a_time"]
            for way, scored in results.items():
                totals[way].extend(x.total for x in scored)
            pick = [max(range(len(r)), key=lambda i, r=r: r[i].total) for r in (a, b)]
            differ += pick[0] != pick[1]
            tokens += sum(len(s.logprobs) for s in a)
            bar.advance(task)
    gaps = gaps_between(totals["together"], totals["one_at_a_time"])
    return {
        "items": len(items),
        "choices": len(gaps),
        "choice_tokens": tokens,
        "wall_s": walls,
        "speedup": walls["one_at_a_time"] / walls["together"],
        "mean_total_difference_nats": sum(gaps) / len(gaps),
        "max_total_difference_nats": max(gaps),
        "answers_differ": differ,
        "totals": totals,  # per choice, in item order; dropped from the JSON
    }


def gaps_between(a: list[float], b: list[float]) -> list[float]:
    return [abs(x - y) for x, y in zip(a, b, strict=True)]


def against_float32(gguf: dict[str, Any], hf: dict[str, Any]) -> dict[str, float]:
    """How far the GGUF's totals are from float32's, each way: is either way nearer?"""
    reference = hf["totals"]["together"]
    return {
        way: sum(g := gaps_between(gguf["totals"][way], reference)) / len(g)
        for way in ("together", "one_at_a_time")
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MMLU CSV folder")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "choices_batching.json")
    args = parser.parse_args(argv)
    from scheda.files.convert import convert
    from scheda.resolve import default_model_path

    items = read_items(args.data, args.items)
    console = Console()
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "hf"
        convert(default_model_path(), folder)
        for name, path in (
            ("llama.cpp (GGUF Q4_1)", default_model_path()),
            ("transformers", folder),
        ):
            with open_scorer(path, context=2048) as scorer:
                runs[name] = compare(scorer, items, name)
    gguf, hf = runs["llama.cpp (GGUF Q4_1)"], runs["transformers"]
    gguf["mean_total_difference_from_float32_nats"] = against_float32(gguf, hf)
    for run in runs.values():
        del run["totals"]
    table = Table(title="Choices together against one at a time", title_justify="left")
    columns = ("scorer", "items", "together", "one at a time", "speed-up", "mean |Δ|", "max |Δ|")
    for column in (*columns, "differ"):
        table.add_column(column, justify="left" if column == "scorer" else "right")
    for name, r in runs.items():
        table.add_row(
            name,
            str(r["items"]),
            f"{r['wall_s']['together']:.1f} s",
            f"{r['wall_s']['one_at_a_time']:.1f} s",
            f"{r['speedup']:.2f} ×",
            f"{r['mean_total_difference_nats']:.4f}",
            f"{r['max_total_difference_nats']:.4f}",
            str(r["answers_differ"]),
        )
    console.print(table)
    console.print(
        "GGUF totals against float32's, mean |Δ| in nats: "
        + ", ".join(
            f"{k} {v:.4f}" for k, v in gguf["mean_total_difference_from_float32_nats"].items()
        )
    )
    from importlib import metadata

    report = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "python": sys.version.split()[0],
        },
        "versions": {p: metadata.version(p) for p in ("llama_cpp_python", "torch", "transformers")},
        "runs": runs,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
