"""`scheda eval --ray` against a plain run, and two workers against one, side by side.

    .venv/bin/python benchmarks/eval_ray.py [--data DIR] [--subjects 12] [--limit 4]
        [--rounds 2] [--out docs/eval_ray.json]

The same MMLU items (5-shot, `--limit` per subject over the first `--subjects`
subjects, on the embedded model) are scored, each time into a new store:

- plain: `run_task` in this process, llama.cpp on every physical core;
- Ray, one worker on every core: `run_on_ray` on a local cluster (started once, as
  `--ray` starts one), one worker with as many threads: what Ray costs;
- Ray, two workers of half the cores each: what a second worker on the same cores gives;
- Ray, one worker of half the cores: the baseline two workers are judged against.

Each configuration runs `--rounds` times, round-robin, so that a slow spell of the
machine falls on all of them; a run is timed from the call to its summary, worker
start-up and model loads included. The figures of every run must be identical to the
plain run's, item by item (the script stops otherwise). Also measured: how many results
per second the driver's store commits (the limit of one driver, docs/scale.md), and
what one item costs on the driver besides (Ray's call and the store).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scheda.engines.cluster import connected
from scheda.evaluation.base import EvalModel, ItemResult
from scheda.evaluation.distributed import run_on_ray
from scheda.evaluation.multiple_choice import MMLU, mmlu_folder
from scheda.evaluation.runner import run_task
from scheda.formulas.hardware import physical_cores
from scheda.resolve import default_model_path
from scheda.stores.evals import EvalStore

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SCHEDA_TEST_DATA") or ROOT.parent / "shared" / "data")


def task(args: argparse.Namespace) -> MMLU:
    folder = mmlu_folder(args.data)
    subjects = sorted(p.name.removesuffix("_test.csv") for p in folder.glob("*_test.csv"))
    return MMLU(limit=args.limit, data_dir=folder, subjects=subjects[: args.subjects])


def timed(
    run: Callable[[EvalStore], Any], work: Path, name: str
) -> tuple[float, float, dict[str, Any]]:
    """Seconds from the call to the summary, this process's CPU seconds meanwhile (the
    driver's, on Ray), and the run's results by key."""
    store = EvalStore(work / f"{name}-{time.monotonic_ns()}.sqlite3")
    try:
        started, cpu = time.perf_counter(), time.process_time()
        done, _ = run(store)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        return seconds, cpu, {r.key: r for r in store.results(done.id)}
    finally:
        store.close()


def same(want: dict[str, ItemResult], got: dict[str, ItemResult], name: str) -> None:
    if sorted(want) != sorted(got):
        raise SystemExit(f"{name}: other items than the plain run's")
    for key, result in got.items():
        if result.detail != want[key].detail:
            raise SystemExit(f"{name}: {key} scored {result.detail}, plain {want[key].detail}")


def store_writes_per_second(work: Path, count: int = 2000) -> float:
    """Results committed per second by one driver, each in its own transaction."""
    store = EvalStore(work / "writes.sqlite3")
    try:
        run = store.start("m", Path("m.gguf"), "t", {}, count)
        detail = {"gold": 1, "pred": 2, "pred_norm": 2, "logliks": [-1.5, -2.5, -0.5, -3.5]}
        started = time.perf_counter()
        for i in range(count):
            store.add(run.id, ItemResult(f"subject/{i}", {"acc": 0.0}, detail, "subject"))
        return count / (time.perf_counter() - started)
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    path = default_model_path()
    cores = physical_cores()
    half = max(1, cores // 2)
    items = len(task(args).items())
    work = Path(tempfile.mkdtemp(prefix="scheda-eval-ray-"))

    def plain(store: EvalStore) -> Any:
        model = EvalModel(path, context=2048, threads=cores)
        try:
            return run_task(task(args), model, store, "default")
        finally:
            model.close()

    def on_ray(ray: Any, workers: int, threads: int) -> Callable[[EvalStore], Any]:
        def run(store: EvalStore) -> Any:
            model = EvalModel(path, context=2048, threads=threads)
            return run_on_ray(ray, task(args), "default", model, store, workers)

        return run

    seconds: dict[str, list[float]] = {}
    driver_cpu: dict[str, list[float]] = {}
    with connected(num_cpus=cores) as ray:
        configs: dict[str, Callable[[EvalStore], Any]] = {
            "plain": plain,
            f"Ray, 1 worker x {cores} threads": on_ray(ray, 1, cores),
            f"Ray, 2 workers x {half} thread(s)": on_ray(ray, 2, half),
            f"Ray, 1 worker x {half} thread(s)": on_ray(ray, 1, half),
        }
        reference: dict[str, ItemResult] = {}
        for round_ in range(args.rounds):
            for name, run in configs.items():
                took, cpu, results = timed(run, work, name.split(",")[0].replace(" ", "-"))
                reference = reference or results
                same(reference, results, name)
                seconds.setdefault(name, []).append(took)
                driver_cpu.setdefault(name, []).append(cpu)
                print(
                    f"round {round_ + 1}: {name}: {items} items in {took:.1f} s "
                    f"(this process's CPU {cpu:.1f} s)",
                    flush=True,
                )
    writes = store_writes_per_second(work)
    rows = {name: statistics.median(s) for name, s in seconds.items()}
    base = rows["plain"]
    print(f"\n{items} MMLU items (5-shot), {args.rounds} rounds, medians; {cores} cores")
    print("| run | wall time | items/s | against plain |")
    print("|---|---:|---:|---:|")
    for name, took in rows.items():
        print(f"| {name} | {took:.1f} s | {items / took:.2f} | {base / took:.2f} x |")
    two = rows[f"Ray, 2 workers x {half} thread(s)"]
    one = rows[f"Ray, 1 worker x {half} thread(s)"]
    print(f"\ntwo workers against one of the same threads: {one / two:.2f} x")
    for name, cpu in driver_cpu.items():
        if name != "plain":
            per = statistics.median(cpu) / items * 1000
            print(f"the driver's CPU per item, {name}: {per:.1f} ms")
    print(f"the driver's store: {writes:,.0f} results committed per second")
    if args.out:
        record = {
            "items": items,
            "rounds": args.rounds,
            "seconds": seconds,
            "median_seconds": rows,
            "driver_cpu_seconds": driver_cpu,
            "store_writes_per_s": writes,
            "machine": {"cores": cores, "python": platform.python_version()},
        }
        args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
