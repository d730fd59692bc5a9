"""The models a server offers: loaded on first use, unloaded when idle or for room.

Each model's memory need is `fit`'s estimate at the context and parallel
slots it is served with (weights, KV cache for every slot, compute buffers).
Before a model loads, idle models leave, least recently used first, until the
loaded ones plus the new one fit in the budget. A model with requests in
flight is never unloaded under them: if only busy models stand in the way,
the request gets a 503. One model loads at a time, and requests for a model
being loaded wait for that one load. A model idle for the keep-alive
(Ollama's `keep_alive`) is unloaded by a small reaper thread; with a
keep-alive of 0, when its last request ends.

A model named on the command line must fit the budget alone (the server
refuses to start otherwise); one found on the machine (`serve --all`) that
cannot is still listed, marked, and a request for it is a 400 with the numbers.

The pool admits requests, it does not schedule them. Up to `parallel` requests
to one model decode together in llama.cpp's slots (continuous batching); up to
`queue` more wait for a free slot (in the engine, where a cancel is seen while
they wait); beyond that the server answers 503 at once rather than let waits
grow without bound.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheda import engines, settings
from scheda.engines.base import Embedder, Engine
from scheda.errors import APIError, ModelNotServedError, ServerBusyError, UsageError
from scheda.formulas.fit import estimate
from scheda.resolve import resolve
from scheda.server import heap
from scheda.spec import ModelSpec
from scheda.units import size as human_bytes

if TYPE_CHECKING:
    from scheda.evaluation.scorer import Scorer
    from scheda.files.discover import Found

# What the pool holds for a loaded model: an engine that generates, or an encoder's embedder
# (`ServedModel.kind` says which the routes may ask for).
Loaded = Engine | Embedder
# The longest the reaper sleeps: it wakes sooner when a model's keep-alive ends sooner.
REAP_MAX_S = 60.0
LOAD_POLL_S = 0.05  # how often a request waiting for a load looks at its cancel event


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
    need: int  # bytes when loaded: fit's estimate (+ the prompt cache, served_model says)
    engine: Loaded | None = None  # an Embedder for kind "embedding", an Engine otherwise
    scorer: Scorer | None = None  # exact log-likelihoods for echo, opened on the first such request
    active: int = 0  # requests admitted and not finished
    last_used: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)
    scoring_lock: threading.Lock = field(default_factory=threading.Lock)
    found: bool = False  # found on the machine (serve --all), not named: listed even if too large
    loading: bool = False
    loads: int = 0  # times loaded since the server started

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": str(self.path),
            "engine": self.engine_name,
            "kind": self.kind,
            "loaded": self.engine is not None,
            "status": "loaded"
            if self.engine is not None
            else "loading"
            if self.loading
            else "unloaded",
            "context": self.context,
            "memory": self.need,
            "loads": self.loads,
        }

    def too_large(self, budget: int) -> str:
        """The one line that refuses this model when it needs more than the whole budget."""
        slots = self.options.get("parallel", 1)
        on = f" on {slots} slots" if slots > 1 else ""
        return (
            f"{self.id} needs {human_bytes(self.need)} at a context of {self.context:,}{on}, "
            f"more than the {human_bytes(budget)} budget: serve with a larger --budget or a "
            "smaller --context"
        )


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
    return _served(model_id(ref, path), ref, path, name, resolve(ref), context, parallel, threads)


def found_model(
    found: Found, context: int | None = None, parallel: int = 4, threads: int | None = None
) -> ServedModel:
    """A model found on the machine (`files/discover`), on its own engine, at what serving it
    will cost; its spec was read when it was found."""
    name = engines.engine_for(found.path)
    served = _served(found.id, found.id, found.path, name, found.spec, context, parallel, threads)
    served.found = True
    return served


def _served(
    model: str,
    ref: str,
    path: Path,
    name: str,
    spec: ModelSpec,
    context: int | None,
    parallel: int,
    threads: int | None,
) -> ServedModel:
    if spec.kind == "encoder":
        kind, slots = "embedding", 1
    else:
        kind, slots = "chat", parallel if name == "llama.cpp" else 1
    served = settings.context_for(context, spec.context)
    if kind == "embedding":
        served = min(served, spec.context or served)
    precision = "file" if name == "llama.cpp" else "FP32"  # transformers runs float32 on a CPU
    fit = estimate(spec, precision, served * slots)
    need = fit.total
    if name == "llama.cpp" and kind == "chat":
        # llama.cpp keeps the prompts its slots give up, for a conversation's next turn, in
        # as much memory again as the slots' KV cache (engines/llamacpp.prompt_cache_mib).
        need += fit.kv_cache
    options: dict[str, Any] = {"threads": threads}
    if kind == "chat":
        options["context"] = served
        if name == "llama.cpp":
            options["parallel"] = parallel
    return ServedModel(
        id=model,
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
    def __init__(
        self,
        models: list[ServedModel],
        budget: int,
        queue: int,
        parallel: int,
        keep_alive: float | None = None,
    ) -> None:
        """`keep_alive`: seconds a model stays loaded after its last request (0: it unloads
        when that request ends); None keeps it until the budget needs its room."""
        if not models:
            raise UsageError("give at least one model to serve")
        seen: dict[str, str] = {}
        for m in models:
            if m.id in seen:
                raise UsageError(f"{m.ref!r} and {seen[m.id]!r} would both be served as {m.id!r}")
            seen[m.id] = m.ref
            if m.need > budget and not m.found:
                raise UsageError(m.too_large(budget))
        self.models = {m.id: m for m in models}
        self.default = models[0].id
        self.budget = budget
        self.queue = queue
        self.parallel = parallel
        self.keep_alive = keep_alive
        # How a model added later is served (`served_model`'s options): the serve's own.
        self.defaults: dict[str, Any] = {"parallel": parallel}
        self._lock = threading.Lock()  # bookkeeping: admission counts, who is loaded
        self._loading = threading.Lock()  # one load (and its evictions) at a time
        self._stop = threading.Event()
        self._wake = threading.Event()  # a request ended: the reaper looks again
        self._reaper: threading.Thread | None = None
        if keep_alive is not None and keep_alive > 0:
            self._reaper = threading.Thread(target=self._reap, name="pool-reaper", daemon=True)
            self._reaper.start()

    @property
    def loads(self) -> int:
        """Models loaded since the server started, counting each reload."""
        return sum(m.loads for m in self.models.values())

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
            raise ModelNotServedError(
                f"model {model!r} is not served here: the models are {self._known()}"
            )
        return entry

    def _known(self) -> str:
        names = list(self.models)
        shown = ", ".join(names[:20])
        return shown + (f" and {len(names) - 20} more (GET /v1/models)" if len(names) > 20 else "")

    def capacity(self, entry: ServedModel) -> int:
        slots: int = entry.options.get("parallel", 1)
        return slots + self.queue

    def fits(self, entry: ServedModel) -> bool:
        """Whether the model fits the budget alone, so that it may load at all."""
        return entry.need <= self.budget

    def describe(self, entry: ServedModel) -> dict[str, Any]:
        """A model as the lists show it: what it is, loaded or not, and the fit verdict."""
        fit = {"need": entry.need, "budget": self.budget, "fits": self.fits(entry)}
        return {**entry.describe(), "fit": fit}

    @contextmanager
    def lease(
        self,
        entry: ServedModel,
        on_loading: Callable[[], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[Loaded]:
        """Admit one request to a model and hand it the loaded engine (loading it if need be).

        Blocks while the model loads; call it from a worker thread. `on_loading` is called
        when this request must wait for a load, before the wait (a stream says so at once);
        a `cancel` set while it waits for another's load ends the wait.
        """
        self._admit(entry)
        try:
            yield self._loaded(entry, on_loading, cancel)
        finally:
            self._release(entry)

    def _admit(self, entry: ServedModel) -> None:
        if not self.fits(entry):
            raise APIError(entry.too_large(self.budget), "model", code="model_too_large")
        with self._lock:
            if entry.active >= self.capacity(entry):
                raise ServerBusyError(
                    f"{entry.id} has {entry.active} requests in flight, its limit: retry shortly"
                )
            entry.active += 1
            entry.last_used = time.monotonic()

    def _release(self, entry: ServedModel) -> None:
        with self._lock:
            entry.active -= 1
            entry.last_used = time.monotonic()
            # Keep-alive 0: the model leaves with its last request (Ollama's keep_alive=0).
            closing = self._detach(entry) if self.keep_alive == 0 and entry.active == 0 else []
        self._close(closing)
        self._wake.set()  # the reaper counts this model's keep-alive from now

    def _loaded(
        self,
        entry: ServedModel,
        on_loading: Callable[[], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Loaded:
        if entry.engine is not None:
            return entry.engine
        if on_loading is not None:
            self._room(entry, take=False)  # no room for it: the 503 comes before the stream
            on_loading()
        with self._load_turn(entry, cancel):
            if entry.engine is None:
                self._make_room(entry)
                entry.loading = True
                try:
                    entry.engine = self._load(entry)
                finally:
                    entry.loading = False
                entry.loads += 1
                entry.last_used = time.monotonic()  # its keep-alive counts from its load
            return entry.engine

    @contextmanager
    def _load_turn(self, entry: ServedModel, cancel: threading.Event | None) -> Iterator[None]:
        """The one load at a time; a request whose client left stops waiting for its turn
        (a load under way goes on: the model is still wanted by the others)."""
        while not self._loading.acquire(timeout=LOAD_POLL_S):
            if cancel is not None and cancel.is_set():
                raise APIError(f"the client left while {entry.id} loaded", None, 499, "cancelled")
        try:
            if cancel is not None and cancel.is_set() and entry.engine is None:
                raise APIError(f"the client left before {entry.id} loaded", None, 499, "cancelled")
            yield
        finally:
            self._loading.release()

    def load(self, entry: ServedModel) -> None:
        """Load a model now (the load route), unloading idle ones for room as a request would."""
        if not self.fits(entry):
            raise APIError(entry.too_large(self.budget), "model", code="model_too_large")
        self._loaded(entry)
        with self._lock:
            entry.last_used = time.monotonic()  # loaded before: its keep-alive counts from now
        self._wake.set()

    def unload(self, entry: ServedModel) -> bool:
        """Unload a model now (the unload route); whether it was loaded. A model with requests
        in flight stays: a 409."""
        with self._lock:
            if entry.active:
                raise APIError(
                    f"{entry.id} has {entry.active} request{'s' if entry.active > 1 else ''} in "
                    "flight: unload it when they end",
                    "model",
                    409,
                    "model_busy",
                )
            closing = self._detach(entry)
        self._close(closing)
        return bool(closing)

    def _load(self, entry: ServedModel) -> Loaded:
        if entry.kind == "embedding":
            return engines.load_embedder(entry.path, **entry.options)
        return engines.open_model(entry.path, entry.engine_name, **entry.options)

    def _room(self, entry: ServedModel, take: bool) -> list[Loaded | Scorer]:
        """The idle models to unload, least recently used first, for `entry` to fit the budget,
        taken out of the pool when `take` (their engines returned, to close outside the lock);
        a 503 when busy models leave no room."""
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
            return [held for victim in gone for held in self._detach(victim)] if take else []

    def _make_room(self, entry: ServedModel) -> None:
        """Unload idle models, least recently used first, until `entry` fits the budget."""
        self._close(self._room(entry, take=True))

    def _detach(self, entry: ServedModel) -> list[Loaded | Scorer]:
        """Take a model's engine (and scorer) out of the pool, for `_close` outside the lock."""
        held = [h for h in (entry.engine, entry.scorer) if h is not None]
        entry.engine = entry.scorer = None
        return held

    @staticmethod
    def _close(held: list[Loaded | Scorer]) -> None:
        for h in held:
            h.close()
        if held:
            heap.trim()  # an unloaded model's memory goes back to the system, not to malloc

    def _reap(self) -> None:
        """Unload each model idle for the keep-alive; sleep until the next one would be."""
        assert self.keep_alive is not None
        while not self._stop.is_set():
            self._wake.clear()  # before looking: a request that ends meanwhile wakes it again
            now = time.monotonic()
            with self._lock:
                loaded = [m for m in self.models.values() if m.engine is not None]
                due = [m for m in loaded if m.active == 0 and now - m.last_used >= self.keep_alive]
                closing = [held for m in due for held in self._detach(m)]
                # A busy model's keep-alive starts when its last request ends, which wakes this.
                idle = [m for m in loaded if m.active == 0 and m not in due]
                left = [m.last_used + self.keep_alive - now for m in idle]
            self._close(closing)
            self._wake.wait(min([REAP_MAX_S, *[max(t, 0.01) for t in left]]))

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
            self._release(entry)

    def health(self, detail: bool = False) -> dict[str, Any]:
        """What `/health` answers: the models loaded and the requests each holds; with
        `detail`, each loaded model's memory (fit's estimate) and slots, and the process's
        resident memory."""
        answer: dict[str, Any] = {
            "status": "ok",
            "loaded": self.loaded(),
            "active": {m.id: m.active for m in self.models.values()},
        }
        if detail:
            import psutil

            loaded = [m for m in self.models.values() if m.engine is not None]
            answer["memory"] = {
                "budget": self.budget,
                "loaded": sum(m.need for m in loaded),
                "resident": psutil.Process().memory_info().rss,
            }
            answer["models"] = {
                m.id: {"memory": m.need, "active": m.active, "slots": _slots(m.engine)}
                for m in loaded
            }
        return answer

    def loaded(self) -> list[str]:
        return [m.id for m in self.models.values() if m.engine is not None]

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._reaper is not None and self._reaper is not threading.current_thread():
            self._reaper.join(timeout=5)
        with self._loading, self._lock:
            for m in self.models.values():
                self._close(self._detach(m))


def _slots(engine: Loaded | None) -> list[dict[str, Any]] | None:
    """What each of a llama.cpp engine's slots is doing (None for an engine without slots, or
    one that cannot say now): never a prompt's text, since /health is public."""
    slots = getattr(engine, "slots", None)
    if not callable(slots):
        return None
    with contextlib.suppress(Exception):  # health must answer even if the engine cannot
        return list(slots())
    return None
