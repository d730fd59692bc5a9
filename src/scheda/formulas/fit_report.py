"""The `fit` answer: the breakdown at each precision, and what fits where.

Pure assembly over `fit` (the formulas) and `hardware` (the devices); the CLI
renders the result as a table, Markdown or JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from scheda import catalog, settings
from scheda.formulas.fit import (
    Breakdown,
    estimate,
    longest_context,
    precisions_for,
    rule_of_thumb_bytes,
)
from scheda.formulas.hardware import Device
from scheda.spec import GGUFFile, ModelSpec

# The precision a "what would fit" suggestion assumes: the usual local default.
SUGGESTED_PRECISION = "Q4_K_M"


@dataclass
class DeviceFit:
    device: Device
    # precision -> longest context that fits (None: not even a short one)
    longest: dict[str, int | None]
    # precision -> fits at the asked context
    fits: dict[str, bool]


@dataclass
class FileFit:
    """One GGUF model of a repository at the asked context: its need, and where it fits."""

    file: str
    quant: str | None
    size: int
    total: int  # bytes at the context: its weights, KV cache and engine buffers
    fits: dict[str, bool]  # device key -> fits
    read: bool  # the file whose header was read (exact); the others scaled from it by size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FitReport:
    spec: ModelSpec
    context: int
    batch: int
    rows: list[Breakdown]
    rule_of_thumb: dict[str, int]
    devices: list[DeviceFit]
    alternatives: dict[str, Any] = field(default_factory=dict)
    files: list[FileFit] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.spec.name,
            "parameters": self.spec.parameters,
            "context": self.context,
            "batch": self.batch,
            "precisions": [row.to_dict() for row in self.rows],
            "rule_of_thumb": self.rule_of_thumb,
            "devices": [
                {
                    "device": d.device.key,
                    "name": d.device.name,
                    "memory": d.device.memory,
                    "usable": d.device.usable,
                    "fits": d.fits,
                    "longest_context": d.longest,
                }
                for d in self.devices
            ],
            "alternatives": self.alternatives,
            "remote": asdict(self.spec.remote) if self.spec.remote else None,
            "files": [f.to_dict() for f in self.files],
        }


def fit_report(
    spec: ModelSpec,
    context: int | None,
    batch: int,
    devices: list[Device],
    file_devices: list[Device] | None = None,
) -> FitReport:
    """The fit at each precision on each device; for a GGUF repository read on the Hub,
    also each of its models on `file_devices` (default: `devices`)."""
    context = settings.context_for(context, spec.context)
    rows = [estimate(spec, p, context, batch) for p in precisions_for(spec)]
    rule = {p: b for p in ("FP32", "FP16/BF16", "Q8_0") if (b := rule_of_thumb_bytes(spec, p))}
    fits = [
        DeviceFit(
            device=d,
            longest={
                r.precision: longest_context(spec, r.precision, d.usable, batch) for r in rows
            },
            fits={r.precision: r.total <= d.usable for r in rows},
        )
        for d in devices
    ]
    report = FitReport(spec, context, batch, rows, rule, fits)
    if spec.remote is not None and spec.remote.ggufs:
        report.files = file_fits(spec, spec.remote.ggufs, context, batch, file_devices or devices)
    nothing_fits = [d.device for d in fits if not any(d.fits.values())]
    if nothing_fits:
        report.alternatives = alternatives(spec, context, batch, rows, nothing_fits)
    return report


def alternatives(
    spec: ModelSpec, context: int, batch: int, rows: list[Breakdown], devices: list[Device]
) -> dict[str, Any]:
    """For devices where nothing fits: bigger devices that would, and catalog models that would."""
    from scheda.formulas.hardware import GPUS

    smallest = min(rows, key=lambda r: r.total)
    bigger = [
        {"device": g.key, "name": g.name, "precision": r.precision}
        for g in sorted(GPUS, key=lambda g: g.usable)
        for r in [
            max((r for r in rows if r.total <= g.usable), key=lambda r: r.total, default=None)
        ]
        if r is not None
    ]
    budget = min(d.usable for d in devices)

    def fits_budget(m: catalog.CatalogModel) -> bool:
        need = estimate(
            catalog.catalog_spec(m), SUGGESTED_PRECISION, min(context, m.context), batch
        )
        return need.total <= budget

    smaller = sorted(
        (catalog.decoder_parameters(m), m.name) for m in catalog.MODELS if fits_budget(m)
    )
    return {
        "smallest_precision": smallest.precision,
        "smallest_total": smallest.total,
        "devices_that_fit": bigger[:4],
        "catalog_models_that_fit": [name for _, name in reversed(smaller)][:5],
        "catalog_precision": SUGGESTED_PRECISION,
    }


def file_fits(
    spec: ModelSpec, files: list[GGUFFile], context: int, batch: int, devices: list[Device]
) -> list[FileFit]:
    """Each GGUF model of a repository at a context, from the one header read: the same
    architecture, so the same KV cache and buffers, with each file's own tensor bytes (its
    size less the header and padding the read file has)."""
    overhead = (spec.file_size or 0) - (spec.tensor_bytes or 0)
    read_file = spec.remote.files_read[0] if spec.remote and spec.remote.files_read else None
    out = []
    for f in files:
        read = f.file == read_file
        variant = spec if read else replace(spec, tensor_bytes=max(1, f.size - overhead))
        total = estimate(variant, "file", context, batch).total
        fits = {d.key: total <= d.usable for d in devices}
        out.append(FileFit(f.file, f.quant, f.size, total, fits, read))
    return out
