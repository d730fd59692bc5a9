"""`scheda serve`: the OpenAI-compatible API and the web studio over the served models."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from scheda import settings
from scheda.cli.common import ContextOpt, EngineOpt, ThreadsOpt
from scheda.errors import UsageError
from scheda.terminal import console


def serve(
    models: Annotated[
        list[str] | None,
        typer.Argument(help="Models to serve; the first is the default. None: the embedded model."),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; 0.0.0.0 opens it to the network.")
    ] = settings.DEFAULT_HOST,
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535)] = settings.DEFAULT_PORT,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", envvar=settings.ENV_API_KEY, help="Require this bearer key on the API."
        ),
    ] = None,
    engine: EngineOpt = None,
    context: ContextOpt = None,
    parallel: Annotated[
        int, typer.Option("--parallel", "-np", min=1, max=64, help="Requests decoded together.")
    ] = settings.DEFAULT_PARALLEL,
    queue: Annotated[
        int, typer.Option("--queue", min=0, help="Requests that may wait per model beyond those.")
    ] = settings.DEFAULT_QUEUE,
    budget: Annotated[
        float | None,
        typer.Option("--budget", help="GB of memory for loaded models (default: RAM available)."),
    ] = None,
    threads: ThreadsOpt = None,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="Also accept requests sent to this name (repeatable), e.g. a reverse proxy's; "
            "by default only the server's own address, localhost, 127.0.0.1 and [::1].",
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            help="Let the web page at this origin call the API (repeatable), e.g. "
            "http://localhost:3000; by default other pages are refused.",
        ),
    ] = None,
    max_body: Annotated[
        int, typer.Option("--max-body", min=1024, help="Largest request body, in bytes.")
    ] = settings.DEFAULT_MAX_BODY,
) -> None:
    """Serve models over an OpenAI-compatible API, with the web studio at /."""
    from scheda.server.main import build_pool
    from scheda.server.main import serve as run_server

    if budget is not None and not budget > 0:
        raise UsageError(f"--budget must be a positive number of GB, got {budget}")
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        console().print(
            f"[yellow]warning:[/yellow] listening on {host} without --api-key: "
            "anyone who can reach this port can use the models"
        )
    pool = build_pool(models or ["default"], engine, context, parallel, threads, budget, queue)

    def ready(url: str) -> None:
        names = ", ".join(pool.models)
        console().print(f"scheda serving {names}\n  studio: {url}\n  API:    {url}v1")
        sys.stdout.flush()

    run_server(
        pool,
        host,
        port,
        api_key,
        max_body,
        on_ready=ready,
        allow_hosts=allow_host,
        cors_origins=cors_origin,
    )
