"""Command-line options made from declarations, so that each is written once.

`with_sampling` gives a command every sampling option `scheda.sampling` declares (flag,
type, bounds, default, help) and hands the command one `Sampling` record.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from scheda import sampling as declared_options
from scheda.sampling import Sampling


def _sampling_parameter(d: declared_options.Declared, default: Any) -> inspect.Parameter:
    info = d.option
    if d.kind == "strings":
        annotation: Any = list[str] | None
        default = None  # Typer's multiple option: None when not given
    else:
        annotation = d.type
    numeric = d.kind in ("integer", "number")
    option = typer.Option(
        *info.flags,
        help=info.help,
        show_default=True,
        min=info.minimum if numeric else None,
        max=info.maximum if numeric else None,
    )
    return inspect.Parameter(
        d.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[annotation, option],
    )


def with_sampling(
    *, only: tuple[str, ...] | None = None, defaults: dict[str, Any] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the declared sampling options (or `only` these) to a command as flags.

    The command takes a `sampling: Sampling` parameter instead of one per option;
    `defaults` changes a default for this command alone (chat answers are longer).
    """
    defaults = defaults or {}

    def wrap(command: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(command, eval_str=True)
        chosen = [
            d
            for d in declared_options.declared()
            if d.option.flags and (only is None or d.name in only)
        ]
        added = [_sampling_parameter(d, defaults.get(d.name, d.default)) for d in chosen]
        names = [d.name for d in chosen]
        kept = [p for p in own.parameters.values() if p.name != "sampling"]
        positional = [p for p in kept if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in kept[len(positional) :]]

        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            if "stop" in values:
                values["stop"] = list(values["stop"] or [])
            return command(*args, sampling=Sampling(**values), **kwargs)

        parameters = [*positional, *added, *keyword]
        run.__signature__ = own.replace(parameters=parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        del run.__wrapped__  # Typer must read the new signature, not the wrapped one
        return run

    return wrap
