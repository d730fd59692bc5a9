"""Can I run it: `scheda fit`, the memory at each precision and where it fits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from scheda import settings
from scheda.cli.common import FileOpt, JsonOpt, MarkdownOpt, one_format
from scheda.display.terminal import console, emit_json
from scheda.errors import UsageError
from scheda.spec import ModelSpec

if TYPE_CHECKING:  # the devices load when `fit` runs, not at start-up
    from scheda.formulas.hardware import Device


def fit(
    model: Annotated[
        str,
        typer.Argument(
            help="A model reference (file, folder, catalog name, default, or a Hub "
            "repository org/name[:QUANT], the cache's, else read on the Hub)."
        ),
    ],
    file: FileOpt = None,
    context: Annotated[
        int | None,
        typer.Option(
            "--context",
            "-c",
            min=1,
            help=f"Context length (default: the engines' own, {settings.DEFAULT_CONTEXT} or less "
            "when the model was trained on less).",
        ),
    ] = None,
    batch: Annotated[
        int, typer.Option("--batch", "-b", min=1, help="Sequences decoded together.")
    ] = 1,
    gpu: Annotated[
        str | None,
        typer.Option(
            "--gpu", help="Only this device: t4, l4, rtx-4090, a100, h100, apple-32, host..."
        ),
    ] = None,
    memory: Annotated[
        float | None, typer.Option("--memory", help="Only a budget of this many GB.")
    ] = None,
    measure: Annotated[
        bool,
        typer.Option(
            "--measure",
            help="Load it through llama.cpp and measure the real memory beside the estimate.",
        ),
    ] = False,
    as_json: JsonOpt = False,
    markdown: MarkdownOpt = False,
) -> None:
    """The memory a model needs at each precision, and where it fits."""
    from scheda.display import render
    from scheda.formulas import hardware
    from scheda.formulas.fit_report import fit_report
    from scheda.resolve import resolve

    one_format(as_json, markdown)
    if gpu and memory:
        raise UsageError("give --gpu or --memory, not both")
    devices = (
        hardware.find(gpu)
        if gpu
        else [hardware.custom(memory)]
        if memory is not None
        else hardware.all_devices()
    )
    spec = resolve(model, file)
    file_devices = _file_devices(devices, bool(gpu or memory)) if spec.remote else []
    report = fit_report(spec, context, batch, devices, file_devices)
    measured = _measure(spec, context) if measure else None
    if as_json:
        data = report.to_dict()
        if measured:
            data["measured"] = [
                {"context": c, "estimate": e, "measured": m} for c, e, m in measured
            ]
        emit_json(data)
    elif markdown:
        typer.echo(render.fit_markdown(report, measured, bool(gpu or memory), file_devices))
    else:
        console().print(render.fit_view(report, measured, bool(gpu or memory), file_devices))


def _file_devices(devices: list[Device], chosen: bool) -> list[Device]:
    """Where a GGUF repository's files are judged: this host, and the devices chosen."""
    from scheda.formulas import hardware

    host = next((d for d in devices if d.key == "host"), None) or hardware.host()
    return [host, *(d for d in devices if d.key != "host")] if chosen else [host]


MEASURE_CONTEXTS = (512, 2048)


def _measure(spec: ModelSpec, context: int | None) -> list[tuple[int, int, int]]:
    """(context, estimate, measured) at the asked context, or at 512, 2048 and the model's own."""
    from pathlib import Path

    from scheda.formulas.fit import estimate
    from scheda.measurement.measure import measure

    if spec.source != "gguf" or spec.path is None or spec.remote is not None:
        raise UsageError(
            "--measure loads the model through llama.cpp: it needs a .gguf file on this "
            "machine (`scheda pull` one)"
        )
    top = settings.model_context(spec.context)
    contexts = [context] if context else sorted({c for c in (*MEASURE_CONTEXTS, top) if c <= top})
    with console().status("measuring (one fresh process per context)..."):
        return [(c, estimate(spec, "file", c).total, measure(Path(spec.path), c)) for c in contexts]
