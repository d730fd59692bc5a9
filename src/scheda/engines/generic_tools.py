"""Tool calls held by a grammar: llama.cpp's generic format, one JSON object per answer.

llama.cpp renders tools with the model's own template and parses the calls
with the parser it derives from that template. A template without tools
(SmolLM2's, many small models') gets nothing from it, and the tools would be
dropped unseen; and where a call must be made (`tool_choice` "required" or a
named tool), llama.cpp's own handling was not seen to force one. Earlier
llama.cpp versions had a "generic" format for templates without tools, and
this module keeps it, for those and for calls that must be made: the tools
are described in the system prompt, and the answer is one JSON object,
`{"tool_calls": [{"name", "arguments"}]}` or `{"response": ...}`, whose JSON
schema llama.cpp's own converter turns into a grammar (llguidance's). So a
call is always well formed and names a declared tool with arguments that
match its parameters, however small the model. For a template without tools,
earlier calls and their results in the history are written as the same JSON,
as llama.cpp's template polyfills wrote them.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from scheda.engines.base import Generation, Guide, Message, OnText, ToolCall

# What the system prompt says, before the tools themselves.
INSTRUCTIONS = {
    "auto": 'Answer with one JSON object: {"response": ...} to reply to the user, or '
    '{"tool_calls": [{"name": ..., "arguments": {...}}]} to call tools.',
    "required": 'Answer with one JSON object that calls tools: {"tool_calls": '
    '[{"name": ..., "arguments": {...}}]}.',
}


# JSON on one line, as `json.dumps` writes it: llama.cpp's grammar engine (llguidance) would
# otherwise let a small model spend its tokens on indentation.
COMPACT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def applies(guide: Guide, template_knows_tools: bool) -> bool:
    """Whether this chat needs the generic format: tools the template cannot show, or a
    call that must be made ("required", or a named tool). For those, llama.cpp's own
    handling of a template that knows tools does not hold the answer to a call (a
    Hermes-style template, tested, let the model answer in prose): the grammar does."""
    if not guide.tools or guide.tool_choice == "none":
        return False
    return not template_knows_tools or guide.tool_choice != "auto"


def functions(guide: Guide) -> list[dict[str, Any]]:
    """The tools the answer may call: all, or the one `tool_choice` names."""
    chosen = [t["function"] for t in guide.tools]
    if guide.tool_choice not in ("auto", "required", "none"):
        chosen = [f for f in chosen if f["name"] == guide.tool_choice]
    return chosen


def schema(guide: Guide) -> dict[str, Any]:
    """The JSON schema of the answer: calls to the chosen tools, or (with "auto") a reply."""
    calls = [
        _closed({"name": {"const": f["name"]}, "arguments": _arguments(f.get("parameters"))})
        for f in functions(guide)
    ]
    listed: dict[str, Any] = {"type": "array", "items": {"anyOf": calls}, "minItems": 1}
    if not guide.parallel_tool_calls:
        listed["maxItems"] = 1
    calling = _closed({"tool_calls": listed})
    if guide.tool_choice != "auto":
        return {**calling, "x-guidance": COMPACT}
    replying = _closed({"response": reply_schema(guide.response_format)})
    return {"anyOf": [calling, replying], "x-guidance": COMPACT}


def _closed(properties: dict[str, Any]) -> dict[str, Any]:
    """An object of exactly these keys: a small model would otherwise go on adding more."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _arguments(parameters: dict[str, Any] | None) -> dict[str, Any]:
    """A tool's parameters; an object that says nothing of other keys takes only its own,
    as OpenAI's strict mode has it (a client checks arguments against the same schema)."""
    schema = dict(parameters or {"type": "object", "properties": {}})
    if schema.get("type") == "object" and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    return schema


def answer_schema(response_format: dict[str, Any]) -> dict[str, Any]:
    """A response format's schema as the whole answer's, written compact."""
    return {**reply_schema(response_format), "x-guidance": COMPACT}


def reply_schema(response_format: dict[str, Any] | None) -> dict[str, Any]:
    """What a reply holds: text, or the JSON the response format asks for."""
    kind = (response_format or {}).get("type", "text")
    if kind == "json_schema":
        return dict(response_format["json_schema"].get("schema") or {"type": "object"})  # type: ignore[index]
    if kind == "json_object":
        return {"type": "object"}
    return {"type": "string"}


def messages(history: list[Message], guide: Guide) -> list[Message]:
    """The conversation as a template without tools can take it: the tools described in
    the system prompt, earlier calls and their results written as JSON text."""
    told = _instructions(guide) if applies(guide, False) else ""
    written = [_as_text(m) for m in history]
    if not told:
        return written
    if written and written[0].role == "system":
        return [Message("system", f"{written[0].content}\n\n{told}"), *written[1:]]
    return [Message("system", told), *written]


def _instructions(guide: Guide) -> str:
    listed = json.dumps(functions(guide), ensure_ascii=False)
    how = INSTRUCTIONS["auto" if guide.tool_choice == "auto" else "required"]
    return f"You can call these tools:\n{listed}\n\n{how}"


def _as_text(message: Message) -> Message:
    if message.tool_calls:
        calls = [
            {"id": c.id, "name": c.name, "arguments": _loaded(c.arguments)}
            for c in message.tool_calls
        ]
        return Message("assistant", json.dumps({"tool_calls": calls}, ensure_ascii=False))
    if message.role == "tool":
        result = {"tool_response": {"id": message.tool_call_id, "content": message.content}}
        return Message("user", json.dumps(result, ensure_ascii=False))
    return message


def _loaded(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:  # a client's own history: kept as the text it sent
        return arguments


def read(generation: Generation, on_text: OnText | None) -> Generation:
    """Each sample's JSON answer as tool calls or reply text; the reply is handed to
    `on_text` now, as it was held back while the JSON was written. An answer cut short
    (max_tokens, a cancel) stays the text it is."""
    for index, sample in enumerate(generation.samples):
        calls, reply = parse(sample.text)
        if calls:
            sample.tool_calls = calls
            sample.text = ""
            if sample.finish_reason == "stop":
                sample.finish_reason = "tool_calls"
        elif reply is not None:
            sample.text = reply
        if sample.text and on_text is not None:
            on_text(index, sample.text)
    return generation


def parse(text: str) -> tuple[list[ToolCall], str | None]:
    """(the calls, the reply) of a generic answer; nothing of either if it is not one."""
    try:
        answer = json.loads(text)
    except ValueError:
        return [], None
    if not isinstance(answer, dict):
        return [], None
    if isinstance(answer.get("tool_calls"), list):
        calls = [
            ToolCall(new_call_id(), str(c["name"]), json.dumps(c.get("arguments", {})))
            for c in answer["tool_calls"]
            if isinstance(c, dict) and "name" in c
        ]
        return calls, None
    if "response" in answer:
        reply = answer["response"]
        return [], reply if isinstance(reply, str) else json.dumps(reply, ensure_ascii=False)
    return [], None
