"""Get it, if it fits: `scheda pull org/name[:QUANT]`, the fit verdict, then the download."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from scheda.cli.common import FileOpt, JsonOpt
from scheda.display.terminal import console, emit_json
from scheda.errors import UsageError

if TYPE_CHECKING:  # rich.progress loads when a download starts, not with the CLI
    from rich.progress import Progress, TaskID


def pull(
    model: Annotated[
        str,
        typer.Argument(help="A Hub repository: org/name, or org/name:QUANT for a GGUF file."),
    ],
    file: FileOpt = None,
    context: Annotated[
        int | None,
        typer.Option(
            "--context",
            "-c",
            min=16,
            help="The context the verdict is for (default: the engines' own, 4096 or less).",
        ),
    ] = None,
    gpu: Annotated[
        str | None,
        typer.Option("--gpu", help="Judge the fit on this device, not this host: t4, a100..."),
    ] = None,
    memory: Annotated[
        float | None, typer.Option("--memory", help="Judge the fit on a budget of this many GB.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Download even what will not fit the target.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Download a model into the Hugging Face cache, after checking that it fits.

    The verdict comes first, read on the Hub without downloading; a model that will not fit
    is refused with the numbers and what would fit instead. The download resumes where an
    interrupted one stopped, and each file is checked against the Hub's checksum.
    """
    from scheda.files.pull import plan as make_plan
    from scheda.files.pull import pull as download
    from scheda.formulas import hardware

    if gpu and memory:
        raise UsageError("give --gpu or --memory, not both")
    device = None
    if gpu:  # a name may match several (a100: 40 and 80 GB): the smallest decides
        device = min(hardware.find(gpu), key=lambda d: d.usable)
    elif memory is not None:
        device = hardware.custom(memory)
    plan = make_plan(model, file, context, device)
    if not as_json and (plan.fits or force):  # a refusal says it all in its one line
        style = "green" if plan.fits else "yellow"
        console().print(plan.verdict(), style=style, highlight=False, soft_wrap=True, markup=False)
    progress = _ProgressBar(plan.reference, show=not as_json)
    try:
        with progress:
            pulled = download(plan, force, progress.update)
    except KeyboardInterrupt:
        if progress.total:
            kept = f"{progress.done:,} of {progress.total:,} bytes are kept in the cache"
            typer.echo(f"interrupted: {kept}; the same command continues from there", err=True)
        else:
            typer.echo("interrupted", err=True)
        sys.exit(130)
    if as_json:
        emit_json({"plan": plan.to_dict(), "pulled": pulled.to_dict()})
        return
    resumed = f", {pulled.resumed:,} bytes continued from before" if pulled.resumed else ""
    what = f"{pulled.downloaded:,} bytes downloaded{resumed}, checked against the Hub's checksums"
    if not pulled.files:
        what = "already in the cache"
    console().print(
        f"{pulled.reference}: {what}.\n{pulled.path}\nIt resolves offline now: "
        f"`scheda chat {pulled.reference}`, `scheda serve {pulled.reference}`.",
        highlight=False,
        soft_wrap=True,
        markup=False,  # the repository's name and the cache's path, from outside
    )


class _ProgressBar:
    """Rich's progress bar (bytes, speed, time left) on stderr, fed by the pull's callback."""

    def __init__(self, name: str, show: bool) -> None:
        self.name, self.show = name, show
        self.done = self.total = 0
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *_: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if not self.show:
            return
        if self._bar is None or self._task is None:
            self._bar, self._task = self._start(done, total)
        self._bar.update(self._task, completed=done, total=total)

    def _start(self, done: int, total: int) -> tuple[Progress, TaskID]:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        bar = Progress(
            TextColumn("{task.description}", markup=False),  # the repository's name
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        bar.start()
        return bar, bar.add_task(self.name, total=total, completed=done)
