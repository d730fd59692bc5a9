"""Running the server: the pool of served models, the address check, uvicorn.

`build_pool(refs, ...)` plans every model at once (a bad reference fails
before anything loads); `serve(pool, ...)` opens the sessions store and the
evaluation runs' store and runs the app under uvicorn, stopped as
server/stopping.py says (a grace for the answers in flight, then exit 0). `scheda serve`
(cli/serve.py) calls both. See docs/api.md for the routes.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import psutil

from scheda import settings
from scheda.errors import UsageError
from scheda.server.app import create_app
from scheda.server.guard import Allowed
from scheda.server.pool import ModelPool, served_model
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
) -> ModelPool:
    """The pool of served models; each reference is checked (and its need estimated) now."""
    models = [served_model(r, engine, context, parallel, threads) for r in refs]
    budget = int(budget_gb * GiB) if budget_gb else psutil.virtual_memory().available
    pool = ModelPool(models, budget, queue, parallel)
    pool.defaults.update(context=context, threads=threads)  # for a model pulled while serving
    return pool


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
