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
as llama.cpp's template polyfills wrote them. The answer is read as it is
written (`Reader`): a client sees the reply's text and each call, streamed,
never the JSON around them, and an answer cut short keeps its whole calls.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from scheda.engines.base import (
    CallPiece,
    Guide,
    Message,
    OnCall,
    OnText,
    Sample,
    ToolCall,
)

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


# What a JSON string's escapes stand for (`\uXXXX` is read apart).
ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
SPACE = " \t\n\r"


@dataclass
class _Call:
    """A call being written: its name once whole, its arguments' JSON as written."""

    name: str = ""
    id: str = ""
    arguments: str = ""
    sent: int = -1  # characters of `arguments` handed on; -1: the call not yet announced
    whole: bool = False  # its object closed


@dataclass
class _Frame:
    """An object or array the scanner is inside, and what it expects next."""

    bracket: str  # "{" or "["
    role: str  # "top", "calls", "call" or "other"
    expect: str  # "key", "colon", "value" or "next"
    key: str = ""  # an object's current key


class Reader:
    """One sample's generic answer, read as the model writes it.

    The answer is one JSON object, `{"tool_calls": [{"name", "arguments"}, ...]}` or
    `{"response": ...}`. A scanner walks it a character at a time as text arrives and
    hands on only what a client may see: the reply's text (a string decoded, other JSON as
    written) to `on_text`, and each call to `on_call`, its start once its name is whole,
    then its arguments' JSON text as written. The wrapper never goes out. A call counts
    once its object has closed: an answer cut short (max_tokens, a cancel) keeps the calls
    written whole and drops the one it cut. Text that is not such JSON (no grammar held
    it) stays the text it is.
    """

    def __init__(self, index: int, on_text: OnText | None, on_call: OnCall | None) -> None:
        self.index = index
        self.on_text = on_text
        self.on_call = on_call
        self.raw = ""  # everything fed
        self.stack: list[_Frame] = []
        self.started = False  # the top object has begun
        self.broken = False  # not a generic answer: the text is handed on as it is
        self.calls: list[_Call] = []
        self.reply = ""
        self.reply_sent = 0
        self.capture: str | None = None  # "arguments" or "reply": a value kept as written
        self.capture_depth = 0
        self.scalar = False  # inside a number, true, false or null
        self.string: str | None = None  # inside a string: "key", "name", "reply" or "other"
        self.escape = ""  # an escape sequence begun inside a string
        self.decoded = ""  # a key or a name being read
        self.high = ""  # a high surrogate waiting for its low half

    # -- feeding ---------------------------------------------------------------------------

    def feed(self, text: str) -> None:
        self.raw += text
        if self.broken:
            return
        for char in text:
            self._step(char)
            if self.broken:
                return
        self._hand_on()

    def finish(self, sample: Sample) -> None:
        """The sample as a client sees it: its calls written whole, or its reply's text."""
        if self.broken:
            sample.text = self.raw
            if self.on_text is not None and self.reply_sent == 0 and not self.calls:
                self.on_text(self.index, self.raw)
            return
        self._hand_on()
        calls = [ToolCall(c.id, c.name, c.arguments) for c in self.calls if c.whole]
        sample.text = "" if self.calls else self.reply
        sample.tool_calls = calls
        if calls and sample.finish_reason == "stop":
            sample.finish_reason = "tool_calls"

    def _hand_on(self) -> None:
        """What the text fed so far adds for a client: reply text, call starts and arguments."""
        if self.reply_sent < len(self.reply):
            new, self.reply_sent = self.reply[self.reply_sent :], len(self.reply)
            if self.on_text is not None:
                self.on_text(self.index, new)
        for at, call in enumerate(self.calls):
            if not call.name:
                continue  # announced once its name is whole
            if call.sent < 0:
                call.id = new_call_id()
                piece = CallPiece(at, call.id, call.name, call.arguments)
            elif call.sent < len(call.arguments):
                piece = CallPiece(at, arguments=call.arguments[call.sent :])
            else:
                continue
            call.sent = len(call.arguments)
            if self.on_call is not None:
                self.on_call(self.index, piece)

    # -- the scanner -----------------------------------------------------------------------

    def _step(self, char: str) -> None:
        if self.scalar:
            if char not in SPACE + ",}]":
                self._keep(char)
                return
            self.scalar = False
            self._value_done()
        if self.string is not None:
            self._keep(char)
            self._string_char(char)
            return
        if char in SPACE:
            self._keep(char)
            return
        if not self.stack:  # the answer's one object, or anything after it: not the format
            if self.started or char != "{":
                self.broken = True
            else:
                self._value(char, None)
            return
        frame = self.stack[-1]
        closing = "}]"[frame.bracket == "["]
        if frame.expect == "value" and not (frame.bracket == "[" and char == "]"):
            self._value(char, frame)
            return
        self._keep(char)
        if frame.expect == "key" and char == '"':
            self.string, self.decoded = "key", ""
        elif frame.expect == "colon" and char == ":":
            frame.expect = "value"
        elif frame.expect == "next" and char == ",":
            frame.expect = "key" if frame.bracket == "{" else "value"
        elif char == closing and frame.expect in ("key", "value", "next"):
            self._close()
        else:
            self.broken = True

    def _value(self, char: str, parent: _Frame | None) -> None:
        """A value begins with `char`: what it is depends on where it is."""
        role = self._role(parent)
        if role == "arguments" or (role == "reply" and char != '"'):
            self.capture, self.capture_depth = role, len(self.stack)
        self._keep(char)
        if char in "{[":
            wanted = {"top": "{", "calls": "[", "call": "{"}
            kept = role if wanted.get(role) == char else "other"
            self.stack.append(_Frame(char, kept, "key" if char == "{" else "value"))
            self.started = True
            if kept == "call":
                self.calls.append(_Call())
        elif char == '"':
            self.string = role if role in ("name", "reply") else "other"
            self.decoded = ""
        else:
            self.scalar = True

    def _role(self, parent: _Frame | None) -> str:
        if parent is None:
            return "top"
        if parent.role == "top":
            return {"tool_calls": "calls", "response": "reply"}.get(parent.key, "other")
        if parent.role == "calls":
            return "call"
        if parent.role == "call" and parent.key in ("name", "arguments"):
            return parent.key
        return "other"

    def _close(self) -> None:
        frame = self.stack.pop()
        if frame.role == "call":
            self.calls[-1].whole = True
        if self.stack:
            self._value_done()

    def _value_done(self) -> None:
        """A value ended where the scanner is: its container expects a comma or its end."""
        if self.capture is not None and len(self.stack) == self.capture_depth:
            self.capture = None
        self.stack[-1].expect = "next"

    def _keep(self, char: str) -> None:
        """A character of a value kept as written."""
        if self.capture == "arguments":
            self.calls[-1].arguments += char
        elif self.capture == "reply":
            self.reply += char

    def _string_char(self, char: str) -> None:
        if self.escape:
            self.escape += char
            if self.escape[1] == "u" and len(self.escape) < 6:
                return
            code, self.escape = self.escape, ""
            if code[1] != "u":
                self._decode(ESCAPES.get(code[1], ""))
            elif all(c in "0123456789abcdefABCDEF" for c in code[2:]):
                self._decode(chr(int(code[2:], 16)))
            else:
                self.broken = True
        elif char == "\\":
            self.escape = char
        elif char == '"':
            self._string_end()
        else:
            self._decode(char)

    def _decode(self, char: str) -> None:
        """A character of a key, a name or the reply; a surrogate pair joined."""
        if "\ud800" <= char <= "\udbff":
            self.high = char
            return
        if self.high:
            pair = "\udc00" <= char <= "\udfff"
            joined = chr(0x10000 + (ord(self.high) - 0xD800) * 0x400 + ord(char) - 0xDC00)
            char, self.high = (joined if pair else "\ufffd" + char), ""
        if self.string == "reply":
            self.reply += char
        elif self.string in ("key", "name"):
            self.decoded += char

    def _string_end(self) -> None:
        role, self.string = self.string, None
        if role == "key":
            self.stack[-1].key, self.stack[-1].expect = self.decoded, "colon"
            return
        if role == "name":
            self.calls[-1].name = self.decoded
        self._value_done()
