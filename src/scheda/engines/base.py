"""The engine interface: what scheda asks of llama.cpp, transformers or vLLM.

An engine owns one loaded model. It tokenizes with the model's own
tokenizer, samples with the engine's own sampler and applies the model's own
chat template; scheda never reimplements any of them. Every command (generate,
chat, bench, the server, the evaluator) goes through this one interface.

Streaming is a callback: `on_text(sample_index, text)` is called as text
arrives. A chat may carry a `Guide` (tools, a response format, logit biases):
an engine either honours each of its fields or refuses the request naming the
field, never ignores one; the calls a model makes come back on the `Sample`,
and an engine that can stream them hands `on_call(sample_index, piece)` each
call's start and then its argument text as the model writes it.
Cancelling is an event: set it (from a signal handler, another thread or the
callback's caller) and the engine stops at the next token,
returning what it had with finish reason "cancelled". `stream()` turns the
callback into an iterator for callers that prefer one (the server).
"""

from __future__ import annotations

import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from scheda import sampling as options
from scheda.errors import EngineError
from scheda.sampling import Sampling

# (sample index, new text) -> None. Called from the thread that runs the generation.
OnText = Callable[[int, str], None]

# What an engine may support; `Engine.capabilities` lists its own.
CAPABILITIES = ("generate", "stream", "chat", "cancel", "n", "seed", "logprobs")


@dataclass(frozen=True)
class Token:
    """One token: its id and the raw bytes it stands for (a piece of UTF-8, maybe partial)."""

    id: int
    piece: bytes


@dataclass
class TokenLogprob:
    """A generated token's log-probability, with the engine's top alternatives."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class ToolCall:
    """A function the model calls: its arguments as JSON text, as OpenAI's API carries them."""

    id: str
    name: str
    arguments: str

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass
class CallPiece:
    """A piece of a tool call as the model writes it: the call's start (its `id` and `name`
    set, maybe some arguments), then more of its arguments' JSON text. `index` is the call's
    place among the sample's calls; the pieces of one call, joined, are its arguments."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""

    @property
    def starts(self) -> bool:
        return bool(self.id)


# (sample index, piece) -> None. Called from the thread that runs the generation.
OnCall = Callable[[int, CallPiece], None]


@dataclass
class Sample:
    """One of the `n` answers to a request."""

    text: str
    finish_reason: str  # "stop", "length", "tool_calls" or "cancelled"
    completion_tokens: int
    logprobs: list[TokenLogprob] | None = None
    # Only calls written whole: one cut short (max_tokens, a cancel) is left out.
    tool_calls: list[ToolCall] = field(default_factory=list)
    stop_sequence: str | None = None  # the stop string that ended it, when the engine knows


@dataclass
class Timings:
    """Where the time went, in seconds; rates in tokens per second."""

    load_s: float = 0.0
    first_token_s: float = 0.0  # from the request to the first generated text
    total_s: float = 0.0
    prompt_tokens_per_s: float = 0.0
    tokens_per_s: float = 0.0


@dataclass
class Generation:
    """What one request produced: the samples, the token counts and the timings."""

    samples: list[Sample]
    prompt_tokens: int
    timings: Timings
    # Of the prompt's tokens, those the engine took from its cache of earlier requests rather
    # than evaluating them (a conversation's earlier turns); None where the engine cannot say.
    cached_tokens: int | None = None

    @property
    def text(self) -> str:
        return self.samples[0].text

    @property
    def finish_reason(self) -> str:
        return self.samples[0].finish_reason

    @property
    def completion_tokens(self) -> int:
        return sum(s.completion_tokens for s in self.samples)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "completion_tokens": self.completion_tokens,
            "samples": [asdict(s) for s in self.samples],
            "timings": asdict(self.timings),
        }


@dataclass
class Message:
    """One chat turn; an assistant's may call tools, a tool's answers one call."""

    role: str  # "system", "user", "assistant" or "tool"
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None  # a tool message: the call it answers

    def to_openai(self) -> dict[str, Any]:
        """The turn as chat templates and OpenAI's API read it: only the keys it uses."""
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


@dataclass
class Guide:
    """What steers a chat's answer beyond sampling, in OpenAI's terms.

    `tools` are OpenAI's function tools (`{"type": "function", "function": {...}}`);
    `tool_choice` is "auto", "none", "required" or a function's name; `response_format`
    is OpenAI's (`json_object`, or `json_schema` with its `schema`); `logit_bias` maps
    token ids to a bias from -100 to 100. Empty, it changes nothing.
    """

    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str = "auto"
    parallel_tool_calls: bool = True
    response_format: dict[str, Any] | None = None
    logit_bias: dict[int, float] = field(default_factory=dict)

    def fields(self) -> list[str]:
        """The request fields this guide sets, as the client named them."""
        named = []
        if self.tools:
            named.append("tools")
        if self.response_format is not None:
            named.append("response_format")
        if self.logit_bias:
            named.append("logit_bias")
        return named


class Engine(ABC):
    """A loaded model. Use it as a context manager, or call `close()`."""

    name: str = "engine"
    capabilities: frozenset[str] = frozenset()
    context: int = 0  # tokens of context one request may use
    load_s: float = 0.0  # seconds the model took to load

    @abstractmethod
    def tokenize(self, text: str, add_special: bool = False) -> list[Token]:
        """The model's tokens for a text, with the bytes of each."""

    @abstractmethod
    def detokenize(self, ids: list[int]) -> str:
        """The text a list of token ids stands for."""

    @abstractmethod
    def generate(
        self,
        prompt: str | list[int],
        sampling: Sampling | None = None,
        on_text: OnText | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """Continue a plain prompt (text, or token ids taken as they are), streaming
        through `on_text` when given."""

    @abstractmethod
    def chat(
        self,
        messages: list[Message],
        sampling: Sampling | None = None,
        on_text: OnText | None = None,
        cancel: threading.Event | None = None,
        guide: Guide | None = None,
        on_call: OnCall | None = None,
    ) -> Generation:
        """Answer a conversation, formatted by the model's own chat template; `guide`'s
        tools, response format and logit biases honoured, or the request refused. An engine
        that streams tool calls hands their pieces to `on_call` as they are written; one
        that does not leaves it unused (the calls are on the samples either way)."""

    @abstractmethod
    def chat_prompt(self, messages: list[Message], guide: Guide | None = None) -> str:
        """The text the chat template makes of a conversation (and its tools), ready for
        the model."""

    @abstractmethod
    def close(self) -> None:
        """Free the model."""

    def tokenizer_info(self) -> dict[str, Any]:
        """The special tokens, chat template and length limit, as HF tokenizer configs name them."""
        return {"model_max_length": self.context}

    def count_tokens(self, text: str) -> int:
        """How many tokens a prompt takes, with the special tokens the engine adds."""
        return len(self.tokenize(text, add_special=True))

    def stream(
        self,
        prompt: str | list[int] | list[Message],
        sampling: Sampling | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[tuple[int, str] | Generation]:
        """Yield `(sample index, text)` as it arrives, then the `Generation`.

        The generation runs in a worker thread; closing the iterator early
        cancels it.
        """
        cancel = cancel or threading.Event()
        items: queue.Queue[Any] = queue.Queue()

        def work() -> None:
            try:
                on_text: OnText = lambda i, t: items.put((i, t))  # noqa: E731
                if prompt and isinstance(prompt[0], Message):
                    items.put(self.chat(prompt, sampling, on_text, cancel))  # type: ignore[arg-type]
                else:
                    items.put(self.generate(prompt, sampling, on_text, cancel))  # type: ignore[arg-type]
            except BaseException as exc:  # handed to the consumer, raised there
                items.put(exc)

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        try:
            while True:
                item = items.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Generation):
                    return
        finally:
            cancel.set()
            worker.join()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@runtime_checkable
class Embedder(Protocol):
    """A loaded encoder that turns texts into vectors: the interface beside `Engine` for
    models that embed and do not generate (engines/embeddings.py). The server's pool holds
    either; an embedder answers the tokenizer's routes as an engine does.

    Declared as a protocol and subclassed by each embedder, so that one whose method drifts
    is a type error; `isinstance` tells one apart at run time by its methods.
    """

    name: str
    capabilities: frozenset[str]
    context: int  # tokens one text may use; longer texts are cut
    load_s: float

    def tokenize(self, text: str, add_special: bool = False) -> list[Token]:
        """The model's tokens for a text, with the bytes of each."""
        ...

    def detokenize(self, ids: list[int]) -> str:
        """The text a list of token ids stands for."""
        ...

    def tokenizer_info(self) -> dict[str, Any]:
        """The special tokens and length limit, as HF tokenizer configs name them."""
        ...

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """One vector per text, and the tokens read."""
        ...

    def close(self) -> None:
        """Free the model."""
        ...


def check_sampling(engine: str, sampling: Sampling) -> None:
    """An option this engine does not honour, set away from its default, is refused, not ignored."""
    name = options.unsupported(engine, sampling)
    if name is not None:
        raise EngineError(options.refusal(engine, name), client_fault=True)


def check_guide(engine: str, guide: Guide | None, honoured: tuple[str, ...] = ()) -> None:
    """A guide field this engine does not honour is refused, naming the field and the engine."""
    for name in guide.fields() if guide is not None else []:
        if name not in honoured:
            raise EngineError(
                f"the {engine} engine has no {name}: leave it out, or serve a GGUF on llama.cpp",
                client_fault=True,
            )


def check_token_ids(ids: list[int], vocab_size: int) -> None:
    """Token ids from a client must exist: an engine given one past its vocabulary may crash."""
    bad = next((t for t in ids if not 0 <= int(t) < vocab_size), None) if vocab_size else None
    if bad is not None:
        raise EngineError(
            f"token id {bad} is outside the vocabulary (0 to {vocab_size - 1})", client_fault=True
        )


def stopwatch() -> Callable[[], float]:
    """Seconds since the call, on a monotonic clock."""
    start = time.perf_counter()
    return lambda: time.perf_counter() - start


def first_stop(text: str, stops: list[str]) -> tuple[int, str] | None:
    """Where the earliest stop string in `text` begins, and which it is, as llama.cpp picks
    it among several (the earliest; the first listed of two at one place)."""
    found: tuple[int, str] | None = None
    for stop in stops:
        at = text.find(stop)
        if at >= 0 and (found is None or at < found[0]):
            found = (at, stop)
    return found


def held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of `text` could be the start of a stop string: held
    from the stream until the next text decides."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest
