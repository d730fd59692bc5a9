"""Which model, which file, for this machine: `scheda search QUERY`, the Hub's repositories
that match, read without downloading, ranked by what fits, how good and how fast."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from scheda.cli.common import ContextOpt, JsonOpt
from scheda.display.terminal import console, emit_json
from scheda.errors import UsageError

if TYPE_CHECKING:  # the devices and Rich's status load when `search` runs, not at start-up
    from rich.status import Status

    from scheda.formulas.hardware import Device


def search(
    query: Annotated[
        str, typer.Argument(help="Words the repository's name holds (the Hub's model search).")
    ],
    gpu: Annotated[
        str | None,
        typer.Option("--gpu", help="Judge the fit on this device, not this host: t4, a100..."),
    ] = None,
    memory: Annotated[
        float | None, typer.Option("--memory", help="Judge the fit on a budget of this many GB.")
    ] = None,
    context: ContextOpt = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=100, help="Repositories to read.")
    ] = 20,
    sort: Annotated[
        str,
        typer.Option(
            "--sort", help="The Hub's order of the repositories: downloads, likes, recent."
        ),
    ] = "downloads",
    fits_only: Annotated[
        bool, typer.Option("--fits", help="Leave out what does not fit the target.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Search the Hub for models, and rank what fits here: quality, quantization cost and speed."""
    # Each repository is read without downloading (as `scheda card` reads one) and remembered
    # by its commit, so a repeated search reads nothing again; with HF_HUB_OFFLINE=1 the
    # search covers the models in the local Hugging Face cache (docs/hub.md).
    from scheda.search.rows import search as run

    target = _target(gpu, memory)
    progress = _Progress(show=not as_json)
    with progress:
        result = run(query, target, context, sort, limit, fits_only, progress.update)
    if as_json:
        emit_json(result.to_dict())
        return
    from scheda.display.render_search import search_view

    console().print(search_view(result))


def _target(gpu: str | None, memory: float | None) -> Device:
    """The one device the rows are judged on: a --gpu name's smallest (a100 means 40 and 80
    GB: what fits the smaller fits both), a --memory budget, or this host."""
    from scheda.formulas import hardware

    if gpu and memory is not None:
        raise UsageError("give --gpu or --memory, not both")
    if gpu:
        return min(hardware.find(gpu), key=lambda d: d.usable)
    if memory is not None:
        return hardware.custom(memory)
    return hardware.host()


class _Progress:
    """A status line on stderr while repositories are read: how many, and the last one."""

    def __init__(self, show: bool) -> None:
        self.show = show
        self._status: Status | None = None

    def __enter__(self) -> _Progress:
        if self.show:
            from rich.console import Console

            self._status = Console(stderr=True).status("searching...")
            self._status.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._status is not None:
            self._status.stop()

    def update(self, done: int, total: int, repo: str) -> None:
        from rich.text import Text

        if self._status is not None:  # the repository's name is text, not markup
            self._status.update(Text(f"read {done} of {total} repositories: {repo}"))
