"""OpenAI's Responses API: `POST /v1/responses`, stateless.

The request is translated onto the same chat call as chat completions:
`instructions` becomes the system message, `input` (text, or items: messages,
`function_call` and `function_call_output`) the conversation, `tools` and
`tool_choice` the `Guide`'s, `text.format` its response format and
`max_output_tokens` the sampling's limit. The answer is a response object
whose `output` holds a message item (the text) and a `function_call` item per
call; a stream is its typed events (`response.created`,
`response.output_item.added`, `response.output_text.delta`, ...,
`response.completed`), each numbered.

Nothing is stored: `store` is accepted but a response is never kept, so a
`previous_response_id` is refused (send the whole conversation as `input`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import Field, model_validator

from scheda.engines.base import CallPiece, Generation, Guide, Message, Sample, ToolCall
from scheda.errors import RequestFieldError, UnsupportedFieldError
from scheda.sampling import Sampling
from scheda.server import chat_job
from scheda.server.errors import error_body
from scheda.server.openapi import answers
from scheda.server.responses import new_id
from scheda.server.runner import Event, Job
from scheda.server.schemas import NAME, WHOLE, Strict, Temperature, TopP, check_tools, chosen

router = APIRouter()
ROUTE = "/v1/responses"
ITEMS = ("message", "function_call", "function_call_output")
PARTS = ("input_text", "output_text", "text")

# -- the request ---------------------------------------------------------------------------


class TextPart(Strict):
    type: Literal["input_text", "output_text", "text"]
    text: str


class MessageItem(Strict):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[TextPart]

    def message(self) -> Message:
        role = "system" if self.role == "developer" else self.role
        text = self.content if isinstance(self.content, str) else _joined(self.content)
        return Message(role, text)


class FunctionCallItem(Strict):
    type: Literal["function_call"]
    call_id: str
    name: Annotated[str, Field(pattern=NAME)]
    arguments: str


class FunctionCallOutputItem(Strict):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[TextPart]

    def message(self) -> Message:
        text = self.output if isinstance(self.output, str) else _joined(self.output)
        return Message("tool", text, tool_call_id=self.call_id)


Item = MessageItem | FunctionCallItem | FunctionCallOutputItem


def _readable(items: Any) -> Any:
    """Items and parts scheda cannot read (images, files, reasoning) are refused by name."""
    for item in items if isinstance(items, list) else []:
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind is not None and kind not in ITEMS:
            raise UnsupportedFieldError(
                f"input items of type {kind!r} are not supported: send messages, "
                "function_call and function_call_output items"
            )
        content = item.get("content") if isinstance(item, dict) else None
        for part in content if isinstance(content, list) else []:
            part_kind = part.get("type") if isinstance(part, dict) else None
            if part_kind is not None and part_kind not in PARTS:
                raise UnsupportedFieldError(
                    f"content of type {part_kind!r} is not supported: send text parts"
                )
    return items


class FunctionTool(Strict):
    type: Literal["function"]
    name: Annotated[str, Field(pattern=NAME)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    def definition(self) -> dict[str, Any]:
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        if self.parameters is not None:
            function["parameters"] = self.parameters
        return {"type": "function", "function": function}


class NamedFunction(Strict):
    type: Literal["function"]
    name: Annotated[str, Field(pattern=NAME)]


class TextFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    name: Annotated[str, Field(pattern=NAME)] | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    def engine_form(self) -> dict[str, Any] | None:
        if self.type == "text":
            return None
        if self.type == "json_object":
            return {"type": "json_object"}
        schema = self.schema_ or {"type": "object"}
        return {
            "type": "json_schema",
            "json_schema": {"name": self.name or "answer", "schema": schema},
        }


class TextOptions(Strict):
    format: TextFormat | None = None


# The declared sampling options this API sends under their own names (tests/test_sampling.py).
SAMPLED = ("temperature", "top_p")


class ResponsesRequest(Strict):
    model: str | None = None
    input: str | Annotated[list[Item], Field(min_length=1)]
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool = True
    text: TextOptions | None = None
    max_output_tokens: Annotated[int, Field(ge=1), WHOLE] | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    stream: bool = False
    store: bool | None = Field(None, description="Accepted; nothing is ever stored.")
    previous_response_id: Annotated[str | None, Field(max_length=0)] = Field(
        None, description="Not supported: nothing is stored; send the whole conversation."
    )
    metadata: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _refusals(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        _readable(value.get("input"))
        if value.get("previous_response_id"):
            raise UnsupportedFieldError(
                "previous_response_id is not supported: this server stores no responses "
                "(store is false); send the whole conversation as input"
            )
        for tool in value.get("tools") or []:
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind is not None and kind != "function":
                raise UnsupportedFieldError(
                    f"tools of type {kind!r} are not supported: send function tools"
                )
        if value.get("reasoning"):
            raise UnsupportedFieldError("reasoning is not supported: leave it out")
        return value

    @model_validator(mode="after")
    def _choice_fits(self) -> ResponsesRequest:
        check_tools([t.name for t in self.tools or []], self._choice_name())
        return self

    def _choice_name(self) -> str | None:
        choice = self.tool_choice
        return choice.name if isinstance(choice, NamedFunction) else choice

    def chat_messages(self) -> list[Message]:
        head = [Message("system", self.instructions)] if self.instructions else []
        if isinstance(self.input, str):
            return [*head, Message("user", self.input)]
        messages = head
        for item in self.input:
            if isinstance(item, FunctionCallItem):
                call = ToolCall(item.call_id, item.name, item.arguments)
                last = messages[-1] if messages else None
                if last is not None and last.role == "assistant":
                    last.tool_calls.append(call)  # the calls of one turn, together
                else:
                    messages.append(Message("assistant", "", [call]))
            else:
                messages.append(item.message())
        if not messages or (messages[-1].role == "assistant" and not messages[-1].tool_calls):
            raise RequestFieldError("input ends with the assistant: end it with a user turn")
        return messages

    def guide(self) -> Guide:
        text_format = self.text.format if self.text is not None else None
        return Guide(
            tools=[t.definition() for t in self.tools or []],
            tool_choice=self._choice_name() or "auto",
            parallel_tool_calls=self.parallel_tool_calls,
            response_format=text_format.engine_form() if text_format is not None else None,
        )

    def sampling(self) -> Sampling:
        return Sampling(max_tokens=self.max_output_tokens or 0, **chosen(self, SAMPLED))


def _joined(parts: list[TextPart]) -> str:
    return "".join(p.text for p in parts)


# -- the route -----------------------------------------------------------------------------


@router.post(ROUTE, responses=answers(400, 404, 503, stream=True))
async def create_response(body: ResponsesRequest, request: Request) -> Any:
    entry = chat_job.entry_of(request, body.model)
    job = chat_job.start(
        request, entry, body.chat_messages(), body.sampling(), body.guide(), body.stream
    )
    answer = Answer(entry.id, body)
    if not body.stream:
        return answer.whole(await chat_job.whole(job, request))
    return await chat_job.streamed(job, request, answer.events)


# -- the answer ----------------------------------------------------------------------------


class Answer:
    """One response: the object, whole or as the events that build it."""

    def __init__(self, model: str, body: ResponsesRequest) -> None:
        self.model = model
        self.body = body
        self.id = new_id("resp")
        self.message_id = new_id("msg")
        self.created = int(time.time())
        self.sequence = 0

    def response(
        self, status: str, output: list[dict[str, Any]], generation: Generation | None = None
    ) -> dict[str, Any]:
        body = self.body
        text_format = body.text.format if body.text is not None else None
        choice = body.tool_choice
        incomplete = status == "incomplete"
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "model": self.model,
            "output": output,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "parallel_tool_calls": body.parallel_tool_calls,
            "previous_response_id": None,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "tool_choice": choice.model_dump()
            if isinstance(choice, NamedFunction)
            else choice or "auto",
            "tools": [t.model_dump(exclude_none=True) for t in body.tools or []],
            "text": {
                "format": text_format.model_dump(exclude_none=True, by_alias=True)
                if text_format is not None
                else {"type": "text"}
            },
            "store": False,
            "metadata": body.metadata or {},
            "truncation": "disabled",
            "usage": usage(generation) if generation is not None else None,
        }

    def whole(self, generation: Generation) -> dict[str, Any]:
        sample = generation.samples[0]
        return self.response(status_of(sample), self.output(sample), generation)

    def output(self, sample: Sample) -> list[dict[str, Any]]:
        items = [self.text_item(sample.text, "completed")] if sample.text else []
        return items + [function_call(c, "completed") for c in sample.tool_calls]

    def text_item(self, text: str | None, status: str, item_id: str = "") -> dict[str, Any]:
        content = [] if text is None else [text_part(text)]
        return {
            "type": "message",
            "id": item_id or self.message_id,
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def event(self, kind: str, **data: Any) -> str:
        self.sequence += 1
        return chat_job.event(kind, {"type": kind, "sequence_number": self.sequence, **data})

    async def events(self, job: Job, first: Event) -> AsyncIterator[str]:
        """The stream: the response begun, its text as it grows, a function_call item per
        call as it is written (its arguments in fragments), then the response whole."""
        yield self.event("response.created", response=self.response("in_progress", []))
        yield self.event("response.in_progress", response=self.response("in_progress", []))
        items = _Items(self)
        last = first
        async for last in chat_job.texts(job, first):
            if not last.streamed:
                break
            for sent in items.call(last.call) if last.call else items.text(last.text):
                yield sent
        if last.kind == "error":
            yield self.event("error", **error_body(last.error))
            return
        generation: Generation = last.result
        sample = generation.samples[0]
        for piece in items.calls.rest(sample):  # calls an engine gave only whole
            for sent in items.call(piece):
                yield sent
        for sent in items.close(items.calls.cut(sample)):
            yield sent
        status = status_of(sample)
        finished = self.response(status, items.done, generation)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        yield self.event(kind, response=finished)


class _Items:
    """The stream's output items, one open at a time: a message while text comes, a
    function_call from a call's start to the next item or the end. `done` holds each item
    as the final response lists it; a call cut short is done as incomplete and left out."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.event = answer.event
        self.done: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None  # the open item, and its text or its call
        self.calls = chat_job.Calls()

    def text(self, text: str) -> list[str]:
        sent = [] if self.open is not None and self.open["type"] == "message" else self.close()
        if self.open is None:
            messages = sum(1 for item in self.done if item["type"] == "message")
            item = self.answer.text_item(None, "in_progress", new_id("msg") if messages else "")
            self.open = {**item, "text": ""}
            where = self._where()
            sent.append(
                self.event(
                    "response.output_item.added", output_index=where["output_index"], item=item
                )
            )
            sent.append(
                self.event(
                    "response.content_part.added", **where, content_index=0, part=text_part("")
                )
            )
        self.open["text"] += text
        sent.append(
            self.event(
                "response.output_text.delta",
                **self._where(),
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return sent

    def call(self, piece: CallPiece) -> list[str]:
        self.calls.add(piece)
        sent = []
        if piece.starts:
            sent = self.close()
            item = function_call(ToolCall(piece.id, piece.name, ""), "in_progress")
            self.open = {**item, "place": piece.index}
            sent.append(
                self.event("response.output_item.added", output_index=len(self.done), item=item)
            )
        if piece.arguments and self.open is not None and self.open.get("place") == piece.index:
            self.open["arguments"] += piece.arguments
            sent.append(
                self.event(
                    "response.function_call_arguments.delta", **self._where(), delta=piece.arguments
                )
            )
        return sent

    def close(self, cut: set[int] | None = None) -> list[str]:
        """The open item done: a call among `cut` as incomplete, left out of the response."""
        item, self.open = self.open, None
        if item is None:
            return []
        at = len(self.done)
        if item["type"] == "message":
            text = item.pop("text")
            done = self.answer.text_item(text, "completed", item["id"])
            where = {"item_id": item["id"], "output_index": at, "content_index": 0}
            sent = [
                self.event("response.output_text.done", **where, text=text, logprobs=[]),
                self.event("response.content_part.done", **where, part=text_part(text)),
            ]
        elif item.pop("place") in (cut or set()):  # its arguments are not JSON: no call to run
            cut_short = {**item, "status": "incomplete"}
            return [self.event("response.output_item.done", output_index=at, item=cut_short)]
        else:
            done = {**item, "status": "completed"}
            where = {"item_id": item["id"], "output_index": at}
            arguments = item["arguments"]
            sent = [
                self.event("response.function_call_arguments.done", **where, arguments=arguments)
            ]
        self.done.append(done)
        return [*sent, self.event("response.output_item.done", output_index=at, item=done)]

    def _where(self) -> dict[str, Any]:
        assert self.open is not None
        return {"item_id": self.open["id"], "output_index": len(self.done)}


def status_of(sample: Sample) -> str:
    return "incomplete" if sample.finish_reason == "length" else "completed"


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call(call: ToolCall, status: str, arguments: str | None = None) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": "fc_" + call.id.removeprefix("call_"),
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments if arguments is None else arguments,
        "status": status,
    }


def usage(generation: Generation) -> dict[str, Any]:
    prompt, completion = generation.prompt_tokens, generation.completion_tokens
    return {
        "input_tokens": prompt,
        # OpenAI's schema requires the count: 0 where the engine cannot say (transformers).
        "input_tokens_details": {"cached_tokens": generation.cached_tokens or 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


__all__ = ["router"]
