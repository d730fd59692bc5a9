"""`scheda eval --ray`: a run dealt out to Ray workers, on a real local Ray cluster.

The session's cluster (`ray_cluster` in conftest: loopback only, started in this process
as `--ray` starts one). The runs are a few MMLU items on the embedded model, two workers
of one thread each; every figure is held against a plain run of the same items on every
core, item by item, bit for bit: the scorer's figures for an item depend neither on
the items a process scored before it nor on its thread count (tests/test_eval.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scheda.cli import ray_alone
from scheda.evaluation.base import EvalModel, ItemResult
from scheda.evaluation.distributed import item_tokens, run_on_ray, shards
from scheda.evaluation.multiple_choice import MMLU
from scheda.evaluation.runner import run_task
from scheda.stores.evals import EvalStore
from tests.commands import scheda
from tests.needs import SHARED_DATA as SHARED

pytestmark = pytest.mark.ray

ray = pytest.importorskip("ray")
needs_mmlu = pytest.mark.usefixtures("mmlu_data")
SUBJECTS = ["astronomy", "marketing", "virology"]


def mmlu() -> MMLU:
    return MMLU(limit=2, data_dir=SHARED, subjects=SUBJECTS, shots=1)  # a short shared prefix


@pytest.fixture(scope="module")
def plain(smollm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ItemResult]:
    """The same items scored in this process, as `scheda eval` without --ray scores them:
    llama.cpp on every core, where each worker has one thread."""
    store = EvalStore(tmp_path_factory.mktemp("plain") / "evals.sqlite3")
    model = EvalModel(smollm_path, context=2048)
    try:
        run, _ = run_task(mmlu(), model, store, "default")
        return {r.key: r for r in store.results(run.id)}
    finally:
        model.close()
        store.close()


def on_ray(
    store: EvalStore, smollm_path: Path, on_progress: Any = None
) -> tuple[Any, dict[str, Any]]:
    evaluator = EvalModel(smollm_path, context=2048, threads=1)
    return run_on_ray(ray, mmlu(), "default", evaluator, store, 2, on_progress)


def assert_same(store: EvalStore, run_id: str, plain: dict[str, ItemResult]) -> None:
    """Every item once, with the plain run's answers and its log-likelihoods, to the bit."""
    results = store.results(run_id)
    assert sorted(r.key for r in results) == sorted(plain)
    for r in results:
        want = plain[r.key]
        assert (r.group, r.metrics, r.detail) == (want.group, want.metrics, want.detail), r.key


@needs_mmlu
def test_shards_are_consecutive_and_balanced_by_tokens() -> None:
    items = MMLU(limit=20, data_dir=SHARED, subjects=SUBJECTS).items()
    cut = shards(items, 6)
    assert [i for shard in cut for i in shard] == items
    sizes = [sum(item_tokens(i) for i in shard) for shard in cut]
    assert len(cut) == 6 and max(sizes) < 1.5 * min(sizes)


@needs_mmlu
def test_two_workers_score_as_one_process_even_when_one_is_killed(
    ray_cluster: Any, plain: dict[str, ItemResult], smollm_path: Path, tmp_path: Path
) -> None:
    """A worker killed after the second result: its items go to the other, each scored
    once, and the run's figures are still the plain run's, bit for bit."""
    store = EvalStore(tmp_path / "evals.sqlite3")
    seen: list[int] = []
    killed: list[str] = []

    def kill_one(done: int, total: int) -> None:
        seen.append(done)
        if done == 2 and not killed:
            name = f"scheda-eval-{store.runs()[0].id}-1"  # the workers are named by run
            ray.kill(ray.get_actor(name))
            killed.append(name)

    run, summary = on_ray(store, smollm_path, kill_one)
    assert killed, "no worker was killed"
    assert seen == list(range(len(plain) + 1))  # one step per item, from nothing
    assert summary["items"] == len(plain) and set(summary["groups"]) == set(SUBJECTS)
    assert_same(store, run.id, plain)
    [listed] = store.runs()
    assert listed.id == run.id and listed.finished is not None  # as any run is listed
    store.close()


@needs_mmlu
def test_a_run_stopped_on_ray_resumes_here(
    ray_cluster: Any, plain: dict[str, ItemResult], smollm_path: Path, tmp_path: Path
) -> None:
    class Stop(Exception):
        pass

    def stop_after_three(done: int, total: int) -> None:
        if done == 3:
            raise Stop

    store = EvalStore(tmp_path / "evals.sqlite3")
    with pytest.raises(Stop):
        on_ray(store, smollm_path, stop_after_three)
    model = EvalModel(smollm_path, context=2048, threads=1)
    seen: list[int] = []
    try:
        run, _ = run_task(mmlu(), model, store, "default", lambda d, t: seen.append(d))
    finally:
        model.close()
    assert seen[0] == 3 and seen[-1] == len(plain)  # only the missing items, here
    assert_same(store, run.id, plain)
    store.close()


# -- the command -----------------------------------------------------------------------------


def test_cli_joins_a_cluster_by_its_address(
    ray_cluster: Any, science_jsonl: Path, tmp_path: Path
) -> None:
    path = science_jsonl
    address = ray.get_runtime_context().gcs_address
    args = ["--tasks", str(path), "--json"]
    ray_args = ["--ray", address, "--workers", "2", "--threads", "1"]
    done = scheda("eval", "default", *args, *ray_args, data=tmp_path)
    assert done.returncode == 0, done.stderr
    [summary] = json.loads(done.stdout)["results"]
    here = scheda("eval", "default", *args, data=tmp_path / "here")  # on every core
    [plain] = json.loads(here.stdout)["results"]
    assert plain["metrics"] == summary["metrics"]
    listed = scheda("eval", "list", "--json", data=tmp_path)
    assert [r["id"] for r in json.loads(listed.stdout)] == [summary["run"]]
    stores = [EvalStore(tmp_path / "evals.sqlite3"), EvalStore(tmp_path / "here" / "evals.sqlite3")]
    try:
        on, off = (s.results(r["run"]) for s, r in zip(stores, (summary, plain), strict=True))
        assert sorted((r.key, r.detail) for r in on) == sorted((r.key, r.detail) for r in off)
    finally:
        for store in stores:
            store.close()


def test_ray_alone_means_a_local_cluster() -> None:
    assert ray_alone(["eval", "m", "--ray"]) == ["eval", "m", "--ray", "local"]
    assert ray_alone(["eval", "m", "--ray", "--json"]) == ["eval", "m", "--ray", "local", "--json"]
    assert ray_alone(["eval", "m", "--ray", "h:6379"]) == ["eval", "m", "--ray", "h:6379"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ray", "127.0.0.1:9"], "--ray 127.0.0.1:9: no Ray cluster answers there"),
        (["--workers", "2"], "--workers is for --ray"),
    ],
)
def test_cli_bad_ray_options_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "q", "choices": ["a", "b"], "answer": 0}\n')
    done = scheda("eval", "default", "--tasks", str(path), *args, data=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().startswith(f"error: {message}")
    assert len(done.stderr.strip().splitlines()) == 1
