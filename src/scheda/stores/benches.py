"""`scheda bench`'s results, one row per contender, in a file of their own.

What `search` predicts speed from: a row is one contender's medians on one file (its
path, size and SHA-256, the engine, the threads it ran on, pp and tg tokens/s) and the
machine it was measured on. `fingerprint()` names that machine in one string, so that
a data folder shared between machines calibrates each by its own runs only.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheda.stores.sqlite import Schema, Store, statements

FILENAME = "benches.sqlite3"

MIGRATIONS = (
    statements(
        """
    CREATE TABLE runs (
        id          TEXT PRIMARY KEY,
        created     REAL NOT NULL,
        path        TEXT NOT NULL,
        size        INTEGER NOT NULL,
        sha256      TEXT NOT NULL,
        contender   TEXT NOT NULL,
        engine      TEXT NOT NULL,
        threads     INTEGER NOT NULL,
        pp_tokens   INTEGER NOT NULL,
        tg_tokens   INTEGER NOT NULL,
        pp          REAL NOT NULL,
        tg          REAL NOT NULL,
        runs        INTEGER NOT NULL,
        fingerprint TEXT NOT NULL,
        machine     TEXT NOT NULL
    )
    """,
        "CREATE INDEX runs_by_machine ON runs(fingerprint, created)",
    ),
)
SCHEMA = Schema(FILENAME, "bench file", MIGRATIONS)

# The engine behind each `scheda bench` contender: the first three are llama.cpp on the CPU.
ENGINES = {
    "scheda": "llama.cpp",
    "engine": "llama.cpp",
    "llama-cpp-python": "llama.cpp",
    "transformers": "transformers",
}


@dataclass(frozen=True)
class BenchRun:
    """One contender's figures on one file, as `scheda bench` measured them."""

    id: str
    created: float
    path: str
    size: int
    sha256: str
    contender: str  # scheda, engine, llama-cpp-python, transformers
    engine: str  # llama.cpp or transformers
    threads: int
    pp_tokens: int
    tg_tokens: int
    pp: float  # prompt tokens/s
    tg: float  # generated tokens/s
    runs: int  # the rounds its medians were taken over
    fingerprint: str
    machine: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _cpu_model() -> str:
    """The CPU's model name: /proc/cpuinfo's on Linux (platform.processor() says "x86_64")."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fingerprint() -> str:
    """This machine in one line: CPU model, logical CPUs, memory. Two machines alike in all
    three are taken for one; a machine that gains memory or cores is a new one."""
    import psutil

    memory = round(psutil.virtual_memory().total / 2**30)
    return f"{_cpu_model()}, {os.cpu_count()} CPUs, {memory} GiB"


def model_size(path: Path) -> int:
    """A GGUF's bytes, or an HF folder's (the transformers contender's) files together."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _run(row: sqlite3.Row) -> BenchRun:
    values = dict(row)
    values["machine"] = json.loads(values["machine"])
    return BenchRun(**values)


class BenchStore(Store):
    """The stored bench results; `close()` when done."""

    schema = SCHEMA

    def add(
        self,
        path: Path,
        sha256: str,
        contender: str,
        threads: int,
        sizes: tuple[int, int],
        rates: tuple[float, float],
        runs: int,
        machine: dict[str, Any],
    ) -> BenchRun:
        """Store one contender's result: `sizes` are (pp, tg) tokens, `rates` their tokens/s."""
        run = BenchRun(
            id=secrets.token_hex(4),
            created=time.time(),
            path=str(path.resolve()),
            size=model_size(path),
            sha256=sha256,
            contender=contender,
            engine=ENGINES.get(contender, contender),
            threads=threads,
            pp_tokens=sizes[0],
            tg_tokens=sizes[1],
            pp=rates[0],
            tg=rates[1],
            runs=runs,
            fingerprint=fingerprint(),
            machine=machine,
        )
        values = {**run.to_dict(), "machine": json.dumps(machine)}
        columns = ", ".join(values)
        with self._transaction(write=True) as conn:
            conn.execute(
                f"INSERT INTO runs ({columns}) VALUES ({', '.join('?' for _ in values)})",
                tuple(values.values()),
            )
        return run

    def runs(self, machine: str | None = None) -> list[BenchRun]:
        """Every stored result, newest first; only one machine's, given its fingerprint."""
        query = "SELECT * FROM runs"
        args: tuple[str, ...] = ()
        if machine is not None:
            query += " WHERE fingerprint = ?"
            args = (machine,)
        with self._transaction(write=False) as conn:
            rows = conn.execute(query + " ORDER BY created DESC", args).fetchall()
        return [_run(r) for r in rows]
