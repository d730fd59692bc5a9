"""Is an item's log-likelihood a function of the item alone? Bit for bit, not to a tolerance.

    .venv/bin/python benchmarks/scorer_history.py [--data DIR] [--limit 4] [--threads 1,2]

The same items are scored by llama.cpp's scorer in three histories, in one process:

- in order: as `scheda eval` scores them, each subject's items one after another, so
  that each reuses the cache of the one before it;
- reversed: the same items last to first, so that each follows another item;
- cold: each item after an unrelated text, so that nothing of it is in the cache.

Then once more in order with each thread count of `--threads`, against the first.
The items are MMLU questions (5-shot, one next-token distribution per question) and a
few questions whose answers are several tokens long (each answer decoded after the
question in a sequence of its own). For each history the script prints how many items
got other figures than in order, and the largest difference in nats: 0 and 0.0 mean
identical to the last bit (docs/benchmarks.md has the figures before and after).
`--block N` sets the scorer's longest block, to try others.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scheda.evaluation.multiple_choice import MMLU
from scheda.evaluation.scorer_llamacpp import LlamaCppScorer
from scheda.resolve import default_model_path

SUBJECTS = ["astronomy", "marketing", "virology"]
LONG = [
    ("Question: Which of these animals lives in the sea?\nAnswer:", [" the octopus", " a camel"]),
    ("Question: What do plants need to make food?\nAnswer:", [" sunlight and water", " rocks"]),
    ("Question: Which is a mammal?\nAnswer:", [" a shark", " a dog that barks", " a trout"]),
]
COLD = "Something else entirely, to push every item's tokens out of the cache."

Figures = list[tuple[float, ...]]


def cases(data: Path, limit: int) -> list[tuple[str, list[str]]]:
    items = MMLU(limit=limit, data_dir=data, subjects=SUBJECTS).items()
    mmlu = [(i.data["context"], [" A", " B", " C", " D"]) for i in items]
    return mmlu + LONG


def score(scorer: LlamaCppScorer, todo: list[tuple[str, list[str]]], cold: bool) -> Figures:
    out = []
    for context, choices in todo:
        if cold:
            scorer.score(scorer.tokenize(COLD), 1)
        out.append(tuple(s.total for s in scorer.choices(context, choices)))
    return out


def compare(name: str, want: Figures, got: Figures) -> None:
    differ = [i for i, (a, b) in enumerate(zip(want, got, strict=True)) if a != b]
    gap = max(
        (abs(x - y) for a, b in zip(want, got, strict=True) for x, y in zip(a, b, strict=True)),
        default=0.0,
    )
    print(f"{name:>22}: {len(differ)} of {len(want)} items differ, largest gap {gap:.3g} nats")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/mmlu"))
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--block", type=int, default=0, help="the scorer's block (0: its own)")
    args = parser.parse_args()
    todo = cases(args.data, args.limit)
    threads = [int(t) for t in args.threads.split(",")]
    path = default_model_path()
    with LlamaCppScorer(path, context=2048, threads=threads[0]) as scorer:
        if args.block:
            scorer.block = args.block
        print(f"block {getattr(scorer, 'block', None)}, {len(todo)} items")
        in_order = score(scorer, todo, cold=False)
        reverse = score(scorer, todo[::-1], cold=False)[::-1]
        compare("reversed", in_order, reverse)
        compare("cold", in_order, score(scorer, todo, cold=True))
    for n in threads[1:]:
        with LlamaCppScorer(path, context=2048, threads=n) as scorer:
            if args.block:
                scorer.block = args.block
            compare(f"{threads[0]} vs {n} threads", in_order, score(scorer, todo, cold=False))


if __name__ == "__main__":
    main()
