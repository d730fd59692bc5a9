"""The sampling options are declared once (scheda/sampling.py); every interface derives them.

These tests read each interface back (the CLI's flags, the server's request schema, the
studio's description, `/params` in `scheda chat`) and check it against the declarations,
so that an option added to `Sampling` shows up everywhere or a test says where it does not.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path
from typing import Any

import pytest
import typer.main
from pydantic import BaseModel

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


def server_models() -> list[type[BaseModel]]:
    """Every pydantic model the server's modules define: the request bodies of all routes."""
    import scheda.server

    for info in pkgutil.iter_modules(scheda.server.__path__, "scheda.server."):
        importlib.import_module(info.name)
    found, todo = [], list(BaseModel.__subclasses__())
    while todo:
        model = todo.pop()
        todo.extend(model.__subclasses__())
        if model.__module__.startswith("scheda.server.") and "[" not in model.__name__:
            found.append(model)
    return found


# Fields named like an option that are another API's own: Anthropic's max_tokens is required
# and at least 1 (llama.cpp's 0, "to the end", has no place there).
OWN_FIELDS = {("CreateMessage", "max_tokens")}


def bounds(schema: dict[str, Any]) -> tuple[Any, Any]:
    """A property's (minimum, maximum), whether or not it also takes null."""
    numeric = [x for x in schema.get("anyOf", [schema]) if x.get("type") in ("integer", "number")]
    return (numeric[0].get("minimum"), numeric[0].get("maximum")) if numeric else (None, None)


def test_every_route_takes_its_sampling_fields_from_the_declarations() -> None:
    """Each request model's sampling fields have the declared bounds, over all routes."""
    declared = {d.name: d for d in options.declared() if d.option.api}
    checked = set()
    for model in server_models():
        properties = model.model_json_schema().get("properties", {})
        own = {n for m, n in OWN_FIELDS if m == model.__name__}
        for name in (set(properties) & set(declared)) - own:
            d = declared[name]
            assert bounds(properties[name]) == (d.option.minimum, d.option.maximum), (model, name)
            checked.add((model.__name__, name))
    # The three families of routes are among them (a test that saw none would prove nothing).
    assert {("ChatRequest", "temperature"), ("MessagesRequest", "top_k")} <= checked
    assert ("ResponsesRequest", "top_p") in checked


def test_no_route_writes_a_sampling_field_of_its_own() -> None:
    """A field named like an option is typed by the declarations (schemas.declared_type and the
    aliases made with it), never with bounds written out again: a second copy fails here."""
    import scheda.server

    names = {d.name for d in options.declared() if d.option.api}
    folder = Path(scheda.server.__path__[0])
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef):
                continue
            for item in node.body:
                if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                    continue
                name = item.target.id
                if name in names and (node.name, name) not in OWN_FIELDS:
                    written = ast.unparse(item.annotation)
                    assert "Field(" not in written, f"{path.name}: {node.name}.{name}: {written}"


def test_the_engine_registry_is_keyed_by_the_declared_engine_names() -> None:
    """sampling.py (a record, below the engines) names the engines; the registry uses those
    names, so an engine added to one and not the other fails here."""
    from scheda.engines import BY_FORMAT, REGISTRY

    assert set(REGISTRY) == options.ENGINES == set(BY_FORMAT.values())
    assert all(d.option.engines <= options.ENGINES for d in options.declared())
