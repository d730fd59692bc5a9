"""The API key is the default: every route needs it but the few meant to be public.

The real app (`create_app` over the embedded model's pool and real stores) is served by
uvicorn on loopback in this process, so that the test can walk `app.routes` itself and
add a route after the fact: every method of every route is sent without the key, and
only the public ones answer. A route nobody declared public is refused, and so is a
path that matches no route, so that the key's absence never tells what exists.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.routing import Mount

from scheda.server.app import STATIC, create_app
from scheda.server.main import build_pool
from scheda.stores.evals import EvalStore
from scheda.stores.sessions import SessionStore
from tests.serving import free_port, http_request, wait_for

KEY = "sk-test-default-closed"
LATER = "/added-later"
# What is meant to be open, written out here rather than read from the app, so that a
# path made public by mistake fails this test.
PUBLIC = {"/", "/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/static"}
# One real file under the static mount, for the mount's own check.
STATIC_FILE = "/static/studio.js"


@dataclass
class Running:
    app: FastAPI
    port: int

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        data = b"{}" if method in BODIED else None
        return http_request(self.port, method, path, data, headers or {}, timeout=60)


BODIED = {"POST", "PUT", "PATCH"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("api-key")
    pool = build_pool(["default"])
    store = SessionStore(folder / "sessions.sqlite3")
    evals = EvalStore(folder / "evals.sqlite3")
    app = create_app(pool, store, api_key=KEY, evals=evals)

    # A route added after the app was made, as a future module would add one: nobody
    # named it public, so it must need the key.
    @app.get(LATER)
    def later() -> dict[str, str]:
        return {"secret": "only with the key"}

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", http="h11")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started, within=60), "the app did not start"
    try:
        yield Running(app, port)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        pool.close()
        store.close()
        evals.close()


def sample_path(path: str) -> str:
    """A concrete path for a route's pattern: each parameter filled with a plain value."""
    return re.sub(r"\{[^}]+\}", "1", path)


def every_route(app: FastAPI) -> Iterator[tuple[str, str, str]]:
    """(method, pattern, concrete path) for every method of every route of the app, the
    included routers' routes with their prefixes."""
    for route in iter_route_contexts(app.routes):
        assert route.path is not None
        if isinstance(route.original_route, Mount):
            yield "GET", route.path, STATIC_FILE
            continue
        for method in sorted(route.methods or {"GET"}):
            yield method, route.path, sample_path(route.path)


def assert_refused(status: int, body: Any, path: str) -> None:
    """A 401 in the error shape of the route's protocol (Anthropic's on its routes)."""
    assert status == 401, (path, status, body)
    if path.startswith("/v1/messages"):
        assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
        assert "API key" in body["error"]["message"]
    else:
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["code"] == "invalid_api_key"
        assert "\n" not in body["error"]["message"]


def test_every_route_but_the_public_ones_refuses_without_the_key(served: Running) -> None:
    routes = list(every_route(served.app))
    assert len(routes) > 30  # the walk reached the routers, not only the app's own routes
    open_without_key = set()
    for method, pattern, path in routes:
        status, body = served.request(method, path)
        if pattern in PUBLIC:
            assert status == 200, (method, path, status, body)
            open_without_key.add(pattern)
        elif method == "HEAD":  # a HEAD answer has no body to read the shape from
            assert status == 401, (method, path, status)
        else:
            assert_refused(status, body, path)
    assert open_without_key == PUBLIC


def test_a_wrong_key_is_refused_and_the_right_one_in_either_header_opens(
    served: Running,
) -> None:
    for headers in ({"Authorization": "Bearer wrong"}, {"x-api-key": "wrong"}):
        assert_refused(*served.request("GET", LATER, headers), LATER)
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"x-api-key": KEY}):
        assert served.request("GET", LATER, headers) == (200, {"secret": "only with the key"})


def test_a_path_no_route_matches_is_refused_before_it_is_looked_up(served: Running) -> None:
    for path in ("/nowhere", "/health/", "/v2/models", "//api/sessions", "/statics"):
        assert_refused(*served.request("GET", path), path)
    status, _ = served.request("GET", "/nowhere", {"Authorization": f"Bearer {KEY}"})
    assert status == 404


def test_the_description_says_which_routes_need_the_key(served: Running) -> None:
    status, description = served.request("GET", "/openapi.json")
    assert status == 200
    for path, operations in description["paths"].items():
        for method, operation in operations.items():
            needs_key = "401" in operation["responses"] and "security" in operation
            assert needs_key == (path not in PUBLIC), (method, path)


def test_the_studio_page_and_every_file_of_it_load_without_the_key(served: Running) -> None:
    assert served.request("GET", "/")[0] == 200
    for file in sorted(STATIC.iterdir()):
        status, _ = served.request("GET", f"/static/{file.name}")
        assert status == 200, file.name
