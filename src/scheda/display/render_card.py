"""`scheda eval --card`'s table: the card's rows, published beside measured, and a note each.

One row per benchmark of the card, in the card's order: shots, metric, the
published figure, yours ± its standard error, the difference in points and
whether it lies inside the noise (1.96 standard errors). Under the table, a
numbered note per row: whose method the figure follows and what differs from
the card's own measurement, or why the row has no figure. Every cell reaches
Rich as `Text`: a note can quote a path or a message from outside.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import RenderableType

    from scheda.evaluation.card import CardRow

NONE = "—"
COLUMNS = ("Benchmark", "Shots", "Metric", "Published", "Yours", "Difference", "Inside the noise?")


def title(model: str, card: str, limit: int | None) -> str:
    """What the table is; a `--limit` run says it is a quick look, not the card's test sets."""
    head = f"{model} against the {card} card"
    if limit is None:
        return head
    return (
        f"{head}: a quick look, {limit} item{'s' if limit != 1 else ''} per task "
        "(per subject or subtask), not the whole test sets"
    )


def cells(row: CardRow, note: int) -> list[str]:
    """The row's cells, its note's number after the benchmark."""
    yours = NONE
    if row.yours is not None:
        yours = f"{row.yours:.1f}" + (f" ± {row.stderr:.1f}" if row.stderr is not None else "")
    return [
        f"{row.benchmark} [{note}]",
        NONE if row.shots is None else str(row.shots),
        row.metric or NONE,
        f"{row.published:.1f}",
        yours,
        NONE if row.difference is None else f"{row.difference:+.1f}",
        _verdict(row),
    ]


def _verdict(row: CardRow) -> str:
    if row.within_noise is None:
        return NONE if row.yours is None else "no stderr (one item)"
    return "yes" if row.within_noise else "no"


def notes(rows: Sequence[CardRow]) -> list[str]:
    """A numbered note per row: why it has no figure, or its method and what differs."""
    lines = []
    for number, row in enumerate(rows, 1):
        parts = [f"[{number}] {row.task or row.benchmark}:"]
        if row.why is not None:
            parts.append(f"no figure: {_sentence(row.why)}")
        if row.method:
            parts.append(_sentence(row.method))
        if row.differs:
            parts.append(f"Differs from the card: {_sentence(row.differs)}")
        lines.append(" ".join(parts))
    return lines


def _sentence(text: str) -> str:
    return text.rstrip(".") + "."


def card_view(model: str, card: str, rows: Sequence[CardRow], limit: int | None) -> RenderableType:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title(model, card, limit)), title_justify="left")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("Benchmark", "Metric") else "right")
    for number, row in enumerate(rows, 1):
        table.add_row(*(Text(c) for c in cells(row, number)))
    footer = "Yours ± its standard error; difference = yours - published, in points; inside "
    footer += "the noise: within 1.96 standard errors."
    return Group(table, Text(footer, style="dim"), Text("\n".join(notes(rows)), style="dim"))
