"""`scheda compare --ray`: the candidates measured side by side on Ray workers.

On the session's local cluster (`ray_cluster` in conftest): the embedded model's F16 is
the reference, its Q8_0 and the embedded Q4_1 itself the two candidates, each measured
on a worker of its own against the reference's distributions, computed once by the
driver into the logit cache. Every figure equals a plain comparison's, bit for bit; only
the pass's timing (and where it ran) may differ.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scheda.evaluation.compare import Comparison, load_text, run_compare, run_evals
from scheda.stores.evals import EvalStore
from tests.commands import scheda
from tests.conftest import COMPARE_CONTEXT as CONTEXT
from tests.conftest import SCIENCE

pytestmark = pytest.mark.ray

pytest.importorskip("ray", reason="Ray is not installed: run `make install-ray`")

# What a pass took, where and on how many threads, and whether the reference was read
# back from the cache: not figures of the models.
RUN_FACTS = ("pass", "cached")


@pytest.fixture(scope="module")
def models(smollm_quants: dict[str, Path], smollm_path: Path) -> list[Path]:
    """The reference, then the two candidates."""
    return [smollm_quants["F16"], smollm_quants["Q8_0"], smollm_path]


@pytest.fixture(scope="module")
def plain(
    models: list[Path], text_file: Path, cache_dir: Path, tmp_path_factory: Any
) -> Comparison:
    """The same comparison without Ray, llama.cpp on every core (each worker has one), with
    a store as the command has (no stored runs: each candidate's accuracy is None)."""
    store = EvalStore(tmp_path_factory.mktemp("compare-ray-store") / "evals.sqlite3")
    try:
        text = load_text(text_file)
        return run_compare(models[0], models[1:], text, CONTEXT, bench_runs=0, store=store)
    finally:
        store.close()


def figures(record: Comparison) -> list[dict[str, object]]:
    return [{k: v for k, v in row.items() if k not in RUN_FACTS} for row in record["rows"]]


def test_candidates_on_workers_give_the_plain_figures(
    ray_cluster: Any, models: list[Path], text_file: Path, plain: Comparison, tmp_path: Path
) -> None:
    moved: list[tuple[str, int, int]] = []
    store = EvalStore(tmp_path / "evals.sqlite3")
    record = run_compare(
        models[0],
        models[1:],
        load_text(text_file),
        CONTEXT,
        bench_runs=0,
        threads=1,
        store=store,
        progress=lambda what, done, total: moved.append((what, done, total)),
        ray=ray_cluster,
    )
    store.close()
    assert figures(record) == figures(plain)
    assert record["rows"][0]["cached"]  # the reference was not computed again
    chunks = record["text"]["chunks"]
    for row, path in zip(record["rows"][1:], models[1:], strict=True):
        assert row["path"] == str(path)
        timing = row["pass"]
        assert timing is not None
        assert timing["threads"] == 1 and timing["tokens_evaluated"] > 0
        assert (path.name, chunks, chunks) in moved  # each candidate's bar ends full


def test_cli_compares_on_a_cluster_joined_by_address(
    ray_cluster: Any, models: list[Path], text_file: Path, plain: Comparison, tmp_path: Path
) -> None:
    address = ray_cluster.get_runtime_context().gcs_address
    args = [*map(str, models), "--text", str(text_file), "-c", str(CONTEXT), "--no-bench"]
    done = scheda("compare", *args, "--threads", "1", "--ray", address, "--json", data=tmp_path)
    assert done.returncode == 0, done.stderr
    as_printed = json.loads(json.dumps(plain, default=str))  # as --json prints a record
    assert figures(json.loads(done.stdout)) == figures(as_printed)


def test_tasks_run_on_workers_store_what_a_run_here_stores(
    ray_cluster: Any, models: list[Path], science_jsonl: Path, tmp_path: Path
) -> None:
    """`--tasks` with --ray: a candidate's eval run dealt out to two workers, stored as
    `scheda eval` stores it, with the figures of the same run here."""
    results = {}
    for where, ray, workers in (("here", None, None), ("ray", ray_cluster, 2)):
        store = EvalStore(tmp_path / f"{where}.sqlite3")
        try:
            tasks = [str(science_jsonl)]
            run_evals(store, models[1:2], tasks, None, None, 1, lambda _: None, ray, workers)
            [run] = store.runs()
            assert run.finished is not None and run.path == str(models[1])
            results[where] = sorted((r.key, r.metrics, r.detail) for r in store.results(run.id))
        finally:
            store.close()
    assert len(results["ray"]) == len(SCIENCE)
    assert results["ray"] == results["here"]


def test_workers_without_ray_is_one_line(models: list[Path], tmp_path: Path) -> None:
    done = scheda("compare", *map(str, models), "--workers", "2", data=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "error: --workers is for --ray: give --ray too, or leave --workers out"
    )
