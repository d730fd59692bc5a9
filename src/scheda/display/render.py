"""Turn spec records, fit reports and tokenizations into terminal tables or Markdown.

Every function here takes finished data and returns a renderable; nothing
here reads files or computes estimates. Strings from model files were
cleaned by the readers; they, and every other string from outside (Hub names,
stored runs), reach Rich as `Text` or escaped, never read as markup: a model
named "[red]..." is shown with its brackets, styling nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from scheda.spec import ModelSpec
from scheda.units import count, size

if TYPE_CHECKING:  # records for annotations only: `card` loads neither fit nor tokens
    from scheda.formulas.fit_report import FileFit, FitReport
    from scheda.formulas.hardware import Device
    from scheda.measurement.bench import Report as BenchReport
    from scheda.tokenization.tokens import Tokenization

Row = tuple[str, Callable[[ModelSpec], str | None]]


def _attention(s: ModelSpec) -> str | None:
    if not s.attention:
        return None
    kv = "KV head" if s.kv_heads == 1 else "KV heads"
    if s.attention == "MHA":
        return f"MHA, {s.heads} heads"
    return f"{s.attention}, {s.heads} heads over {s.kv_heads} {kv} (group {s.gqa_group})"


def _quantization(s: ModelSpec) -> str | None:
    if not s.quantization:
        return None
    parts = []
    for name, g in sorted(s.quantization.items(), key=lambda kv: -kv[1].parameters):
        where = f": {', '.join(g.names)}" if g.names else ""
        plural = "tensor" if g.tensors == 1 else "tensors"
        params = f"{g.parameters / 1e6:,.1f}M" if g.parameters >= 1e6 else f"{g.parameters:,}"
        parts.append(f"{name} × {g.tensors} {plural} ({params} params){where}")
    return "; ".join(parts)


def _bits(s: ModelSpec) -> str | None:
    if s.bits_per_weight is None:
        return None
    whole = (
        f" ({s.file_bits_per_parameter:.2f} over the whole file)"
        if s.file_bits_per_parameter
        else ""
    )
    return f"{s.bits_per_weight:.2f}{whole}"


def _context(s: ModelSpec) -> str | None:
    if s.context is None:
        return None
    window = f", sliding window {s.sliding_window:,}" if s.sliding_window else ""
    return f"{s.context:,}{window}"


def _vocab(s: ModelSpec) -> str | None:
    if s.vocab_size is None:
        return None
    return f"{s.vocab_size:,} ({s.tokenizer or 'unknown tokenizer'})"


def _file_size(value: int | None) -> str | None:
    return f"{value:,} bytes ({size(value)})" if value else None


def _names(names: list[str], shown: int = 4) -> str | None:
    if not names:
        return None
    more = f" (+{len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _flag(value: bool | None, yes: str, no: str) -> str | None:
    return None if value is None else (yes if value else no)


def _opt(value: object, fmt: str = "{}") -> str | None:
    return None if value is None else fmt.format(value)


CARD_ROWS: list[Row] = [
    ("Source", lambda s: f"{s.source}: {s.path}" if s.path else s.source),
    ("Architecture", lambda s: s.architecture and f"{s.architecture} ({s.kind})"),
    ("Parameters", lambda s: count(s.parameters) if s.parameters else None),
    ("Layers", lambda s: _opt(s.layers)),
    ("Hidden size", lambda s: _opt(s.hidden, "{:,}")),
    ("Attention", _attention),
    ("Head dim", lambda s: _opt(s.head_dim)),
    ("FFN size", lambda s: _opt(s.ffn, "{:,}")),
    ("Context length", _context),
    ("RoPE base", lambda s: _opt(s.rope_base, "{:,.0f}")),
    ("Vocabulary", _vocab),
    ("Tokenizer", lambda s: s.tokenizer_detail),
    ("Precision", lambda s: s.file_type),
    ("Tensor types", _quantization),
    ("Bits per weight", _bits),
    (
        "File size",
        lambda s: f"{s.file_size:,} bytes ({size(s.file_size)})" if s.file_size else None,
    ),
    ("Tied embeddings", lambda s: _flag(s.tied_embeddings, "yes", "no")),
    ("Licence", lambda s: s.licence),
    ("Base model", lambda s: _names(s.base_model)),
    ("Datasets", lambda s: _names(s.datasets)),
    ("Chat template", lambda s: _flag(s.chat_template, "present", "none")),
    ("Family", lambda s: s.family and f"{s.family} ({s.catalog_name})"),
    (
        "Published parameters",
        lambda s: count(s.published_parameters) if s.published_parameters else None,
    ),
    ("Training tokens", lambda s: s.training_tokens),
    ("Knowledge cutoff", lambda s: s.knowledge_cutoff),
    ("Licence terms", lambda s: s.licence_terms),
    ("Notes", lambda s: "; ".join(s.notes) or None),
]


def card_rows(specs: Sequence[ModelSpec]) -> list[tuple[str, list[str]]]:
    """(label, one cell per model) for every row that some model fills."""
    rows = []
    for label, get in CARD_ROWS:
        cells = [get(s) for s in specs]
        if any(c is not None for c in cells):
            rows.append((label, [c if c is not None else "—" for c in cells]))
    benchmarks = list(dict.fromkeys(b for s in specs for b in s.benchmarks))
    for name in benchmarks:
        rows.append(
            (name, [f"{s.benchmarks[name]:.1f}" if name in s.benchmarks else "—" for s in specs])
        )
    return rows


def remote_caption(spec: ModelSpec) -> str | None:
    """How a spec read on the Hub was read: the commit, and the bytes and requests it took."""
    r = spec.remote
    if r is None:
        return None
    files = ", ".join(r.files_read[:3]) + (" ..." if len(r.files_read) > 3 else "")
    return (
        f"{r.repo} read on the Hub at {r.revision[:12]}: {r.bytes:,} bytes ({size(r.bytes)}) "
        f"in {r.requests} requests, the listing included ({files or 'no file'}); "
        "nothing downloaded"
    )


def card_table(specs: Sequence[ModelSpec]) -> Table:
    captions = [c for s in specs if (c := remote_caption(s))]
    table = Table(
        title="Spec sheet",
        show_lines=False,
        title_justify="left",
        caption=escape("\n".join(captions)) or None,
        caption_justify="left",
    )
    table.add_column("", style="bold")
    for s in specs:
        table.add_column(Text(s.name), overflow="fold")
    for label, cells in card_rows(specs):  # a benchmark's label comes from outside too
        table.add_row(Text(label), *(Text(c) for c in cells))
    return table


# ---- a GGUF repository's files ---------------------------------------------------------


def file_header(devices: Sequence[Device]) -> list[str]:
    return ["file", "quant", "size", "needs", *(d.label for d in devices)]


def file_rows(files: Sequence[FileFit], devices: Sequence[Device]) -> list[list[str]]:
    """One row per GGUF model: its name (* the one read), quantization, size, need, verdicts."""
    return [
        [
            f.file + (" *" if f.read else ""),
            f.quant or "—",
            size(f.size),
            size(f.total),
            *("✓" if f.fits.get(d.key) else "✗" for d in devices),
        ]
        for f in files
    ]


def files_title(repo: str, context: int) -> str:
    return (
        f"{repo}: its GGUF files at context {context:,} (* the one whose header was read; "
        "the others' needs follow from their sizes)"
    )


def files_table(
    repo: str, files: Sequence[FileFit], devices: Sequence[Device], context: int
) -> Table:
    table = Table(title=escape(files_title(repo, context)), title_justify="left")
    for h in file_header(devices):
        table.add_column(h, justify="left" if h in ("file", "quant") else "right")
    for row in file_rows(files, devices):
        table.add_row(*(Text(c) for c in row))
    return table


def files_markdown(
    repo: str, files: Sequence[FileFit], devices: Sequence[Device], context: int
) -> str:
    rows = file_rows(files, devices)
    return f"{files_title(repo, context)}\n\n{markdown_table(file_header(devices), rows)}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def card_markdown(specs: Sequence[ModelSpec]) -> str:
    table = markdown_table(
        ["", *(s.name for s in specs)], [[label, *cells] for label, cells in card_rows(specs)]
    )
    captions = [c for s in specs if (c := remote_caption(s))]
    return "\n\n".join([table, *captions])


# ---- fit -------------------------------------------------------------------


def _rule(report: FitReport, precision: str, total: int) -> str:
    rule = report.rule_of_thumb.get(precision)
    if rule is None:
        return "—"
    return f"{rule / 1e9:,.2f} GB ({(rule - total) / total:+.0%})"


def fit_rows(report: FitReport) -> list[list[str]]:
    rows = []
    for r in report.rows:
        label = f"file ({report.spec.file_type})" if r.precision == "file" else r.precision
        rows.append(
            [
                label,
                size(r.weights),
                size(r.kv_cache),
                size(r.engine),
                size(r.total),
                _rule(report, r.precision, r.total),
            ]
        )
    return rows


FIT_HEADER = ["precision", "weights", "KV cache", "engine buffers", "total", "rule of thumb"]


def _device_cell(longest: int | None, fits: bool) -> str:
    if longest is None:
        return "✗"
    return f"✓ {longest:,}" if fits else f"≤ {longest:,}"


def device_rows(report: FitReport) -> tuple[list[str], list[list[str]]]:
    precisions = [r.precision for r in report.rows]
    header = ["device", "usable", *precisions]
    rows = []
    for d in report.devices:
        cells = [_device_cell(d.longest[p], d.fits[p]) for p in precisions]
        rows.append([d.device.label, size(d.device.usable), *cells])
    return header, rows


def verdicts(report: FitReport) -> list[str]:
    """One sentence per device: the best precision that fits, or nothing and what would."""
    lines = []
    order = sorted(report.rows, key=lambda r: -r.total)  # the most faithful precision first
    for d in report.devices:
        fitting = [r for r in order if d.fits[r.precision]]
        if fitting:
            best = fitting[0]
            lines.append(
                f"{d.device.label}: fits at {best.precision} ({size(best.total)} of "
                f"{size(d.device.usable)} usable) at context {report.context:,}."
            )
            continue
        alt = report.alternatives
        smallest = f"even {alt['smallest_precision']} needs {size(alt['smallest_total'])}"
        lines.append(
            f"{d.device.label}: nothing fits at context {report.context:,}: {smallest}, "
            f"{size(d.device.usable)} usable."
        )
        longest = {p: c for p, c in d.longest.items() if c}
        if longest:
            p, c = max(longest.items(), key=lambda kv: kv[1])
            lines.append(f"  A shorter context would: {p} fits up to {c:,} tokens.")
        if alt.get("devices_that_fit"):
            gpus = ", ".join(f"{g['name']} at {g['precision']}" for g in alt["devices_that_fit"])
            lines.append(f"  It would fit: {gpus}.")
        if alt.get("catalog_models_that_fit"):
            models = ", ".join(alt["catalog_models_that_fit"])
            lines.append(f"  Models that fit here at {alt['catalog_precision']}: {models}.")
    return lines


def fit_view(
    report: FitReport,
    measured: list[tuple[int, int, int]] | None = None,
    chosen: bool = False,
    file_devices: Sequence[Device] = (),
) -> RenderableType:
    s = report.spec
    title = (
        f"{s.name}: {count(s.parameters)} parameters, context {report.context:,}, "
        f"batch {report.batch}"
    )
    main = Table(title=escape(title), title_justify="left")
    for h in FIT_HEADER:
        main.add_column(h, justify="left" if h == "precision" else "right")
    for row in fit_rows(report):
        main.add_row(*(Text(c) for c in row))
    header, rows = device_rows(report)
    devices = Table(
        title="Where it fits (✓ longest context; ≤ fits only a shorter one; ✗ no)",
        title_justify="left",
    )
    for h in header:
        devices.add_column(h, justify="left" if h == "device" else "right")
    for row in rows:
        devices.add_row(*(Text(c) for c in row))
    parts: list[RenderableType] = [main, devices]
    if chosen:
        parts.append(Text("\n".join(verdicts(report))))
    if report.files and s.remote is not None:
        parts.append(files_table(s.remote.repo, report.files, file_devices, report.context))
    if measured:
        parts.append(measure_table(measured))
    if (caption := remote_caption(s)) is not None:
        parts.append(Text(caption, style="dim"))
    return Group(*parts)


def measure_rows(measured: list[tuple[int, int, int]]) -> list[list[str]]:
    return [[f"{c:,}", size(e), size(m), f"{(e - m) / m:+.1%}"] for c, e, m in measured]


MEASURE_HEADER = ["context", "estimate", "measured", "difference"]


def measure_table(measured: list[tuple[int, int, int]]) -> Table:
    table = Table(title="Estimate vs measured (llama.cpp)", title_justify="left")
    for h in MEASURE_HEADER:
        table.add_column(h, justify="right")
    for row in measure_rows(measured):
        table.add_row(*row)
    return table


def fit_markdown(
    report: FitReport,
    measured: list[tuple[int, int, int]] | None = None,
    chosen: bool = False,
    file_devices: Sequence[Device] = (),
) -> str:
    header, rows = device_rows(report)
    parts = [markdown_table(FIT_HEADER, fit_rows(report)), markdown_table(header, rows)]
    if chosen:
        parts.append("\n".join(f"- {line.strip()}" for line in verdicts(report)))
    remote = report.spec.remote
    if report.files and remote is not None:
        parts.append(files_markdown(remote.repo, report.files, file_devices, report.context))
    if measured:
        parts.append(markdown_table(MEASURE_HEADER, measure_rows(measured)))
    if (caption := remote_caption(report.spec)) is not None:
        parts.append(caption)
    return "\n\n".join(parts)


# ---- tokens ----------------------------------------------------------------

PIECE_STYLES = ["on grey23", "on dark_blue", "on dark_green", "on dark_red", "on purple4"]


def visible(text: str) -> str:
    """A piece with its whitespace shown: spaces as '␣', newlines as '↵'."""
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")


def tokens_view(results: Sequence[Tokenization]) -> RenderableType:
    parts: list[RenderableType] = []
    if len(results) > 1:
        summary = Table(title="Same text, each tokenizer", title_justify="left")
        for h in ("model", "tokenizer", "tokens", "characters", "chars/token"):
            summary.add_column(h, justify="left" if h in ("model", "tokenizer") else "right")
        for r in results:
            summary.add_row(
                Text(r.model),
                Text(r.tokenizer or "—"),
                str(len(r.tokens)),
                str(len(r.text)),
                f"{r.chars_per_token:.2f}",
            )
        parts.append(summary)
    for r in results:
        strip = Text()
        for i, piece in enumerate(r.pieces):
            strip.append(visible(piece.text), style=PIECE_STYLES[i % len(PIECE_STYLES)])
        heading = Text(
            f"{r.model}: {len(r.tokens)} tokens, {r.chars_per_token:.2f} chars/token", style="bold"
        )
        table = Table()
        table.add_column("#", justify="right")
        table.add_column("piece")
        table.add_column("id", justify="right")
        for i, piece in enumerate(r.pieces):
            table.add_row(str(i), Text(visible(piece.text)), " + ".join(map(str, piece.ids)))
        parts += [heading, table, strip]
    return Group(*parts)


def tokens_markdown(results: Sequence[Tokenization]) -> str:
    summary = markdown_table(
        ["model", "tokenizer", "tokens", "characters", "chars/token"],
        [
            [
                r.model,
                r.tokenizer or "—",
                str(len(r.tokens)),
                str(len(r.text)),
                f"{r.chars_per_token:.2f}",
            ]
            for r in results
        ],
    )
    detail = [
        markdown_table(
            ["piece", "ids"],
            [[f"`{visible(p.text)}`", " + ".join(map(str, p.ids))] for p in r.pieces],
        )
        for r in results
    ]
    return "\n\n".join([summary, *detail])


# bench -------------------------------------------------------------------------------------

BENCH_COLUMNS = (
    ("load_s", "load", "{:.2f} s"),
    ("first_token_s", "first token", "{:.3f} s"),
    ("pp_tokens_per_s", "pp{pp} tok/s", "{:,.1f}"),
    ("tg_tokens_per_s", "tg{tg} tok/s", "{:,.1f}"),
    ("peak_rss_mib", "peak memory", "{:,.0f} MiB"),
)


def bench_view(report: BenchReport) -> RenderableType:
    table = Table(title=escape(f"bench · {report.model}"), title_justify="left")
    table.add_column("")
    for _, header, _ in BENCH_COLUMNS:
        table.add_column(header.format(pp=report.pp_tokens, tg=report.tg_tokens), justify="right")
    table.add_column("scheda tg ÷ this", justify="right")
    for r in report.results:
        cells = [
            "–" if getattr(r, key) is None else fmt.format(getattr(r, key))
            for key, _, fmt in BENCH_COLUMNS
        ]
        ratio = report.ratio("tg_tokens_per_s", r.contender) if r.contender != "scheda" else None
        table.add_row(r.contender, *cells, f"{ratio:.2f}x" if ratio else "")
    lines: list[RenderableType] = [table]
    if report.cold_first_token_s is not None:
        lines.append(
            Text(
                f"cold start to first token (a new `scheda generate` process): "
                f"{report.cold_first_token_s:.2f} s"
            )
        )
    runs = report.results[0].runs if report.results else 0
    lines.append(
        Text(
            f"medians of {runs} rounds; in each, every contender ran in a fresh process "
            "(a warm-up, then one measured run)",
            "dim",
        )
    )
    return Group(*lines)


def bench_chart(report: BenchReport, path: Path) -> None:
    """Bars of prompt (pp512) and generation (tg128) tokens/s per contender, into a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    names = [r.contender for r in report.results]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, key, title in (
        (axes[0], "pp_tokens_per_s", f"prompt processing (pp{report.pp_tokens})"),
        (axes[1], "tg_tokens_per_s", f"generation (tg{report.tg_tokens})"),
    ):
        values = [getattr(r, key) for r in report.results]
        bars = ax.bar(
            names, values, color=["#2b6cb0" if n == "scheda" else "#a0aec0" for n in names]
        )
        ax.bar_label(bars, fmt="%.0f")
        ax.set_title(title)
        ax.set_ylabel("tokens/s (higher is better)")
        ax.tick_params(axis="x", labelrotation=15)
    fig.suptitle(f"scheda bench · {report.model}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
