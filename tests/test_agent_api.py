"""What agents and apps use, through their own clients, against a real `scheda serve`.

One server on loopback serves the embedded SmolLM2 (llama.cpp), locked with a
key. Its chat template knows no tools, so its calls go through the generic
JSON format, held by llama.cpp's grammar: however weak the model, a call names
a declared tool with arguments that match its schema, and a JSON answer
matches its schema. The clients are the real ones: the `openai` SDK (chat
completions with tools, `parse` with a pydantic model, the Responses API),
the `anthropic` SDK (the Messages API) and the OpenAI Agents SDK's own loop.
Answers are short (a call is some twenty tokens) and greedy where a test
compares two of them.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from pydantic import BaseModel, Field

from tests.serving import Server, sse_events

KEY = "sk-agents"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time now in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["UTC", "CET", "JST"]}},
            "required": ["zone"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
ONE_CALL = {"tool_choice": "required", "parallel_tool_calls": False, "max_tokens": 40}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(["default", "--parallel", "4"], tmp_path_factory.mktemp("agents"), api_key=KEY)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def claude(server: Server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0)


def weather_args(arguments: str) -> dict[str, Any]:
    """A get_weather call's arguments, checked against its schema."""
    args: dict[str, Any] = json.loads(arguments)
    assert set(args) == {"city"} and isinstance(args["city"], str), args
    assert len(args["city"]) <= 30
    return args


# -- chat completions: tools ----------------------------------------------------------------


@pytest.fixture(scope="module")
def asked(client: openai.OpenAI) -> Any:
    """A greedy call to get_weather, made once: the round trip goes on from it, and the
    streamed call must add up to it."""
    return client.chat.completions.create(
        model="default", messages=ASK, tools=[WEATHER], temperature=0, **ONE_CALL
    )


def test_a_tool_round_trip(client: openai.OpenAI, asked: Any) -> None:
    choice = asked.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    weather_args(call.function.arguments)
    history = [
        *ASK,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 degrees."},
    ]
    answered = client.chat.completions.create(
        model="default", messages=history, tools=[WEATHER], tool_choice="none", max_tokens=12
    )
    assert answered.choices[0].message.content
    assert not answered.choices[0].message.tool_calls


def test_streamed_tool_call_deltas_add_up_to_the_whole_call(
    client: openai.OpenAI, asked: Any
) -> None:
    options = {"model": "default", "messages": ASK, "tools": [WEATHER], "temperature": 0}
    whole = asked.choices[0].message
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in client.chat.completions.create(**options, **ONE_CALL, stream=True):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += delta.id or ""
                call["name"] += (delta.function and delta.function.name) or ""
                call["arguments"] += (delta.function and delta.function.arguments) or ""
            assert not choice.delta.content  # the call's JSON is not text
    assert finish == "tool_calls" and list(calls) == [0]
    assert calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    assert calls[0]["arguments"] == whole.tool_calls[0].function.arguments


@pytest.mark.slow
def test_a_named_tool_is_the_one_called(client: openai.OpenAI) -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    answer = client.chat.completions.create(
        model="default",
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice=named,
        parallel_tool_calls=False,
        max_tokens=30,
    )
    (call,) = answer.choices[0].message.tool_calls
    assert call.function.name == "get_time"
    assert json.loads(call.function.arguments)["zone"] in ("UTC", "CET", "JST")


@pytest.mark.slow
def test_parallel_calls_and_auto_each_call_a_declared_tool(client: openai.OpenAI) -> None:
    """Several calls in one answer may come (parallel_tool_calls is on), each to a declared
    tool; with "auto" the model may answer in text instead. A small model may also call on
    and on until max_tokens: an answer cut short is no call at all, and is left aside."""
    ask = [{"role": "user", "content": "Weather in Paris and in Rome, and the time in UTC?"}]
    finished = []
    for choice, n, most in (("required", 4, 50), ("auto", 2, 20)):
        answers = client.chat.completions.create(
            model="default",
            messages=ask,
            tools=[WEATHER, TIME],
            tool_choice=choice,
            n=n,  # on the server's slots at once
            seed=3,
            temperature=0.7,
            max_tokens=most,
        ).choices
        finished += [(choice, a) for a in answers if a.finish_reason != "length"]
    assert any(choice == "required" for choice, _ in finished)
    for choice, answer in finished:
        calls = answer.message.tool_calls or []
        assert calls or (choice == "auto" and answer.message.content)
        for call in calls:
            assert call.function.name in ("get_weather", "get_time")
            json.loads(call.function.arguments)


# -- chat completions: structured outputs and biases ----------------------------------------


class Person(BaseModel):
    name: str = Field(max_length=20)
    age: int
    likes_cats: bool


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    answer = client.chat.completions.parse(
        model="default",
        messages=[{"role": "user", "content": "Invent a person."}],
        response_format=Person,
        max_tokens=60,
        temperature=0,
    )
    person = answer.choices[0].message.parsed
    assert isinstance(person, Person)


@pytest.mark.slow
def test_a_json_schema_answer_validates_every_time(client: openai.OpenAI) -> None:
    schema = {**Person.model_json_schema(), "additionalProperties": False}
    response_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": schema, "strict": True},
    }
    for seed in range(3):  # twelve answers, four at a time on the server's four slots
        answers = client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "Describe someone you know."}],
            response_format=response_format,
            seed=seed,
            n=4,
            temperature=1.0,
            max_tokens=60,
        ).choices
        for answer in answers:
            assert answer.finish_reason == "stop", (seed, answer.message.content)
            Person.model_validate_json(answer.message.content or "")


@pytest.mark.slow
def test_json_object_is_a_json_object(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "Give me a JSON object about Paris."}],
        response_format={"type": "json_object"},
        max_tokens=24,
        temperature=0,
    ).choices[0]
    if answer.finish_reason == "stop":
        assert isinstance(json.loads(answer.message.content or ""), dict)
    else:
        assert (answer.message.content or "").lstrip().startswith("{")


def test_logit_bias_reaches_the_sampler(client: openai.OpenAI, server: Server) -> None:
    def answer(**options: Any) -> str:
        return (
            client.chat.completions.create(
                model="default", messages=ASK, max_tokens=3, temperature=0, **options
            )
            .choices[0]
            .message.content
            or ""
        )

    def tokens(text: str) -> list[int]:
        body = {"prompt": text, "add_special_tokens": False}
        return list(server.request("POST", "/tokenize", body)[1]["tokens"])

    greedy = answer()
    first = tokens(greedy)[0]
    assert tokens(answer(logit_bias={str(first): -100}))[0] != first
    (rome,) = tokens(" Rome")
    assert answer(logit_bias={str(rome): 100}) == " Rome" * 3


def test_a_schema_that_cannot_constrain_is_refused_naming_it(server: Server) -> None:
    """llama.cpp would drop a schema its grammar engine cannot compile and answer freely:
    scheda refuses it first, saying which schema and why."""
    broken = {"type": "object", "properties": {"city": {"type": "string", "pattern": "(("}}}
    tool = {"type": "function", "function": {"name": "f", "parameters": broken}}
    shaped = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}
    for extra, field in (
        ({"tools": [WEATHER, tool], "tool_choice": "required"}, "tools[1].function.parameters"),
        ({"response_format": shaped}, "response_format.json_schema.schema"),
    ):
        body = {"messages": ASK, "max_tokens": 4, **extra}
        status, answer = server.request("POST", "/v1/chat/completions", body)
        assert status == 400 and answer["error"]["message"].startswith(field), answer
        assert "\n" not in answer["error"]["message"]
    claude = {"name": "f", "input_schema": {"type": "nope"}}
    body = {"messages": ASK, "max_tokens": 4, "tools": [claude]}
    status, answer = server.request("POST", "/v1/messages", body)
    assert status == 400 and answer["type"] == "error" and "nope" in answer["error"]["message"]


# -- the Responses API ----------------------------------------------------------------------


@pytest.mark.slow
def test_responses_create_and_stream(client: openai.OpenAI) -> None:
    options: Any = {
        "model": "default",
        "instructions": "Answer briefly.",
        "input": "What is the capital of France?",
        "max_output_tokens": 16,
        "temperature": 0,
    }
    whole = client.responses.create(**options)
    assert whole.output_text and whole.usage is not None and whole.usage.output_tokens > 0
    deltas, final = [], None
    with client.responses.stream(**options) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            elif event.type in ("response.completed", "response.incomplete"):
                final = event.response  # incomplete: max_output_tokens came first
    assert final is not None and final.status == whole.status
    assert len(deltas) > 1 and "".join(deltas) == whole.output_text == final.output_text


@pytest.mark.slow
def test_responses_tool_round_trip_and_schema(client: openai.OpenAI) -> None:
    tool: Any = {"type": "function", **WEATHER["function"]}
    asked = client.responses.create(
        model="default",
        input="What is the weather in Paris?",
        tools=[tool],
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=40,
    )
    (call,) = [item for item in asked.output if item.type == "function_call"]
    weather_args(call.arguments)
    history: Any = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name,
         "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny."},
    ]  # fmt: skip
    schema = {**Person.model_json_schema(), "additionalProperties": False}
    shaped = client.responses.create(
        model="default",
        input=history,
        text={"format": {"type": "json_schema", "name": "person", "schema": schema}},
        max_output_tokens=60,
        temperature=0,
    )
    Person.model_validate_json(shaped.output_text)
    streamed_calls = []
    with client.responses.stream(
        model="default",
        input="What is the weather in Paris?",
        tools=[tool],
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=40,
    ) as stream:
        for event in stream:
            if event.type == "response.function_call_arguments.delta":
                streamed_calls.append(event.delta)
        final = stream.get_final_response()
    assert [i.type for i in final.output] == ["function_call"]
    weather_args("".join(streamed_calls))


def test_responses_refuses_stored_state(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="default", input="hi", previous_response_id="resp_1")
    assert "previous_response_id" in str(refused.value)


# -- the Messages API -----------------------------------------------------------------------


CLAUDE_TOOL: Any = {
    "name": "get_weather",
    "description": "The weather now in a city.",
    "input_schema": WEATHER["function"]["parameters"],
}


@pytest.mark.slow
def test_messages_tool_round_trip(claude: anthropic.Anthropic) -> None:
    asked = claude.messages.create(
        model="default",
        max_tokens=40,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[CLAUDE_TOOL],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    assert asked.stop_reason == "tool_use"
    (use,) = [b for b in asked.content if b.type == "tool_use"]
    assert use.name == "get_weather" and weather_args(json.dumps(use.input))
    answered = claude.messages.create(
        model="default",
        max_tokens=12,
        system="You report the weather.",
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": [use.model_dump()]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 24 degrees."}
                ],
            },
        ],
        tools=[CLAUDE_TOOL],
        tool_choice={"type": "none"},
    )
    assert answered.content[0].type == "text" and answered.content[0].text
    assert answered.stop_reason in ("end_turn", "max_tokens")
    assert prompt_of(answered.usage) > prompt_of(asked.usage) - 40


@pytest.mark.slow
def test_messages_stream_and_count_tokens(claude: anthropic.Anthropic) -> None:
    options: Any = {
        "model": "default",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "extra_body": {"temperature": 0},  # this SDK's own signature leaves it out
    }
    whole = claude.messages.create(**options)
    with claude.messages.stream(**options) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1 and "".join(pieces) == whole.content[0].text == final.content[0].text
    assert final.usage.output_tokens == whole.usage.output_tokens
    with claude.messages.stream(
        **{**options, "max_tokens": 40},
        tools=[CLAUDE_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as stream:
        called = stream.get_final_message()
    # The embedded model may go on to a second call that max_tokens cuts: the complete one
    # still comes back as a tool call, with stop reason max_tokens (which of the two depends
    # on how much of the prompt llama.cpp took from its cache: near-ties tip either way). A
    # stream cannot take back the fragments of the cut call it sent, as Anthropic's cannot.
    assert called.stop_reason in ("tool_use", "max_tokens")
    assert called.content[0].type == "tool_use" and called.content[0].input
    counted = claude.messages.count_tokens(model="default", messages=options["messages"])
    assert counted.input_tokens == prompt_of(whole.usage)


def prompt_of(usage: anthropic.types.Usage) -> int:
    """The whole prompt, as Anthropic counts it: the tokens evaluated and those read from the
    cache (an earlier request may have begun the same way)."""
    return usage.input_tokens + (usage.cache_read_input_tokens or 0)


def test_messages_errors_and_key_in_anthropic_s_shape(
    claude: anthropic.Anthropic, server: Server
) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(
            model="default",
            max_tokens=4,
            messages=[{"role": "user", "content": [{"type": "image", "source": {}}]}],
        )
    assert "image" in str(refused.value)
    wrong = anthropic.Anthropic(base_url=server.url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.create(model="default", max_tokens=4, messages=ASK)
    status, answer = server.request("POST", "/v1/messages", {"messages": ASK})
    assert status == 400 and answer["type"] == "error"
    assert (
        answer["error"]["type"] == "invalid_request_error"
        and "max_tokens" in answer["error"]["message"]
    )


# -- an agent framework's own loop ----------------------------------------------------------


@pytest.mark.slow
def test_an_openai_agents_sdk_agent_calls_the_tool(server: Server) -> None:
    """The OpenAI Agents SDK's Runner, on chat completions: the tool the test defines is
    called with valid arguments (tool_choice required: the grammar guarantees the call)."""
    import agents

    agents.set_tracing_disabled(True)  # nothing leaves the machine
    called: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather now in a city."""
        called.append(city)
        return f"Sunny in {city}."

    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    model = agents.OpenAIChatCompletionsModel(model="default", openai_client=client)
    agent = agents.Agent(
        name="weather",
        instructions="You answer questions about the weather with the tool.",
        tools=[get_weather],
        model=model,
        model_settings=agents.ModelSettings(
            tool_choice="required", parallel_tool_calls=False, max_tokens=40
        ),
        tool_use_behavior="stop_on_first_tool",
    )

    async def run() -> Any:
        try:
            return await agents.Runner.run(agent, "What is the weather in Paris?", max_turns=2)
        finally:
            await client.close()  # in the loop it was opened in

    result = asyncio.run(run())
    assert len(called) == 1 and called[0].strip()
    assert result.final_output == f"Sunny in {called[0]}."


# -- bad bodies -----------------------------------------------------------------------------


BAD: list[tuple[str, bytes]] = [
    ("/v1/messages", b"{}"),
    ("/v1/messages", b'{"max_tokens": 4, "messages": []}'),
    ("/v1/messages", b'{"max_tokens": 4, "messages": [{"role": "system", "content": "x"}]}'),
    ("/v1/messages", b'{"max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}'),
    ("/v1/messages", b'{"max_tokens": 4, "messages": [{"role": "user", "content": [{"type": '
     b'"tool_use", "id": "t", "name": "f", "input": {}}]}]}'),
    ("/v1/messages", b'{"max_tokens": 4, "messages": [{"role": "user", "content": "x"}], '
     b'"tools": [{"name": "f"}]}'),
    ("/v1/messages", b'{"max_tokens": 4, "messages": [{"role": "user", "content": "x"}], '
     b'"tool_choice": {"type": "tool", "name": "g"}, '
     b'"tools": [{"name": "f", "input_schema": {}}]}'),
    ("/v1/messages", b'{"max_tokens": 4, "messages": [{"role": "user", "content": "x"}], '
     b'"thinking": {"type": "enabled", "budget_tokens": 100}}'),
    ("/v1/messages/count_tokens", b'{"messages": "x"}'),
    ("/v1/responses", b"{}"),
    ("/v1/responses", b'{"input": []}'),
    ("/v1/responses", b'{"input": [{"type": "reasoning", "summary": []}]}'),
    ("/v1/responses", b'{"input": [{"role": "user", "content": [{"type": "input_image"}]}]}'),
    ("/v1/responses", b'{"input": "x", "tools": [{"type": "web_search"}]}'),
    ("/v1/responses", b'{"input": "x", "tool_choice": "required"}'),
    ("/v1/responses", b'{"input": "x", "text": {"format": {"type": "yaml"}}}'),
    ("/v1/responses", b'{"input": [{"role": "assistant", "content": "x"}]}'),
    ("/v1/responses", b'{"input": [{"type": "function_call", "call_id": "c"}]}'),
]  # fmt: skip


def test_bad_bodies_get_a_4xx_in_the_route_s_shape(server: Server, client: openai.OpenAI) -> None:
    for route, raw in BAD:
        status, answer = server.request("POST", route, raw=raw)
        assert 400 <= status < 500, (route, raw, status, answer)
        assert "\n" not in answer["error"]["message"]
        if route.startswith("/v1/messages"):
            assert answer["type"] == "error" and "type" in answer["error"], answer
    assert client.responses.create(model="default", input="hi", max_output_tokens=2).output


def test_the_new_routes_need_the_key(server: Server) -> None:
    body = {"model": "default", "input": "hi", "max_output_tokens": 1}
    assert server.request("POST", "/v1/responses", body, headers=server.headers(None))[0] == 401
    keyed = {"Content-Type": "application/json", "x-api-key": KEY}
    assert server.request("POST", "/v1/responses", body, headers=keyed)[0] == 200


# -- the cache of earlier turns ----------------------------------------------------------------
# A five-turn conversation, other clients' requests sent between its turns (two at once), reports
# at each turn that the prompt up to the previous turn's whole prompt came from llama.cpp's slot
# cache, in each API's own field, streamed and not; a studio session's turns do the same. No
# timing is asserted: benchmarks/multiturn_cache.py measures what the cache saves.

WORDS = (Path(__file__).parent.parent / "docs" / "architecture.md").read_text().split()
TURNS = 5
ANSWER: dict[str, Any] = {"max_tokens": 3, "temperature": 0}


def passage(at: int, words: int = 40) -> str:
    """A distinct piece of real text, about 60 tokens: a user's turn or another client's."""
    return " ".join(WORDS[at * words : (at + 1) * words])


def others(client: openai.OpenAI, at: int, count: int = 2) -> None:
    """Other clients' requests between two turns, `count` at once: on slots other than the
    conversation's, or on its own if llama.cpp so picks (it keeps that slot's prompt)."""
    ask = lambda n: client.chat.completions.create(  # noqa: E731
        model="default", messages=[{"role": "user", "content": passage(n, 15)}], **ANSWER
    )
    clients = [threading.Thread(target=ask, args=(at + i,)) for i in range(count)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()


@pytest.fixture(scope="module")
def conversation(client: openai.OpenAI) -> tuple[list[dict[str, str]], list[Any]]:
    """Five turns through chat completions, other clients between them: the messages (the
    fifth answer left out) and each turn's usage."""
    messages: list[dict[str, str]] = []
    usages = []
    for turn in range(TURNS):
        messages.append({"role": "user", "content": passage(turn)})
        answer = client.chat.completions.create(model="default", messages=messages, **ANSWER)
        usages.append(answer.usage)
        if turn < TURNS - 1:
            messages.append({"role": "assistant", "content": answer.choices[0].message.content})
            others(client, 100 + 2 * turn)
    return messages, usages


def test_each_turn_reads_the_earlier_turns_from_the_cache(
    conversation: tuple[list[dict[str, str]], list[Any]],
) -> None:
    _, usages = conversation
    assert usages[0].prompt_tokens_details.cached_tokens < usages[0].prompt_tokens
    for before, now in pairwise(usages):
        cached = now.prompt_tokens_details.cached_tokens
        assert before.prompt_tokens <= cached < now.prompt_tokens, (before, now)
    assert usages[-1].prompt_tokens > 300  # a history of a few hundred tokens


def test_a_stream_reports_the_cached_tokens(
    client: openai.OpenAI, conversation: tuple[list[dict[str, str]], list[Any]]
) -> None:
    messages, usages = conversation
    stream = client.chat.completions.create(
        model="default",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
        **ANSWER,
    )
    usage = [chunk.usage for chunk in stream if chunk.usage is not None][-1]
    assert usage.prompt_tokens == usages[-1].prompt_tokens
    # The same prompt again: all of it but the last token, which llama.cpp evaluates anew.
    assert usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens - 1


def test_text_completions_report_the_cached_tokens(client: openai.OpenAI) -> None:
    prompt = passage(120, 20)
    first = client.completions.create(model="default", prompt=prompt, **ANSWER)
    again = client.completions.create(
        model="default", prompt=prompt + " " + passage(121, 20), **ANSWER
    )
    assert first.usage is not None and again.usage is not None
    assert again.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 1


def test_messages_count_cache_reads_apart_from_input(
    claude: anthropic.Anthropic, conversation: tuple[list[dict[str, str]], list[Any]]
) -> None:
    messages, usages = conversation
    # As a client that asks for prompt caching writes it: the marks change nothing here.
    mark = {"type": "ephemeral"}
    last = {"type": "text", "text": messages[-1]["content"], "cache_control": mark}
    marked = [*messages[:-1], {"role": "user", "content": [last]}]
    options: dict[str, Any] = {"model": "default", "max_tokens": 3, "cache_control": mark}
    answer = claude.messages.create(messages=marked, **options)
    with claude.messages.stream(messages=messages, **options) as stream:
        streamed = stream.get_final_message()
    for usage in (answer.usage, streamed.usage):
        # Anthropic's definition: the prompt is input + cache writes + cache reads.
        assert prompt_of(usage) == usages[-1].prompt_tokens
        read = usage.cache_read_input_tokens or 0
        assert read >= usages[-2].prompt_tokens and usage.cache_creation_input_tokens == 0


def test_responses_report_the_cached_tokens(
    client: openai.OpenAI, conversation: tuple[list[dict[str, str]], list[Any]]
) -> None:
    messages, usages = conversation
    answer = client.responses.create(
        model="default",
        input=messages,
        max_output_tokens=3,
        temperature=0,
    )
    assert answer.usage is not None
    assert answer.usage.input_tokens == usages[-1].prompt_tokens
    assert answer.usage.input_tokens_details.cached_tokens >= usages[-2].prompt_tokens


def studio_turn(server: Server, session_id: str, text: str) -> dict[str, Any]:
    """One studio chat turn; its closing event's figures."""
    turn = {"content": text, "params": {"max_tokens": 3, "temperature": 0}}
    conn = server.send(f"/api/sessions/{session_id}/chat", turn)
    try:
        answer = conn.getresponse()
        assert answer.status == 200
        events = sse_events(answer)
    finally:
        conn.close()
    done = events[-1]
    assert isinstance(done, dict) and done.get("done"), events
    return done


def test_a_studio_sessions_turns_read_the_cache(server: Server, client: openai.OpenAI) -> None:
    status, session = server.request("POST", "/api/sessions", {"system": passage(70, 20)})
    assert status == 201
    figures = []
    for turn in range(TURNS):
        figures.append(studio_turn(server, session["id"], passage(80 + turn, 20)))
        others(client, 110 + turn, 1)
    for before, now in pairwise(figures):
        assert before["prompt_tokens"] <= now["cached_tokens"] < now["prompt_tokens"], figures


def test_an_engine_that_cannot_say_reports_no_cache_reads() -> None:
    """transformers says nothing of a cache: no cached count is made up for it."""
    from scheda.engines.base import Generation, Sample, Timings
    from scheda.server import messages_api, responses, responses_api

    said = Generation([Sample("hi", "stop", 1)], 10, Timings())
    assert "prompt_tokens_details" not in responses.usage_of([said])
    assert messages_api.usage(said) == {"input_tokens": 10, "output_tokens": 1}
    assert responses_api.usage(said)["input_tokens_details"] == {"cached_tokens": 0}
    read = Generation([Sample("hi", "stop", 1)], 10, Timings(), cached_tokens=7)
    assert responses.usage_of([read])["prompt_tokens_details"] == {"cached_tokens": 7}
    assert messages_api.usage(read) == {
        "input_tokens": 3,
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 7,
    }
