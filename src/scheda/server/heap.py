"""The server process's C heap: fewer malloc arenas, and freed memory handed back.

A server that runs for hours starts a thread for every request (server/runner.py)
and loads and unloads models. glibc's malloc gives threads arenas of their own,
up to eight per core, and keeps what is freed in them for reuse: the process's
resident memory climbs for minutes after the start, and a model unloaded leaves
much of its memory resident. Two arenas are ample for threads that spend their
time inside llama.cpp (which allocates its buffers once per model), and
`malloc_trim` after an unload returns the freed pages. Elsewhere than glibc
(macOS, musl) both calls are skipped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache

M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
ARENAS = 2


@cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 -- present in glibc only
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap malloc's arenas for the threads started from now on; whether it took effect."""
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, arenas) == 1)


def trim() -> bool:
    """Hand the memory malloc holds free back to the system; whether any was."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0) == 1)
