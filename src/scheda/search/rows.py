"""Each repository a search names read (concurrently, or from the cache) and made a row.

A row says what the repository is (parameters, context length, licence,
gated, downloads, likes), how it fits the target at the context, and the
figures `scheda.search.figures` knows for it: its quality, what its
quantization costs, its speed here, each with its kind and source.

- A GGUF repository: its best file that fits, the one with the most bits per
  weight (of one model's files, the largest); if none fits, the smallest, to
  show how far it is. Every file is judged from the one header read
  (`fit_report.file_fits`).
- A safetensors repository: the precisions that fit, most bits first.
- A repository that cannot be read (no config.json, gated, a broken header) is
  a row with its one-line reason, never a failed search.

Repositories are read by a pool of threads (`WORKERS` at once): a read is a
few HTTP requests, each mostly waiting on the network. A repository whose
commit the cache holds is not read at all (`search/cache.py`). Offline, the
cache's read of a repository answers with only the GGUF files its snapshot
holds (what can run here), and a repository it does not hold is read from the
files in its snapshot folder.

Ranking, best first: what fits before what does not (and what could not be
read last); then the headline benchmark (MMLU, the one most model cards
publish, so rows compare on one measure), highest first, rows with it before
rows without; then downloads.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from scheda import catalog
from scheda.errors import ModelFileError, SchedaError
from scheda.formulas.fit_report import FileFit, file_fits, fit_report
from scheda.formulas.hardware import Device
from scheda.search import cache
from scheda.search.hub_search import Found
from scheda.spec import GGUFFile, ModelSpec

WORKERS = 8
HEADLINE = "mmlu"  # the benchmark rows are ranked by, where they have it
# GGUF files that are not a model's weights: a vision projector, an importance matrix.
NOT_WEIGHTS = ("mmproj", "imatrix")
# Which of several figures of the headline benchmark ranks a row: this file's own first.
KIND_ORDER = ("measured", "published", "declared", "predicted")


class Figure(Protocol):
    """A figure as `scheda.search.figures` makes it (its `Figure`)."""

    @property
    def name(self) -> str: ...
    @property
    def value(self) -> float: ...
    @property
    def unit(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def source(self) -> str: ...
    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class Row:
    """One repository as the search shows it."""

    repo: str
    sha: str | None
    format: str | None = None  # "gguf" or "safetensors"; None if it could not be read
    parameters: int | None = None
    context: int | None = None  # the context length the model was trained for
    licence: str | None = None
    gated: bool = False
    downloads: int | None = None
    likes: int | None = None
    fits: bool = False
    file: str | None = None  # GGUF: the file shown (the best that fits, else the smallest)
    quant: str | None = None
    size: int | None = None  # that file's bytes, every part together
    parts: int = 1  # files the GGUF model is split into
    memory: int | None = None  # bytes it needs at the context (the best precision that fits)
    precisions: list[str] = field(default_factory=list)  # safetensors: those that fit
    quality: list[Figure] = field(default_factory=list)
    quant_cost: Figure | None = None
    speed: Figure | None = None
    error: str | None = None  # one line: why it could not be read
    notes: list[str] = field(default_factory=list)
    origin: str = "hub"  # where its read came from: "hub" (now), "cache", "local" (offline)

    def headline(self) -> float | None:
        """The row's headline benchmark in percent, its most direct figure; None without."""
        found = [f for f in self.quality if f.name.lower().startswith(HEADLINE)]
        for kind in KIND_ORDER:
            for figure in found:
                if figure.kind == kind and figure.unit == "%":
                    return figure.value
                if figure.kind == kind and figure.unit == "" and 0 <= figure.value <= 1:
                    return figure.value * 100
        return None

    def figures(self) -> list[Figure]:
        """Every figure of the row, in the order the table shows them."""
        return [*self.quality, *(f for f in (self.quant_cost, self.speed) if f is not None)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "sha": self.sha,
            "format": self.format,
            "parameters": self.parameters,
            "context_length": self.context,
            "licence": self.licence,
            "gated": self.gated,
            "downloads": self.downloads,
            "likes": self.likes,
            "fits": self.fits,
            "file": self.file,
            "quant": self.quant,
            "size": self.size,
            "parts": self.parts,
            "memory": self.memory,
            "precisions": self.precisions,
            "quality": [f.to_dict() for f in self.quality],
            "quant_cost": self.quant_cost.to_dict() if self.quant_cost else None,
            "speed": self.speed.to_dict() if self.speed else None,
            "error": self.error,
            "notes": self.notes,
            "origin": self.origin,
        }


# -- reading -----------------------------------------------------------------------------------

Progress = Callable[[int, int, str], None]  # (done, total, the repository just read)


class Stopped(Exception):
    """The search was stopped (its client left): the reads in flight ended, no more began."""


def read_all(
    found: list[Found], on_read: Progress | None = None, stop: threading.Event | None = None
) -> list[cache.Read]:
    """Each repository's read, in the order found: the cache's where it holds the commit,
    else read now, `WORKERS` at once. Once `stop` is set no further read begins (those in
    flight end and are remembered by the cache) and `Stopped` is raised."""
    reads: list[cache.Read | None] = [None] * len(found)

    def read(one: Found) -> cache.Read | None:
        # Checked as each read begins: a worker freed after the stop starts nothing more.
        return None if stop is not None and stop.is_set() else read_one(one)

    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="search") as pool:
        futures = {pool.submit(read, f): i for i, f in enumerate(found)}
        for done, future in enumerate(as_completed(futures), 1):
            if stop is not None and stop.is_set():
                pool.shutdown(wait=True, cancel_futures=True)
                raise Stopped
            i = futures[future]
            reads[i] = future.result()
            if on_read is not None:
                on_read(done, len(found), found[i].repo)
    return [r for r in reads if r is not None]


def read_one(found: Found) -> cache.Read:
    """One repository: from the cache at its commit, else from the Hub, or offline from its
    snapshot folder; a failure is the read's one-line `error`."""
    hit = cache.load(found.repo, found.sha)
    if found.snapshot is not None:
        here = _narrowed(hit, found.snapshot) if hit is not None else None
        return here or _read_local(found, found.snapshot)
    return hit or _read_remote(found)


def _narrowed(hit: cache.Read, snapshot: Path) -> cache.Read | None:
    """Offline, what the cache read of a repository on the Hub, with only the GGUF models
    whose every part is in the snapshot: what can run here. None if it holds none of them."""
    if hit.spec is None or hit.spec.remote is None or not hit.spec.remote.ggufs:
        return hit
    here = [m for m in hit.spec.remote.ggufs if all((snapshot / p).is_file() for p in m.parts)]
    if not here:
        return None
    hit.spec.remote.ggufs = here
    return hit


def _read_remote(found: Found) -> cache.Read:
    from scheda.readers.hub import RepoRef, listing, read_remote

    sha = found.sha or ""
    try:
        files = listing(found.repo)
        sha = files.commit  # the commit read, should it have moved since the search
        spec = read_remote(RepoRef(found.repo), found=files)
    except SchedaError as exc:
        read = cache.Read(found.repo, sha, None, error=str(exc))
        if isinstance(exc, ModelFileError):  # the files' own fault: the same at this commit
            cache.store(read)
        return read
    sha256 = {n: f.sha256 for n, f in files.files.items() if f.sha256}
    read = cache.Read(found.repo, sha, spec, sha256)
    cache.store(read)
    return read


def _read_local(found: Found, snapshot: Path) -> cache.Read:
    """A cached repository's spec from its snapshot folder: an HF folder, or the GGUF file the
    remote reader would pick, with the others listed for the fit."""
    from scheda.readers import gguf_files, read_spec
    from scheda.spec import RemoteRead

    sha = found.sha or ""
    try:
        paths = {p.relative_to(snapshot).as_posix(): p for p in snapshot.rglob("*") if p.is_file()}
        sha256 = {n: s for n, p in paths.items() if (s := _blob_sha256(p))}
        models = gguf_files.ggufs({n: p.stat().st_size for n, p in paths.items()})
        is_hf = "config.json" in paths and any(n.endswith(".safetensors") for n in paths)
        if not models or is_hf:
            return cache.Read(found.repo, sha, read_spec(snapshot), sha256, "local")
        chosen = _default_model(models, found.repo)
        spec = read_spec(snapshot / chosen.file)
        spec.remote = RemoteRead(found.repo, sha, [chosen.file], 0, 0, models)
        return cache.Read(found.repo, sha, spec, sha256, origin="local")
    except (SchedaError, OSError) as exc:
        return cache.Read(found.repo, sha, None, error=str(exc), origin="local")


def _blob_sha256(path: Path) -> str | None:
    """An LFS file's sha256 from the cache's layout: the snapshot links it to blobs/SHA256."""
    if not path.is_symlink():
        return None
    name = Path(os.readlink(path)).name
    return name if len(name) == 64 and all(c in "0123456789abcdef" for c in name) else None


def _default_model(models: list[GGUFFile], repo: str) -> GGUFFile:
    from scheda.errors import ModelNotFoundError
    from scheda.readers import gguf_files

    try:
        return gguf_files.pick(models, repo, None, None)
    except ModelNotFoundError:
        return models[0]


# -- rows --------------------------------------------------------------------------------------


def make_row(found: Found, read: cache.Read, target: Device, context: int | None) -> Row:
    """The row of one repository on the target at the context."""
    row = Row(
        found.repo,
        read.sha or found.sha,
        licence=found.licence,
        gated=found.gated,
        downloads=found.downloads,
        likes=found.likes,
        error=read.error,
        origin=read.origin,
    )
    if read.spec is None:
        return row
    spec = catalog.with_published_facts(read.spec)
    row.parameters, row.context = spec.parameters, spec.context
    row.licence = row.licence or spec.licence
    models = spec.remote.ggufs if spec.remote is not None else []
    if models:
        row.format = "gguf"
        _gguf_fit(row, spec, models, target, context)
    else:
        row.format = "safetensors" if spec.source == "hf" else spec.source
        _hf_fit(row, spec, target, context)
    _add_figures(row, spec, found, read)
    return row


def _gguf_fit(
    row: Row, spec: ModelSpec, models: list[GGUFFile], target: Device, context: int | None
) -> None:
    from scheda import settings

    weights = [m for m in models if not any(w in m.file.lower() for w in NOT_WEIGHTS)] or models
    at = settings.context_for(context, spec.context)
    judged = file_fits(spec, weights, at, 1, [target])
    fitting = [f for f in judged if f.fits[target.key]]
    best: FileFit = (
        max(fitting, key=lambda f: f.size) if fitting else min(judged, key=lambda f: f.total)
    )
    row.fits = bool(fitting)
    row.file, row.quant, row.size, row.memory = best.file, best.quant, best.size, best.total
    row.parts = len(next(m for m in weights if m.file == best.file).parts)


def _hf_fit(row: Row, spec: ModelSpec, target: Device, context: int | None) -> None:
    report = fit_report(spec, context, 1, [target])
    by_bits = sorted(report.rows, key=lambda r: r.weights, reverse=True)
    # The repository's own precision, where it is not one of the standard ones by another name
    # (F32 is FP32, BF16 is FP16/BF16: the same bytes).
    standard = {r.weights for r in by_bits if r.precision != "file"}
    by_bits = [r for r in by_bits if r.precision != "file" or r.weights not in standard]
    fitting = [r for r in by_bits if r.total <= target.usable]
    row.fits = bool(fitting)
    row.precisions = [_precision(spec, r.precision) for r in fitting]
    shown = fitting[0] if fitting else min(by_bits, key=lambda r: r.total, default=None)
    if shown is not None:
        row.memory = shown.total
        row.size = shown.weights


def _precision(spec: ModelSpec, precision: str) -> str:
    """`fit`'s "file" precision is the repository's own: its type, as stored."""
    if precision != "file":
        return precision
    return f"{spec.file_type} (as stored)" if spec.file_type else "as stored"


# -- figures -----------------------------------------------------------------------------------


def _add_figures(row: Row, spec: ModelSpec, found: Found, read: cache.Read) -> None:
    from scheda.search import figures  # numpy and the stores: loaded when a row is made

    # A split model has no one sha256 of its own: stored runs are matched on whole files.
    sha256 = read.sha256.get(row.file) if row.file and row.parts == 1 else None
    try:
        # The row's size spares hashing local files that cannot be this one.
        row.quality = list(figures.quality(spec, found.card_data, sha256, file_bytes=row.size))
        if row.format == "gguf":
            row.quant_cost = figures.quant_cost(row.quant, sha256, file_bytes=row.size)
        if row.fits and row.size:
            row.speed = figures.speed(row.size)
    except SchedaError as exc:  # a store that cannot be read: the row stands without figures
        row.notes.append(f"figures: {exc}")


# -- the search --------------------------------------------------------------------------------


def rank(rows: list[Row]) -> list[Row]:
    """Best first: fits, then the headline benchmark, then downloads (see the docstring)."""

    def key(row: Row) -> tuple[bool, bool, float, int]:
        headline = row.headline()
        return (
            row.error is not None,
            not row.fits,
            -(headline if headline is not None else -math.inf),
            -(row.downloads or 0),
        )

    return sorted(rows, key=key)


@dataclass
class SearchResult:
    """A search's answer: where the repositories came from, the target, the rows best first."""

    query: str
    target: Device
    context: int | None  # as asked; None: each model's default (4096, or less if trained on less)
    sort: str
    offline: bool
    note: str | None
    rows: list[Row]
    left_out: int = 0  # rows --fits left out

    @property
    def from_cache(self) -> int:
        return sum(r.origin == "cache" for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "target": {
                "device": self.target.key,
                "name": self.target.name,
                "memory": self.target.memory,
                "usable": self.target.usable,
            },
            "context": self.context,
            "sort": self.sort,
            "offline": self.offline,
            "note": self.note,
            "left_out": self.left_out,
            "rows": [r.to_dict() for r in self.rows],
        }


def search(
    query: str,
    target: Device,
    context: int | None = None,
    sort: str = "downloads",
    limit: int = 20,
    fits_only: bool = False,
    on_read: Progress | None = None,
    stop: threading.Event | None = None,
) -> SearchResult:
    """`scheda search`: the repositories the Hub (or offline the cache) names for the query,
    each read concurrently or from the cache, ranked best first on the target;
    `fits_only` leaves out what does not fit; `stop` (the studio's client left) ends it
    with `Stopped` as soon as the reads in flight end."""
    from scheda.search.hub_search import search as find

    if stop is not None and stop.is_set():
        raise Stopped
    answer = find(query, sort, limit)
    reads = read_all(answer.found, on_read, stop)
    made = [make_row(f, r, target, context) for f, r in zip(answer.found, reads, strict=True)]
    rows = rank(made)
    shown = [r for r in rows if r.fits] if fits_only else rows
    return SearchResult(
        query, target, context, sort, answer.offline, answer.note, shown, len(rows) - len(shown)
    )
