"""Who may talk to the server: its own Host names, and no other web page's Origin.

A server on 127.0.0.1 is still reachable from every web page the user opens. Two
attacks follow, and this layer refuses both before any route runs:

- DNS rebinding: a page's own name is made to resolve to 127.0.0.1, and the browser
  then treats the server as that page's origin and reads its answers. Such a request
  carries the page's name in `Host`. Only the server's own names are accepted: the
  address it is bound to, `localhost`, `127.0.0.1`, `[::1]`, the `--host` given, and
  names added with `--allow-host` (a reverse proxy's). A server bound to every
  interface (0.0.0.0) also accepts the machine's own name and any address literal,
  which no rebinding can forge. (Ollama's CVE-2024-28224 was this hole.)
- Cross-origin requests: a page may send a "simple" request (a POST with a
  `text/plain` body) to any address with no preflight, and the server would act on it
  even though the page cannot read the answer. Browsers label every such request with
  an `Origin`; a request whose `Origin` is not the server's own (the same host and
  port as its `Host`) is refused, whatever its content type, unless the user named
  that origin with `--cors-origin`. Clients that send no `Origin` (SDKs, curl) are
  unaffected.

Refusals are 403s in OpenAI's error shape and one line in the log.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from scheda.errors import APIError
from scheda.server.errors import error_response, log_refusal

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
EVERY_INTERFACE = ("0.0.0.0", "::", "")


def host_name(value: str) -> str:
    """The name in a Host header or URL authority, without port or brackets, lower case."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8000
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        value = value.partition(":")[0]
    return value.rstrip(".")


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Allowed:
    """The Host names and extra Origins the server accepts."""

    def __init__(self, bound: str, hosts: Iterable[str] = (), origins: Iterable[str] = ()) -> None:
        names = {host_name(bound), *LOOPBACK_NAMES, *(host_name(h) for h in hosts)}
        self.every_interface = host_name(bound) in EVERY_INTERFACE
        if self.every_interface:
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        self.names = frozenset(n for n in names if n)
        self.origins = frozenset(o.rstrip("/").lower() for o in origins)

    def host(self, header: str) -> bool:
        name = host_name(header)
        return name in self.names or (self.every_interface and _is_address(name))

    def origin(self, origin: str, host: str | None) -> bool:
        """The page's own origin (same host and port as the request's Host), or one named."""
        origin = origin.strip().lower().rstrip("/")
        if origin in self.origins:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or host is None:
            return False  # "null" (a file or a sandboxed frame), or something stranger
        return parts.netloc == host.strip().lower()


class Guard:
    """ASGI layer: refuses a foreign Host or a foreign Origin before anything else runs."""

    def __init__(self, app: ASGIApp, allowed: Allowed) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1") or None
        origin = headers.get(b"origin", b"").decode("latin-1") or None
        refusal = None
        if host is not None and not self.allowed.host(host):
            refusal = (
                f"Host {host_name(host)!r} is not this server's name: "
                "start it with --allow-host NAME to accept it (e.g. behind a proxy)"
            )
        elif origin is not None and not self.allowed.origin(origin, host):
            refusal = (
                f"requests from the web page at {origin} are refused: "
                "start the server with --cors-origin ORIGIN to allow that page"
            )
        if refusal is None:
            await self.app(scope, receive, send)
            return
        log_refusal(scope, 403, refusal)
        if scope["type"] == "http":
            response = error_response(APIError(refusal, None, 403, "forbidden"), scope.get("path"))
            await response(scope, receive, send)
