"""The server: one FastAPI app over the model pool, the sessions and the evaluation runs.

Two small ASGI layers sit in front of the routes, cheapest first: the body
limit (a request over it never reaches the JSON parser) and the API key
(compared in constant time). With a key set, every path needs it but the few
declared public in `PUBLIC`: the studio's page and files (so that the page can
ask for the key), `/health`, and the OpenAPI description with its docs page. A
route added later is closed until it is named there.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheda import settings
from scheda.errors import APIError
from scheda.server import (
    arena_api,
    card_api,
    errors,
    hub_api,
    messages_api,
    models_api,
    openai_api,
    openapi,
    responses_api,
    studio_api,
)
from scheda.server.card_run import CardRuns
from scheda.server.guard import Allowed, Guard
from scheda.server.pool import ModelPool
from scheda.server.stopping import Stopping
from scheda.stores.arena import ArenaStore
from scheda.stores.comparisons import ComparisonStore
from scheda.stores.evals import EvalStore
from scheda.stores.sessions import SessionStore
from scheda.version import __version__

STATIC = Path(__file__).parent / "static"
# The studio is ES modules, which a browser refuses unless served with a JavaScript type;
# the static files' types come from the system's table, which on some hosts says text/plain.
mimetypes.add_type("text/javascript", ".js")
# The only paths open without the key; everything else, a route added tomorrow included,
# needs it: the studio's page and its files, the health check, the OpenAPI description
# and FastAPI's page that shows it (with that page's OAuth redirect, which it loads).
PUBLIC = ("/", "/health", "/openapi.json", "/docs", "/docs/oauth2-redirect")
PUBLIC_FOLDERS = ("/static/",)


async def _reply(scope: Scope, send: Send, error: APIError) -> None:
    response = errors.error_response(error, scope.get("path"))
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})


class BodyLimit:
    """Refuse a body over `limit` bytes with a 413, whether or not it says its length."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = APIError(f"the body is over the {self.limit:,}-byte limit: send less", None, 413)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _reply(scope, send, too_big)
            return
        # Read the whole body here (it is small by now) and hand it on as one message.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await _reply(scope, send, too_big)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False
        if not public(scope["path"]):
            # Every API body is JSON, whatever the client labelled it (curl -d says form data).
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect

        await self.app(scope, replay, send)


class Drain:
    """While the server stops (server/stopping.py), every new request is a 503 that says to
    retry: on a new connection or a kept-alive one, whatever its route."""

    def __init__(self, app: ASGIApp, stopping: Stopping) -> None:
        self.app = app
        self.stopping = stopping

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.stopping.draining:
            message = "the server is stopping: retry shortly, or on another server"
            await _reply(scope, send, APIError(message, None, 503, "server_stopping"))
            return
        await self.app(scope, receive, send)


class ApiKey:
    """With a key set, every path but the public ones needs `Authorization: Bearer KEY`, or
    `x-api-key: KEY` as Anthropic's clients send it."""

    def __init__(self, app: ASGIApp, key: str | None) -> None:
        self.app = app
        self.key = key.encode() if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is not None and scope["type"] == "http" and not public(scope["path"]):
            headers = dict(scope["headers"])
            scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer":
                token = headers.get(b"x-api-key", b"")
            if not secrets.compare_digest(token.strip(), self.key):
                message = "missing or wrong API key: send Authorization: Bearer KEY"
                await _reply(scope, send, APIError(message, None, 401, "invalid_api_key"))
                return
        await self.app(scope, receive, send)


def public(path: str) -> bool:
    """Whether `path` is open without the API key: named in `PUBLIC`, or in `PUBLIC_FOLDERS`."""
    return path in PUBLIC or path.startswith(PUBLIC_FOLDERS)


def _protected(path: str) -> bool:
    return not public(path)


def create_app(
    pool: ModelPool,
    store: SessionStore,
    api_key: str | None = None,
    max_body: int = settings.DEFAULT_MAX_BODY,
    evals: EvalStore | None = None,
    allowed: Allowed | None = None,
    arena: ArenaStore | None = None,
    stopping: Stopping | None = None,
) -> FastAPI:
    """The app; `evals` is the store of `scheda eval`'s runs and `arena` the arena's battles
    (by default the data folder's)."""
    card_runs = CardRuns()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # A card run writes the evaluation store: it stops before the server closes that.
        await asyncio.to_thread(card_runs.stop)

    app = FastAPI(
        title="scheda",
        version=__version__,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.pool = pool
    app.state.store = store
    app.state.evals = evals if evals is not None else EvalStore()
    # The comparisons live in the evaluation file: the same file, whichever one `evals` is.
    app.state.comparisons = ComparisonStore(app.state.evals.path)
    app.state.card_runs = card_runs
    app.state.arena = arena if arena is not None else ArenaStore()
    app.state.stopping = stopping or Stopping()
    app.state.started = time.time()
    errors.install(app)
    openapi.install(app, _protected)
    app.include_router(openai_api.router)
    app.include_router(models_api.router)
    app.include_router(messages_api.router)
    app.include_router(responses_api.router)
    # Before the studio's routes: /api/evals/card is not a run id for /api/evals/{run_id}.
    app.include_router(card_api.router)
    app.include_router(arena_api.router)
    app.include_router(studio_api.router)
    app.include_router(hub_api.router)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return pool.health(detail=True)

    @app.get("/", include_in_schema=False)
    def studio() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    allowed = allowed or Allowed(settings.DEFAULT_HOST)
    app.add_middleware(ApiKey, key=api_key)
    app.add_middleware(BodyLimit, limit=max_body)
    if allowed.origins:  # CORS headers only for the origins the user named
        app.add_middleware(
            CORSMiddleware,
            allow_origins=sorted(allowed.origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "x-api-key", "anthropic-version"],
        )
    app.add_middleware(errors.LogErrors)  # sees every answer but the guard's, which logs its own
    # A stopping server turns everything away before any other work but the guard's.
    app.add_middleware(Drain, stopping=app.state.stopping)
    app.add_middleware(Guard, allowed=allowed)  # the outermost: before anything else runs
    return app
