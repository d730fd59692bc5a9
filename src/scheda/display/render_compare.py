"""`scheda compare`'s table, its Markdown and its chart, from a finished comparison record.

One row per model, the reference first. The columns and how each figure was
obtained are listed under the table (`read`, `computed`, `measured`), as the
record's `how` says; a figure the comparison did not make shows as "—".
Every cell reaches Rich as `Text`: file names come from outside, and the
engine's own label ("[transformers]") is brackets to show, not markup.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheda.units import size

if TYPE_CHECKING:
    from rich.console import RenderableType

    from scheda.evaluation.compare import Comparison, ComparisonRow

NONE = "—"


def _get(row: Mapping[str, Any], *keys: str) -> Any:
    value: Any = row
    for key in keys:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return value


def _number(value: Any, fmt: str) -> str:
    return NONE if value is None else format(value, fmt)


def _plus_minus(
    figure: Mapping[str, Any] | None, fmt: str, sep: str, scale: float = 1.0, unit: str = ""
) -> str:
    """ "7.139 ±0.819": the value and its uncertainty, on one line or two (`sep`)."""
    if not figure:
        return NONE
    value = figure.get("value", figure.get("mean"))
    if value is None:
        return NONE
    unc = figure.get("uncertainty")
    text = format(value * scale, fmt) + unit
    return text if not unc else f"{text}{sep}±{format(unc * scale, fmt)}"


def _kld_spread(row: ComparisonRow, sep: str) -> str:
    kld = row.get("kld")
    if not kld:
        return NONE
    return (" / " if sep == " " else sep).join(
        format(kld[k], ".4f") for k in ("median", "p99", "max")
    )


def _accuracy(row: ComparisonRow, sep: str) -> str:
    acc = row.get("accuracy")
    if not acc:
        return NONE
    err = acc.get("stderr")
    points = f"{100 * acc['delta']:+.1f}" + (f" ±{100 * err:.1f}" if err is not None else "")
    return (
        f"{points} pts{sep}{acc['task']}, {acc['items']} items,{sep}{acc['gained']}↑ {acc['lost']}↓"
    )


def model_label(row: ComparisonRow) -> str:
    path = Path(row["path"])
    name = path.stem if path.suffix == ".gguf" else path.name
    if row.get("engine") == "transformers":
        name += " [transformers]"
    return name + (" (reference)" if row["role"] == "reference" else "")


def _reference_or(row: ComparisonRow, same: str, figure: str) -> str:
    return same if row["role"] == "reference" else figure


# (header, the cell from a row and a separator: " " on one line, "\n" on two)
COLUMNS: list[tuple[str, Callable[[ComparisonRow, str], str]]] = [
    ("model", lambda r, s: model_label(r)),
    ("type", lambda r, s: r.get("type") or NONE),
    ("size", lambda r, s: size(r["size"]) if r.get("size") else NONE),
    ("bits/weight", lambda r, s: _number(r.get("bits_per_weight"), ".2f")),
    ("memory", lambda r, s: size(r["memory"]) if r.get("memory") else NONE),
    ("load s", lambda r, s: _number(_get(r, "bench", "load_s"), ".2f")),
    ("pp512 tok/s", lambda r, s: _number(_get(r, "bench", "pp512"), ".1f")),
    ("tg128 tok/s", lambda r, s: _number(_get(r, "bench", "tg128"), ".1f")),
    ("PPL", lambda r, s: _plus_minus(r.get("perplexity"), ".3f", s)),
    (
        "PPL ratio",
        lambda r, s: _reference_or(r, "1", _plus_minus(r.get("perplexity_ratio"), ".4f", s)),
    ),
    ("KLD mean", lambda r, s: _reference_or(r, "0", _plus_minus(r.get("kld"), ".5f", s))),
    ("KLD median / p99 / max", lambda r, s: _reference_or(r, NONE, _kld_spread(r, s))),
    (
        "same top",
        lambda r, s: _reference_or(r, "100%", _plus_minus(r.get("same_top"), ".1f", s, 100, "%")),
    ),
    (
        "RMS Δp",
        lambda r, s: _reference_or(r, "0", _plus_minus(r.get("rms_delta_p"), ".2f", s, 100, "%")),
    ),
    ("Δ accuracy", lambda r, s: _reference_or(r, NONE, _accuracy(r, s))),
]
HEADER = [name for name, _ in COLUMNS]
# The terminal's narrower headers: a figure's uncertainty goes on the line below it.
SHORT = {
    "bits/weight": "bits/\nweight",
    "pp512 tok/s": "pp512\ntok/s",
    "tg128 tok/s": "tg128\ntok/s",
    "KLD median / p99 / max": "KLD\nmedian\np99\nmax",
    "Δ accuracy": "Δ\naccuracy",
}


def cells(row: ComparisonRow, sep: str = " ") -> list[str]:
    """One row of the table as text: each figure on one line, or its uncertainty below it."""
    return [cell(row, sep) for _, cell in COLUMNS]


def notes(record: Comparison) -> list[str]:
    """What the table was made from and how each figure was obtained."""
    text = record["text"]
    lines = [
        f"text: {text['name']} ({text['about']}): {text['tokens']:,} tokens, "
        f"{text['chunks']} chunks of {record['context']}, {text['scored']:,} tokens scored "
        "(the second half of each chunk)",
        f"memory at a context of {record['memory_context']:,} tokens",
    ]
    if record.get("bench_runs"):
        lines.append(f"load, pp512, tg128: medians over {record['bench_runs']} rounds")
    for key, how in record["how"].items():
        lines.append(f"{key}: {how['kind']}: {how['how']}")
    lines.append(f"reference cache: {record['cache']['how']} ({size(record['cache']['bytes'])})")
    lines.extend(_speed(record))
    return lines


def _speed(record: Comparison) -> list[str]:
    """Each pass's tokens per second, and against its engine's own prompt rate (a chunk
    decoded with only its last logits, in the same process)."""
    out = []
    for row in record["rows"]:
        timing = row.get("pass")
        if not timing or not timing.get("tokens_per_s"):
            continue
        against = timing.get("against_prompt_rate")
        prompt = timing.get("prompt_tokens_per_s")
        ratio = f", {against:.2f} x its engine's prompt rate ({prompt:.1f})" if against else ""
        cached = " (cached)" if row.get("cached") else ""
        out.append(
            f"pass over {Path(row['path']).name}{cached}: {timing['tokens_evaluated']:,} tokens "
            f"in {timing['seconds']:.1f} s, {timing['tokens_per_s']:.1f} tokens/s{ratio}"
        )
    return out


def compare_view(record: Comparison) -> RenderableType:
    from rich import box
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    title = f"What quantization costs, against {Path(record['reference']).name}"
    if record.get("id"):
        title += f" (comparison {record['id']})"
    table = Table(
        title=escape(title), title_justify="left", box=box.SIMPLE_HEAD, collapse_padding=True
    )
    for i, name in enumerate(HEADER):
        table.add_column(SHORT.get(name, name), justify="left" if i < 2 else "right")
    for row in record["rows"]:
        table.add_row(*(Text(c) for c in cells(row, "\n")))
    return Group(table, Text("\n".join(notes(record)), style="dim"))


def compare_markdown(record: Comparison) -> str:
    from scheda.display.render import markdown_table

    rows = [cells(row) for row in record["rows"]]
    body = [markdown_table(HEADER, rows), ""]
    body += [f"- {line}" for line in notes(record)]
    return "\n".join(body) + "\n"


def list_rows(records: Sequence[Comparison]) -> list[list[str]]:
    """`scheda compare list`: one line per stored comparison."""
    from scheda.stores.sessions import local_time

    out = []
    for r in records:
        candidates = [row for row in r["rows"] if row["role"] == "candidate"]
        worst = max((row["kld"]["mean"] for row in candidates if row.get("kld")), default=None)
        out.append(
            [
                r["id"],
                Path(r["reference"]).name,
                ", ".join(Path(row["path"]).name for row in candidates),
                r["text"]["name"],
                str(r["context"]),
                _number(worst, ".4f"),
                local_time(r["created"]),
            ]
        )
    return out


def compare_chart(record: Comparison, path: Path) -> None:
    """KLD and size against bits per weight, the reference marked: a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in record["rows"] if r.get("bits_per_weight")]
    figure, (kld_axis, size_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for row in rows:
        bpw = row["bits_per_weight"]
        name = row.get("type") or Path(row["path"]).name
        size_bytes = row["size"]
        assert size_bytes is not None  # a file with bits per weight has a size
        mib = size_bytes / 2**20
        if row["role"] == "reference":
            size_axis.scatter([bpw], [mib], marker="*", s=180, color="#c0392b")
            size_axis.annotate(f"{name} (reference)", (bpw, mib), fontsize=8)
            kld_axis.axvline(bpw, color="#c0392b", linestyle=":", linewidth=1)
            kld_axis.annotate(
                f"{name} (reference)",
                (bpw, 0.5),
                xycoords=("data", "axes fraction"),
                rotation=90,
                fontsize=8,
                color="#c0392b",
            )
            continue
        kld = row["kld"]["mean"]
        kld_axis.errorbar([bpw], [kld], yerr=[row["kld"]["uncertainty"]], fmt="o", color="#2c3e50")
        kld_axis.annotate(name, (bpw, kld), textcoords="offset points", xytext=(5, 4), fontsize=8)
        size_axis.scatter([bpw], [mib], color="#2c3e50")
        size_axis.annotate(name, (bpw, mib), textcoords="offset points", xytext=(5, 4), fontsize=8)
    kld_axis.set_yscale("log")
    kld_axis.set_xlabel("bits per weight")
    kld_axis.set_ylabel("mean KL divergence to the reference (nats)")
    size_axis.set_xlabel("bits per weight")
    size_axis.set_ylabel("file size (MiB)")
    for axis in (kld_axis, size_axis):
        axis.grid(True, alpha=0.3)
    figure.suptitle(
        f"{Path(record['reference']).name} as reference, on {record['text']['name']} "
        f"({record['text']['scored']:,} tokens scored)",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
