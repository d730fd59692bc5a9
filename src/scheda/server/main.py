"""Running the server: the pool of served models, the address check, uvicorn.

`build_pool(refs, ...)` plans every model at once (a bad reference fails
before anything loads), with those found on the machine for `--all` and
`--models-dir` (files/discover.py: headers read, nothing loaded);
`serve(pool, ...)` opens the sessions store and the evaluation runs' store
and runs the app under uvicorn, stopped as server/stopping.py says (a grace
for the answers in flight, then exit 0). `scheda serve` (cli/serve.py) calls
both. See docs/api.md for the routes.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from scheda import settings
from scheda.errors import UsageError
from scheda.server import heap
from scheda.server.app import create_app
from scheda.server.guard import Allowed
from scheda.server.pool import ModelPool, ServedModel, found_model, served_model
from scheda.stores.evals import EvalStore
from scheda.stores.sessions import SessionStore
from scheda.units import GiB

# After the grace, the answers cancelled stop at their next token: this is ample for that.
GRACE_AFTER_CANCEL_S = 5.0


def build_pool(
    refs: list[str],
    engine: str | None = None,
    context: int | None = None,
    parallel: int = settings.DEFAULT_PARALLEL,
    threads: int | None = None,
    budget_gb: float | None = None,
    queue: int = settings.DEFAULT_QUEUE,
    keep_alive: float | None = None,
    everything: bool = False,
    folders: list[Path] | None = None,
    warn: Callable[[str], Any] | None = None,
) -> ModelPool:
    """The pool of served models; each reference is checked (and its need estimated) now.

    `everything` adds the embedded model and every model in the local Hugging Face cache,
    `folders` every model in each folder (`files/discover`), after the ones named (with none
    named, the embedded model first); what cannot be read is left out, each with a line to
    `warn`."""
    models = [served_model(r, engine, context, parallel, threads) for r in refs]
    if everything or folders:
        models += _found(models, everything, folders or [], context, parallel, threads, warn)
        if not models:
            raise UsageError(
                "no model found to serve: name one, or give --models-dir a folder that holds "
                "GGUF files or HF model folders"
            )
    budget = int(budget_gb * GiB) if budget_gb else psutil.virtual_memory().available
    pool = ModelPool(models, budget, queue, parallel, keep_alive)
    pool.defaults.update(context=context, threads=threads)  # for a model pulled while serving
    return pool


def _found(
    named: list[ServedModel],
    everything: bool,
    folders: list[Path],
    context: int | None,
    parallel: int,
    threads: int | None,
    warn: Callable[[str], Any] | None,
) -> list[ServedModel]:
    """The models found on this machine that are not among those named: a name already
    taken is replaced by the model's path, which names it too."""
    from scheda.files import discover

    found = discover.Discovery()
    if everything or not named:  # the embedded model is the default when none is named
        found.extend(discover.embedded())
    if everything:
        found.extend(discover.in_hf_cache())
    for folder in folders:
        found.extend(discover.in_folder(folder))
    for line in found.skipped:
        if warn is not None:
            warn(line)
    paths = {m.path.absolute() for m in named}
    ids = {m.id for m in named}
    added = []
    for f in found.found:
        if f.path.absolute() in paths:
            continue
        try:
            served = found_model(f, context, parallel, threads)
        # A spec the estimate cannot weigh: this model is not offered, the others still are.
        except Exception as exc:
            if warn is not None:
                warn(f"{f.path}: skipped, its memory need cannot be estimated ({exc})")
            continue
        if served.id in ids:
            served.id = str(f.path)
        paths.add(f.path.absolute())
        ids.add(served.id)
        added.append(served)
    return added


def check_port(host: str, port: int) -> None:
    """Fail in one line before loading anything if the address is taken."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {host}:{port} ({exc.strerror}): pick another --port"
        ) from exc


def serve(
    pool: ModelPool,
    host: str = settings.DEFAULT_HOST,
    port: int = settings.DEFAULT_PORT,
    api_key: str | None = None,
    max_body: int = settings.DEFAULT_MAX_BODY,
    on_ready: Callable[[str], Any] | None = None,
    allow_hosts: list[str] | None = None,
    cors_origins: list[str] | None = None,
    grace: float = settings.DEFAULT_GRACE_S,
) -> None:
    import uvicorn

    from scheda.server.stopping import GracefulServer, Stopping, wait_idle

    check_port(host, port)
    heap.limit_arenas()  # before uvicorn's and the requests' threads start
    store = SessionStore()
    evals = EvalStore()
    allowed = Allowed(host, allow_hosts or [], cors_origins or [])
    stopping = Stopping()
    app = create_app(pool, store, api_key, max_body, evals, allowed, stopping=stopping)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        # The event loop and HTTP parser the server is tested with, whatever else is
        # installed: Ray Serve's extra brings uvloop and httptools, which "auto" would take.
        loop="asyncio",
        http="h11",
        # Many clients stream at once; the default backlog and keep-alive are ample.
        timeout_graceful_shutdown=3,
    )
    server = GracefulServer(config, pool, stopping, grace)
    if on_ready is not None:
        shown = f"[{host}]" if ":" in host else host
        on_ready(f"http://{shown}:{port}/")
    try:
        server.run()
    finally:
        wait_idle(pool, GRACE_AFTER_CANCEL_S)
        pool.close()
        store.close()
        evals.close()
        app.state.comparisons.close()
        app.state.arena.close()
