"""GPQA: graduate-level, "Google-proof" questions in biology, physics and chemistry.

lm-evaluation-harness's `gpqa_main_zeroshot`: each row's correct answer and its three
incorrect ones are cleaned (lm-eval's `preprocess`: stripped, " [title]" made ". ",
double spaces made one) and shuffled, the question is asked as "What is the correct
answer to this question:{Question}\\nChoices:\\n(A) ...\\n(D) ...\\nAnswer:" and the
choices scored are "(A)" to "(D)"; acc and acc_norm, which agree (the four choices are
of one length). The main set's 448 rows are scored, 0-shot.

The shuffle is lm-eval's: Python's `random.shuffle` on each row's four answers in file
order, from a generator seeded with 0, lm-eval's default `--seed` (its evaluator seeds
Python's global generator so before it builds a task). lm-eval draws from that global
generator, so its order is this one when gpqa's rows are the first thing it shuffles
after seeding; the order is a function of the file and the seed alone here.

lm-eval reads the CSV through `datasets`, that is pandas, which reads an empty cell (or
"NA", "N/A", "None", "null", "nan" and pandas' other missing-value words) as missing;
lm-eval's `preprocess` makes a missing answer " ". The same is done here, so the
choices are lm-eval's on every row.

Data: `Idavidrein/gpqa` on the Hub, which is gated: accept its terms on its page and
set HF_TOKEN; the file gpqa_main.csv is fetched from it, or read from a folder.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from scheda.evaluation.choice import ChoiceTask, Doc, Record, Split, read_file
from scheda.evaluation.sources import Source, hub_file, local_folder
from scheda.evaluation.tasks import TASKS

HUB_DATASET = "Idavidrein/gpqa"
FILE = "gpqa_main.csv"
SEED = 0  # lm-eval's default --seed for Python's generator
LETTERED = ["(A)", "(B)", "(C)", "(D)"]
ANSWERS = ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
# What pandas' read_csv takes for a missing value by default (pandas._libs.parsers).
PANDAS_MISSING = frozenset(
    [
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    ]
)


def preprocess(text: str | None) -> str:
    """lm-eval's gpqa `preprocess`, a missing answer included."""
    if text is None:
        return " "
    text = text.strip()
    text = text.replace(" [title]", ". ")
    return text.replace("  ", " ")


def answer(record: Record, column: str) -> str | None:
    """The cell as lm-eval's pandas reads it: None where pandas sees a missing value."""
    if column not in record.row:
        raise record.fail(f"no '{column}' column")
    value = record.row[column]
    return None if value is None or value in PANDAS_MISSING else str(value)


def question_text(question: str, choices: list[str]) -> str:
    """lm-eval's `doc_to_text` for the gpqa zero-shot tasks (no space after the colon)."""
    lines = [f"What is the correct answer to this question:{question}", "Choices:"]
    lines += [f"{letter} {choice}" for letter, choice in zip(LETTERED, choices, strict=True)]
    return "\n".join(lines) + "\nAnswer:"


def shuffled_doc(record: Record, rng: random.Random) -> Doc:
    """lm-eval's `process_docs` for one row: the answers cleaned, then shuffled."""
    cells = [answer(record, column) for column in ANSWERS]
    correct = preprocess(cells[0])
    choices = [preprocess(c) for c in cells[1:]] + [correct]
    rng.shuffle(choices)
    return Doc(
        question_text(record.text("Question"), choices), list(LETTERED), choices.index(correct)
    )


@dataclass(frozen=True)
class CsvSplit(Split):
    """A split kept on the Hub as a CSV file, not parquet: the file fetched by its name."""

    def globs(self) -> list[str]:
        return list(self.originals)

    def records(self, data_dir: Path | None) -> list[Record]:
        folder = local_folder(self.source, data_dir, lambda f: bool(self.files(f)))
        if folder is not None:
            return [r for path in self.files(folder) for r in read_file(path)]
        name = self.originals[0]
        rows = read_file(hub_file(self.source, name))
        return [Record(f"{self.source.repo} {name} row {n}", r.row) for n, r in enumerate(rows, 1)]


class GPQA(ChoiceTask):
    name = "gpqa"
    version = TASKS[name].version
    metrics = ("acc", "acc_norm")
    scored: ClassVar[Split] = CsvSplit(
        Source(name, FILE, HUB_DATASET, None, "train", gated=True), (FILE,)
    )

    def docs(self, records: list[Record]) -> list[Doc]:
        # One generator through the rows in file order: each row's shuffle depends on
        # those before it, as in lm-eval.
        rng = random.Random(SEED)
        return [shuffled_doc(r, rng) for r in records]

    def config(self) -> dict[str, Any]:
        return {**super().config(), "shuffle_seed": SEED}
