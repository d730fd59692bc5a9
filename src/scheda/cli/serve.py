"""`scheda serve`: the OpenAI-compatible API and the web studio over the served models."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from scheda import settings
from scheda.cli.common import RAY_ALONE, ContextOpt, EngineOpt, ThreadsOpt
from scheda.display.terminal import console
from scheda.errors import UsageError

KEEP_ALIVE = "5m"  # Ollama's default keep_alive
DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
SHOWN = 6  # models named in the line the server starts with


def serve(
    models: Annotated[
        list[str] | None,
        typer.Argument(help="Models to serve; the first is the default. None: the embedded model."),
    ] = None,
    everything: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Also offer every model in the local Hugging Face cache and the embedded one, "
            "each loaded on its first request.",
        ),
    ] = False,
    models_dir: Annotated[
        list[Path] | None,
        typer.Option(
            "--models-dir",
            help="Also offer every GGUF file and HF model folder in this folder (repeatable): "
            "a file directly in it, or a model of several files in a subfolder.",
            file_okay=False,
            exists=True,
        ),
    ] = None,
    keep_alive: Annotated[
        str,
        typer.Option(
            "--keep-alive",
            metavar="DURATION",
            help="Unload a model idle this long: 5m (Ollama's default), 30s, 1h; 0: when its "
            "last request ends; -1: never. Idle models also leave, least recently used first, "
            "when --budget needs room.",
        ),
    ] = KEEP_ALIVE,
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
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="[ADDRESS]",
            help="Serve each model as a Ray Serve deployment, this server its ingress: "
            "alone, on a local cluster started for it; with HOST:PORT (or RAY_ADDRESS), on "
            "that cluster.",
        ),
    ] = None,
    grace: Annotated[
        float,
        typer.Option(
            "--grace",
            min=0,
            help="On SIGTERM or Ctrl-C: seconds the answers in flight may take to finish while "
            "new requests get 503; a second signal stops at once.",
        ),
    ] = settings.DEFAULT_GRACE_S,
    replicas: Annotated[
        str | None,
        typer.Option(
            "--replicas",
            metavar="N|MIN:MAX",
            help="With --ray: replicas per model, or bounds Ray Serve autoscales between "
            "(default 1). Each asks Ray for --threads CPUs (default 1) and fit's memory.",
        ),
    ] = None,
) -> None:
    """Serve models over an OpenAI-compatible API, with the web studio at /."""
    from scheda.server.main import build_pool, check_port

    if budget is not None and not budget > 0:
        raise UsageError(f"--budget must be a positive number of GB, got {budget}")
    idle = keep_alive_seconds(keep_alive)
    if ray is not None and (everything or models_dir):
        raise UsageError(
            "--all and --models-dir load models on demand on this machine; with --ray every "
            "model is deployed at start: name the models to deploy instead"
        )
    if ray is None and replicas is not None:
        raise UsageError("--replicas is for --ray: give --ray too, or leave --replicas out")
    if ray is not None and budget is not None:
        raise UsageError(
            "--budget is this machine's memory for the models it loads; with --ray each "
            "replica asks Ray for its own (fit's estimate): leave --budget out"
        )
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        console().print(
            f"[yellow]warning:[/yellow] listening on {escape(host)} without --api-key: "
            "anyone who can reach this port can use the models"
        )
    listen = Listen(host, port, api_key, max_body, allow_host, cors_origin, grace)
    # With models found on the machine, the embedded one comes first among them (the
    # default where none is named), or is left out with a warning where it is not installed.
    refs = models or ([] if everything or models_dir else ["default"])
    if ray is not None:
        from scheda.server.ray_pool import Replicas

        plan = Replicas.parse(replicas or "1")
        check_port(host, port)  # before a cluster starts and replicas load, not after
        _serve_on_ray(listen, refs, ray, plan, engine, context, parallel, threads, queue)
        return
    pool = build_pool(
        refs,
        engine,
        context,
        parallel,
        threads,
        budget,
        queue,
        keep_alive=idle,
        everything=everything,
        folders=models_dir or [],
        warn=_warn,
    )
    listen.run(pool)


def keep_alive_seconds(text: str) -> float | None:
    """`--keep-alive` as Ollama spells it (5m, 30s, 1h30m, a number of seconds; 0, or a
    negative for never) in seconds; None for never."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        pieces = DURATION.findall(value.lstrip("-"))
        if not pieces or "".join(n + u for n, u in pieces) != value.lstrip("-"):
            raise UsageError(
                f"--keep-alive takes a duration such as 5m, 30s, 1h, 0 (unload when the last "
                f"request ends) or -1 (never), got {text!r}"
            ) from None
        seconds = sum(float(n) * UNITS[u] for n, u in pieces)
        seconds = -seconds if value.startswith("-") else seconds
    return None if seconds < 0 else seconds


def _warn(line: str) -> None:
    # Paths and messages from files on disk: plain text, never markup.
    console().print(f"warning: {line}", style="yellow", markup=False, highlight=False)


class Listen:
    """Where and how the server answers: what `scheda serve` runs its pool behind."""

    def __init__(
        self,
        host: str,
        port: int,
        api_key: str | None,
        max_body: int,
        allow_hosts: list[str] | None,
        cors_origins: list[str] | None,
        grace: float = settings.DEFAULT_GRACE_S,
    ) -> None:
        self.host, self.port, self.api_key, self.max_body = host, port, api_key, max_body
        self.allow_hosts, self.cors_origins, self.grace = allow_hosts, cors_origins, grace

    def run(self, pool: Any) -> None:
        from scheda.server.main import serve as run_server

        def ready(url: str) -> None:
            ids = list(pool.models)
            names = ", ".join(ids[:SHOWN])
            if len(ids) > SHOWN:
                names += f" and {len(ids) - SHOWN} more (GET /v1/models lists them)"
            # Model ids are file names: plain text, never markup.
            text = f"scheda serving {names}\n  studio: {url}\n  API:    {url}v1"
            console().print(text, markup=False)
            sys.stdout.flush()

        run_server(
            pool,
            self.host,
            self.port,
            self.api_key,
            self.max_body,
            on_ready=ready,
            allow_hosts=self.allow_hosts,
            cors_origins=self.cors_origins,
            grace=self.grace,
        )


def _serve_on_ray(
    listen: Listen,
    refs: list[str],
    address: str,
    plan: Any,
    engine: str | None,
    context: int | None,
    parallel: int,
    threads: int | None,
    queue: int,
) -> None:
    """The same server, each model a Ray Serve deployment; the cluster joined, or started
    here and stopped when the server stops."""
    from scheda.engines.cluster import connected
    from scheda.server.ray_pool import build_ray_pool

    with connected(None if address == RAY_ALONE else address) as ray:
        pool = build_ray_pool(ray, refs, plan, engine, context, parallel, threads, queue)
        try:
            for entry in pool.models.values():
                console().print(f"deploying {entry.id} on Ray: {pool.asks(entry)}", markup=False)
            pool.deploy()
            listen.run(pool)
        finally:
            pool.close()
