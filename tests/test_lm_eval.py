"""lm-evaluation-harness's `local-completions` against `scheda serve`, with its remote tokenizer.

lm-eval scores multiple choice by sending each context + choice as token ids
with `echo` and `logprobs`, and reads the prompt's log-probabilities back; it
tokenizes through the server's `/tokenizer_info`, `/tokenize` and
`/detokenize`, with no tokenizer files of its own. On the same items it must
reach the same accuracy as `scheda eval`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.needs import SHARED_DATA as SHARED
from tests.serving import Server

SUBJECT = "astronomy"
LIMIT = 6  # 24 requests of echoed log-probabilities: enough to tell two scorers apart

# lm-eval's MMLU prompt, written for a Jinja template (the CSV's columns are A-D).
DOC_TO_TEXT = r"{{question.strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\nAnswer:"

pytestmark = [pytest.mark.usefixtures("mmlu_data"), pytest.mark.slow]

# MMLU's lm-eval template over the local CSV (the original layout has no header).
TASK_YAML = """\
task: scheda_mmlu_{subject}
dataset_path: csv
dataset_kwargs:
  data_files:
    test: {csv}
  column_names: [question, A, B, C, D, answer]
test_split: test
output_type: multiple_choice
description: "The following are multiple choice questions (with answers) about {name}.\\n\\n"
doc_to_text: "{doc_to_text}"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: "{{{{['A', 'B', 'C', 'D'].index(answer.strip())}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


# lm-eval's own entry point, `simple_evaluate`, as `lm_eval --model local-completions
# --include_path TASKS --tasks NAME --limit N --num_fewshot 0` calls it, but with only the
# task here in its index: the command indexes its 14,000 bundled task files first (15 s).
HARNESS = """
import json, sys
import lm_eval
from lm_eval.tasks import TaskManager

tasks, model_args, task, limit = sys.argv[1:]
manager = TaskManager(include_path=tasks, include_defaults=False)
out = lm_eval.simple_evaluate(
    model="local-completions", model_args=model_args, tasks=[task], task_manager=manager,
    limit=int(limit), num_fewshot=0, log_samples=False,
)
print(json.dumps(out["results"][task]))
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(["default", "--parallel", "2"], tmp_path_factory.mktemp("lm-eval-serve"))
    yield server
    server.stop()


def test_lm_eval_local_completions_matches_scheda_eval(served: Server, tmp_path: Path) -> None:
    if importlib.util.find_spec("lm_eval") is None:
        pytest.fail("lm_eval is not installed: `make test` installs it with the test extra")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    csv = SHARED / "mmlu" / f"{SUBJECT}_test.csv"
    yaml = TASK_YAML.format(
        subject=SUBJECT, csv=csv, name=SUBJECT.replace("_", " "), doc_to_text=DOC_TO_TEXT
    )
    (tasks / f"scheda_mmlu_{SUBJECT}.yaml").write_text(yaml, encoding="utf-8")
    env = {
        **os.environ,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    model_args = (
        f"model=default,base_url={served.url}/v1/completions,tokenizer_backend=remote,"
        "num_concurrent=1,max_retries=1,tokenized_requests=True"
    )
    harness = subprocess.run(
        [sys.executable, "-c", HARNESS, str(tasks), model_args, f"scheda_mmlu_{SUBJECT}",
         str(LIMIT)],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert harness.returncode == 0, harness.stderr[-3000:]
    harness_acc = json.loads(harness.stdout.strip().splitlines()[-1])["acc,none"]

    one_subject = tmp_path / "mmlu-one"  # the same items: this subject's first LIMIT rows
    one_subject.mkdir()
    shutil.copy(csv, one_subject / csv.name)
    mine = subprocess.run(
        [sys.executable, "-m", "scheda", "eval", "default", "--tasks", "mmlu", "--shots", "0",
         "--limit", str(LIMIT), "--data", str(one_subject), "--json"],
        capture_output=True, text=True, env={**env, "SCHEDA_DATA_DIR": str(tmp_path)},
        timeout=600,
    )  # fmt: skip
    assert mine.returncode == 0, mine.stderr
    [summary] = json.loads(mine.stdout)["results"]
    assert summary["items"] == LIMIT
    assert summary["metrics"]["acc"]["value"] == pytest.approx(harness_acc, abs=1e-9)
