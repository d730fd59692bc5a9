"""Sampling options, each declared once: name, type, bounds, default, help, engines.

`Sampling` is both the record an engine receives and the one declaration of every
option. Everything else is derived from its fields, so that adding an option touches
this class and the engines that apply it, nothing else:

- the CLI's flags (`scheda.cli.options.with_sampling`), with their bounds and help;
- the server's request fields (`scheda.server.schemas`), with the same bounds;
- the studio's controls and their defaults (`GET /api/sampling`, from `describe()`);
- a conversation's own defaults (`CHAT_DEFAULTS`), the same in `scheda chat` and the studio;
- `scheda chat`'s `/params KEY=VALUE` (`parse`);
- which engine refuses which option (`unsupported`), rather than silently ignoring it.

The defaults are llama.cpp's own (llama-cli and llama-server), so a user moving from
llama.cpp sees the same behaviour; names are the ones llama.cpp and the OpenAI API use.
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from functools import cache
from typing import Any

from scheda.errors import UsageError

# The engines' names, declared here once: the engine registry (scheda.engines.REGISTRY) is
# keyed by them, since this records layer may not import the engines (tests/test_sampling.py).
LLAMA_CPP = "llama.cpp"
TRANSFORMERS = "transformers"
ENGINES = frozenset({LLAMA_CPP, TRANSFORMERS})

# Where a conversation's default differs from a completion's: an answer in a chat runs longer.
# `scheda chat` and the studio's chat share their sessions, so both read these (the studio
# through `describe`, the server's chat turns through `chat_sampling`).
CHAT_DEFAULTS: dict[str, Any] = {"max_tokens": 512}


@dataclass(frozen=True)
class Option:
    """What the interfaces need to know of one sampling field."""

    help: str
    minimum: float | None = None
    maximum: float | None = None
    flags: tuple[str, ...] = ()  # command-line flags; none: not a command-line option
    engines: frozenset[str] = ENGINES  # the engines that honour it; others refuse a set value
    studio: bool = False  # a control in the web studio's chat
    step: float | None = None  # the studio control's step (None: any number)
    api: bool = True  # a field of the server's completion requests (False: each route has its own)
    chat: bool = True  # settable in `scheda chat` with /params


def option(default: Any, help: str, **info: Any) -> Any:
    """A `Sampling` field with its declaration; list defaults are copied for each record."""
    meta = {"option": Option(help, **info)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Sampling:
    """The sampling options of one request."""

    max_tokens: int = option(
        256,
        "New tokens at most (0: until the end of text or a full context).",
        minimum=0,
        flags=("--max-tokens", "-m"),
        studio=True,
        step=1,
    )
    temperature: float = option(
        0.8,
        "Randomness: 0 always picks the likeliest token.",
        minimum=0.0,
        maximum=2.0,
        flags=("--temperature", "-t"),
        studio=True,
        step=0.05,
    )
    top_k: int = option(
        40,
        "Keep the K likeliest tokens (0: all).",
        minimum=0,
        flags=("--top-k",),
        studio=True,
        step=1,
    )
    top_p: float = option(
        0.95,
        "Nucleus sampling: keep the likeliest tokens up to this total probability.",
        minimum=0.0,
        maximum=1.0,
        flags=("--top-p",),
        studio=True,
        step=0.01,
    )
    min_p: float = option(
        0.05,
        "Drop tokens less likely than this times the likeliest.",
        minimum=0.0,
        maximum=1.0,
        flags=("--min-p",),
        studio=True,
        step=0.01,
    )
    repeat_penalty: float = option(
        1.0,
        "Penalise tokens already in the text (1 or 0: off).",
        minimum=0.0,
        flags=("--repeat-penalty",),
        studio=True,
        step=0.05,
    )
    # OpenAI's additive penalties: llama.cpp has both, transformers neither.
    frequency_penalty: float = option(
        0.0,
        "Lower a token's logit by this times its count so far (OpenAI's penalty).",
        minimum=-2.0,
        maximum=2.0,
        flags=("--frequency-penalty",),
        engines=frozenset({LLAMA_CPP}),
        studio=True,
        step=0.1,
    )
    presence_penalty: float = option(
        0.0,
        "Lower a token's logit by this once it has appeared (OpenAI's penalty).",
        minimum=-2.0,
        maximum=2.0,
        flags=("--presence-penalty",),
        engines=frozenset({LLAMA_CPP}),
        studio=True,
        step=0.1,
    )
    stop: list[str] = option([], "Stop at this text (repeatable).", flags=("--stop",), chat=False)
    seed: int | None = option(
        None, "The same seed gives the same text.", flags=("--seed",), studio=True, step=1
    )
    n: int = option(1, "Samples to draw.", minimum=1, maximum=16, flags=("-n",), chat=False)
    logprobs: int = option(
        0,
        "Top alternatives reported per generated token.",
        minimum=0,
        maximum=20,
        flags=("--logprobs",),
        api=False,
        chat=False,
    )
    ignore_eos: bool = option(
        False,
        "Go on past the end-of-text token (benchmarks want fixed lengths).",
        flags=("--ignore-eos",),
        chat=False,
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Declared:
    """One option as the interfaces see it: the field's name, type and default, and its `Option`."""

    name: str
    type: Any  # the annotation, resolved: int, float, bool, int | None, list[str]
    default: Any
    option: Option

    @property
    def kind(self) -> str:
        """The value's kind in JSON terms: integer, number, boolean, string list."""
        args = set(typing.get_args(self.type)) - {type(None)} or {self.type}
        if bool in args:
            return "boolean"
        if int in args:
            return "integer"
        if float in args:
            return "number"
        return "strings"

    @property
    def optional(self) -> bool:
        """None is a value of its own (seed: none means a random seed)."""
        return type(None) in typing.get_args(self.type)


@cache
def declared() -> tuple[Declared, ...]:
    """Every sampling option, in the order the class declares them."""
    hints = typing.get_type_hints(Sampling)
    return tuple(
        Declared(
            f.name,
            hints[f.name],
            f.default if f.default_factory is MISSING else f.default_factory(),
            f.metadata["option"],
        )
        for f in fields(Sampling)
    )


def chat_options() -> tuple[str, ...]:
    """The options a conversation may set (`scheda chat`, its /params, the studio's turns)."""
    return tuple(d.name for d in declared() if d.option.chat)


def by_name() -> dict[str, Declared]:
    return {d.name: d for d in declared()}


def chat_sampling(values: dict[str, Any]) -> Sampling:
    """A conversation's options: `values`, and for the rest the chat's defaults."""
    return Sampling(**{**CHAT_DEFAULTS, **values})


def describe() -> list[dict[str, Any]]:
    """The declarations as JSON, for the studio: it builds its chat's controls from these,
    so the defaults are a conversation's (`CHAT_DEFAULTS`)."""
    return [
        {
            "name": d.name,
            "type": d.kind,
            "nullable": d.optional,
            "default": CHAT_DEFAULTS.get(d.name, d.default),
            "minimum": d.option.minimum,
            "maximum": d.option.maximum,
            "step": d.option.step,
            "help": d.option.help,
            "engines": sorted(d.option.engines),
            "studio": d.option.studio,
        }
        for d in declared()
    ]


def check(name: str, value: Any) -> None:
    """Refuse a value outside the option's bounds, in one line that says them."""
    d = by_name()[name]
    if value is None or isinstance(value, (bool, list)):
        return
    low, high = d.option.minimum, d.option.maximum
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = (
            f"between {low:g} and {high:g}"
            if low is not None and high is not None
            else f"at least {low:g}"
            if low is not None
            else f"at most {high:g}"
        )
        raise UsageError(f"{name} must be {bounds}, not {value:g}")


def parse(name: str, text: str) -> Any:
    """A value typed by a user (`/params temperature=0.2`), converted and checked."""
    d = by_name().get(name)
    if d is None or not d.option.chat:
        settable = ", ".join(chat_options())
        raise UsageError(f"{name!r} is not a sampling option: choose one of {settable}")
    if d.optional and text.strip().lower() in ("", "none"):
        return None
    try:
        value: Any = int(text) if d.kind == "integer" else float(text)
    except ValueError:
        raise UsageError(f"{name}={text!r}: not a number") from None
    check(name, value)
    return value


def unsupported(engine: str, sampling: Sampling) -> str | None:
    """The first option set away from its default that this engine does not honour, if any."""
    for d in declared():
        if engine not in d.option.engines and getattr(sampling, d.name) != d.default:
            return d.name
    return None


def refusal(engine: str, name: str) -> str:
    """The one line an engine answers when asked for an option it does not honour."""
    d = by_name()[name]
    honoured = ", ".join(x.name for x in declared() if engine in x.option.engines and x.option.api)
    return f"the {engine} engine has no {name}: leave it at {d.default!r} (it honours {honoured})"
