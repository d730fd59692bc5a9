"""The figures a search row carries, each labelled with its kind and its source.

- quality: the benchmark figures the catalog quotes for the family the model
  matches (published), those the repository's model card declares in its
  `model-index` (declared), and this machine's stored `scheda eval` runs on the
  very file (measured);
- the cost of the file's quantization: the mean KL divergence of a stored
  `scheda compare` in which the file was a candidate (measured), else llama.cpp's
  published figure for the type on Llama 3 8B (published);
- the speed here: generation tokens/s predicted by `speed` (predicted).

A stored run or comparison is matched to a Hub file by content: the SHA-256 the
Hub publishes for each LFS file against the SHA-256 of the run's local file
(`files.digest`, remembered after the first hash), so a file renamed, or pulled
into another folder, keeps its figures, and another file of the same name gets
none of them. A run whose file is gone from this machine matches nothing.
`file_bytes`, where given, leaves unhashed every local file of another size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scheda import settings
from scheda.catalog import match
from scheda.evaluation.tasks import TASKS
from scheda.readers.text import clean
from scheda.search import speed as speed_module
from scheda.spec import ModelSpec
from scheda.stores.evals_file import FILENAME as EVALS_FILENAME

PUBLISHED = "published"
DECLARED = "declared"
MEASURED = "measured"
PREDICTED = "predicted"
MODEL_INDEX_SOURCE = "the repository's model card (model-index)"

# Who published the catalog's benchmark figures, per family: every one the catalog holds
# comes from Meta's Llama 3 model card, which lists its Llama 2 columns beside Llama 3's.
CATALOG_PUBLISHERS = {
    "Llama 3": "Meta, the Llama 3 model card",
    "Llama 2": "Meta, the Llama 3 model card's Llama 2 columns",
}

# llama.cpp's "LLaMA 3 8b Scoreboard" (tools/perplexity/README.md, revision f364eb6f, the
# CUDA backend on one RTX 4090): mean KL divergence of each type against the F16 model's
# logits on Wikitext-2, the rows quantized without an importance matrix (imatrix None).
# The same file's "LLaMA 2 vs. LLaMA 3" table adds "Same top p" (the share of tokens whose
# most likely token is F16's), for four of them.
LLAMACPP_SOURCE = (
    "llama.cpp's Llama 3 8B scoreboard (tools/perplexity/README.md, revision f364eb6f, "
    "CUDA on an RTX 4090), without an importance matrix"
)
LLAMACPP_KLD: dict[str, float] = {
    "Q8_0": 0.001355,
    "Q6_K": 0.005452,
    "Q5_K_M": 0.010762,
    "Q5_K_S": 0.016595,
    "Q5_1": 0.018045,
    "Q5_0": 0.022239,
    "Q4_K_M": 0.031273,
    "Q4_K_S": 0.043136,
    "Q4_1": 0.071683,
    "Q4_0": 0.071940,
    "Q3_K_L": 0.087176,
    "Q3_K_M": 0.101913,
    "Q3_K_S": 0.228217,
    "Q2_K": 0.445132,
}
LLAMACPP_SAME_TOP: dict[str, float] = {  # percent
    "Q2_K": 71.138,
    "Q4_K_M": 91.901,
    "Q6_K": 96.031,
    "Q8_0": 97.674,
}
UNQUANTIZED = frozenset({"F16", "BF16", "F32"})


@dataclass(frozen=True)
class Figure:
    """One figure and where it comes from."""

    name: str  # "MMLU (5-shot)", "KLD vs F16", "generation", ...
    value: float
    unit: str  # "%", "", "tok/s"
    kind: str  # published, declared, measured, predicted
    source: str  # one line: whose figure, from where
    note: str = ""  # what else the source says of it ("same top token 91.9%")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- quality ---------------------------------------------------------------------------------


def quality(
    spec: ModelSpec,
    card_data: Mapping[str, Any] | None,
    file_sha256: str | None,
    file_bytes: int | None = None,
) -> list[Figure]:
    """Published, declared and measured quality figures for a model and one of its files."""
    return [
        *published_quality(spec),
        *declared_quality(card_data),
        *measured_quality(file_sha256, file_bytes),
    ]


def published_quality(spec: ModelSpec) -> list[Figure]:
    """The catalog's benchmark figures for the family the spec matches (read_spec's, or by
    its architecture numbers)."""
    benchmarks = spec.benchmarks
    family, row = spec.family, spec.catalog_name
    if not benchmarks:
        found = match(spec)
        if found is None:
            return []
        benchmarks, family, row = found.benchmarks, found.family.name, found.name
    publisher = CATALOG_PUBLISHERS.get(family or "", f"the {family} publisher")
    source = f"{publisher} (scheda's catalog, {row})"
    return [Figure(name, value, "%", PUBLISHED, source) for name, value in benchmarks.items()]


def declared_quality(card_data: Mapping[str, Any] | None) -> list[Figure]:
    """The results the model card's `model-index` declares, as the Hub's card metadata
    spells them: model-index[].results[].{task, dataset{name, type}, metrics[]{type, value,
    name}, source{name, url}}. Entries not of that shape, or without a finite number, are
    left out: a card is the uploader's text, not a format anyone checks."""
    return list(_model_index(card_data or {}))


def _model_index(card_data: Mapping[str, Any]) -> Iterator[Figure]:
    for model in _dicts(card_data.get("model-index")):
        for result in _dicts(model.get("results")):
            dataset = result.get("dataset")
            dataset = dataset if isinstance(dataset, dict) else {}
            what = dataset.get("name") or dataset.get("type") or _task_name(result)
            cited = result.get("source")
            cited_name = cited.get("name") if isinstance(cited, dict) else None
            source = MODEL_INDEX_SOURCE + (f", citing {clean(cited_name)}" if cited_name else "")
            for metric in _dicts(result.get("metrics")):
                value = _number(metric.get("value"))
                label = metric.get("name") or metric.get("type")
                if value is None or not what or not label:
                    continue
                yield Figure(
                    _index_name(clean(what, 80), clean(label, 60)), value, "", DECLARED, source
                )


def _index_name(dataset: str, metric: str) -> str:
    """ "MMLU: acc", but "MMLU (5-shot)" alone where the metric's name already says the set."""
    return metric if metric.lower().startswith(dataset.lower()) else f"{dataset}: {metric}"


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _task_name(result: Mapping[str, Any]) -> str | None:
    task = result.get("task")
    return (task.get("name") or task.get("type")) if isinstance(task, dict) else None


def _number(value: Any) -> float | None:
    """A finite number, or a string that is one ("72.95"); None for anything else."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def measured_quality(file_sha256: str | None, file_bytes: int | None = None) -> list[Figure]:
    """The newest finished `scheda eval` run of each task on the file with this SHA-256."""
    if not file_sha256:
        return []
    path = settings.data_dir() / EVALS_FILENAME
    if not path.is_file():
        return []  # no run stored: nothing to open (and no data folder to make)
    from scheda.stores.evals import EvalStore

    with EvalStore(path) as store:
        runs = store.runs()  # newest first
    figures: dict[str, Figure] = {}
    for run in runs:
        if run.finished is None or not run.summary or run.task in figures:
            continue
        if not _same_file(run.path, file_sha256, file_bytes):
            continue
        figure = _eval_figure(run.id, run.task, run.summary)
        if figure is not None:
            figures[run.task] = figure
    return list(figures.values())


def _eval_figure(run_id: str, task: str, summary: Mapping[str, Any]) -> Figure | None:
    """A run's headline figure, as `eval --card` reads it: the card's metric for a task the
    catalog's card lists, else the run's first metric; in percent, as cards print them."""
    metrics = summary.get("metrics") or {}
    info = TASKS.get(task)
    metric = info.metric if info and info.metric in metrics else next(iter(metrics), None)
    value = _number((metrics.get(metric) or {}).get("value")) if metric else None
    if metric is None or value is None:
        return None
    shots = summary.get("shots")
    if info and info.published and shots == info.shots and metric == info.metric:
        name = info.published  # the card's own label: set beside the published figure
    else:
        name = f"{task} ({shots}-shot, {metric})" if shots is not None else f"{task} ({metric})"
    items = summary.get("items")
    source = f"scheda eval run {run_id}" + (f", {items} items" if items else "")
    return Figure(name, 100 * value, "%", MEASURED, source)


def _same_file(path: str, file_sha256: str, file_bytes: int | None) -> bool:
    """Whether a stored run's file is, by its SHA-256, the file asked about."""
    from scheda.files.digest import sha256

    local = Path(path)
    try:
        if not local.is_file() or (file_bytes is not None and local.stat().st_size != file_bytes):
            return False
        return sha256(local) == file_sha256.lower()
    except OSError:
        return False  # gone or unreadable since it was stored: it matches nothing


# -- the quantization's cost -----------------------------------------------------------------


def quant_cost(
    quant: str | None, file_sha256: str | None, file_bytes: int | None = None
) -> Figure | None:
    """The file's mean KLD: measured by a stored comparison, else llama.cpp's for the type."""
    measured = measured_kld(file_sha256, file_bytes) if file_sha256 else None
    return measured or published_kld(quant)


def measured_kld(file_sha256: str, file_bytes: int | None = None) -> Figure | None:
    """The mean KLD of the newest stored comparison with this file as a candidate."""
    path = settings.data_dir() / EVALS_FILENAME
    if not path.is_file():
        return None
    from scheda.stores.comparisons import ComparisonStore

    with ComparisonStore(path) as store:
        records = store.list()  # newest first
    for record in records:
        for row in record.get("rows", []):
            kld = row.get("kld") or {}
            mean = _number(kld.get("mean"))
            if row.get("role") != "candidate" or mean is None:
                continue
            if _same_file(str(row.get("path", "")), file_sha256, file_bytes):
                return _compared(record, row, mean)
    return None


def _compared(record: Mapping[str, Any], row: Mapping[str, Any], mean: float) -> Figure:
    reference = Path(str(record.get("reference", "the reference"))).name
    same_top = _number((row.get("same_top") or {}).get("value"))
    note = f"same top token {100 * same_top:.2f}%" if same_top is not None else ""
    source = f"scheda compare {record.get('id')} against {reference}"
    return Figure(f"KLD vs {reference}", mean, "", MEASURED, source, note)


def published_kld(quant: str | None) -> Figure | None:
    """llama.cpp's published mean KLD for the type on Llama 3 8B; None for an unquantized or
    unknown type (the scoreboard has only importance-matrix rows for the IQ types)."""
    key = (quant or "").upper()
    if key in UNQUANTIZED or key not in LLAMACPP_KLD:
        return None
    same_top = LLAMACPP_SAME_TOP.get(key)
    note = f"same top token {same_top:.2f}% (the README's Llama 2 vs. 3 table)" if same_top else ""
    return Figure("KLD vs F16", LLAMACPP_KLD[key], "", PUBLISHED, LLAMACPP_SOURCE, note)


# -- the speed here --------------------------------------------------------------------------


def speed(file_bytes: int) -> Figure | None:
    """Generation tokens/s predicted here for a GGUF of this size; None if none can be."""
    found = speed_module.prediction(file_bytes)
    if found is None:
        return None
    return Figure("generation", found.tokens_per_s, "tok/s", PREDICTED, found.describe())
