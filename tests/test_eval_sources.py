"""A task's data from a folder or from the Hub's parquet files (evaluation/sources.py).

The Hub path runs against the loopback Hub, serving real records (GSM8K's and
MMLU's, from the data beside the project) as the Hub lays datasets out:
parquet files under the dataset's config. The client's own code downloads
them into the cache; a second load finds them there offline.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scheda.errors import UsageError
from scheda.evaluation.gsm8k import GSM8K
from scheda.evaluation.multiple_choice import MMLU
from scheda.evaluation.sources import Source, hub_rows, local_folder
from tests.hub import Hub
from tests.needs import SHARED_DATA

pytestmark = pytest.mark.usefixtures("gsm8k_data", "mmlu_data")

SOURCE = Source("demo", "demo.jsonl", "scheda-test/demo", "main", "test")


def hf_constants() -> Any:
    """huggingface_hub's settings, imported late: importing them at collection would read
    HF_HUB_OFFLINE and HF_HOME before the tests' isolation sets them, for every test."""
    from huggingface_hub import constants

    return constants


def parquet(rows: list[dict[str, object]]) -> bytes:
    """Rows as one parquet file, as the Hub stores a split."""
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), out)
    return out.getvalue()


def jsonl_rows(path: Path, count: int) -> list[dict[str, object]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line, _ in zip(f, range(count), strict=False)]


def test_a_folder_of_the_task_comes_before_the_folder_itself(tmp_path: Path) -> None:
    """DIR/<task> holding the files is the task's folder; DIR holding them is too; neither
    holding them means the Hub; DIR/<task> without them is the user's mistake, said."""

    def has_it(folder: Path) -> bool:
        return (folder / "demo.jsonl").is_file()

    assert local_folder(SOURCE, None, has_it) is None
    assert local_folder(SOURCE, tmp_path, has_it) is None  # nothing here: the Hub
    (tmp_path / "demo.jsonl").write_text("{}\n")
    assert local_folder(SOURCE, tmp_path, has_it) == tmp_path
    (tmp_path / "demo").mkdir()
    with pytest.raises(UsageError, match=r"demo: .*demo does not hold demo\.jsonl"):
        local_folder(SOURCE, tmp_path, has_it)
    with pytest.raises(UsageError, match=r"does not hold"):  # as `eval --data` hands it over
        local_folder(SOURCE, tmp_path / "demo", has_it)
    (tmp_path / "demo" / "demo.jsonl").write_text("{}\n")
    assert local_folder(SOURCE, tmp_path, has_it) == tmp_path / "demo"


def test_gsm8k_from_the_hub_then_offline(online_hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    """openai/gsm8k's real rows served as the Hub serves them: the task reads the same items
    and exemplars as from the release files, and again offline, from the cache."""
    train = jsonl_rows(SHARED_DATA / "gsm8k" / "train.jsonl", 50)
    test = jsonl_rows(SHARED_DATA / "gsm8k" / "test.jsonl", 5)
    online_hub.add_dataset(
        "openai/gsm8k",
        {
            "main/train-00000-of-00001.parquet": parquet(train),
            "main/test-00000-of-00001.parquet": parquet(test),
            "socratic/test-00000-of-00001.parquet": parquet(test[:1]),  # another config
            "README.md": b"---\nlicense: mit\n---\n",
        },
    )
    task = GSM8K(shots=3)
    items = task.items()
    assert [i.data for i in items] == [
        {"question": r["question"], "answer": r["answer"]} for r in test
    ]
    downloaded = {path for _, path, _ in online_hub.requests("/resolve/")}
    assert downloaded == {
        "/datasets/openai/gsm8k/resolve/" + online_hub.repos["datasets/openai/gsm8k"].commit + f
        for f in ("/main/train-00000-of-00001.parquet", "/main/test-00000-of-00001.parquet")
    }, "only the config's splits are fetched"
    exemplars = task.prefix()
    assert exemplars.startswith("Question: " + str(train[task.exemplar_indices[0]]["question"]))

    online_hub.log.clear()
    monkeypatch.setattr(hf_constants(), "HF_HUB_OFFLINE", True)
    again = GSM8K(shots=3)
    assert [i.data for i in again.items()] == [i.data for i in items]
    assert again.prefix() == exemplars
    assert online_hub.requests() == [], "offline: the cache alone"


def test_mmlu_from_the_hub_writes_the_release_layout(
    online_hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cais/mmlu's "all" config, rows of two real subjects: written once as the original CSVs
    (test/ and dev/) in scheda's cache, so the dev split gives the exemplars as in lm-eval."""
    monkeypatch.setenv("SCHEDA_CACHE_DIR", str(tmp_path / "cache"))
    rows: dict[str, list[dict[str, object]]] = {"test": [], "dev": []}
    for subject in ("astronomy", "virology"):
        with (SHARED_DATA / "mmlu" / f"{subject}_test.csv").open(encoding="utf-8") as f:
            records = list(csv.reader(f))[:8]
        for i, (question, a, b, c, d, answer) in enumerate(records):
            split = "dev" if i < 5 else "test"
            rows[split].append(
                {
                    "question": question,
                    "subject": subject,
                    "choices": [a, b, c, d],
                    "answer": "ABCD".index(answer),
                }
            )
    online_hub.add_dataset(
        "cais/mmlu",
        {f"all/{s}-00000-of-00001.parquet": parquet(r) for s, r in rows.items()},
    )
    task = MMLU(shots=2)
    assert task.subjects == ["astronomy", "virology"] and task.exemplar_source == "dev"
    items = task.items()
    assert len(items) == 6 and items[0].key == "astronomy/0"
    first = rows["dev"][0]
    assert f"{first['question']}\nA. " in str(items[0].data["context"])
    assert sorted(p.name for p in (tmp_path / "cache" / "data" / "mmlu" / "dev").iterdir()) == [
        "astronomy_dev.csv",
        "virology_dev.csv",
    ]


def test_a_gated_dataset_says_which_token_was_sent(
    online_hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    online_hub.add_dataset(
        "scheda-test/gated", {"main/test-00000-of-00001.parquet": b"x"}, gated=True
    )
    source = Source("demo", "demo.csv", "scheda-test/gated", "main")
    with pytest.raises(UsageError) as error:
        hub_rows(source)
    message = str(error.value)
    assert "gated" in message and "no token was sent" in message and "HF_TOKEN" in message
    assert "\n" not in message
    monkeypatch.setenv("HF_TOKEN", "hf_notgrantedabcd")
    with pytest.raises(UsageError, match=r"the token ending in \.\.\.abcd was sent"):
        hub_rows(source)


def test_no_data_anywhere_is_one_line(online_hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match=r"the Hub has no dataset scheda-test/demo") as error:
        hub_rows(SOURCE)
    assert "--data DIR with demo.jsonl" in str(error.value)
    monkeypatch.setattr(hf_constants(), "HF_HUB_OFFLINE", True)
    with pytest.raises(UsageError, match=r"no data here: pass --data DIR.*HF_HUB_OFFLINE is set"):
        hub_rows(SOURCE)
    online_hub.add_dataset(
        "scheda-test/demo", {"main/train-00000-of-00001.parquet": parquet([{"a": 1}])}
    )
    monkeypatch.setattr(hf_constants(), "HF_HUB_OFFLINE", False)
    with pytest.raises(UsageError, match=r"no parquet files for the test split"):
        hub_rows(SOURCE)
