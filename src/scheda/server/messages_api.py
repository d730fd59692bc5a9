"""Anthropic's Messages API: `POST /v1/messages` and `/v1/messages/count_tokens`.

The request is translated onto the same chat call as chat completions (as
llama.cpp's own server does for this route): `system` becomes the system
message, text blocks the turns' text, `tool_use` blocks an assistant's tool
calls and `tool_result` blocks tool messages; `tools` and `tool_choice`
become the `Guide`'s. The answer is spelled back in Anthropic's shape: content
blocks (`text`, `tool_use`), `stop_reason` (with the `stop_sequence` that
matched), `usage`; a stream is its typed events (`message_start`,
`content_block_start`, `content_block_delta`, `content_block_stop`,
`message_delta`, `message_stop`), a call's input streamed as it is written.
Errors take Anthropic's shape on these routes (server/errors.py), and
Anthropic's clients' `x-api-key` header is taken as the key (server/app.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import Field, model_validator

from scheda.engines.base import CallPiece, Generation, Guide, Message, Sample, ToolCall
from scheda.errors import RequestFieldError, UnsupportedFieldError
from scheda.sampling import Sampling
from scheda.server import chat_job
from scheda.server.errors import error_document
from scheda.server.openapi import answers
from scheda.server.responses import new_id
from scheda.server.runner import Event, Job
from scheda.server.schemas import (
    NAME,
    WHOLE,
    Strict,
    Temperature,
    TopK,
    TopP,
    check_tools,
    chosen,
)

router = APIRouter()
ROUTE = "/v1/messages"

# -- the request ---------------------------------------------------------------------------


# Anthropic's prompt-caching mark: taken and let be, since llama.cpp keeps every prompt in
# its slot's cache; what was read from it is in the answer's `usage`.
CacheControl = dict[str, Any] | None


class TextBlock(Strict):
    type: Literal["text"]
    text: str
    cache_control: CacheControl = None


class ToolUseBlock(Strict):
    type: Literal["tool_use"]
    id: str
    name: Annotated[str, Field(pattern=NAME)]
    input: dict[str, Any]
    cache_control: CacheControl = None


class ToolResultBlock(Strict):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlock] = ""
    is_error: bool = False
    cache_control: CacheControl = None

    def text(self) -> str:
        body = self.content if isinstance(self.content, str) else _joined(self.content)
        return f"Error: {body}" if self.is_error else body


def _block_kind(value: Any) -> Any:
    """Blocks scheda cannot read (images, documents, thinking) are refused by name."""
    kind = value.get("type") if isinstance(value, dict) else None
    if kind is not None and kind not in ("text", "tool_use", "tool_result"):
        raise UnsupportedFieldError(
            f"content blocks of type {kind!r} are not supported: send text, tool_use or "
            "tool_result blocks"
        )
    return value


Block = Annotated[TextBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")]


class InputMessage(Strict):
    role: Literal["user", "assistant"]
    content: str | list[Block]

    @model_validator(mode="before")
    @classmethod
    def _readable_blocks(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("content"), list):
            for block in value["content"]:
                _block_kind(block)
        return value

    def messages(self) -> list[Message]:
        """This turn as chat messages: a user's tool results are tool messages each."""
        if isinstance(self.content, str):
            return [Message(self.role, self.content)]
        texts = [b.text for b in self.content if isinstance(b, TextBlock)]
        if self.role == "assistant":
            calls = [
                ToolCall(b.id, b.name, json.dumps(b.input))
                for b in self.content
                if isinstance(b, ToolUseBlock)
            ]
            return [Message("assistant", "".join(texts), calls)]
        if any(isinstance(b, ToolUseBlock) for b in self.content):
            raise RequestFieldError("tool_use blocks come from the assistant, not the user")
        results = [
            Message("tool", b.text(), tool_call_id=b.tool_use_id)
            for b in self.content
            if isinstance(b, ToolResultBlock)
        ]
        said = [Message("user", "\n".join(texts))] if texts or not results else []
        return results + said


class ToolDefinition(Strict):
    name: Annotated[str, Field(pattern=NAME)]
    description: str | None = None
    input_schema: dict[str, Any]
    cache_control: CacheControl = None

    def definition(self) -> dict[str, Any]:
        function = {"name": self.name, "parameters": self.input_schema}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


class ToolChoice(Strict):
    type: Literal["auto", "any", "tool", "none"]
    name: Annotated[str, Field(pattern=NAME)] | None = None
    disable_parallel_tool_use: bool = False


def _no_thinking(value: Any) -> Any:
    if isinstance(value, dict) and value.get("type") not in (None, "disabled"):
        raise UnsupportedFieldError("thinking is not supported: leave it out")
    return value


# The declared sampling options this API sends under their own names (tests/test_sampling.py).
SAMPLED = ("temperature", "top_p", "top_k")


class MessagesRequest(Strict):
    model: str | None = None
    messages: Annotated[list[InputMessage], Field(min_length=1)]
    system: str | list[TextBlock] | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None
    stop_sequences: list[str] | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    thinking: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    cache_control: CacheControl = None

    @model_validator(mode="after")
    def _choice_fits(self) -> MessagesRequest:
        _no_thinking(self.thinking)
        choice = self.tool_choice
        if choice is not None and choice.type == "tool" and choice.name is None:
            raise RequestFieldError("a tool_choice of type tool names the tool: send its name")
        wanted = {"any": "required", "tool": choice.name} if choice is not None else {}
        check_tools([t.name for t in self.tools or []], wanted.get(choice.type) if choice else None)
        return self

    def chat_messages(self) -> list[Message]:
        system = self.system if isinstance(self.system, str) else _joined(self.system or [])
        head = [Message("system", system)] if system else []
        return head + [m for turn in self.messages for m in turn.messages()]

    def guide(self) -> Guide:
        choice = self.tool_choice or ToolChoice(type="auto")
        named = {"auto": "auto", "any": "required", "none": "none"}
        return Guide(
            tools=[t.definition() for t in self.tools or []],
            tool_choice=named.get(choice.type) or str(choice.name),
            parallel_tool_calls=not choice.disable_parallel_tool_use,
        )

    def sampling(self, max_tokens: int) -> Sampling:
        stop = list(self.stop_sequences or [])
        return Sampling(max_tokens=max_tokens, stop=stop, **chosen(self, SAMPLED))


class CreateMessage(MessagesRequest):
    max_tokens: Annotated[int, Field(ge=1), WHOLE]
    stream: bool = False


def _joined(blocks: list[TextBlock]) -> str:
    return "\n".join(b.text for b in blocks)


# -- routes --------------------------------------------------------------------------------


@router.post(ROUTE, responses=answers(400, 404, 503, stream=True, shape="anthropic"))
async def create_message(body: CreateMessage, request: Request) -> Any:
    entry = chat_job.entry_of(request, body.model)
    job = chat_job.start(
        request,
        entry,
        body.chat_messages(),
        body.sampling(body.max_tokens),
        body.guide(),
        body.stream,
    )
    if not body.stream:
        return message(entry.id, await chat_job.whole(job, request))
    return await chat_job.streamed(job, request, lambda j, first: _events(entry.id, j, first))


@router.post(ROUTE + "/count_tokens", responses=answers(400, 404, 503, shape="anthropic"))
async def count_tokens(body: MessagesRequest, request: Request) -> Any:
    entry = chat_job.entry_of(request, body.model)
    messages, guide = body.chat_messages(), body.guide()

    def work(engine: Any, _on_text: Any, _cancel: Any) -> int:
        prompt = engine.chat_prompt(messages, guide)  # the template writes its special tokens
        return len(engine.tokenize(prompt, add_special=False))

    job = Job(request.app.state.pool, entry, work)
    event = await job.finish(request)
    if event.kind == "error":
        chat_job.fail(event)
    return {"input_tokens": event.result}


# -- the answer ----------------------------------------------------------------------------


def stop_reason(sample: Sample) -> str:
    """Anthropic's reason: max_tokens first (an answer cut short keeps the calls it wrote
    whole), then a call, a stop sequence, the end of the turn."""
    if sample.finish_reason == "length":
        return "max_tokens"
    if sample.tool_calls:
        return "tool_use"
    return "stop_sequence" if sample.stop_sequence is not None else "end_turn"


def stop_sequence(sample: Sample) -> str | None:
    return sample.stop_sequence if stop_reason(sample) == "stop_sequence" else None


def blocks(sample: Sample) -> list[dict[str, Any]]:
    """The answer's content blocks: its text, then a `tool_use` block per call."""
    content: list[dict[str, Any]] = []
    if sample.text:
        content.append({"type": "text", "text": sample.text})
    content += [tool_use(call) for call in sample.tool_calls]
    return content


def tool_use(call: ToolCall, whole: bool = True) -> dict[str, Any]:
    arguments = _arguments(call.arguments) if whole else {}
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}


def _arguments(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:  # a call cut short: what there is, as a string
        return {"arguments": text}
    return value if isinstance(value, dict) else {"value": value}


def message(model: str, generation: Generation, message_id: str | None = None) -> dict[str, Any]:
    sample = generation.samples[0]
    return {
        "id": message_id or new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks(sample),
        "stop_reason": stop_reason(sample),
        "stop_sequence": stop_sequence(sample),
        "usage": usage(generation),
    }


def usage(generation: Generation) -> dict[str, Any]:
    """Anthropic's counts: `input_tokens` are the prompt's tokens not read from the cache,
    `cache_read_input_tokens` those that were (the three input counts add up to the prompt);
    nothing is written to a cache on request, so `cache_creation_input_tokens` is 0."""
    cached = generation.cached_tokens
    counts: dict[str, Any] = {
        "input_tokens": generation.prompt_tokens - (cached or 0),
        "output_tokens": generation.completion_tokens,
    }
    if cached is not None:
        counts["cache_creation_input_tokens"] = 0
        counts["cache_read_input_tokens"] = cached
    return counts


async def _events(model: str, job: Job, first: Event) -> AsyncIterator[str]:
    """Anthropic's stream: the message, a text block as it grows, a block per tool call as
    it is written (its input's JSON in fragments), the stop reason and the token counts,
    then `message_stop`."""
    message_id = new_id("msg")
    opening: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    yield chat_job.event("message_start", {"type": "message_start", "message": opening})
    content = _Blocks()
    last = first
    async for last in chat_job.texts(job, first):
        if not last.streamed:
            break
        for sent in content.call(last.call) if last.call else content.text(last.text):
            yield sent
    if last.kind == "error":
        for sent in content.close():
            yield sent
        yield chat_job.event("error", error_document(last.error, ROUTE))
        return
    generation: Generation = last.result
    sample = generation.samples[0]
    for piece in content.calls.rest(sample):  # calls an engine gave only whole
        for sent in content.call(piece):
            yield sent
    for sent in content.close():  # a call cut short ends here too: the stop reason says so
        yield sent
    closing = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason(sample), "stop_sequence": stop_sequence(sample)},
        "usage": usage(generation),
    }
    yield chat_job.event("message_delta", closing)
    yield chat_job.event("message_stop", {"type": "message_stop"})


class _Blocks:
    """The stream's content blocks, one open at a time: text while text comes, a `tool_use`
    block from a call's start to the next block or the end."""

    def __init__(self) -> None:
        self.index = 0  # the open block's, or the next one's
        self.open: int | str | None = None  # "text", or the open call's place among the calls
        self.calls = chat_job.Calls()

    def text(self, text: str) -> list[str]:
        sent = [] if self.open == "text" else self.close()
        if self.open is None:
            sent.append(_block_start(self.index, {"type": "text", "text": ""}))
            self.open = "text"
        return [*sent, _block_delta(self.index, {"type": "text_delta", "text": text})]

    def call(self, piece: CallPiece) -> list[str]:
        self.calls.add(piece)
        sent = []
        if piece.starts:
            sent = self.close()
            block = tool_use(ToolCall(piece.id, piece.name, ""), whole=False)
            sent.append(_block_start(self.index, block))
            self.open = piece.index
        if piece.arguments and self.open == piece.index:
            delta = {"type": "input_json_delta", "partial_json": piece.arguments}
            sent.append(_block_delta(self.index, delta))
        return sent

    def close(self) -> list[str]:
        if self.open is None:
            return []
        self.open = None
        self.index += 1
        return [_block_stop(self.index - 1)]


def _block_start(index: int, block: dict[str, Any]) -> str:
    data = {"type": "content_block_start", "index": index, "content_block": block}
    return chat_job.event("content_block_start", data)


def _block_delta(index: int, delta: dict[str, Any]) -> str:
    data = {"type": "content_block_delta", "index": index, "delta": delta}
    return chat_job.event("content_block_delta", data)


def _block_stop(index: int) -> str:
    return chat_job.event("content_block_stop", {"type": "content_block_stop", "index": index})


__all__ = ["router"]
