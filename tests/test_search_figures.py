"""A search row's figures: each one's kind and source, on real stores, models and runs.

The embedded model's F16 and Q8_0 are compared and evaluated for real (a tiny JSONL task,
a small context), the results stored in a data folder of the module's own; a real
`scheda bench` with tiny sizes is stored and read back, and calibrates the prediction.
The figures are found by the files' SHA-256, as a search finds them from the Hub's listing.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from scheda.catalog import catalog_spec, lookup
from scheda.evaluation.compare import Comparison, load_text, run_compare
from scheda.files.digest import sha256
from scheda.formulas.hardware import physical_cores
from scheda.readers import read_spec
from scheda.resolve import default_model_path
from scheda.search import figures, speed
from scheda.stores.benches import BenchStore, fingerprint
from scheda.stores.comparisons import ComparisonStore
from scheda.stores.evals import EvalStore
from tests.conftest import COMPARE_CONTEXT

# -- llama.cpp's published table -------------------------------------------------------------

# Rows of llama.cpp's tools/perplexity/README.md (revision f364eb6f's scoreboard), quoted.
SCOREBOARD = """
| q8_0         | None    |             7.96 | 6.234284 ±   0.037878  | 0.002650 ±   0.001006  | 0.001355 ±   0.000006 | -0.019 ± 0.003 %  | 1.198 ± 0.007 %  |
| q5_K_M       | None    |             5.33 | 6.288607 ±   0.038338  | 0.056974 ±   0.002598  | 0.010762 ±   0.000079 | -0.114 ± 0.008 %  | 3.160 ± 0.031 %  |
| q4_K_M       | WT 10m  |             4.58 | 6.382937 ±   0.039055  | 0.151303 ±   0.004429  | 0.028152 ±   0.000240 | -0.389 ± 0.014 %  | 5.251 ± 0.049 %  |
| q4_K_M       | None    |             4.58 | 6.407115 ±   0.039119  | 0.175482 ±   0.004620  | 0.031273 ±   0.000238 | -0.596 ± 0.014 %  | 5.519 ± 0.050 %  |
| q3_K_S       | None    |             3.41 | 7.863786 ±   0.048885  | 1.632152 ±   0.017733  | 0.228217 ±   0.001079 | -5.604 ± 0.038 %  | 15.541 ± 0.070 % |
| q2_K         | None    |             2.96 | 9.751568 ±   0.063312  | 3.519934 ±   0.033863  | 0.445132 ±   0.001835 | -9.123 ± 0.051 %  | 21.421 ± 0.079 % |
"""  # noqa: E501
SAME_TOP = (
    "| Same top p      |    85.584 ± 0.086 % |    71.138 ± 0.119 % |    94.665 ± 0.055 % |"
    "    91.901 ± 0.072 % |    97.520 ± 0.038 % |    96.031 ± 0.051 % |    98.846 ± 0.026 % |"
    "    97.674 ± 0.040 % |"
)
SAME_TOP_COLUMNS = ("L2 q2_K", "Q2_K", "L2 q4_K_M", "Q4_K_M", "L2 q6_K", "Q6_K", "L2 q8_0", "Q8_0")


def test_llamacpps_table_holds_the_readmes_figures() -> None:
    for line in SCOREBOARD.strip().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        quant, imatrix, kld = cells[0].upper(), cells[1], float(cells[5].split("±")[0])
        if imatrix == "None":
            assert figures.LLAMACPP_KLD[quant] == kld
        else:  # an importance matrix's row is another file's figure
            assert figures.LLAMACPP_KLD[quant] != kld
    shares = [float(c.split("±")[0]) for c in SAME_TOP.strip("|").split("|")[1:] if c.strip()]
    for column, share in zip(SAME_TOP_COLUMNS, shares, strict=True):
        if not column.startswith("L2"):  # Llama 3 8B's columns
            assert figures.LLAMACPP_SAME_TOP[column] == share


def test_the_published_kld_is_llamacpps_with_its_source() -> None:
    found = figures.quant_cost("q4_k_m", None)  # names carry any case
    assert found is not None
    assert (found.name, found.value, found.kind) == ("KLD vs F16", 0.031273, "published")
    assert "llama.cpp's Llama 3 8B scoreboard" in found.source and "f364eb6f" in found.source
    assert "91.90%" in found.note
    q5 = figures.quant_cost("Q5_K_M", None)
    assert q5 is not None and q5.value == 0.010762 and q5.note == ""  # no same-top column
    for none in ("F16", "BF16", "F32", "IQ2_XS", "MXFP4", None):
        assert figures.quant_cost(none, None) is None, none


# -- published and declared quality ----------------------------------------------------------


def test_the_catalogs_benchmarks_are_published_by_meta() -> None:
    found = lookup("llama-3-8b")
    assert found is not None
    spec = catalog_spec(found[0])
    row = {f.name: f for f in figures.quality(spec, None, None)}
    assert row["MMLU (5-shot)"].value == 66.6 and row["MMLU (5-shot)"].unit == "%"
    assert all(f.kind == "published" for f in row.values())
    assert (
        row["DROP (3-shot, F1)"].source
        == "Meta, the Llama 3 model card (scheda's catalog, llama-3-8b)"
    )
    # A spec whose facts were not added yet is matched by its architecture numbers.
    spec.benchmarks, spec.family, spec.catalog_name = {}, None, None
    assert [f.to_dict() for f in figures.published_quality(spec)] == [
        f.to_dict() for f in row.values()
    ]


def test_a_model_outside_the_catalog_has_no_published_figure(smollm_path: Path) -> None:
    assert figures.quality(read_spec(smollm_path), None, None) == []


# The front matter of mlabonne/NeuralBeagle14-7B's model card, its first four results as the
# Open LLM Leaderboard's pull requests write them (TruthfulQA's metric has no name).
NEURALBEAGLE_CARD = """
license: cc-by-nc-4.0
tags:
- merge
- dpo
base_model: mlabonne/Beagle14-7B
model-index:
- name: NeuralBeagle14-7B
  results:
  - task:
      type: text-generation
      name: Text Generation
    dataset:
      name: AI2 Reasoning Challenge (25-Shot)
      type: ai2_arc
      config: ARC-Challenge
      split: test
      args:
        num_few_shot: 25
    metrics:
    - type: acc_norm
      value: 72.95
      name: normalized accuracy
    source:
      url: https://huggingface.co/spaces/HuggingFaceH4/open_llm_leaderboard?query=mlabonne/NeuralBeagle14-7B
      name: Open LLM Leaderboard
  - task:
      type: text-generation
      name: Text Generation
    dataset:
      name: HellaSwag (10-Shot)
      type: hellaswag
      split: validation
      args:
        num_few_shot: 10
    metrics:
    - type: acc_norm
      value: 88.34
      name: normalized accuracy
    source:
      url: https://huggingface.co/spaces/HuggingFaceH4/open_llm_leaderboard?query=mlabonne/NeuralBeagle14-7B
      name: Open LLM Leaderboard
  - task:
      type: text-generation
      name: Text Generation
    dataset:
      name: MMLU (5-Shot)
      type: cais/mmlu
      config: all
      split: test
      args:
        num_few_shot: 5
    metrics:
    - type: acc
      value: 64.55
      name: accuracy
    source:
      url: https://huggingface.co/spaces/HuggingFaceH4/open_llm_leaderboard?query=mlabonne/NeuralBeagle14-7B
      name: Open LLM Leaderboard
  - task:
      type: text-generation
      name: Text Generation
    dataset:
      name: TruthfulQA (0-shot)
      type: truthful_qa
      config: multiple_choice
      split: validation
      args:
        num_few_shot: 0
    metrics:
    - type: mc2
      value: 69.93
    source:
      url: https://huggingface.co/spaces/HuggingFaceH4/open_llm_leaderboard?query=mlabonne/NeuralBeagle14-7B
      name: Open LLM Leaderboard
"""


def test_the_model_cards_model_index_is_declared() -> None:
    card = yaml.safe_load(NEURALBEAGLE_CARD)
    found = {f.name: f for f in figures.quality(read_none(), card, None)}
    assert {name: f.value for name, f in found.items()} == {
        "AI2 Reasoning Challenge (25-Shot): normalized accuracy": 72.95,
        "HellaSwag (10-Shot): normalized accuracy": 88.34,
        "MMLU (5-Shot): accuracy": 64.55,
        "TruthfulQA (0-shot): mc2": 69.93,
    }
    for figure in found.values():
        assert figure.kind == "declared" and figure.unit == ""
        assert figure.source == (
            "the repository's model card (model-index), citing Open LLM Leaderboard"
        )


def test_a_model_index_not_of_the_standard_shape_declares_only_what_it_can() -> None:
    card: dict[str, Any] = {
        "model-index": [
            "not a model",
            {"name": "x", "results": "not a list"},
            {
                "results": [
                    {"dataset": {"type": "gsm8k"}, "metrics": [{"type": "acc", "value": "57.1"}]},
                    {"dataset": {"name": "A"}, "metrics": [{"type": "acc", "value": "n/a"}]},
                    {"dataset": {"name": "B"}, "metrics": [{"type": "acc", "value": math.inf}]},
                    {"dataset": {"name": "C"}, "metrics": [{"type": "acc", "value": True}]},
                    {"dataset": {"name": "D"}, "metrics": [{"value": 3.0}]},
                    {
                        "task": {"name": "Text\x1b[31m Generation"},
                        "metrics": [{"type": "f1", "value": 1}],
                    },
                ]
            },
        ]
    }
    found = [(f.name, f.value, f.source) for f in figures.declared_quality(card)]
    assert found == [
        ("gsm8k: acc", 57.1, figures.MODEL_INDEX_SOURCE),
        ("Text[31m Generation: f1", 1.0, figures.MODEL_INDEX_SOURCE),  # no escape code
    ]
    assert figures.declared_quality({"model-index": "text"}) == []
    assert figures.declared_quality(None) == []


def read_none() -> Any:
    """A spec that matches no catalog row: its quality is the card's alone."""
    from scheda.spec import ModelSpec

    return ModelSpec(name="NeuralBeagle14-7B", source="hf")


# -- measured: a real comparison and real eval runs, matched by hash -------------------------

QUESTIONS = [
    ("The capital of France is", ["Paris", "Rome", "Berlin", "Madrid"], 0),
    ("The capital of Italy is", ["Paris", "Rome", "Berlin", "Madrid"], 1),
    ("Two plus two is", ["three", "four", "five", "six"], 1),
    ("Water freezes at zero degrees", ["Celsius", "Kelvin", "Rankine", "Newton"], 0),
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A data folder and a cache folder of the module's own, empty when it starts."""
    base = tmp_path_factory.mktemp("search-figures")
    found = {"data": base / "data", "cache": base / "cache"}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SCHEDA_DATA_DIR", str(found["data"]))
        env.setenv("SCHEDA_CACHE_DIR", str(found["cache"]))
        yield found


@pytest.fixture(scope="module")
def compared(
    folders: dict[str, Path], smollm_quants: dict[str, Path], text_file: Path
) -> Comparison:
    """`scheda compare` of F16 against Q8_0, with a tiny JSONL task evaluated on both, stored
    where the command stores them."""
    questions = folders["data"].parent / "capitals.jsonl"
    questions.write_text(
        "".join(
            json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in QUESTIONS
        )
    )
    path = folders["data"] / "evals.sqlite3"
    with EvalStore(path) as store:
        record = run_compare(
            smollm_quants["F16"],
            [smollm_quants["Q8_0"]],
            load_text(text_file),
            context=COMPARE_CONTEXT,
            bench_runs=0,
            threads=2,
            store=store,
            tasks=[str(questions)],
        )
    with ComparisonStore(path) as comparisons:
        record["id"] = comparisons.add(copy.deepcopy(cast(dict[str, Any], record)))
    return record


# slow: the module's real compare and eval runs on the F16 and Q8_0 files
@pytest.mark.slow
def test_a_stored_comparison_gives_the_files_kld_by_its_hash(
    compared: Comparison, smollm_quants: dict[str, Path]
) -> None:
    q8, f16 = smollm_quants["Q8_0"], smollm_quants["F16"]
    found = figures.quant_cost("Q8_0", sha256(q8).upper(), q8.stat().st_size)
    assert found is not None and found.kind == "measured"
    row = compared["rows"][1]
    assert found.value == row["kld"]["mean"]
    assert found.name == f"KLD vs {f16.name}"
    assert found.source == f"scheda compare {compared.get('id')} against {f16.name}"
    assert found.note == f"same top token {100 * row['same_top']['value']:.2f}%"
    # Another size is not hashed: llama.cpp's published figure stands instead.
    other = figures.quant_cost("Q8_0", sha256(q8), q8.stat().st_size + 1)
    assert other is not None and other.kind == "published"
    # The reference was no candidate, and F16 has no published cost.
    assert figures.quant_cost("F16", sha256(f16)) is None


# slow: the module's real compare and eval runs on the F16 and Q8_0 files
@pytest.mark.slow
def test_stored_eval_runs_are_the_files_measured_quality(
    compared: Comparison, smollm_quants: dict[str, Path], folders: dict[str, Path]
) -> None:
    with EvalStore(folders["data"] / "evals.sqlite3") as store:
        runs = {Path(r.path).name: r for r in store.runs()}
    for kind in ("F16", "Q8_0"):
        path = smollm_quants[kind]
        run = runs[path.name]
        assert run.summary is not None
        [figure] = figures.quality(read_spec(path), None, sha256(path))
        assert figure.name == "capitals (0-shot, acc)" and figure.kind == "measured"
        assert figure.value == 100 * run.summary["metrics"]["acc"]["value"]
        assert figure.unit == "%"
        assert figure.source == f"scheda eval run {run.id}, {len(QUESTIONS)} items"
    # The same bytes under another name are the same file; a file of other bytes is not.
    twin = folders["data"].parent / "renamed.gguf"
    os.link(smollm_quants["Q8_0"], twin)
    try:
        assert figures.measured_quality(sha256(twin))[0].source.endswith(
            runs[smollm_quants["Q8_0"].name].id + f", {len(QUESTIONS)} items"
        )
    finally:
        twin.unlink()
    assert figures.measured_quality(sha256(default_model_path())) == []
    assert figures.measured_quality(None) == []


# -- the bench store and the speed prediction ------------------------------------------------


def test_calibration_recovers_a_known_two_term_law() -> None:
    bandwidth = 20e9
    fixed, efficiency = 0.004, 0.6
    sizes = [90e6, 140e6, 270e6, 4e9]

    def law(size: float) -> float:
        return 1 / (fixed + size / (efficiency * bandwidth))

    fitted = speed.calibrate([(int(s), law(s)) for s in sizes], bandwidth)
    assert fitted.model == "two-term" and fitted.runs == 4
    assert fitted.per_token_s == pytest.approx(fixed) and fitted.efficiency == pytest.approx(0.6)
    # Two runs cannot separate the terms: the efficiency alone is fitted.
    one = speed.calibrate([(int(s), law(s)) for s in sizes[:2]], bandwidth)
    assert one.model == "one-term" and one.per_token_s == 0 and one.runs == 2
    for size in sizes[:2]:  # between the fixed-cost law's figures, within its error
        assert 0.5 < speed.predict(int(size), bandwidth, one) / law(size) < 1.5
    none = speed.calibrate([], bandwidth)
    assert (none.model, none.efficiency) == ("uncalibrated", speed.DEFAULT_EFFICIENCY)


# slow: a real `scheda bench` in a process of its own
@pytest.mark.slow
def test_bench_stores_its_run_and_calibrates_the_prediction(
    folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A probe made earlier in this process is remembered in memory: this test's cache folder
    # is to get its own, as a new process's would.
    monkeypatch.setattr(speed, "_known", {})
    model = default_model_path()
    size = model.stat().st_size
    before = figures.speed(size)
    assert before is not None and before.value > 0
    assert (before.kind, before.name, before.unit) == ("predicted", "generation", "tok/s")
    assert "uncalibrated" in before.source
    kept = json.loads((folders["cache"] / speed.MEMORY).read_text())
    assert kept["fingerprint"] == fingerprint() and kept["bytes_per_s"] > 0

    env = {**os.environ, "COLUMNS": "140"}
    tiny = ["--runs", "1", "--pp", "16", "--tg", "8", "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "scheda", "bench", "default", *tiny],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)["results"][0]
    with BenchStore(folders["data"] / "benches.sqlite3") as store:
        [run] = store.runs()
    assert (run.path, run.size, run.sha256) == (str(model.resolve()), size, sha256(model))
    assert (run.contender, run.engine, run.threads) == ("scheda", "llama.cpp", physical_cores())
    assert (run.pp_tokens, run.tg_tokens, run.runs) == (16, 8, 1)
    assert (run.pp, run.tg) == (measured["pp_tokens_per_s"], measured["tg_tokens_per_s"])
    assert run.fingerprint == fingerprint() and run.machine["versions"]["xllamacpp"]

    after = figures.speed(size)
    assert after is not None and after.value > 0 and after.kind == "predicted"
    assert re.fullmatch(
        r"predicted from [\d.]+ GB/s measured here, calibrated on 1 bench run", after.source
    )
    # One run of this very file: the one-term fit gives back what it measured.
    assert after.value == pytest.approx(run.tg)
    assert figures.speed(0) is None


def test_a_metric_named_after_its_dataset_is_not_said_twice() -> None:
    card = {
        "model-index": [
            {
                "results": [
                    {
                        "dataset": {"name": "MMLU", "type": "cais/mmlu"},
                        "metrics": [{"type": "acc", "value": 30.1, "name": "MMLU (5-shot)"}],
                    },
                    {
                        "dataset": {"name": "GSM8K", "type": "gsm8k"},
                        "metrics": [{"type": "acc", "value": 1.4, "name": "accuracy"}],
                    },
                ]
            }
        ]
    }
    names = [f.name for f in figures.quality(read_none(), card, None)]
    assert names == ["MMLU (5-shot)", "GSM8K: accuracy"]
