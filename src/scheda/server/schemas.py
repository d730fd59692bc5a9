"""Request bodies of the OpenAI-compatible routes, as pydantic models.

Types are strict (a string is not taken for a number) so that a client's
mistake gets a 400 naming the field rather than a silent guess. Fields that
OpenAI defines and scheda cannot honour are refused when set to anything but
their neutral value, never silently ignored; fields with no effect on the
answer (`user`, `metadata`) are accepted and ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from scheda import sampling as options
from scheda.engines.base import Message
from scheda.errors import RequestFieldError, UnsupportedFieldError
from scheda.sampling import Sampling

MAX_LOGPROBS = 20


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class StreamOptions(Strict):
    include_usage: bool = False


def declared_fields(names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Request fields made from the sampling declarations (scheda/sampling.py), with their
    bounds and help; None, or a field left out, keeps the declared default."""
    made: dict[str, Any] = {}
    for d in options.declared():
        if not d.option.api or (names is not None and d.name not in names):
            continue
        if d.kind == "strings":
            kind: Any = str | list[str]
        elif d.kind in ("integer", "number"):
            low, high = d.option.minimum, d.option.maximum
            base = int if d.kind == "integer" else float
            kind = Annotated[base, Field(ge=low, le=high)]
        else:
            kind = bool
        made[d.name] = (kind | None, Field(None, description=d.option.help))
    return made


def chosen(values: BaseModel, names: Any) -> dict[str, Any]:
    """The declared sampling fields a request set (to something other than None)."""
    return {n: getattr(values, n) for n in names if getattr(values, n, None) is not None}


class RequestFields(Strict):
    """What chat and text completions share besides sampling: model, streaming, refusals."""

    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, float] | None = None

    @model_validator(mode="after")
    def _refuse_unsupported(self) -> RequestFields:
        extra = self.model_extra or {}
        if self.logit_bias:
            raise UnsupportedFieldError("logit_bias is not supported: leave it out")
        for name in ("tools", "functions"):
            if extra.get(name):
                raise UnsupportedFieldError(f"{name} (tool calling) is not supported: leave it out")
        if extra.get("tool_choice") not in (None, "none"):
            raise UnsupportedFieldError("tool_choice is not supported: leave it out")
        response_format = extra.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") not in (None, "text"):
            raise UnsupportedFieldError(
                "response_format other than text is not supported: leave it out"
            )
        return self

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


class ContentPart(Strict):
    type: str
    text: str | None = None


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    def message(self) -> Message:
        role = "system" if self.role == "developer" else self.role
        if self.content is None or isinstance(self.content, str):
            return Message(role, self.content or "")
        texts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise UnsupportedFieldError(
                    f"content of type {part.type!r}: this server reads text only; send text parts"
                )
            texts.append(part.text)
        return Message(role, "".join(texts))


class ChatRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None

    def chat_messages(self) -> list[Message]:
        return [m.message() for m in self.messages]

    def to_sampling(self) -> Sampling:
        # The engines report alternatives only with at least one; the answer trims to top_logprobs.
        wanted = max(self.top_logprobs or 0, 1) if self.logprobs else 0
        return self.sampling(wanted, self.max_completion_tokens)


TokenIds = list[Annotated[int, Field(ge=0)]]


class CompletionRequest(SamplingFields):
    prompt: str | TokenIds | list[str] | list[TokenIds]
    logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None
    echo: bool = False
    best_of: Annotated[int, Field(ge=1)] | None = None
    suffix: str | None = None

    @model_validator(mode="after")
    def _refuse_completion_extras(self) -> CompletionRequest:
        n = getattr(self, "n", None) or 1
        if self.best_of not in (None, 1) and self.best_of != n:
            raise UnsupportedFieldError(
                "best_of is not supported: leave it out or make it equal to n"
            )
        if self.suffix:
            raise UnsupportedFieldError("suffix (insertion) is not supported: leave it out")
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
    input: str | list[str] | TokenIds | list[TokenIds]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None


class TokenizeRequest(Strict):
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
