"""Regenerate the `fit` accuracy table of docs/benchmarks.md.

    .venv/bin/python benchmarks/fit_accuracy.py [MODEL]

Estimates and measures (a fresh llama.cpp process per context) side by side in
one run, and prints the table with the machine and the versions.
"""

from __future__ import annotations

import platform
import sys
from importlib.metadata import version
from pathlib import Path

import psutil

from scheda.display.render import MEASURE_HEADER, markdown_table, measure_rows
from scheda.formulas.fit import estimate
from scheda.measurement.measure import measure
from scheda.resolve import resolve

CONTEXTS = (512, 2048, 8192)


def main(model: str = "default") -> None:
    spec = resolve(model)
    path = Path(spec.path or "")
    rows = [(c, estimate(spec, "file", c).total, measure(path, c)) for c in CONTEXTS]
    memory = psutil.virtual_memory().total / 2**30
    cores = psutil.cpu_count(logical=False)
    print(f"Machine: {cores} cores, {memory:.0f} GiB, {platform.machine()};")
    versions = f"xllamacpp {version('xllamacpp')}, gguf {version('gguf')}"
    print(f"Python {platform.python_version()}, {versions}")
    print()
    print(markdown_table(MEASURE_HEADER, measure_rows(rows)))


if __name__ == "__main__":
    main(*sys.argv[1:])
