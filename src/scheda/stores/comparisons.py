"""`scheda compare`'s comparisons, one row each, kept whole, in the evaluation file.

The record is stored as `run_compare` made it (docs/json.md): the figures, how
each was obtained, the machine and versions; the columns beside it are what a
list is sorted and read by. The file is the one the evaluation runs live in
(stores/evals_file.py), where comparisons have always been stored.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from scheda.errors import ComparisonStoreError
from scheda.stores.evals_file import SCHEMA
from scheda.stores.sqlite import Store


class ComparisonStore(Store):
    """The comparisons in the evaluation file; `close()` when done."""

    schema = SCHEMA
    error = ComparisonStoreError

    def add(self, record: dict[str, Any]) -> str:
        """Store one comparison; its id (also set in the record)."""
        comparison_id = secrets.token_hex(4)
        record["id"] = comparison_id
        with self._transaction(write=True) as conn:
            conn.execute(
                "INSERT INTO comparisons (id, reference, models, text, created, record) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    comparison_id,
                    record["reference"],
                    len(record["rows"]),
                    record["text"]["name"],
                    record["created"],
                    json.dumps(record, default=str),
                ),
            )
        return comparison_id

    def list(self) -> list[dict[str, Any]]:
        """Every stored comparison, newest first, whole."""
        with self._transaction(write=False) as conn:
            rows = conn.execute("SELECT record FROM comparisons ORDER BY created DESC").fetchall()
        return [json.loads(r["record"]) for r in rows]

    def get(self, comparison_id: str) -> dict[str, Any]:
        """A comparison by id or unique id prefix."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT record FROM comparisons WHERE id LIKE ?", (comparison_id + "%",)
            ).fetchall()
        if len(rows) != 1:
            what = "no comparison" if not rows else f"{len(rows)} comparisons"
            raise ComparisonStoreError(
                f"{what} with id {comparison_id!r}: `scheda compare list` shows them"
            )
        record: dict[str, Any] = json.loads(rows[0]["record"])
        return record
