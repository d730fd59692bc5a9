"""Request bodies of the OpenAI-compatible routes, as pydantic models.

Types are strict (a string is not taken for a number) so that a client's
mistake gets a 400 naming the field rather than a silent guess. Fields that
OpenAI defines and scheda cannot honour are refused when set to anything but
their neutral value, never silently ignored; fields with no effect on the
answer (`user`, `metadata`) are accepted and ignored.

The OpenAPI description (`/openapi.json`) is made from these models, and
generated clients and fuzzers trust it: each model's JSON schema says what its
validators do (the neutral values of refused fields, content needed but from
the assistant, prompt or messages), so that a body the schema allows is one
the server takes, short of what only the model can judge (its vocabulary, its
context, its slots).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from scheda import sampling as options
from scheda.engines.base import Guide, Message, ToolCall
from scheda.errors import RequestFieldError, UnsupportedFieldError
from scheda.sampling import Sampling

MAX_LOGPROBS = 20


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


# For integer fields, last in their Annotated (after the bounds, so that the schema shows them):
# strict still (a string is refused), but 3.0 is 3, as JSON Schema's "integer" says.
WHOLE = BeforeValidator(_whole)


class StreamOptions(Strict):
    include_usage: bool = False


def declared_type(name: str) -> Any:
    """The request field type of one sampling option, from its declaration (scheda/sampling.py):
    its JSON kind and bounds. Every route's sampling fields are made here, none written out."""
    d = options.by_name()[name]
    if d.kind == "strings":
        return str | list[str]
    low, high = d.option.minimum, d.option.maximum
    if d.kind == "integer":
        return Annotated[int, Field(ge=low, le=high), WHOLE]
    if d.kind == "number":
        return Annotated[float, Field(ge=low, le=high)]
    return bool


def declared_fields(names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Request fields made from the sampling declarations (scheda/sampling.py), with their
    bounds and help; None, or a field left out, keeps the declared default."""
    return {
        d.name: (declared_type(d.name) | None, Field(None, description=d.option.help))
        for d in options.declared()
        if d.option.api and (names is None or d.name in names)
    }


# The Messages and Responses routes name their sampling fields as their APIs do, without the
# help text; their types still come from the declarations (the type checker sees the plain kind).
if TYPE_CHECKING:
    Temperature = float
    TopP = float
    TopK = int
else:
    Temperature = declared_type("temperature")
    TopP = declared_type("top_p")
    TopK = declared_type("top_k")


def chosen(values: BaseModel, names: Any) -> dict[str, Any]:
    """The declared sampling fields a request set (to something other than None)."""
    return {n: getattr(values, n) for n in names if getattr(values, n, None) is not None}


def refused(message: str, neutral: Callable[[Any], bool] = lambda v: not v) -> BeforeValidator:
    """A field scheda lacks: a value other than a neutral one is refused with `message` before
    the field's type is checked; the type (empty, "none", "text") is what the schema shows."""

    def check(value: Any) -> Any:
        if value is not None and not neutral(value):
            raise UnsupportedFieldError(message)
        return value

    return BeforeValidator(check)


UNSUPPORTED = "Not supported: leave it out (or send it empty)."
# OpenAI's rule for function and schema names.
NAME = r"^[a-zA-Z0-9_-]{1,64}$"
LOGIT_BIAS = "Token ids (as strings) to a bias from -100 (never) to 100 (only that token)."


class FunctionDefinition(Strict):
    name: Annotated[str, Field(pattern=NAME)]
    description: str | None = None
    parameters: dict[str, Any] | None = Field(
        None, description="A JSON schema of the arguments; the answer's arguments match it."
    )
    strict: bool | None = Field(None, description="Arguments always match the schema anyway.")


class Tool(Strict):
    type: Literal["function"]
    function: FunctionDefinition

    def definition(self) -> dict[str, Any]:
        return {"type": "function", "function": dump(self.function)}


class FunctionName(Strict):
    name: Annotated[str, Field(pattern=NAME)]


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: FunctionName


class JsonSchemaFormat(Strict):
    name: Annotated[str, Field(pattern=NAME)]
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


def _format_needs_schema(schema: dict[str, Any]) -> None:
    """The schema says what `_schema_given` does: json_schema comes with its json_schema."""
    schema["if"] = {"properties": {"type": {"const": "json_schema"}}}
    schema["then"] = {"required": ["json_schema"]}


class ResponseFormat(Strict):
    model_config = ConfigDict(json_schema_extra=_format_needs_schema)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise RequestFieldError("a json_schema response format needs its json_schema")
        return self

    def engine_form(self) -> dict[str, Any] | None:
        """What the engine takes (None: plain text)."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            return {"type": "json_object"}
        given = self.json_schema
        schema = given.schema_ if given is not None and given.schema_ else {"type": "object"}
        name = given.name if given is not None else "answer"
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


def bias_of(value: dict[str, float] | None) -> dict[int, float]:
    return {int(token): bias for token, bias in (value or {}).items()}


TokenKey = Annotated[str, Field(pattern=r"^[0-9]{1,9}$")]
Bias = Annotated[float, Field(ge=-100, le=100)]


class RequestFields(Strict):
    """What chat and text completions share besides sampling: model, streaming, refusals."""

    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    functions: Annotated[
        list[Any] | None,
        refused("functions (the old tool calling) is not supported: send tools instead"),
    ] = Field(None, max_length=0, description=UNSUPPORTED)

    def sampling(self, logprobs: int = 0, max_tokens: int | None = None) -> Sampling:
        """The engine's sampling options; a field left out keeps the declared default, but
        for max_tokens: left out, the answer runs to the end of text or a full context, as
        OpenAI's does."""
        values = chosen(self, SAMPLING_FIELDS)
        if isinstance(values.get("stop"), str):
            values["stop"] = [values["stop"]]
        values["max_tokens"] = max_tokens or values.get("max_tokens") or 0
        return Sampling(**values, logprobs=logprobs)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


SAMPLING_FIELDS = declared_fields()
if TYPE_CHECKING:
    SamplingFields = RequestFields
else:
    SamplingFields = create_model(
        "SamplingFields", __base__=RequestFields, __doc__=RequestFields.__doc__, **SAMPLING_FIELDS
    )


def _text_part(kind: Any) -> Any:
    if kind != "text":
        raise UnsupportedFieldError(
            f"content of type {kind!r}: this server reads text only; send text parts"
        )
    return kind


class ContentPart(Strict):
    type: Annotated[Literal["text"], BeforeValidator(_text_part)]
    text: str


ASKING_ROLES = ("system", "developer", "user", "tool")


def _not_null(field: dict[str, Any]) -> dict[str, Any]:
    kept = [s for s in field.get("anyOf", [field]) if s.get("type") != "null"]
    return kept[0] if len(kept) == 1 else {"anyOf": kept}


def _content_by_role(schema: dict[str, Any]) -> None:
    """The schema says what the validator does: content is needed but from the assistant."""
    content = schema["properties"]["content"]
    given = _not_null(content)
    schema["oneOf"] = [
        {
            "properties": {"role": {"enum": list(ASKING_ROLES)}, "content": given},
            "required": ["role", "content"],
        },
        {"properties": {"role": {"const": "assistant"}}, "required": ["role"]},
    ]


class FunctionCall(Strict):
    name: Annotated[str, Field(pattern=NAME)]
    arguments: str = Field(description="The arguments as JSON text.")


class ToolCallParam(Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall

    def call(self) -> ToolCall:
        return ToolCall(self.id, self.function.name, self.function.arguments)


class ChatMessage(Strict):
    model_config = ConfigDict(json_schema_extra=_content_by_role)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = Field(None, validate_default=True)
    tool_calls: list[ToolCallParam] | None = Field(None, description="An assistant's calls.")
    tool_call_id: str | None = Field(None, description="A tool message: the call it answers.")

    @field_validator("content")
    @classmethod
    def _content_needed(cls, value: Any, info: ValidationInfo) -> Any:
        role = info.data.get("role")
        if value is None and role in ASKING_ROLES:
            raise RequestFieldError(f"a {role} message needs content: send its text")
        return value

    def message(self) -> Message:
        role = "system" if self.role == "developer" else self.role
        if self.content is None or isinstance(self.content, str):
            text = self.content or ""
        else:
            text = "".join(part.text for part in self.content)
        calls = [c.call() for c in self.tool_calls or []] if role == "assistant" else []
        return Message(role, text, calls, self.tool_call_id if role == "tool" else None)


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


def check_tools(names: list[str], wanted: str | None) -> None:
    """A tool choice needs tools, and a named one must be among them; names are unique."""
    if len(set(names)) != len(names):
        raise RequestFieldError("tools: two tools have the same name")
    if wanted in (None, "none", "auto"):
        return
    if not names:
        raise RequestFieldError(f"tool_choice {wanted!r} needs tools: send them")
    if wanted != "required" and wanted not in names:
        raise RequestFieldError(f"tool_choice names {wanted!r}, which is not among the tools")


def _tools_fit_their_choice(schema: dict[str, Any]) -> None:
    """The schema says what `_tools_match` can say of itself: a required choice needs tools."""
    schema["allOf"] = [
        {
            "if": {
                "properties": {"tool_choice": {"const": "required"}},
                "required": ["tool_choice"],
            },
            "then": {"properties": {"tools": {"minItems": 1}}, "required": ["tools"]},
        }
    ]


class ChatRequest(SamplingFields):
    model_config = ConfigDict(json_schema_extra=_tools_fit_their_choice)

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1), WHOLE] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS), WHOLE] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = Field(
        None, description='"auto" (the default with tools), "none", "required" or a function.'
    )
    parallel_tool_calls: bool = True
    response_format: ResponseFormat | None = None
    logit_bias: dict[TokenKey, Bias] | None = Field(None, description=LOGIT_BIAS)

    @model_validator(mode="after")
    def _tools_match(self) -> ChatRequest:
        choice = self.tool_choice
        wanted = choice.function.name if isinstance(choice, NamedToolChoice) else choice
        check_tools([t.function.name for t in self.tools or []], wanted)
        return self

    def chat_messages(self) -> list[Message]:
        return [m.message() for m in self.messages]

    def guide(self) -> Guide:
        choice = self.tool_choice or "auto"
        return Guide(
            tools=[t.definition() for t in self.tools or []],
            tool_choice=choice.function.name if isinstance(choice, NamedToolChoice) else choice,
            parallel_tool_calls=self.parallel_tool_calls,
            response_format=self.response_format.engine_form() if self.response_format else None,
            logit_bias=bias_of(self.logit_bias),
        )

    def to_sampling(self) -> Sampling:
        # The engines report alternatives only with at least one; the answer trims to top_logprobs.
        wanted = max(self.top_logprobs or 0, 1) if self.logprobs else 0
        return self.sampling(wanted, self.max_completion_tokens)


TokenIds = list[Annotated[int, Field(ge=0), WHOLE]]


def _echo_alone(schema: dict[str, Any]) -> None:
    """The schema says what `_refuse_completion_extras` does: echo neither streams nor takes n."""
    schema["allOf"] = [
        {
            "not": {
                "properties": {"echo": {"const": True}, other: value},
                "required": ["echo", other],
            }
        }
        for other, value in (("stream", {"const": True}), ("n", {"type": "integer", "minimum": 2}))
    ]


class CompletionRequest(SamplingFields):
    model_config = ConfigDict(json_schema_extra=_echo_alone)

    prompt: str | TokenIds | list[str] | list[TokenIds]
    logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS), WHOLE] | None = None
    echo: bool = False
    best_of: Annotated[int, Field(ge=1), WHOLE] | None = Field(
        None,
        description="1, or the same as n: scheda draws no extra samples to choose from.",
        json_schema_extra={"maximum": 1},  # the schema cannot say "equal to n"; 1 is safe
    )
    suffix: Annotated[str | None, refused("suffix (insertion) is not supported: leave it out")] = (
        Field(None, max_length=0, description=UNSUPPORTED)
    )
    # Chat's fields, which a plain completion has no use for.
    logit_bias: Annotated[
        dict[str, float] | None, refused("logit_bias is for chat completions: send it there")
    ] = Field(None, max_length=0, description=UNSUPPORTED)
    tools: Annotated[
        list[Any] | None, refused("tools are for chat completions: send them there")
    ] = Field(None, max_length=0, description=UNSUPPORTED)
    tool_choice: Annotated[
        Literal["none"] | None,
        refused("tool_choice is for chat completions: send it there", lambda v: v == "none"),
    ] = Field(None, description=UNSUPPORTED)
    response_format: Annotated[
        dict[str, Any] | None,
        refused(
            "response_format is for chat completions: send it there",
            lambda v: not isinstance(v, dict) or v.get("type") in (None, "text"),
        ),
    ] = Field(None, max_length=0, description=UNSUPPORTED)

    @model_validator(mode="after")
    def _refuse_completion_extras(self) -> CompletionRequest:
        n = getattr(self, "n", None) or 1
        if self.best_of not in (None, 1) and self.best_of != n:
            raise UnsupportedFieldError(
                "best_of is not supported: leave it out or make it equal to n"
            )
        if self.echo and self.stream:
            raise UnsupportedFieldError("echo is answered whole: leave stream out")
        if self.echo and n > 1:
            raise UnsupportedFieldError("echo takes n = 1: leave n out")
        return self

    def prompts(self) -> list[str | list[int]]:
        """One prompt or several; a list of ints is one prompt of token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]

    def to_sampling(self) -> Sampling:
        wanted = max(self.logprobs, 1) if self.logprobs is not None else 0
        return self.sampling(wanted)


class EmbeddingRequest(Strict):
    input: (
        str
        | Annotated[list[str], Field(min_length=1)]
        | Annotated[TokenIds, Field(min_length=1)]
        | Annotated[list[TokenIds], Field(min_length=1)]
    )
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1), WHOLE] | None = None


def _prompt_or_messages(schema: dict[str, Any]) -> None:
    """The schema says what `_one_input` does: exactly one of prompt and messages."""
    schema["oneOf"] = [
        {"properties": {name: _not_null(schema["properties"][name])}, "required": [name]}
        for name in ("prompt", "messages")
    ]


class TokenizeRequest(Strict):
    model_config = ConfigDict(json_schema_extra=_prompt_or_messages)

    model: str | None = None
    prompt: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    add_special_tokens: bool | None = None
    add_generation_prompt: bool = True
    return_token_strs: bool = False

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise RequestFieldError("give either prompt or messages")
        return self


class DetokenizeRequest(Strict):
    model: str | None = None
    tokens: TokenIds


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(exclude_none=True)
