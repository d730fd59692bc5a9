"""Engines behind one small interface, imported only when used.

`load(name, path, ...)` returns an `Engine`; the registry maps a name to the
module that implements it, so importing scheda never imports an engine's
heavy dependencies.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from scheda.engines.base import Engine, Token
from scheda.errors import UsageError

# name -> "module:class"
REGISTRY: dict[str, str] = {
    "llama.cpp": "scheda.engines.llamacpp:LlamaCppEngine",
}


def load(name: str, path: str | Path, **options: Any) -> Engine:
    """Load a model file into the named engine."""
    if name not in REGISTRY:
        raise UsageError(f"unknown engine {name!r}: known are {', '.join(REGISTRY)}")
    module_name, class_name = REGISTRY[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(Path(path), **options)  # type: ignore[no-any-return]


__all__ = ["REGISTRY", "Engine", "Token", "load"]
