"""Engines behind one small interface, imported only when used.

`load(name, path, ...)` returns an `Engine`; the registry maps a name to the
module that implements it, so importing scheda never imports an engine's
heavy dependencies. `open_model(ref)` picks the engine from the model
reference: a GGUF file goes to llama.cpp, an HF folder to transformers.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheda.engines.base import (
    Embedder,
    Engine,
    Generation,
    Message,
    Sample,
    Timings,
    Token,
    TokenLogprob,
)
from scheda.errors import EngineError, ModelFileError, UsageError, install_hint
from scheda.sampling import LLAMA_CPP, TRANSFORMERS

# name -> ("module:class", what to install when its module is missing)
# Keyed by the names the sampling declarations give the engines (scheda/sampling.py).
REGISTRY: dict[str, tuple[str, str]] = {
    LLAMA_CPP: ("scheda.engines.llamacpp:LlamaCppEngine", install_hint()),
    TRANSFORMERS: (
        "scheda.engines.transformers:TransformersEngine",
        install_hint("transformers"),
    ),
}

# The engine each kind of model file goes to when the user names none.
BY_FORMAT = {"gguf": LLAMA_CPP, "hf": TRANSFORMERS}


# Options only one engine takes; the others refuse them in one line rather than ignore them.
ENGINE_ONLY = {
    "dtype": (
        "transformers",
        "a GGUF carries its precision in the file (pick another file, "
        "or --engine transformers on an HF folder)",
    ),
    "quantize": (
        "transformers",
        "a GGUF is quantized in the file (pick another file, "
        "or --engine transformers on an HF folder)",
    ),
}


@dataclass(frozen=True)
class Plan:
    """A model resolved to its engine and file, with checked options; `open()` loads it.

    The server's pool plans every model when it starts (a bad reference fails at once) and
    opens each on first use; everyone else calls `open_model`, which does both at once.
    """

    engine: str
    path: Path
    options: dict[str, Any] = field(default_factory=dict)

    def open(self) -> Engine:
        target, install = REGISTRY[self.engine]
        module_name, class_name = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise EngineError(
                f"the {self.engine} engine needs a package that is not installed ({exc.name}): "
                f"run {install}"
            ) from exc
        cls = getattr(module, class_name)
        engine: Engine = cls(self.path, **self.options)
        return engine


def load_embedder(path: str | Path, **options: Any) -> Embedder:
    """Load an encoder folder for sentence embeddings (the transformers extra)."""
    try:
        from scheda.engines.embeddings import EmbeddingEngine
    except ImportError as exc:
        raise EngineError(
            f"embeddings need a package that is not installed ({exc.name}): "
            f"run {REGISTRY['transformers'][1]}"
        ) from exc
    return EmbeddingEngine(Path(path), **options)


def engine_for(path: Path) -> str:
    """The engine a model file or folder runs on by default."""
    if path.is_file() and path.suffix.lower() == ".gguf":
        return "llama.cpp"
    if path.is_dir() and (path / "config.json").is_file():
        return "transformers"
    raise ModelFileError(f"{path}: not a GGUF file or an HF model folder, nothing to run")


def choose(ref: str, engine: str | None = None) -> tuple[str, Path]:
    """The engine and the file or folder a model reference runs on; an error if it cannot run."""
    from scheda.resolve import locate

    if engine is not None and engine not in REGISTRY:
        raise UsageError(f"unknown engine {engine!r}: known are {', '.join(REGISTRY)}")
    path = locate(ref)
    if path is None:
        raise UsageError(
            f"{ref!r} is a catalog entry, not weights on this machine: give a .gguf file, "
            "an HF folder or an org/name in the local Hugging Face cache to run it"
        )
    name = engine or engine_for(path)
    if name == "llama.cpp" and path.is_dir():
        raise UsageError(
            f"{path} is an HF folder: llama.cpp runs GGUF files (use --engine transformers)"
        )
    if name == "transformers" and path.is_file():
        raise UsageError(
            f"{path} is a GGUF file: transformers runs HF folders "
            f"(make one with `scheda convert {ref} OUT`)"
        )
    return name, path


def plan(ref: str | Path, engine: str | None = None, **options: Any) -> Plan:
    """The engine, file and load options for a model reference; options left None are the
    engine's defaults (settings.py)."""
    name, path = choose(str(ref), engine)
    chosen = {key: value for key, value in options.items() if value is not None}
    for key in chosen:
        only, why = ENGINE_ONLY.get(key, (name, ""))
        if only != name:
            raise UsageError(f"--{key} is for the {only} engine; {why}")
    return Plan(name, path, chosen)


def open_model(ref: str | Path, engine: str | None = None, **options: Any) -> Engine:
    """Resolve a model reference and load it into its engine (or the one named): the one way
    the commands, the server's pool and the evaluator open a model."""
    return plan(ref, engine, **options).open()


__all__ = [
    "REGISTRY",
    "Embedder",
    "Engine",
    "Generation",
    "Message",
    "Plan",
    "Sample",
    "Timings",
    "Token",
    "TokenLogprob",
    "choose",
    "engine_for",
    "load_embedder",
    "open_model",
    "plan",
]
