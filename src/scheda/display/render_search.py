"""`scheda search`'s table: a row per repository, best first, each figure marked with its kind
and numbered by its source, the marks and the sources told under the table.

Everything a repository supplies (its name, licence, the names in its model-index) is
text from outside: it goes into the table as `Text`, never as markup.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Group, JustifyMethod, RenderableType
from rich.table import Table
from rich.text import Text

from scheda.search.rows import Figure, Row, SearchResult
from scheda.settings import DEFAULT_CONTEXT
from scheda.units import size

# A figure's kind, as a mark after its value; the legend says what each means.
MARKS = {"published": "p", "declared": "d", "measured": "m", "predicted": "~"}
MEANINGS = {
    "published": "published by the model's makers or llama.cpp",
    "declared": "declared by the repository (its model-index)",
    "measured": "measured on this machine (scheda eval, compare, bench)",
    "predicted": "predicted, not measured",
}


class Sources:
    """Each figure's source, numbered in the order the table first shows it."""

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}

    def mark(self, figure: Figure) -> str:
        number = self.numbers.setdefault(figure.source, len(self.numbers) + 1)
        return f"[{MARKS.get(figure.kind, '?')}{number}]"


def number(value: float) -> str:
    """A figure's value with the digits that mean something at its size."""
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}"


def figure_text(figure: Figure, sources: Sources) -> str:
    unit = figure.unit if figure.unit in ("%", "") else f" {figure.unit}"
    return f"{figure.name} {number(figure.value)}{unit} {sources.mark(figure)}"


def short_count(n: int | None) -> str:
    """A count as a person reads it in a list: 135M, 8.0B, 12.3k."""
    if n is None:
        return "—"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            shown = n / scale
            return f"{shown:.1f}{suffix}" if shown < 100 else f"{shown:.0f}{suffix}"
    return str(n)


def fit_text(row: Row) -> str:
    """What fits the target: the GGUF file, or the precisions; else how far it is."""
    if row.error is not None:
        return f"cannot read: {reason(row)}"
    needs = f"needs {size(row.memory)}" if row.memory is not None else "need unknown"
    if row.format == "gguf":
        parts = f" in {row.parts} parts" if row.parts > 1 else ""
        what = f"{row.quant or row.file} {size(row.size)}{parts}"
        return f"{what}, {needs}" if row.fits else f"no: the smallest, {what}, {needs}"
    if row.fits:
        return f"{', '.join(row.precisions)}; {needs} at {row.precisions[0]}"
    return f"no: the smallest precision {needs}"


def reason(row: Row) -> str:
    """The read's error without the repository's name it starts with: the row names it."""
    text = row.error or ""
    for prefix in (f"{row.repo}/", f"{row.repo}: ", f"{row.repo} "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


# The figure columns: a row's figures in each, by the column's name.
FIGURE_COLUMNS: tuple[tuple[str, Callable[[Row], list[Figure]]], ...] = (
    ("quality", lambda r: list(r.quality)),
    ("quant cost", lambda r: [r.quant_cost] if r.quant_cost else []),
    ("speed here", lambda r: [r.speed] if r.speed else []),
)


def repository(row: Row) -> Text:
    """The repository's name, and under it what it is: parameters, context, licence, gated."""
    facts = [
        f"{short_count(row.parameters)} parameters" if row.parameters else None,
        f"context {row.context:,}" if row.context else None,
        row.licence,
        "gated" if row.gated else None,
    ]
    text = Text(row.repo)
    known = [f for f in facts if f]
    if known:
        text.append("\n" + " · ".join(known), style="dim")
    return text


def search_table(result: SearchResult, sources: Sources) -> Table:
    """The rows, best first; a figure column only where some row has such a figure."""
    context = (
        f"context {result.context:,}"
        if result.context
        else f"context {DEFAULT_CONTEXT:,} (less for a model trained on less)"
    )
    table = Table(
        title=Text(f"{result.query!r} on {result.target.label}, {context}", style="bold"),
        title_justify="left",
    )
    figure_columns = [(n, f) for n, f in FIGURE_COLUMNS if any(f(r) for r in result.rows)]
    columns: list[tuple[str, JustifyMethod]] = [
        ("#", "right"),
        ("repository", "left"),
        ("downloads", "right"),
        ("likes", "right"),
        ("fits", "left"),
        *((name, "left") for name, _ in figure_columns),
    ]
    for name, justify in columns:
        # Folded, never cut. No column gets a minimum width: Rich crops the table's right
        # side, figures included, when minimums add up past a narrow terminal.
        table.add_column(
            name,
            justify=justify,
            overflow="fold",
        )
    for i, row in enumerate(result.rows, 1):
        style = "red" if row.error else "green" if row.fits else "yellow"
        figures = [
            "\n".join(figure_text(f, sources) for f in pick(row)) or "—"
            for _, pick in figure_columns
        ]
        table.add_row(
            Text(str(i)),
            repository(row),
            Text(short_count(row.downloads)),
            Text(short_count(row.likes)),
            Text(fit_text(row), style=style),
            *(Text(c) for c in figures),
        )
    return table


def legend(result: SearchResult, sources: Sources) -> list[str]:
    """The lines under the table: where the rows came from, the marks, the sources."""
    lines = []
    if result.note:
        lines.append(result.note)
    cached = result.from_cache
    lines.append(
        f"{len(result.rows)} repositor{'y' if len(result.rows) == 1 else 'ies'}"
        + (f", {cached} answered from the cache" if cached else "")
        + (f"; {result.left_out} that do not fit left out (--fits)" if result.left_out else "")
    )
    kinds = {k for row in result.rows for f in row.figures() if (k := f.kind)}
    if kinds:
        lines.append(
            "marks: "
            + "; ".join(f"{MARKS[k]} {MEANINGS[k]}" for k in MARKS if k in kinds)
            + ("; ? of a kind this version does not know" if kinds - MARKS.keys() else "")
        )
    lines += [f"{n}. {source}" for source, n in sources.numbers.items()]
    if not any(row.figures() for row in result.rows):
        lines.append("no figure of quality or speed is known for these repositories")
    return lines


def search_view(result: SearchResult) -> RenderableType:
    sources = Sources()
    table = search_table(result, sources)  # numbers the sources, in the table's order
    if not result.rows:
        what = "fits the target" if result.left_out else "matches the query"
        return Group(
            Text(f"no repository {what}"), *(Text(line) for line in legend(result, sources))
        )
    return Group(table, *(Text(line) for line in legend(result, sources)))
