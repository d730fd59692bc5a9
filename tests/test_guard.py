"""What other web pages can do to a server on loopback: nothing.

Each attack is sent to a real `scheda serve` as a browser would send it, and the test
checks that nothing was read or changed: a rebinding page's foreign `Host`, a foreign
`Origin` with a `text/plain` body (a "simple" request that needs no preflight), a
preflight. The studio's own requests (same origin) and clients with no `Origin` (SDKs,
curl) go on working; `--allow-host` and `--cors-origin` open exactly what they name.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scheda.server.guard import Allowed, host_name
from scheda.stores.sessions import SessionStore
from tests.serving import Server

PAGE = "http://attacker.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(["default"], tmp_path_factory.mktemp("guard"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(
        ["default", "--allow-host", "scheda.internal", "--cors-origin", "http://localhost:3000"],
        tmp_path_factory.mktemp("guard-proxied"),
    )
    yield running
    running.stop()


def sessions_in(server: Server) -> int:
    data_dir = server.log.parent
    with SessionStore(data_dir / "sessions.sqlite3") as store:
        return len(store.list())


def headers(server: Server, **extra: str) -> dict[str, str]:
    return {**server.headers(), **extra}


@pytest.mark.parametrize("path", ["/api/sessions", "/v1/models", "/", "/openapi.json"])
def test_a_foreign_host_reads_nothing(server: Server, path: str) -> None:
    status, body = server.request(
        "GET", path, headers=headers(server, Host=f"attacker.example:{server.port}")
    )
    assert status == 403
    assert "attacker.example" in body["error"]["message"]
    assert "--allow-host" in body["error"]["message"]


def test_a_foreign_origin_changes_nothing_whatever_its_content_type(server: Server) -> None:
    before = sessions_in(server)
    for content_type in ("text/plain", "application/json", "application/x-www-form-urlencoded"):
        status, body = server.request(
            "POST",
            "/api/sessions",
            raw=b'{"system": "pwned"}',
            headers={"Content-Type": content_type, "Origin": PAGE},
        )
        assert status == 403, content_type
        assert "--cors-origin" in body["error"]["message"]
    status, _ = server.request(
        "POST",
        "/v1/chat/completions",
        raw=b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}',
        headers={"Content-Type": "text/plain", "Origin": PAGE},
    )
    assert status == 403
    assert sessions_in(server) == before


def test_a_preflight_from_another_page_gets_no_cors_headers(server: Server) -> None:
    status, _ = server.request(
        "OPTIONS",
        "/v1/chat/completions",
        headers={
            "Origin": PAGE,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert status == 403


def test_the_studios_own_origin_and_clients_without_one_are_served(server: Server) -> None:
    own = f"http://127.0.0.1:{server.port}"
    before = sessions_in(server)
    status, created = server.request(
        "POST", "/api/sessions", body={}, headers=headers(server, Origin=own)
    )
    assert status == 201 and created["id"]
    status, _ = server.request("GET", "/api/sessions", headers=headers(server, Origin=own))
    assert status == 200
    status, _ = server.request(  # curl and the SDKs send no Origin
        "GET", "/v1/models", headers=headers(server, Host=f"localhost:{server.port}")
    )
    assert status == 200
    assert sessions_in(server) == before + 1


def test_allowed_hosts_and_origins_open_exactly_what_they_name(proxied: Server) -> None:
    ok, _ = proxied.request("GET", "/v1/models", headers=headers(proxied, Host="scheda.internal"))
    assert ok == 200
    refused, _ = proxied.request(
        "GET", "/v1/models", headers=headers(proxied, Host="other.internal")
    )
    assert refused == 403
    conn_headers = {
        "Origin": "http://localhost:3000",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,authorization",
    }
    status, _ = proxied.request("OPTIONS", "/v1/chat/completions", headers=conn_headers)
    assert status == 200
    status, _ = proxied.request(
        "GET", "/v1/models", headers=headers(proxied, Origin="http://localhost:3001")
    )
    assert status == 403


def test_host_names_are_compared_without_port_brackets_or_case() -> None:
    assert host_name("LocalHost:8000") == "localhost"
    assert host_name("[::1]:8000") == "::1"
    assert host_name("::1") == "::1"
    assert host_name("example.com.") == "example.com"
    loopback = Allowed("127.0.0.1")
    assert loopback.host("127.0.0.1:8000") and loopback.host("[::1]:8000")
    assert not loopback.host("192.168.1.5:8000")  # an address, but not this server's
    everywhere = Allowed("0.0.0.0")
    assert everywhere.host("192.168.1.5:8000")  # on every interface, any address literal
    assert not everywhere.host("attacker.example")
    assert loopback.origin("http://127.0.0.1:8000", "127.0.0.1:8000")
    assert not loopback.origin("http://127.0.0.1:9999", "127.0.0.1:8000")
    assert not loopback.origin("null", "127.0.0.1:8000")
