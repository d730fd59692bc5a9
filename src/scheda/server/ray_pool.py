"""`scheda serve --ray`: each served model a Ray Serve deployment, scheda still the ingress.

The server's routes, studio and sessions are the plain server's; only the pool differs.
Where `ModelPool` loads an engine in this process, `RayPool` deploys the model as a Ray
Serve application of `EngineReplica` (server/replica.py), one engine per replica, and
hands the routes a `RemoteEngine`: the same `Engine` interface, each call sent through
the deployment's handle. So every client of `scheda serve` works unchanged.

What Ray Serve does, and scheda does not redo:

- Placement: each replica asks Ray for `fit`'s estimate of the model's memory at its
  context and slots (Ray's `memory` resource), for `--threads` CPUs, and for a GPU when
  a transformers model is served on a cluster that has GPUs; Ray puts it on a node where
  those are free. A model whose replica fits no node is refused before anything starts.
- Spreading: Serve's router sends each request to the less loaded of two replicas, and
  no replica holds more than its slots (`max_ongoing_requests`); the rest wait in the
  router for a free slot, where any replica can take them.
- Replicas: `--replicas N`, or `--replicas MIN:MAX` for Serve's autoscaler, which adds a
  replica while requests wait beyond the slots and removes idle ones.
- A replica that dies is replaced by Serve's controller. Its requests in flight end with
  a 503 (an error event in a stream already started) saying so and to retry, the moment
  Ray reports the replica gone; a request the lost replica had not begun is sent once
  more, to another.

Serve's own HTTP proxy is not started: scheda is the ingress.
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from scheda import settings
from scheda.engines.base import (
    Embedder,
    Engine,
    Generation,
    Guide,
    Message,
    OnCall,
    OnText,
    Sample,
    Timings,
    Token,
)
from scheda.errors import ReplicaLostError, SchedaError, ServerBusyError, UsageError
from scheda.sampling import Sampling
from scheda.server.pool import ModelPool, ServedModel, served_model
from scheda.units import size as human_bytes

# Starting a replica loads Ray's worker, scheda and the model: half a minute or more on a
# busy small machine, several minutes for a large model that a node pulls first.
DEPLOY_TIMEOUT_S = 900.0
CANCEL_POLL_S = 0.1  # how soon a request whose client left is cancelled on its replica
# A replica being stopped (the server stopping) has this long to end its requests.
SHUTDOWN_S = 5.0


@dataclass(frozen=True)
class Replicas:
    """How many replicas each model gets: a fixed number, or autoscaling between bounds."""

    low: int
    high: int

    @classmethod
    def parse(cls, text: str) -> Replicas:
        """`N`, or `MIN:MAX` (as Ray Serve's autoscaling_config names them; MIN may be 0)."""
        low, sep, high = text.strip().partition(":")
        try:
            bounds = cls(int(low), int(high)) if sep else cls(int(low), int(low))
        except ValueError:
            bounds = cls(-1, -1)
        if bounds.low < 0 or bounds.high < max(1, bounds.low):
            raise UsageError(
                f"--replicas {text}: give a number of replicas (2), or MIN:MAX to let Ray "
                "Serve scale between them (1:4; MIN may be 0, MAX at least 1 and MIN)"
            )
        return bounds

    def deployment_options(self, slots: int) -> dict[str, Any]:
        if self.low == self.high:
            return {"num_replicas": self.low}
        # A replica is added while requests wait beyond the slots of those running.
        scaling = {"min_replicas": self.low, "max_replicas": self.high}
        return {"autoscaling_config": {**scaling, "target_ongoing_requests": slots}}

    def __str__(self) -> str:
        if self.low == self.high:
            return f"{self.low} replica{'s' if self.low > 1 else ''}"
        return f"{self.low} to {self.high} replicas"


def app_name(model_id: str, token: str) -> str:
    """A Serve application's name: the model's id, made safe, and this server's token, so
    that two servers on one cluster never redeploy each other's models."""
    return f"scheda-{re.sub(r'[^A-Za-z0-9_.-]+', '-', model_id)}-{token}"


class Span:
    """One request to a deployment: the replica it began on, once it has."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.replica: str | None = None

    def began(self, replica: str) -> None:
        self.replica = replica
        self.tally.add(replica, requests=1, active=1)


class Tally:
    """Requests per replica, as the server saw them: how many each took, how many it holds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.replicas: dict[str, dict[str, int]] = {}

    def add(self, replica: str, requests: int, active: int) -> None:
        with self._lock:
            counts = self.replicas.setdefault(replica, {"requests": 0, "active": 0})
            counts["requests"] += requests
            counts["active"] += active

    @contextmanager
    def request(self) -> Iterator[Span]:
        span = Span(self)
        try:
            yield span
        finally:
            if span.replica is not None:
                self.add(span.replica, requests=0, active=-1)

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {r: dict(c) for r, c in self.replicas.items()}


class RemoteEngine(Engine, Embedder):
    """An engine whose every call goes to a replica of the model's deployment.

    Declared as both interfaces, so that a method drifting from either is a type error:
    an `Engine` for a chat model's deployment, an `Embedder` for an encoder's (the routes
    ask each only what its kind answers). What `Engine` derives from the other calls
    (`count_tokens`, `stream`) it derives here too, from the remote ones.

    Generations are streamed from the replica (text as it comes, then the `Generation`);
    the other calls are answered whole. scheda's errors come back with their status.
    """

    def __init__(self, ray: Any, handle: Any, model_id: str, info: dict[str, Any]) -> None:
        self.ray = ray
        self.handle = handle
        self.model_id = model_id
        self.name = str(info["name"])
        self.context = int(info["context"])
        self.capabilities = frozenset(info["capabilities"])
        self.load_s = float(info["load_s"])
        self.tally = Tally()

    # -- calls answered whole ----------------------------------------------------------------

    def tokenize(self, text: str, add_special: bool = False) -> list[Token]:
        return list(self._answer("tokenize", text, add_special))

    def detokenize(self, ids: list[int]) -> str:
        return str(self._answer("detokenize", ids))

    def chat_prompt(self, messages: list[Message], guide: Guide | None = None) -> str:
        return str(self._answer("chat_prompt", messages, guide))

    def tokenizer_info(self) -> dict[str, Any]:
        return dict(self._answer("tokenizer_info"))

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        vectors, tokens = self._answer("embed", texts)
        return list(vectors), int(tokens)

    def _answer(self, method: str, *args: Any) -> Any:
        """One call; sent again once if its replica was lost (these calls change nothing)."""
        try:
            status, value = self._answer_once(method, args)
        except ReplicaLostError:
            status, value = self._answer_once(method, args)
        if status == "error":
            raise value
        return value

    def _answer_once(self, method: str, args: tuple[Any, ...]) -> tuple[str, Any]:
        try:
            status, value = self.handle.answer.remote(method, *args).result()
        except Exception as exc:
            raise self._failure(exc, begun=False) from None
        return str(status), value

    # -- generations, streamed ---------------------------------------------------------------

    def generate(
        self,
        prompt: str | list[int],
        sampling: Sampling | None = None,
        on_text: OnText | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        return self._stream("generate", (prompt, sampling), on_text, cancel)

    def chat(
        self,
        messages: list[Message],
        sampling: Sampling | None = None,
        on_text: OnText | None = None,
        cancel: threading.Event | None = None,
        guide: Guide | None = None,
        on_call: OnCall | None = None,
    ) -> Generation:
        # Only text streams back from a replica: the calls come whole, on the samples.
        return self._stream("chat", (messages, sampling, guide), on_text, cancel)

    def _stream(
        self,
        method: str,
        args: tuple[Any, ...],
        on_text: OnText | None,
        cancel: threading.Event | None,
    ) -> Generation:
        """The generation; a request that no replica began is sent once more."""
        cancel = cancel or threading.Event()
        for attempt in (1, 2):
            with self.tally.request() as span:
                try:
                    return self._stream_once(method, args, on_text, cancel, span.began)
                except Exception as exc:
                    begun = span.replica is not None
                    failure = self._failure(exc, begun)
                    if not isinstance(failure, ReplicaLostError) or begun or attempt == 2:
                        raise failure from None
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _stream_once(
        self,
        method: str,
        args: tuple[Any, ...],
        on_text: OnText | None,
        cancel: threading.Event,
        began: Callable[[str], None],
    ) -> Generation:
        response = self.handle.options(stream=True).stream.remote(method, args, on_text is not None)
        pieces: dict[int, list[str]] = {}
        with self._cancelling(response, cancel):
            try:
                for batch in response:
                    for item in batch:
                        if item[0] == "replica":
                            began(item[1])
                        elif item[0] == "text":
                            pieces.setdefault(item[1], []).append(item[2])
                            if on_text is not None:
                                on_text(item[1], item[2])
                        elif item[0] == "done":
                            done: Generation = item[1]
                            return done
                        else:
                            raise item[1]
            except Exception:
                # Cancelled on its replica (or before it reached one): the client left,
                # and is owed what an engine answers a cancel with. Anything else is raised.
                if not cancel.is_set():
                    raise
                return cancelled(pieces)
        raise self._lost(f"the stream from {self.model_id}'s replica ended before its answer")

    @contextmanager
    def _cancelling(self, response: Any, cancel: threading.Event) -> Iterator[None]:
        """Cancel the request on its replica (which stops the engine) if `cancel` is set
        while it runs: the client went away, even while the request waited for a slot."""
        finished = threading.Event()

        def watch() -> None:
            while not finished.wait(CANCEL_POLL_S):
                if cancel.is_set():
                    response.cancel()
                    return

        watcher = threading.Thread(target=watch, name=f"cancel-{self.model_id}", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            finished.set()

    def _failure(self, exc: Exception, begun: bool) -> Exception:
        """What the client is told for an exception from Ray: a lost replica in one line."""
        errors = self.ray.exceptions
        from ray.serve.exceptions import RayServeException, ReplicaUnavailableError

        if isinstance(exc, SchedaError):
            return exc
        cause = getattr(exc, "cause", None)
        if isinstance(exc, errors.RayActorError | ReplicaUnavailableError) or isinstance(
            cause, errors.RayActorError
        ):
            if begun:
                return self._lost(f"the replica answering on {self.model_id} was lost mid-answer")
            return self._lost(f"the replica chosen for {self.model_id} was lost")
        if isinstance(exc, errors.RayError | RayServeException):
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return ServerBusyError(f"Ray Serve could not answer for {self.model_id} ({first})")
        return exc

    @staticmethod
    def _lost(what: str) -> ReplicaLostError:
        return ReplicaLostError(f"{what} (its process or node is gone): retry the request")

    def close(self) -> None:
        """Nothing here to free: the pool deletes the deployment."""


def cancelled(pieces: dict[int, list[str]]) -> Generation:
    """What a cancelled stream had said, as an engine answers a cancel: the text so far,
    finish reason "cancelled". The replica's own counts and timings went with its stream;
    the pieces stand for the tokens (llama.cpp streams a token a piece)."""
    samples = [Sample("".join(pieces[i]), "cancelled", len(pieces[i])) for i in sorted(pieces)] or [
        Sample("", "cancelled", 0)
    ]
    return Generation(samples, 0, Timings())


class RayPool(ModelPool):
    """The served models, each a Ray Serve application of `EngineReplica` replicas.

    There is no memory budget here: Ray places each replica where its memory is free, so
    nothing is unloaded to make room. `deploy()` starts every model before the server
    answers; a model the studio pulls later is deployed on its first request.
    """

    def __init__(
        self,
        ray: Any,
        models: list[ServedModel],
        queue: int,
        parallel: int,
        replicas: Replicas,
    ) -> None:
        super().__init__(models, sys.maxsize, queue, parallel)
        self.ray = ray
        self.replicas = replicas
        self.token = secrets.token_hex(3)
        self.apps: dict[str, str] = {}  # model id -> its Serve application
        self._closed = False

    def capacity(self, entry: ServedModel) -> int:
        slots: int = entry.options.get("parallel", 1)
        return slots * self.replicas.high + self.queue

    def _make_room(self, entry: ServedModel) -> None:
        """Nothing to unload: each replica's memory is Ray's to find."""

    def _load(self, entry: ServedModel) -> Any:
        return self._deploy(entry)

    def deploy(self) -> None:
        """Every model deployed and its replicas running, before the server answers."""
        for entry in self.models.values():
            with self._loading:
                if entry.engine is None:
                    entry.engine = self._deploy(entry)

    def asks(self, entry: ServedModel) -> str:
        """What each replica of a model asks Ray for, in words."""
        need = resources(self.ray, entry)
        gpu = f", {need['num_gpus']:g} GPU" if need.get("num_gpus") else ""
        cpus = need["num_cpus"]
        return (
            f"{self.replicas}, each {cpus:g} CPU{'s' if cpus != 1 else ''}{gpu} and "
            f"{human_bytes(need['memory'])}"
        )

    def _deploy(self, entry: ServedModel) -> RemoteEngine:
        from ray import serve

        from scheda.server.replica import EngineReplica

        need = resources(self.ray, entry)
        check_placeable(self.ray, entry, need)
        slots = entry.options.get("parallel", 1)
        deployment = serve.deployment(
            name="engine",
            ray_actor_options=need,
            max_ongoing_requests=slots,
            graceful_shutdown_timeout_s=SHUTDOWN_S,
            # A constructor that fails (the model missing on a node) is retried a little,
            # then the deployment fails and says why, rather than retrying for long.
            max_constructor_retry_count=3,
            **self.replicas.deployment_options(slots),
        )(EngineReplica)
        options = {**entry.options, "threads": need["num_cpus"]}  # the CPUs Ray gave it
        name = app_name(entry.id, self.token)
        app = deployment.bind(replica_reference(entry), entry.engine_name, entry.kind, options)
        self.apps[entry.id] = name
        handle = run_app(serve, app, name)
        info = handle.describe.remote().result()
        return RemoteEngine(self.ray, handle, entry.id, info)

    def describe(self, entry: ServedModel) -> dict[str, Any]:
        """No budget here, so no fit verdict: each replica's memory is Ray's to find."""
        return entry.describe()

    def health(self, detail: bool = False) -> dict[str, Any]:
        """The plain server's answer, and each deployed model's replicas: the requests each
        took and holds now, as this server counted them."""
        replicas = {
            m.id: m.engine.tally.snapshot()
            for m in self.models.values()
            if isinstance(m.engine, RemoteEngine)
        }
        return {**super().health(detail), "replicas": replicas}

    def close(self) -> None:
        """Delete this server's applications (their replicas stop); Serve itself stays for
        the cluster's other users, or goes with a cluster started for this server."""
        if self._closed:
            return
        self._closed = True
        from ray import serve

        for name in self.apps.values():
            with suppress(Exception):  # the cluster may already be gone: nothing left to stop
                serve.delete(name)
        self.apps.clear()
        with suppress(Exception):
            super().close()


def resources(ray: Any, entry: ServedModel) -> dict[str, Any]:
    """What one replica asks Ray for: fit's memory estimate, its threads' CPUs, and a GPU
    for transformers where the cluster has GPUs (the engine then takes the GPU)."""
    need: dict[str, Any] = {"num_cpus": entry.options.get("threads") or 1, "memory": entry.need}
    if entry.engine_name == "transformers" and ray.cluster_resources().get("GPU", 0) >= 1:
        need["num_gpus"] = 1
    return need


# An actor's resource options, by the names a node's resources go by.
NODE_RESOURCE = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}


def check_placeable(ray: Any, entry: ServedModel, need: dict[str, Any]) -> None:
    """One line, before anything starts, if no node could ever hold one replica."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    wanted = {NODE_RESOURCE[k]: v for k, v in need.items()}
    if any(all(node.get(k, 0) >= v for k, v in wanted.items()) for node in nodes):
        return
    largest = max((node.get("memory", 0) for node in nodes), default=0)
    cpus = max((node.get("CPU", 0) for node in nodes), default=0)
    raise UsageError(
        f"{entry.id}: one replica needs {human_bytes(need['memory'])} and "
        f"{need['num_cpus']:g} CPU(s), and no node of the cluster has them (the largest "
        f"offers {human_bytes(int(largest))} to Ray and {cpus:g} CPUs): lower --context, "
        "--parallel or --threads, or add a larger node"
    )


def replica_reference(entry: ServedModel) -> str:
    """What a replica opens on its node: a path as an absolute path (every node must see
    it there); a catalog name or Hub repository as given, for each node to resolve."""
    from scheda.evaluation.distributed import worker_reference

    return worker_reference(entry.ref)


def run_app(serve: Any, app: Any, name: str) -> Any:
    """Deploy one application and wait until its replicas run; one line if they do not.

    Serve's own `run` waits without a limit, also for a replica that no node can take
    now; so it runs in a thread while this watches Serve's status with a deadline.
    """
    result: dict[str, Any] = {}

    def deploy() -> None:
        try:
            result["handle"] = serve.run(app, name=name, route_prefix=None)
        except Exception as exc:  # raised below, in the caller's thread
            result["error"] = exc

    worker = threading.Thread(target=deploy, name=f"deploy-{name}", daemon=True)
    worker.start()
    worker.join(DEPLOY_TIMEOUT_S)
    if "handle" in result:
        return result["handle"]
    reason = _status_line(serve, name)
    with suppress(Exception):
        serve.delete(name, _blocking=False)
    if "error" in result and not reason:
        first = (str(result["error"]).strip().splitlines() or ["failed"])[0]
        reason = first
    waited = "" if "error" in result else f" in {DEPLOY_TIMEOUT_S:.0f} s"
    raise UsageError(f"--ray: the model's replicas did not start{waited}: {reason}")


def _status_line(serve: Any, name: str) -> str:
    """Serve's own account of an application's state, on one line."""
    try:
        app = serve.status().applications.get(name)
    except Exception:
        return ""
    if app is None:
        return ""
    parts = [str(app.message).strip()]
    for deployment in app.deployments.values():
        states = ", ".join(f"{n} {s}" for s, n in deployment.replica_states.items())
        parts.append(f"replicas: {states}" if states else str(deployment.message).strip())
    return "; ".join(p.splitlines()[0] for p in parts if p)


def build_ray_pool(
    ray: Any,
    refs: list[str],
    replicas: Replicas,
    engine: str | None = None,
    context: int | None = None,
    parallel: int = settings.DEFAULT_PARALLEL,
    threads: int | None = None,
    queue: int = settings.DEFAULT_QUEUE,
) -> RayPool:
    """The pool of models to deploy; each reference is checked (and its need estimated) now."""
    start_serve(ray)
    models = [served_model(r, engine, context, parallel, threads) for r in refs]
    pool = RayPool(ray, models, queue, parallel, replicas)
    pool.defaults.update(context=context, threads=threads)  # for a model pulled while serving
    return pool


def start_serve(ray: Any) -> None:
    """Ray Serve on the cluster, without its HTTP proxy (scheda is the ingress); one that
    runs already is used as it is. Its start-up lines stay in Ray's logs."""
    from ray import serve

    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    serve.start(proxy_location="Disabled")
