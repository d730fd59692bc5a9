"""BBH and AGIEval from the Hub: the datasets lm-eval reads, served on loopback, then offline.

Real records from the release files beside the project, written as parquet with
pyarrow and laid out as the Hub lays the datasets out: SaylorTwift/bbh with one
config per task (`<task>/test-00000-of-00001.parquet`), hails/agieval-<subset>
with one (`data/test-00000-of-00001.parquet`, its rows {query, choices, gold}).
The client's own code (`sources.hub_rows`, huggingface_hub underneath) fetches
them into the cache; the tasks made without --data read the same items as from
the release files; offline, with the Hub's copy gone, they come from the cache;
with no data anywhere, the command says so in one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scheda.errors import UsageError
from scheda.evaluation import agieval, bbh
from scheda.evaluation.runner import make_task
from scheda.evaluation.sources import hub_rows
from tests.commands import scheda
from tests.hub import DATASETS, Hub
from tests.needs import SHARED_DATA, require
from tests.test_eval_lm_eval_prompts import hails_row, release_rows

pytestmark = pytest.mark.hub

ROWS = 3  # served per task: the Hub's copy holds them all; a few are enough to compare


def hf_constants() -> Any:
    """huggingface_hub's settings, imported late: importing them at collection would read
    HF_HUB_OFFLINE and HF_HOME before the tests' isolation sets them, for every test."""
    from huggingface_hub import constants

    return constants


@pytest.fixture
def release() -> Path:
    require(SHARED_DATA / "bbh" / "tasks", SHARED_DATA / "agieval", what="BBH and AGIEval data")
    return SHARED_DATA


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Rows as one parquet file, as the Hub stores a split (a file: served as LFS, as there)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def serve_bbh(hub: Hub, folder: Path) -> dict[str, list[dict[str, Any]]]:
    """SaylorTwift/bbh: every task's first rows, from the release's tasks/<task>.json."""
    served = {}
    files: dict[str, Path | bytes] = {"README.md": b"---\nlicense: mit\n---\n"}
    for subtask in bbh.SUBTASKS:
        release = json.loads((SHARED_DATA / "bbh" / "tasks" / f"{subtask}.json").read_text())
        rows = release["examples"][:ROWS]
        name = f"{subtask}/test-00000-of-00001.parquet"
        files[name] = write_parquet(folder / name, rows)
        served[subtask] = rows
    hub.add_dataset(bbh.HUB_DATASET, files)
    return served


@pytest.mark.usefixtures("release")
def test_bbh_from_the_hub_then_offline(
    online_hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = serve_bbh(online_hub, tmp_path / "served")
    # The client's own code, one config: that task's rows, as served.
    assert hub_rows(bbh.source("navigate")) == served["navigate"]
    navigate = f"/datasets/{bbh.HUB_DATASET}/resolve/"
    assert {p.rsplit("/", 2)[-2] for _, p, _ in online_hub.requests(navigate)} == {"navigate"}

    task = make_task("bbh", None, 1, None)  # no --data: the Hub
    items = task.items()
    local = make_task("bbh", None, 1, SHARED_DATA)  # the release files
    assert [(i.key, i.data, i.group) for i in items] == [
        (i.key, i.data, i.group) for i in local.items()
    ]
    assert len(items) == 27
    assert task.config()["prompts"] == "shipped" and local.config()["prompts"] == "data"
    first = items[0]
    assert isinstance(task, bbh.BBH) and isinstance(local, bbh.BBH)
    assert task.prompt(first.group, first.data["input"]) == local.prompt(
        first.group, first.data["input"]
    )

    # Offline, and the Hub's copy gone: the cache alone.
    online_hub.log.clear()
    del online_hub.repos[DATASETS + bbh.HUB_DATASET]
    monkeypatch.setattr(hf_constants(), "HF_HUB_OFFLINE", True)
    again = make_task("bbh", None, 1, None)
    assert [i.data for i in again.items()] == [i.data for i in items]
    assert online_hub.requests() == [], "offline: nothing asked of the Hub"


@pytest.mark.usefixtures("release")
def test_agieval_from_the_hub(online_hub: Hub, tmp_path: Path) -> None:
    """hails/agieval-<subset>: rows in the datasets' shape, made from the release's lines by
    AGIEval's construction (tests/test_eval_lm_eval_prompts.py): the same items."""
    for subset in agieval.DEFAULT_SUBSETS:
        rows = [hails_row(line, subset) for line in release_rows(subset)[:ROWS]]
        name = "data/test-00000-of-00001.parquet"
        parquet = write_parquet(tmp_path / subset / name, rows)
        online_hub.add_dataset(agieval.HUB_PREFIX + subset, {name: parquet})
    task = make_task("agieval", None, ROWS, None)
    local = make_task("agieval", None, ROWS, SHARED_DATA)
    items = task.items()
    assert len(items) == 9 * ROWS
    assert [(i.key, i.data, i.group) for i in items] == [
        (i.key, i.data, i.group) for i in local.items()
    ]


def test_no_data_anywhere_is_one_line(online_hub: Hub, tmp_path: Path) -> None:
    """No --data and no SaylorTwift/bbh on the Hub: `scheda eval` says where the data would
    come from, in one line, before the model loads; offline, that the cache has none."""
    env_data = tmp_path / "scheda-data"
    done = scheda("eval", "default", "--tasks", "bbh", "--limit", "1", data=env_data, timeout=120)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    [message] = lines
    assert "the Hub has no dataset SaylorTwift/bbh" in message
    assert "--data DIR with BIG-Bench Hard's tasks/boolean_expressions.json" in message
    assert os.environ["HF_ENDPOINT"] == online_hub.url  # it asked the Hub on loopback

    with pytest.MonkeyPatch.context() as offline:
        offline.setattr(hf_constants(), "HF_HUB_OFFLINE", True)
        with pytest.raises(UsageError) as error:
            agieval.AGIEval(data_dir=tmp_path).items()  # a folder without the files
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("agieval: no data here: pass --data DIR with AGIEval's aqua-rat")
    assert "hails/agieval-aqua-rat from the Hugging Face Hub" in message
    assert "HF_HUB_OFFLINE is set, and the cache has none" in message
