"""llama.cpp through `xllamacpp`: llama.cpp's own server engine, in this process.

The engine (continuous batching over parallel slots, the chat template,
sampling, tokenizer) is llama.cpp's, called directly. xllamacpp also opens
llama.cpp's HTTP listener; scheda keeps it on loopback and locked with a
random key made for this process, and uses it only for what the Python
binding does not expose (tokenization with pieces).
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from scheda.engines.base import Engine, Token
from scheda.errors import EngineError

LOOPBACK = "127.0.0.1"
HTTP_TIMEOUT_S = 60


def physical_cores() -> int:
    """llama.cpp decodes fastest with one thread per physical core."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


class LlamaCppEngine(Engine):
    name = "llama.cpp"

    def __init__(
        self,
        path: Path,
        context: int = 2048,
        parallel: int = 1,
        threads: int | None = None,
        warmup: bool = True,
    ) -> None:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = context * parallel  # llama.cpp splits n_ctx over the slots
        params.n_parallel = parallel
        params.cpuparams.n_threads = threads or physical_cores()
        params.cpuparams_batch.n_threads = threads or physical_cores()
        params.warmup = warmup
        # llama.cpp's fitting pass loads the model twice to size GPU layers; on the CPU
        # it only costs start-up time.
        params.fit_params = False
        params.verbosity = -1  # llama.cpp's log would drown the terminal
        params.hostnames = [LOOPBACK]
        params.port = 0  # a free port chosen by the OS
        params.n_threads_http = 2
        self._key = secrets.token_urlsafe(24)
        params.api_keys = [self._key]
        self.path = path
        self.context = context
        try:
            self._server = xllamacpp.Server(params)
        except Exception as exc:
            raise EngineError(f"{path}: llama.cpp could not load the model ({exc})") from exc
        self._address = str(self._server.listening_address)
        if not self._address.startswith(f"http://{LOOPBACK}:"):
            self.close()
            raise EngineError(f"llama.cpp listened on {self._address}, not on loopback: refusing")

    def _post(self, route: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            self._address + route,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self._key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as answer:
                return json.loads(answer.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise EngineError(f"llama.cpp {route} failed: {exc}") from exc

    def tokenize(self, text: str, add_special: bool = False) -> list[Token]:
        answer = self._post(
            "/tokenize", {"content": text, "add_special": add_special, "with_pieces": True}
        )
        return [Token(int(t["id"]), _piece_bytes(t["piece"])) for t in answer["tokens"]]

    def complete(
        self, prompt: str, max_tokens: int = 16, temperature: float = 0.0
    ) -> dict[str, Any]:
        result = self._server.handle_completions(
            {"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature}
        )
        if not isinstance(result, dict) or "error" in result:
            raise EngineError(f"llama.cpp completion failed: {result}")
        return result

    def close(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            del self._server


def _piece_bytes(piece: str | list[int]) -> bytes:
    """llama.cpp sends a piece as text when it is valid UTF-8, else as a list of byte values."""
    if isinstance(piece, str):
        return piece.encode("utf-8")
    return bytes(piece)
