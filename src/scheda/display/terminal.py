"""The terminal: a Rich console sized for a terminal or a pipe, JSON, and Ctrl-C as a cancel."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
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


@contextlib.contextmanager
def ctrl_c_cancels() -> Iterator[threading.Event]:
    """While inside, Ctrl-C sets the event (the engine stops at its next token) instead of
    raising KeyboardInterrupt in the middle of the engine's C++ call."""
    cancel = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield cancel
        return
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)
