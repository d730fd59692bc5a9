"""How fast is it here: `scheda bench`, beside the engine called directly and the other runtimes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from scheda import settings
from scheda.cli.common import ModelArg, ThreadsOpt
from scheda.display.terminal import console
from scheda.errors import UsageError

if TYPE_CHECKING:
    from scheda.measurement import bench as bench_module


def bench(
    model: ModelArg,
    vs: Annotated[
        list[str] | None,
        typer.Option(
            "--vs", help="Also run: engine, llama-cpp-python or transformers (repeatable)."
        ),
    ] = None,
    runs: Annotated[
        int, typer.Option("--runs", min=1, max=20, help="Rounds (each contender once per round).")
    ] = 3,
    threads: ThreadsOpt = None,
    pp: Annotated[
        int,
        typer.Option(
            "--pp", min=1, max=65536, help="Prompt tokens of the prompt test (llama-bench -p)."
        ),
    ] = 512,
    tg: Annotated[
        int,
        typer.Option(
            "--tg", min=1, max=65536, help="Tokens generated in the generation test (-n)."
        ),
    ] = 128,
    hf_folder: Annotated[
        Path | None,
        typer.Option("--hf-folder", help="The HF folder for --vs transformers (default: convert)."),
    ] = None,
    chart: Annotated[
        Path | None, typer.Option("--chart", help="Draw the figures into this PNG.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    no_store: Annotated[
        bool,
        typer.Option(
            "--no-store", help="Do not keep the results (search predicts speed from those kept)."
        ),
    ] = False,
) -> None:
    """Load time, first token, pp512 and tg128 tokens/s, peak memory; --vs compares.

    As llama-bench: pp512 times a 512-token prompt, tg128 the generation of 128 tokens
    (--pp and --tg change the sizes).
    """
    from scheda.display import render
    from scheda.measurement import bench as bench_module
    from scheda.resolve import locate

    path = locate(model)
    if path is None or not path.is_file() or path.suffix.lower() != ".gguf":
        raise UsageError(f"{model}: bench runs a GGUF file through llama.cpp; give one")
    vs = list(dict.fromkeys(vs or []))
    if "transformers" in vs and hf_folder is None:
        hf_folder = _converted(path)
    err = Console(stderr=True)
    with err.status("benchmarking...") as status:
        report = bench_module.run_bench(
            model, path, vs, runs, threads, hf_folder, lambda text: status.update(text), pp, tg
        )
        if not no_store:
            status.update("storing the results (the file's SHA-256, once)")
            _store(report, path, hf_folder, threads)
    if chart is not None:
        render.bench_chart(report, chart)
        err.print(f"chart: {chart}", markup=False)  # the path is the user's
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        console().print(render.bench_view(report))


def _store(
    report: bench_module.Report, path: Path, hf_folder: Path | None, threads: int | None
) -> None:
    """Each contender's result in the bench file, where `search` calibrates its speed."""
    from scheda.files.digest import sha256
    from scheda.formulas.hardware import physical_cores
    from scheda.stores.benches import BenchStore

    digests: dict[Path, str] = {}
    with BenchStore() as store:
        for result in report.results:
            target = hf_folder if result.contender == "transformers" and hf_folder else path
            if target not in digests:
                digests[target] = sha256(target)
            store.add(
                target,
                digests[target],
                result.contender,
                threads or physical_cores(),
                (report.pp_tokens, report.tg_tokens),
                (result.pp_tokens_per_s, result.tg_tokens_per_s),
                result.runs,
                dict(report.machine),
            )


def _converted(path: Path) -> Path:
    """The GGUF as an HF folder, converted once and kept in the user's cache."""
    from scheda.files.convert import convert as convert_gguf

    stat = path.stat()
    folder = settings.cache_dir() / "converted" / f"{path.stem}-{stat.st_size}-{int(stat.st_mtime)}"
    if not (folder / "config.json").is_file():
        convert_gguf(path, folder, overwrite=True, progress=True)
    return folder
