"""A real `scheda serve` in a subprocess on a free loopback port, for the server's tests."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`scheda serve ARGS` until `stop()`; `request()` talks to it over raw HTTP."""

    def __init__(
        self,
        args: list[str],
        data_dir: Path,
        api_key: str | None = None,
        start_timeout: float = START_TIMEOUT_S,
    ) -> None:
        self.start_timeout = start_timeout
        self.port = free_port()
        self.key = api_key
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "scheda", "serve", *args, "--port", str(self.port)]
        if api_key:
            command += ["--api-key", api_key]
        env = {**os.environ, "SCHEDA_DATA_DIR": str(data_dir)}
        self.log = data_dir / f"serve-{self.port}.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            command, env=env, stdout=self._log_file, stderr=subprocess.STDOUT
        )
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._log_file.close()
                raise RuntimeError(f"scheda serve exited: {self.log.read_text()}")
            try:
                status, _ = self.request("GET", "/health")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"scheda serve did not start: {self.log.read_text()}")

    def headers(self, key: str | None = "default") -> dict[str, str]:
        key = self.key if key == "default" else key
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> tuple[int, Any]:
        """(status, parsed JSON or text) of one request."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        return http_request(self.port, method, path, data, headers or self.headers(), timeout)

    def send(self, path: str, body: Any) -> http.client.HTTPConnection:
        """POST `body` and leave the answer unread: closing the connection is hanging up."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        conn.request("POST", path, json.dumps(body).encode(), self.headers())
        return conn

    def active(self, model: str = "default") -> int:
        """Requests in flight to `model`, as `/health` counts them."""
        return int(self.request("GET", "/health")[1]["active"][model])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()


def wait_for(condition: Callable[[], bool], within: float) -> bool:
    """Whether `condition` comes true within `within` seconds (polled every 0.1 s)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def sse_events(response: http.client.HTTPResponse) -> list[dict[str, Any] | str]:
    """Every `data:` line of a finished event stream, parsed ("[DONE]" stays a string)."""
    events: list[dict[str, Any] | str] = []
    for line in response.read().decode().splitlines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def http_request(
    port: int,
    method: str,
    path: str,
    data: bytes | None,
    headers: dict[str, str],
    timeout: float = 120,
) -> tuple[int, Any]:
    """(status, parsed JSON or text) of one request to a server on loopback."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=headers)
        answer = conn.getresponse()
        text = answer.read().decode("utf-8", errors="replace")
    finally:
        conn.close()
    try:
        return answer.status, json.loads(text)
    except ValueError:
        return answer.status, text
