"""The models a server offers: loaded on first use, unloaded least recently used first.

Each model's memory need is `fit`'s estimate at the context and parallel
slots it is served with (weights, KV cache for every slot, compute buffers).
Before a model loads, idle models leave until the loaded ones plus the new
one fit in the budget. A model with requests in flight is never unloaded
under them: if only busy models stand in the way, the request gets a 503.

The pool admits requests, it does not schedule them. Up to `parallel` requests
to one model decode together in llama.cpp's slots (continuous batching); up to
`queue` more wait for a free slot (in the engine, where a cancel is seen while
they wait); beyond that the server answers 503 at once rather than let waits
grow without bound.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheda import engines, settings
from scheda.engines.base import Embedder, Engine
from scheda.errors import APIError, ModelNotServedError, ServerBusyError, UsageError
from scheda.formulas.fit import estimate
from scheda.resolve import resolve
from scheda.spec import ModelSpec
from scheda.units import size as human_bytes

if TYPE_CHECKING:
    from scheda.evaluation.scorer import Scorer

# What the pool holds for a loaded model: an engine that generates, or an encoder's embedder
# (`ServedModel.kind` says which the routes may ask for).
Loaded = Engine | Embedder


def generator(engine: Loaded) -> Engine:
    """The loaded model as an `Engine`, for the routes that generate. They pick a chat model
    first (`ServedModel.kind`); an embedder that comes this far is refused as they refuse it."""
    if isinstance(engine, Engine):
        return engine
    raise APIError("this model makes embeddings: name a chat model", param="model")


def embedder(engine: Loaded) -> Embedder:
    """The loaded model as an `Embedder`, for the embeddings route (which picks an embedding
    model first)."""
    if isinstance(engine, Embedder):
        return engine
    raise APIError("this model generates text: name an embedding model", param="model")


@dataclass
class ServedModel:
    """One model the server offers, loaded or not."""

    id: str
    ref: str
    path: Path
    engine_name: str  # "llama.cpp" or "transformers"
    kind: str  # "chat" (generates) or "embedding" (an encoder)
    spec: ModelSpec
    context: int
    need: int  # bytes when loaded, fit's estimate
    engine: Loaded | None = None  # an Embedder for kind "embedding", an Engine otherwise
    scorer: Scorer | None = None  # exact log-likelihoods for echo, opened on the first such request
    active: int = 0  # requests admitted and not finished
    last_used: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)
    scoring_lock: threading.Lock = field(default_factory=threading.Lock)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": str(self.path),
            "engine": self.engine_name,
            "kind": self.kind,
            "loaded": self.engine is not None,
            "context": self.context,
            "memory": self.need,
        }


def model_id(ref: str, path: Path) -> str:
    """What clients put in `model`: the reference as typed, or a file or folder's name."""
    if Path(ref).expanduser().exists():
        return path.stem if path.is_file() else path.name
    return ref


def served_model(
    ref: str,
    engine: str | None = None,
    context: int | None = None,
    parallel: int = 4,
    threads: int | None = None,
) -> ServedModel:
    """Resolve a model reference and work out what serving it will cost."""
    name, path = engines.choose(ref, engine)
    spec = resolve(ref)
    if spec.kind == "encoder":
        kind, slots = "embedding", 1
    else:
        kind, slots = "chat", parallel if name == "llama.cpp" else 1
    served = settings.context_for(context, spec.context)
    if kind == "embedding":
        served = min(served, spec.context or served)
    precision = "file" if name == "llama.cpp" else "FP32"  # transformers runs float32 on a CPU
    need = estimate(spec, precision, served * slots).total
    options: dict[str, Any] = {"threads": threads}
    if kind == "chat":
        options["context"] = served
        if name == "llama.cpp":
            options["parallel"] = parallel
    return ServedModel(
        id=model_id(ref, path),
        ref=ref,
        path=path,
        engine_name=name,
        kind=kind,
        spec=spec,
        context=served,
        need=need,
        options=options,
    )


class ModelPool:
    def __init__(self, models: list[ServedModel], budget: int, queue: int, parallel: int) -> None:
        if not models:
            raise UsageError("give at least one model to serve")
        seen: dict[str, str] = {}
        for m in models:
            if m.id in seen:
                raise UsageError(f"{m.ref!r} and {seen[m.id]!r} would both be served as {m.id!r}")
            seen[m.id] = m.ref
            if m.need > budget:
                raise UsageError(
                    f"{m.id} needs {human_bytes(m.need)}, more than the whole "
                    f"{human_bytes(budget)} budget: raise --budget or lower --context"
                )
        self.models = {m.id: m for m in models}
        self.default = models[0].id
        self.budget = budget
        self.queue = queue
        self.parallel = parallel
        # How a model added later is served (`served_model`'s options): the serve's own.
        self.defaults: dict[str, Any] = {"parallel": parallel}
        self._lock = threading.Lock()  # bookkeeping: admission counts, who is loaded
        self._loading = threading.Lock()  # one load (and its evictions) at a time

    def add(self, entry: ServedModel) -> ServedModel:
        """A model that joins the served ones (one the studio pulled); the one already
        served under its id stays."""
        with self._lock:
            if entry.id in self.models:
                return self.models[entry.id]
            if entry.need > self.budget:
                raise UsageError(
                    f"{entry.id} needs {human_bytes(entry.need)}, more than the whole "
                    f"{human_bytes(self.budget)} budget: serve it with a larger --budget"
                )
            self.models[entry.id] = entry
            return entry

    def get(self, model: str | None, kind: str | None = None) -> ServedModel:
        """The served model a request names; 404 if unknown. A request that names none gets the
        default, or with `kind` the first model of that kind (an embeddings request that names
        no model goes to the first embedding model, not to a chat model)."""
        if not model and kind is not None:
            entry = next((m for m in self.models.values() if m.kind == kind), None)
            if entry is None:
                raise APIError(f"no {kind} model is served here: name one in model", "model")
            return entry
        entry = self.models.get(model or self.default)
        if entry is None:
            known = ", ".join(self.models)
            raise ModelNotServedError(f"model {model!r} is not served here: the models are {known}")
        return entry

    def capacity(self, entry: ServedModel) -> int:
        slots: int = entry.options.get("parallel", 1)
        return slots + self.queue

    @contextmanager
    def lease(self, entry: ServedModel) -> Iterator[Loaded]:
        """Admit one request to a model and hand it the loaded engine (loading it if need be).

        Blocks while the model loads; call it from a worker thread.
        """
        self._admit(entry)
        try:
            yield self._loaded(entry)
        finally:
            with self._lock:
                entry.active -= 1
                entry.last_used = time.monotonic()

    def _admit(self, entry: ServedModel) -> None:
        with self._lock:
            if entry.active >= self.capacity(entry):
                raise ServerBusyError(
                    f"{entry.id} has {entry.active} requests in flight, its limit: retry shortly"
                )
            entry.active += 1
            entry.last_used = time.monotonic()

    def _loaded(self, entry: ServedModel) -> Loaded:
        if entry.engine is not None:
            return entry.engine
        with self._loading:
            if entry.engine is None:
                self._make_room(entry)
                entry.engine = self._load(entry)
            return entry.engine

    def _load(self, entry: ServedModel) -> Loaded:
        if entry.kind == "embedding":
            return engines.load_embedder(entry.path, **entry.options)
        return engines.open_model(entry.path, entry.engine_name, **entry.options)

    def _make_room(self, entry: ServedModel) -> None:
        """Unload idle models, least recently used first, until `entry` fits the budget."""
        with self._lock:
            loaded = [m for m in self.models.values() if m.engine is not None]
            used = sum(m.need for m in loaded)
            idle = sorted((m for m in loaded if m.active == 0), key=lambda m: m.last_used)
            gone: list[ServedModel] = []
            while used + entry.need > self.budget and idle:
                victim = idle.pop(0)
                used -= victim.need
                gone.append(victim)
            if used + entry.need > self.budget:
                busy = ", ".join(m.id for m in loaded if m.active)
                raise ServerBusyError(
                    f"{entry.id} needs {human_bytes(entry.need)} and the budget is "
                    f"{human_bytes(self.budget)}; {busy} busy: retry shortly"
                )
            closing: list[Loaded | Scorer] = []
            for victim in gone:
                closing += [held for held in (victim.engine, victim.scorer) if held is not None]
                victim.engine = victim.scorer = None
        for held in closing:
            held.close()

    @contextmanager
    def scoring(self, entry: ServedModel) -> Iterator[Scorer]:
        """The model's log-likelihood scorer, one request at a time (it holds one sequence).

        Echo requests score whole prompts, which llama.cpp's server cannot do; the scorer
        loads the model a second time for it, on the first such request.
        """
        from scheda.evaluation.scorer import open_scorer

        self._admit(entry)
        try:
            with entry.scoring_lock:
                if entry.scorer is None:
                    entry.scorer = open_scorer(
                        entry.path, entry.context, entry.options.get("threads")
                    )
                yield entry.scorer
        finally:
            with self._lock:
                entry.active -= 1
                entry.last_used = time.monotonic()

    def health(self) -> dict[str, Any]:
        """What `/health` answers: the models loaded and the requests each holds."""
        return {
            "status": "ok",
            "loaded": self.loaded(),
            "active": {m.id: m.active for m in self.models.values()},
        }

    def loaded(self) -> list[str]:
        return [m.id for m in self.models.values() if m.engine is not None]

    def close(self) -> None:
        with self._loading, self._lock:
            for m in self.models.values():
                if m.engine is not None:
                    m.engine.close()
                    m.engine = None
                if m.scorer is not None:
                    m.scorer.close()
                    m.scorer = None
