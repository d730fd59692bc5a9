"""One replica of a model served on Ray: scheda's engine, opened on the replica's node.

`scheda serve --ray` makes each served model a Ray Serve deployment of this class
(server/ray_pool.py deploys it). The replica holds the same engine a plain `scheda
serve` holds (llama.cpp through xllamacpp, or transformers) and answers the calls the
server's routes make of an engine: the generations as a stream of items, everything
else (tokenize, the chat template's text, embeddings) as one answer.

The engine blocks, and llama.cpp decodes the requests that wait in it together over its
slots: each call runs in a thread of its own, never on the replica's event loop, so
that a replica takes as many requests at once as it has slots (Ray Serve's
`max_ongoing_requests`), as the plain server does.

A stream yields lists of tuples: `("replica", id)` first, so that the server knows the
request began there; then `("text", index, text)` pieces (as many to a list as came
together), and last `("done", Generation)` or `("error", APIError)`. An error is
sent as a value, not raised: scheda's errors carry the status the server answers with,
and Ray would wrap a raised one in its own. A stream the server cancels (its client
left) stops the engine at the next token.

No Ray at import time: Ray Serve imports this module on the replica's node, and nothing
else imports it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from typing import Any

from scheda import engines
from scheda.engines.base import Embedder, Engine
from scheda.errors import APIError, SchedaError

log = logging.getLogger("scheda.replica")

# What the server may call by name: the engine's own methods, nothing else.
STREAMED = frozenset({"chat", "generate"})
ANSWERED = frozenset({"tokenize", "detokenize", "chat_prompt", "tokenizer_info", "embed"})


def portable(exc: BaseException) -> APIError:
    """An error as the server answers it: its message, status, field and code. Any class of
    scheda's error pickles this way, whatever its constructor takes."""
    if isinstance(exc, SchedaError):
        return APIError(str(exc), exc.param, exc.status, exc.code)
    log.exception("unexpected error in a replica", exc_info=exc)
    return APIError(f"internal error in scheda's replica ({type(exc).__name__}): please report it")


class EngineReplica:
    """The body of a Ray Serve replica: one engine and the calls the server makes of it."""

    def __init__(self, model: str, engine: str, kind: str, options: dict[str, Any]) -> None:
        from ray import serve

        self.id = serve.get_replica_context().replica_id.unique_id
        self.engine: Engine | Embedder
        if kind == "embedding":
            self.engine = engines.load_embedder(engines.choose(model, engine)[1], **options)
        else:
            self.engine = engines.open_model(model, engine, **options)

    def describe(self) -> dict[str, Any]:
        """What the server reads once: the engine's name, context and capabilities."""
        return {
            "replica": self.id,
            "name": getattr(self.engine, "name", ""),
            "context": getattr(self.engine, "context", 0),
            "capabilities": sorted(getattr(self.engine, "capabilities", ())),
            "load_s": getattr(self.engine, "load_s", 0.0),
        }

    async def answer(self, method: str, *args: Any) -> tuple[str, Any]:
        """One call that returns at once: `("ok", value)` or `("error", APIError)`."""
        if method not in ANSWERED:
            return "error", APIError(f"a replica does not answer {method!r}", status=500)
        try:
            return "ok", await asyncio.to_thread(getattr(self.engine, method), *args)
        except Exception as exc:
            return "error", portable(exc)

    async def stream(self, method: str, args: tuple[Any, ...], texts: bool) -> AsyncIterator[Any]:
        """A generation's items (see the module's doc); `texts=False` sends only its end."""
        if method not in STREAMED:
            yield [("error", APIError(f"a replica does not stream {method!r}", status=500))]
            return
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        cancel = threading.Event()

        def put(item: tuple[Any, ...]) -> None:
            with suppress(RuntimeError):  # the replica is stopping: nobody reads any more
                loop.call_soon_threadsafe(items.put_nowait, item)

        on_text: Callable[[int, str], None] | None = None
        if texts:
            on_text = lambda i, t: put(("text", i, t))  # noqa: E731
        call = getattr(self.engine, method)
        worker = threading.Thread(
            target=self._run, args=(call, args, on_text, cancel, put), daemon=True
        )
        worker.start()
        try:
            yield [("replica", self.id)]
            while True:
                batch = [await items.get()]
                while not items.empty():  # pieces that came together travel together
                    batch.append(items.get_nowait())
                yield batch
                if batch[-1][0] != "text":
                    return
        finally:
            # Ended, or cancelled because the server's client left: stop the engine.
            cancel.set()

    @staticmethod
    def _run(
        call: Callable[..., Any],
        args: tuple[Any, ...],
        on_text: Callable[[int, str], None] | None,
        cancel: threading.Event,
        put: Callable[[tuple[Any, ...]], None],
    ) -> None:
        # The engines take (prompt or messages, sampling, on_text, cancel[, guide]).
        head, rest = args[:2], args[2:]
        try:
            put(("done", call(*head, on_text, cancel, *rest)))
        except Exception as exc:  # sent to the server, which answers the client with it
            put(("error", portable(exc)))

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()
