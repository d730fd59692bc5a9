"""The sampling options are declared once (scheda/sampling.py); every interface derives them.

These tests read each interface back (the CLI's flags, the server's request schema, the
studio's description, `/params` in `scheda chat`) and check it against the declarations,
so that an option added to `Sampling` shows up everywhere or a test says where it does not.
"""

from __future__ import annotations

from typing import Any

import pytest
import typer.main

from scheda import sampling as options
from scheda.cli import app
from scheda.errors import UsageError
from scheda.sampling import Sampling
from scheda.server.schemas import ChatRequest, CompletionRequest
from scheda.server.studio_api import ChatParams


def flags(name: str) -> dict[str, Any]:
    """A command's options as Typer built them, by parameter name."""
    group: Any = typer.main.get_command(app)
    return {p.name: p for p in group.commands[name].params if p.opts[0].startswith("-")}


def test_generate_takes_every_declared_option_with_its_bounds_and_default() -> None:
    got = flags("generate")
    for d in options.declared():
        param = got[d.name]
        assert set(param.opts) == set(d.option.flags), d.name
        if d.kind in ("integer", "number"):
            assert (param.min, param.max) == (d.option.minimum, d.option.maximum)
            assert param.default == d.default
        assert param.help == d.option.help


def test_chat_takes_the_declared_chat_options_with_its_longer_answers() -> None:
    got = flags("chat")
    for d in options.declared():
        assert (d.name in got) == (d.option.chat and bool(d.option.flags)), d.name
    assert got["max_tokens"].default == 512


def test_the_server_schema_has_every_declared_option_with_the_same_bounds() -> None:
    for model in (ChatRequest, CompletionRequest):
        schema = model.model_json_schema()["properties"]
        for d in options.declared():
            if not d.option.api:
                continue
            field = schema[d.name]
            assert field["description"] == d.option.help
            numeric = [
                x for x in field.get("anyOf", [field]) if x.get("type") in ("integer", "number")
            ]
            if d.kind in ("integer", "number"):
                assert numeric, d.name
                bounds = numeric[0]
                assert bounds.get("minimum") == d.option.minimum, d.name
                assert bounds.get("maximum") == d.option.maximum, d.name


def test_a_request_gets_the_declared_defaults_for_what_it_leaves_out() -> None:
    request = ChatRequest.model_validate({"messages": [{"role": "user", "content": "hi"}]})
    sampling = request.to_sampling()
    for d in options.declared():
        if d.name not in ("max_tokens", "logprobs"):  # OpenAI's meanings, not llama.cpp's
            assert getattr(sampling, d.name) == d.default, d.name
    assert sampling.max_tokens == 0  # left out: to the end of text or a full context


def test_the_studio_chat_accepts_the_chat_options() -> None:
    assert set(ChatParams.model_fields) == {d.name for d in options.declared() if d.option.chat}


def test_a_chat_answers_as_long_in_the_terminal_as_in_the_studio() -> None:
    """`scheda chat` and the studio's chat share their sessions: one declared answer length."""
    terminal = flags("chat")["max_tokens"].default
    studio = {d["name"]: d["default"] for d in options.describe()}["max_tokens"]
    assert terminal == studio == options.chat_sampling({}).max_tokens
    assert terminal != Sampling().max_tokens  # a chat's answer is longer than a completion's
    assert options.chat_sampling({"max_tokens": 7}).max_tokens == 7


def test_the_studio_description_lists_every_option() -> None:
    described = {d["name"]: d for d in options.describe()}
    assert list(described) == [f.name for f in options.declared()]
    assert described["temperature"] | {"help": ""} == {
        "name": "temperature",
        "type": "number",
        "nullable": False,
        "default": 0.8,
        "minimum": 0.0,
        "maximum": 2.0,
        "step": 0.05,
        "help": "",
        "engines": ["llama.cpp", "transformers"],
        "studio": True,
    }
    assert described["seed"]["nullable"] and described["seed"]["default"] is None
    assert described["frequency_penalty"]["engines"] == ["llama.cpp"]


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [("temperature", "0.2", 0.2), ("top_k", "5", 5), ("seed", "none", None), ("seed", "7", 7)],
)
def test_params_parses_typed_values(name: str, text: str, value: object) -> None:
    assert options.parse(name, text) == value


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("temperature", "hot", "temperature='hot': not a number"),
        ("temperature", "5", "temperature must be between 0 and 2, not 5"),
        ("top_k", "-1", "top_k must be at least 0, not -1"),
        ("top_k", "2.5", "not a number"),
        ("stop", "x", "'stop' is not a sampling option"),
        ("warmth", "1", "'warmth' is not a sampling option: choose one of max_tokens, temperature"),
    ],
)
def test_params_refuses_what_it_cannot_use(name: str, text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        options.parse(name, text)


def test_an_engine_refuses_an_option_it_does_not_honour_and_says_what_it_honours() -> None:
    assert options.unsupported("transformers", Sampling()) is None
    assert options.unsupported("transformers", Sampling(presence_penalty=1.0)) == "presence_penalty"
    assert options.unsupported("llama.cpp", Sampling(presence_penalty=1.0)) is None
    message = options.refusal("transformers", "presence_penalty")
    assert "no presence_penalty" in message and "repeat_penalty" in message
