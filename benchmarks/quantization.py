"""Regenerate the "What quantization costs" tables of docs/benchmarks.md and docs/quantize.md.

    .venv/bin/python benchmarks/quantization.py [--work DIR] [--runs 3] [--mmlu-limit 1]

The embedded SmolLM2-135M-Instruct (Q4_1) is requantized by `scheda quantize` to
F32, F16 (the reference), Q8_0, Q6_K, Q4_K_M, Q3_K_M and Q2_K; `scheda compare`
then scores every file against F16:

1. on the English text scheda ships (GSM8K's first 60 test problems), with the
   bench columns (load, pp512, tg128; `--runs` rounds) and MMLU's accuracy
   delta (`--mmlu-limit` questions per subject, 5-shot, from the MMLU copy
   beside the project);
2. on the Italian articles the product grew from (the seeds beside the
   project, their YAML front matter left out; they are read here, never
   copied into the project), to see whether quantization costs more in Italian.

Both comparisons go to the evaluation store as usual, and to docs/compare.json;
the English one's chart to docs/compare.png. The Markdown tables are printed,
with the speed of each pass against the model's own pp512 and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scheda.display.render_compare import compare_chart, compare_markdown
from scheda.evaluation.compare import Comparison, load_text, run_compare
from scheda.files.quantize import quantize
from scheda.resolve import default_model_path
from scheda.stores.comparisons import ComparisonStore
from scheda.stores.evals import EvalStore

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SCHEDA_SHARED") or ROOT.parent / "shared")
TYPES = ["F16", "F32", "Q8_0", "Q6_K", "Q4_K_M", "Q3_K_M", "Q2_K"]
FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.DOTALL)


def italian_text(folder: Path, out: Path) -> Path:
    """The seeds' articles, front matter left out, one after another."""
    articles = [
        FRONT_MATTER.sub("", p.read_text(encoding="utf-8")).strip()
        for p in sorted(folder.glob("*.txt"))
    ]
    out.write_text("\n\n".join(articles) + "\n", encoding="utf-8")
    return out


def speed(record: Mapping[str, Any]) -> list[str]:
    """Each pass: tokens evaluated per second, against its decode alone, its engine's own
    prompt rate (the goal: at least 0.8x) and scheda bench's pp512 (xllamacpp's build)."""
    lines = []
    for row in record["rows"]:
        timing = row.get("pass") or {}
        if not timing.get("tokens_per_s") or row.get("cached"):
            continue
        pp = (row.get("bench") or {}).get("pp512")
        against = ""
        if timing.get("against_prompt_rate"):
            against += (
                f", {timing['against_prompt_rate']:.2f} x the engine's prompt rate "
                f"({timing['prompt_tokens_per_s']:.1f})"
            )
        if pp:
            against += f", {timing['tokens_per_s'] / pp:.2f} x scheda bench's pp512 ({pp:.1f})"
        lines.append(
            f"{Path(row['path']).name}: {timing['tokens_evaluated']:,} tokens in "
            f"{timing['seconds']:.1f} s = {timing['tokens_per_s']:.1f} tok/s; decode alone "
            f"{timing['decode_tokens_per_s']:.1f} tok/s "
            f"({timing['tokens_per_s'] / timing['decode_tokens_per_s']:.3f}){against}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "scheda-quants")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mmlu-limit", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    files = {}
    started = time.perf_counter()
    for t in TYPES:
        target = args.work / f"SmolLM2-135M-Instruct.{t}.gguf"
        if not target.is_file():
            quantize(
                default_model_path(), [t], args.work, allow_requantize=True, threads=args.threads
            )
        files[t] = target
    print(f"quantized in {time.perf_counter() - started:.1f} s")
    reference, candidates = files["F16"], [files[t] for t in TYPES[1:]]
    store = EvalStore()
    comparisons = ComparisonStore()
    records: dict[str, Comparison] = {}
    load = os.getloadavg()
    try:
        started = time.perf_counter()
        records["english"] = run_compare(
            reference,
            candidates,
            load_text(None),
            bench_runs=args.runs,
            threads=args.threads,
            store=store,
            tasks=["mmlu"] if args.mmlu_limit else None,
            limit=args.mmlu_limit,
            data=SHARED / "data" / "mmlu" if (SHARED / "data" / "mmlu").is_dir() else None,
            step=print,
        )
        comparisons.add(records["english"])
        print(f"english: {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        italian = italian_text(SHARED / "seeds", args.work / "articoli.txt")
        records["italian"] = run_compare(
            reference,
            candidates,
            load_text(italian),
            bench_runs=0,
            threads=args.threads,
            store=store,
        )
        comparisons.add(records["italian"])
        print(f"italian: {time.perf_counter() - started:.1f} s")
    finally:
        store.close()
        comparisons.close()
    print(f"load average before: {load}, after: {os.getloadavg()}")
    docs = ROOT / "docs"
    compare_chart(records["english"], docs / "compare.png")
    (docs / "compare.json").write_text(json.dumps(records, indent=1, default=str) + "\n")
    for name, record in records.items():
        print(f"\n## {name}\n")
        print(compare_markdown(record))
        print("\n".join(speed(record)))
    machine = records["english"]["machine"]
    print(f"\nmachine: {json.dumps(machine)}")


if __name__ == "__main__":
    main()
