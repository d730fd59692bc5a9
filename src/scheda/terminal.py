"""Where the commands print: a Rich console sized for a terminal or a pipe, and JSON."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import typer
from rich.console import Console

# Wide enough for the side-by-side tables when the output goes to a file or a pipe.
NOT_A_TTY_WIDTH = 140


def console() -> Console:
    if sys.stdout.isatty() or "COLUMNS" in os.environ:
        return Console()
    return Console(width=NOT_A_TTY_WIDTH)


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
