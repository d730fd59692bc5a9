"""`scheda serve` against the official openai client and raw HTTP, on a real server on loopback.

One server serves the embedded model (llama.cpp, 4 slots) and the MiniLM
folder (embeddings), locked with an API key. Answers are greedy (temperature
0) where a test compares texts, so they are the same run to run.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serving import Server, sse_events, wait_for

KEY = "sk-test-key"
MAX_BODY = 256 * 1024
CAPITAL = "The capital of France is"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("serve")
    args = ["default", str(minilm_path), "--parallel", "4", "--max-body", str(MAX_BODY)]
    s = Server(args, data, api_key=KEY)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def chat(client: openai.OpenAI, text: str, **options: Any) -> Any:
    return client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": text}], **options
    )


# -- the openai client, unchanged ----------------------------------------------------------


def test_models_lists_both(client: openai.OpenAI, minilm_path: Path) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["default", minilm_path.name]


@pytest.mark.slow
def test_chat_answers_and_counts(client: openai.OpenAI) -> None:
    answer = chat(client, "What is the capital of France?", temperature=0, max_tokens=24)
    assert answer.choices[0].message.content.strip()
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage.prompt_tokens > 5
    assert 0 < answer.usage.completion_tokens <= 24
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


@pytest.mark.slow
def test_stream_gives_the_same_text(client: openai.OpenAI) -> None:
    options = {"temperature": 0, "max_tokens": 30}
    whole = chat(client, "Name three colours.", **options).choices[0].message.content
    stream = chat(
        client,
        "Name three colours.",
        stream=True,
        stream_options={"include_usage": True},
        **options,
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert len([p for p in pieces if p]) > 3  # it came in pieces
    assert "".join(pieces) == whole
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens == len([p for p in pieces if p])


def test_length_and_stop_finish_reasons(client: openai.OpenAI) -> None:
    cut = client.completions.create(model="default", prompt=CAPITAL, max_tokens=3, temperature=0)
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage.completion_tokens == 3
    stopped = client.completions.create(
        model="default", prompt=CAPITAL, max_tokens=20, temperature=0, stop=["."]
    )
    assert stopped.choices[0].text == " Paris"
    assert stopped.choices[0].finish_reason == "stop"


@pytest.mark.slow
def test_seed_makes_sampling_repeatable(client: openai.OpenAI) -> None:
    options = {"temperature": 1.0, "max_tokens": 16, "seed": 1234}
    one = chat(client, "Tell me a story.", **options).choices[0].message.content
    two = chat(client, "Tell me a story.", **options).choices[0].message.content
    assert one == two


@pytest.mark.slow
def test_n_samples(client: openai.OpenAI) -> None:
    answer = chat(client, "Say a word.", n=3, temperature=1.0, max_tokens=8, seed=7)
    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert all(c.message.content for c in answer.choices)
    assert len({c.message.content for c in answer.choices}) > 1  # sampled, not copied
    assert 3 <= answer.usage.completion_tokens <= 24


@pytest.mark.slow
def test_token_id_prompt_equals_text_prompt(client: openai.OpenAI, server: Server) -> None:
    status, tokens = server.request(
        "POST", "/tokenize", {"prompt": CAPITAL, "add_special_tokens": True}
    )
    assert status == 200
    by_text = client.completions.create(
        model="default", prompt=CAPITAL, max_tokens=6, temperature=0
    )
    by_ids = client.completions.create(
        model="default", prompt=tokens["tokens"], max_tokens=6, temperature=0
    )
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage.prompt_tokens == tokens["count"]


def test_several_prompts_in_one_request(client: openai.OpenAI) -> None:
    answer = client.completions.create(
        model="default", prompt=[CAPITAL, "One, two,"], max_tokens=2, temperature=0
    )
    assert [c.index for c in answer.choices] == [0, 1]
    assert answer.choices[0].text.startswith(" Paris")


def test_completion_logprobs(client: openai.OpenAI) -> None:
    answer = client.completions.create(
        model="default", prompt=CAPITAL, max_tokens=3, temperature=0, logprobs=2
    )
    lp = answer.choices[0].logprobs
    assert lp.tokens[0] == " Paris"
    assert len(lp.token_logprobs) == 3
    assert all(v <= 0 for v in lp.token_logprobs)
    assert all(len(alternatives) == 2 for alternatives in lp.top_logprobs)
    # Greedy: the chosen token is the most likely one.
    assert lp.token_logprobs[0] == pytest.approx(max(lp.top_logprobs[0].values()))
    assert lp.text_offset[0] == 0 and lp.text_offset[1] == len(lp.tokens[0])


def test_chat_logprobs(client: openai.OpenAI) -> None:
    answer = chat(client, "Hi", max_tokens=3, temperature=0, logprobs=True, top_logprobs=3)
    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens
    assert "".join(t.token for t in content) == answer.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 3
        assert bytes(t.bytes) == t.token.encode()
        assert t.logprob == pytest.approx(t.top_logprobs[0].logprob)


@pytest.mark.slow
def test_penalties_reach_llamacpp(client: openai.OpenAI) -> None:
    plain = chat(client, "List fruits: apple, apple, apple,", temperature=0, max_tokens=24)
    penalised = chat(
        client,
        "List fruits: apple, apple, apple,",
        temperature=0,
        max_tokens=24,
        frequency_penalty=2.0,
        presence_penalty=2.0,
    )
    assert penalised.choices[0].message.content != plain.choices[0].message.content


@pytest.mark.slow
def test_embeddings(client: openai.OpenAI, minilm_path: Path) -> None:
    texts = ["A cat sits on the mat.", "A kitten rests on a rug.", "Stock markets fell today."]
    answer = client.embeddings.create(model=minilm_path.name, input=texts)
    vectors = [d.embedding for d in answer.data]
    assert [len(v) for v in vectors] == [384, 384, 384]
    for v in vectors:
        assert math.sqrt(sum(x * x for x in v)) == pytest.approx(1.0, abs=1e-4)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2]) + 0.3
    # Padding must not leak into the mean: a text alone equals the same text in a batch.
    alone = client.embeddings.create(model=minilm_path.name, input=texts[0]).data[0].embedding
    assert alone == pytest.approx(vectors[0], abs=1e-5)
    assert answer.usage.prompt_tokens > 10
    packed = client.embeddings.create(
        model=minilm_path.name, input=texts[0], encoding_format="base64"
    )
    raw = base64.b64decode(packed.data[0].embedding)
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(alone, abs=1e-6)


def test_embeddings_without_a_model_go_to_the_embedding_model(
    server: Server, minilm_path: Path
) -> None:
    """The default model generates text; an embeddings request naming none gets the first
    embedding model, not a 400."""
    status, answer = server.request("POST", "/v1/embeddings", {"input": "A cat."})
    assert status == 200 and answer["model"] == minilm_path.name


# -- vLLM's tokenizer routes ---------------------------------------------------------------


def test_tokenize_and_detokenize(server: Server) -> None:
    status, answer = server.request(
        "POST", "/tokenize", {"prompt": "Hello world, ciao!", "return_token_strs": True}
    )
    assert status == 200
    assert answer["count"] == len(answer["tokens"]) == len(answer["token_strs"])
    assert "".join(answer["token_strs"]) == "Hello world, ciao!"
    assert answer["max_model_len"] == 4096
    status, text = server.request("POST", "/detokenize", {"tokens": answer["tokens"]})
    assert (status, text) == (200, {"prompt": "Hello world, ciao!"})


def test_tokenize_messages_counts_like_chat(client: openai.OpenAI, server: Server) -> None:
    messages = [{"role": "user", "content": "What is two plus two?"}]
    status, tokens = server.request("POST", "/tokenize", {"messages": messages})
    assert status == 200
    answer = client.chat.completions.create(model="default", messages=messages, max_tokens=1)
    assert tokens["count"] == answer.usage.prompt_tokens


def test_tokenizer_info(server: Server) -> None:
    status, info = server.request("GET", "/tokenizer_info")
    assert status == 200
    assert info["eos_token"] == "<|im_end|>"
    assert "im_start" in info["chat_template"]
    assert info["model_max_length"] == 4096


# -- errors --------------------------------------------------------------------------------


def error_of(server: Server, path: str, body: Any = None, **kw: Any) -> tuple[int, dict[str, Any]]:
    status, answer = server.request(
        "POST" if body is not None or "raw" in kw else "GET", path, body, **kw
    )
    assert isinstance(answer, dict) and set(answer["error"]) == {"message", "type", "param", "code"}
    assert "\n" not in answer["error"]["message"]
    return status, answer["error"]


def test_api_key_is_required(server: Server) -> None:
    for key in (None, "wrong"):
        status, error = error_of(server, "/v1/models", headers=server.headers(key))
        assert status == 401 and error["code"] == "invalid_api_key"
    for path in ("/api/sessions", "/tokenizer_info"):
        assert server.request("GET", path, headers=server.headers(None))[0] == 401
    # The studio page itself loads, so that it can ask for the key.
    assert server.request("GET", "/", headers={})[0] == 200


def test_unknown_model_and_route(server: Server) -> None:
    body = {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}
    status, error = error_of(server, "/v1/chat/completions", body)
    assert status == 404 and error["param"] == "model" and "default" in error["message"]
    status, error = error_of(server, "/v1/nowhere")
    assert status == 404


def test_wrong_types_name_the_field(server: Server) -> None:
    cases = [
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}, "max_tokens"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "hi"}], "n": 0}, "n"),
        ({"messages": [{"role": "user", "content": "hi"}], "top_p": 1.5}, "top_p"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "system", "content": None}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"x": 5}}, "logit_bias.x"),
        (
            {"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"1": 101}},
            "logit_bias.1",
        ),
        ({"messages": [{"role": "user", "content": "hi"}], "tools": [{}]}, "tools[0].type"),
        ({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "always"}, "tool_choice"),
    ]
    for body, field in cases:
        status, error = error_of(server, "/v1/chat/completions", body)
        assert (status, error["param"]) == (400, field), body
        assert error["message"].startswith(field)


def test_bad_json(server: Server) -> None:
    status, error = error_of(server, "/v1/chat/completions", raw=b'{"messages": [')
    assert status == 400 and "not valid JSON" in error["message"]
    status, error = error_of(server, "/v1/completions", raw=b"[1, 2]")
    assert status == 400


def test_prompt_over_the_context(server: Server) -> None:
    body = {"prompt": "word " * 5000, "max_tokens": 1}
    status, error = error_of(server, "/v1/completions", body)
    assert status == 400 and error["code"] == "context_length_exceeded"
    assert "4096" in error["message"] and "500" in error["message"]  # both counts


def test_refused_features_say_so(server: Server) -> None:
    base = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    for extra, word in (
        ({"functions": [{"name": "f"}]}, "send tools instead"),
        ({"n": 5}, "parallel slots"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "text only"),
    ):
        status, error = error_of(server, "/v1/chat/completions", {**base, **extra})
        assert status == 400 and word in error["message"], extra


def test_messages_the_template_takes(server: Server) -> None:
    """An assistant turn may have no content; two answers in a row at the end are the
    client's mistake (a 400), not the server's."""
    asked = {"role": "user", "content": "hi"}
    silent = {"role": "assistant", "content": None}
    body = {"messages": [asked, silent, asked], "max_tokens": 2}
    assert server.request("POST", "/v1/chat/completions", body)[0] == 200
    for path in ("/v1/chat/completions", "/tokenize"):
        status, error = error_of(server, path, {"messages": [asked, silent, silent]})
        assert status == 400 and "assistant" in error["message"], path


def test_client_mistakes_are_one_log_line_each(server: Server) -> None:
    """Method, path, status and reason on one line; no traceback, whatever the path holds."""
    body = {"model": "nope-logged", "messages": [{"role": "user", "content": "hi"}]}
    assert server.request("POST", "/v1/chat/completions", body)[0] == 404
    assert server.request("GET", "/v1/no%0Aforged%20200%20line")[0] == 404
    assert server.request("POST", "/v1/completions", {"prompt": "hi", "suffix": "x"})[0] == 400
    last = "\nPOST /v1/completions 400 suffix (insertion) is not supported"
    assert wait_for(lambda: last in server.log.read_text(), 10)  # written once answered
    log = server.log.read_text()
    assert "POST /v1/chat/completions 404 model 'nope-logged' is not served here" in log
    assert "\nGET /v1/no\\nforged 200 line 404 no such route\n" in log
    assert "\nforged" not in log
    assert "Traceback" not in log


def test_body_over_the_limit(server: Server) -> None:
    big = {"prompt": "x" * (MAX_BODY + 10)}
    status, error = error_of(server, "/v1/completions", big)
    assert status == 413 and "limit" in error["message"]


def test_embedding_model_cannot_chat(server: Server, minilm_path: Path) -> None:
    body = {"model": minilm_path.name, "messages": [{"role": "user", "content": "hi"}]}
    status, error = error_of(server, "/v1/chat/completions", body)
    assert status == 400 and error["param"] == "model"


MALFORMED: list[bytes] = [
    b"",
    b"null",
    b"{}",
    b'"text"',
    b"\xff\xfe\x00garbage",
    b'{"messages": []}',
    b'{"messages": [{}]}',
    b'{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
    b'{"messages": [{"role": "user", "content": 5}], "max_tokens": 1e309}',
    b'{"prompt": [[1, 2], "mixed"]}',
    b'{"prompt": [-5]}',
    b'{"prompt": [999999999], "max_tokens": 1}',
    b'{"prompt": "x", "stop": [1, 2]}',
    b'{"prompt": "x", "seed": "7"}',
    b'{"prompt": "x", "stream_options": 3}',
    b'{"input": []}',
    b'{"tokens": ["a"]}',
    b'{"tokens": [99999999]}',
    b"[" * 5000 + b"]" * 5000,
    # tools, tool choices, response formats and biases that cannot work
    b'{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}',
    b'{"messages": [{"role": "user", "content": "hi"}], "tools": {"f": 1}}',
    b'{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", '
    b'"function": {"name": "no spaces allowed"}}]}',
    b'{"messages": [{"role": "user", "content": "hi"}], "tool_choice": "required"}',
    b'{"messages": [{"role": "user", "content": "hi"}], "tool_choice": {"type": "function", '
    b'"function": {"name": "absent"}}, "tools": [{"type": "function", "function": {"name": "f"}}]}',
    b'{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", '
    b'"function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}]}',
    b'{"messages": [{"role": "user", "content": "hi"}], '
    b'"response_format": {"type": "json_schema"}}',
    b'{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "xml"}}',
    b'{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema",'
    b' "json_schema": {"name": "x", "schema": "not an object"}}}',
    b'{"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"-3": 1}}',
    b'{"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"1": "up"}}',
    b'{"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"999999999": 5}}',
    b'{"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {}}]}]}',
    b'{"messages": [{"role": "tool", "tool_call_id": "c"}]}',
]


def test_malformed_battery_leaves_the_server_answering(
    server: Server, client: openai.OpenAI
) -> None:
    routes = [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/tokenize",
        "/detokenize",
    ]
    for route in routes:
        for raw in MALFORMED:
            status, answer = server.request("POST", route, raw=raw)
            assert isinstance(answer, dict), (route, raw[:60], status, answer)
            if route.endswith("completions"):  # every body above is wrong for these
                assert 400 <= status < 500, (route, raw[:60], status, answer)
                assert "error" in answer
            else:  # some are fine for the tokenizer routes, which ignore unknown fields
                assert status < 500, (route, raw[:60], status, answer)
    answer = client.completions.create(model="default", prompt=CAPITAL, max_tokens=2, temperature=0)
    assert answer.choices[0].text.startswith(" Paris")


# -- concurrency ---------------------------------------------------------------------------


@contextmanager
def stream_request(server: Server, body: dict[str, Any]) -> Iterator[http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), server.headers())
        yield conn.getresponse()
    finally:
        conn.close()


@pytest.mark.slow
def test_requests_decode_together(server: Server) -> None:
    """Four streams on four slots all start before any ends: no lock serialises them."""
    firsts: dict[int, float] = {}
    lasts: dict[int, float] = {}

    def run(i: int) -> None:
        body = {
            "messages": [{"role": "user", "content": f"Write a poem about the number {i}."}],
            "max_tokens": 48,
            "ignore_eos": True,
            "stream": True,
        }
        with stream_request(server, body) as answer:
            for line in answer:
                if b'"content":"' in line and b'"content":""' not in line:
                    firsts.setdefault(i, time.monotonic())
            lasts[i] = time.monotonic()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(firsts) == len(lasts) == 4
    assert max(firsts.values()) < min(lasts.values())


@pytest.mark.slow
def test_disconnect_cancels_and_frees_the_slot(server: Server) -> None:
    body = {
        "messages": [{"role": "user", "content": "Count to ten thousand."}],
        "max_tokens": 3000,
        "ignore_eos": True,
        "stream": True,
    }
    with stream_request(server, body) as answer:
        for _ in range(5):
            answer.readline()
        assert server.request("GET", "/health")[1]["active"]["default"] == 1
    # The client went away mid-stream.
    deadline = time.monotonic() + 20  # 3000 tokens would take far longer than this
    while time.monotonic() < deadline:
        if server.request("GET", "/health")[1]["active"]["default"] == 0:
            break
        time.sleep(0.1)
    assert server.request("GET", "/health")[1]["active"]["default"] == 0


# -- a client that hangs up: whole answers are cancelled as streams are -----------------------

FREED_WITHIN_S = 10  # the answers below would take minutes; a cancelled one stops at its next token
LONG_CHAT = {
    "messages": [{"role": "user", "content": "Count to ten thousand."}],
    "max_tokens": 3000,
    "ignore_eos": True,
}
LONG_TEXT = {"prompt": "1, 2, 3,", "max_tokens": 3000, "ignore_eos": True}


def hang_up(server: Server, requests: list[tuple[str, Any]], model: str = "default") -> None:
    """Send each request (none streamed), wait until the server runs them all, then close every
    connection without reading a byte of the answers."""
    conns = [server.send(path, body) for path, body in requests]
    try:
        assert wait_for(lambda: server.active(model) == len(requests), 60)
        time.sleep(1)  # generating by now
    finally:
        for conn in conns:
            conn.close()


def assert_freed(server: Server, model: str = "default") -> None:
    assert wait_for(lambda: server.active(model) == 0, FREED_WITHIN_S), server.active(model)
    time.sleep(0.5)
    assert server.active(model) == 0  # and nothing of theirs started again


def test_abandoned_whole_answers_free_their_slots(server: Server) -> None:
    """Chat, text, and several prompts in one request, on all four slots: the clients leave."""
    hang_up(
        server,
        [
            ("/v1/chat/completions", LONG_CHAT),
            ("/v1/chat/completions", LONG_CHAT),
            ("/v1/completions", LONG_TEXT),
            ("/v1/completions", {**LONG_TEXT, "prompt": ["1, 2, 3,", "a, b, c,"]}),
        ],
    )
    assert_freed(server)
    started = time.monotonic()
    status, _ = server.request("POST", "/v1/completions", {"prompt": CAPITAL, "max_tokens": 4})
    assert status == 200 and time.monotonic() - started < 10  # a free slot, not a queue


@pytest.mark.slow
def test_a_long_prompt_runs_beside_others(server: Server) -> None:
    """One request may use more than half the context while another runs: each of the four
    slots has the whole context, not a quarter of it."""
    long_prompt = "word " * 2200
    results: dict[str, Any] = {}

    def run(name: str, body: dict[str, Any]) -> None:
        results[name] = server.request("POST", "/v1/completions", body)

    threads = [
        threading.Thread(target=run, args=("long", {"prompt": long_prompt, "max_tokens": 4})),
        threading.Thread(target=run, args=("short", {"prompt": CAPITAL, "max_tokens": 4})),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["long"][0] == 200 and results["long"][1]["usage"]["prompt_tokens"] > 2048
    assert results["short"][0] == 200


def test_sse_shape_of_text_completions(server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    body = {"prompt": CAPITAL, "max_tokens": 3, "temperature": 0, "stream": True}
    try:
        conn.request("POST", "/v1/completions", json.dumps(body), server.headers())
        answer = conn.getresponse()
        assert answer.status == 200
        assert answer.getheader("content-type", "").startswith("text/event-stream")
        events = sse_events(answer)
    finally:
        conn.close()
    assert events[-1] == "[DONE]"
    chunks = [e for e in events if isinstance(e, dict)]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == " Paris.\n"


# -- fuzzing: nothing a client sends gets a 500 -----------------------------------------------

JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "model", "messages", "prompt", "input", "tokens", "n", "stop", "seed", "temperature",
    "top_p", "top_k", "min_p", "stream", "stream_options", "logprobs", "top_logprobs",
    "frequency_penalty", "presence_penalty", "repeat_penalty", "encoding_format", "echo",
]  # fmt: skip
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", ""]), "content": JSON}
)
BODY = st.fixed_dictionaries(
    # Answers stay short whatever else is drawn, so a valid body costs little.
    {"max_tokens": st.integers(-2, 3) | st.text(max_size=3)},
    optional={
        **{f: JSON for f in FIELDS},
        "messages": st.lists(MESSAGE, max_size=3) | JSON,
        "prompt": st.text(max_size=30) | st.lists(st.integers(-3, 50000), max_size=5),
        "tokens": st.lists(st.integers(-3, 60000), max_size=5) | JSON,
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(route=st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                              "/tokenize", "/detokenize"]), body=BODY)  # fmt: skip
def test_fuzzed_bodies_never_get_a_500(server: Server, route: str, body: dict[str, Any]) -> None:
    status, answer = server.request("POST", route, body, timeout=60)
    assert status < 500 or status == 503, (route, body, answer)
    if status >= 400:
        assert isinstance(answer, dict) and answer["error"]["message"], answer


# -- a full queue, and the transformers engine behind the same API ----------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One slot, no queue, a 256-token context."""
    s = Server(
        ["default", "--parallel", "1", "--queue", "0", "--context", "256"],
        tmp_path_factory.mktemp("small"),
    )
    yield s
    s.stop()


@pytest.mark.slow
def test_a_full_queue_answers_503(small: Server) -> None:
    """One slot and no queue: a second request while the first runs is told to retry."""
    body = {
        "messages": [{"role": "user", "content": "Count to ten thousand."}],
        "max_tokens": 3000,
        "ignore_eos": True,
        "stream": True,
    }
    with stream_request(small, body) as running:
        running.readline()
        conn = http.client.HTTPConnection("127.0.0.1", small.port, timeout=60)
        try:
            conn.request("POST", "/v1/completions", json.dumps({"prompt": "hi"}), small.headers())
            answer = conn.getresponse()
            error = json.loads(answer.read())["error"]
            assert answer.status == 503 and answer.getheader("Retry-After") == "1"
            assert "retry" in error["message"]
            # A studio turn is refused the same way, before its question is saved.
            status, session = small.request("POST", "/api/sessions", {})
            assert status == 201
            turn = small.request("POST", f"/api/sessions/{session['id']}/chat", {"content": "hi"})
            assert turn[0] == 503 and "retry" in turn[1]["error"]["message"]
            assert small.request("GET", f"/api/sessions/{session['id']}")[1]["messages"] == []
        finally:
            conn.close()
    assert wait_for(lambda: small.active() == 0, FREED_WITHIN_S)


def assert_stops_at_the_context(server: Server, context: int, model: str = "default") -> None:
    """Without max_tokens (and with ignore_eos) an answer fills the context, and no more: a
    prompt a few tokens short of it keeps the answers short."""

    def tokens(body: dict[str, Any]) -> int:
        return int(server.request("POST", "/tokenize", {**body, "model": model})[1]["count"])

    def filling(wrap: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
        words = context - ROOM - (tokens(wrap("word")) - 1)  # "word" then " word" each a token
        return wrap("word" + " word" * (words - 1))

    for path, body in (
        ("/v1/completions", filling(lambda text: {"prompt": text})),
        (
            "/v1/chat/completions",
            filling(lambda text: {"messages": [{"role": "user", "content": text}]}),
        ),
    ):
        status, answer = server.request("POST", path, {**body, "model": model, "ignore_eos": True})
        assert status == 200, answer
        assert answer["choices"][0]["finish_reason"] == "length"
        usage = answer["usage"]
        assert usage["completion_tokens"] > 0 and usage["total_tokens"] <= context, (path, usage)


ROOM = 8  # tokens left for the answer


@pytest.mark.slow
def test_without_max_tokens_an_answer_stops_at_the_context(small: Server) -> None:
    assert_stops_at_the_context(small, 256)


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory, smollm_hf: Path) -> Iterator[Server]:
    s = Server([str(smollm_hf), "--context", "512"], tmp_path_factory.mktemp("hf"))
    yield s
    s.stop()


@pytest.mark.slow
def test_an_hf_folder_behind_the_same_api(hf: Server) -> None:
    client = openai.OpenAI(base_url=hf.url + "/v1", api_key="none", max_retries=0)
    [model] = [m.id for m in client.models.list()]
    answer = client.completions.create(model=model, prompt=CAPITAL, max_tokens=2, temperature=0)
    assert answer.choices[0].text.startswith(" Paris")
    pieces = [
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=5,
            temperature=0,
            stream=True,
        )
        if c.choices
    ]
    assert "".join(pieces)
    with pytest.raises(openai.BadRequestError, match="repeat_penalty"):
        client.completions.create(model=model, prompt="x", max_tokens=1, presence_penalty=1.0)


@pytest.mark.slow
def test_hf_refuses_what_it_cannot_guide_naming_field_and_engine(hf: Server) -> None:
    """Tools, response formats and biases are llama.cpp's here: transformers refuses them
    with a 400 that names both, never ignores them."""
    ask = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    for extra, field in (
        ({"tools": [tool]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
    ):
        status, answer = hf.request("POST", "/v1/chat/completions", {**ask, **extra})
        message = answer["error"]["message"]
        assert status == 400 and field in message and "transformers" in message, extra


@pytest.mark.slow
def test_hf_abandoned_whole_answer_frees_the_slot(hf: Server, smollm_hf: Path) -> None:
    model = smollm_hf.name
    assert hf.request("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 1})[0] == 200
    hang_up(hf, [("/v1/chat/completions", {**LONG_CHAT, "model": model})], model)
    assert_freed(hf, model)


@pytest.mark.slow
def test_hf_without_max_tokens_an_answer_stops_at_the_context(hf: Server, smollm_hf: Path) -> None:
    assert_stops_at_the_context(hf, 512, smollm_hf.name)


# -- echo: what lm-evaluation-harness sends to score multiple choice --------------------------


def test_echo_gives_every_prompt_token_a_logprob(server: Server) -> None:
    from scheda.evaluation.scorer_llamacpp import LlamaCppScorer
    from scheda.resolve import default_model_path

    status, tokens = server.request("POST", "/tokenize", {"prompt": "The capital of France"})
    ids = tokens["tokens"]
    # lm-evaluation-harness's local-completions body for a loglikelihood request.
    body = {"prompt": [ids, ids[:3]], "max_tokens": 1, "temperature": 0, "logprobs": 1,
            "echo": True, "seed": 1234}  # fmt: skip
    status, answer = server.request("POST", "/v1/completions", body)
    assert status == 200, answer
    first, second = answer["choices"]
    lp = first["logprobs"]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert len(lp["token_logprobs"]) == len(ids) + 1  # the prompt, then the generated token
    assert lp["tokens"][: len(ids)] == ["The", " capital", " of", " France"]
    with LlamaCppScorer(default_model_path(), context=4096) as scorer:
        exact = scorer.score(ids, 1)
    assert lp["token_logprobs"][1 : len(ids)] == pytest.approx(exact.logprobs, abs=1e-4)
    # " of" after "The capital" is about -0.3 (a reading shifted by one gives -10).
    assert -0.6 < lp["token_logprobs"][2] < -0.1
    for value, top in zip(lp["token_logprobs"][1:], lp["top_logprobs"][1:], strict=True):
        assert max(top.values()) >= value - 1e-9
    assert second["logprobs"]["token_logprobs"][1:3] == pytest.approx(exact.logprobs[:2], abs=1e-4)
    assert answer["usage"]["prompt_tokens"] == len(ids) + 3


def test_echo_refuses_streaming(server: Server) -> None:
    body = {"prompt": "hi", "echo": True, "logprobs": 1, "stream": True}
    status, answer = server.request("POST", "/v1/completions", body)
    assert status == 400 and "echo" in answer["error"]["message"]


def test_abandoned_echo_frees_its_slot(server: Server) -> None:
    body = {"prompt": CAPITAL, "echo": True, "logprobs": 1, "max_tokens": 3000, "ignore_eos": True}
    hang_up(server, [("/v1/completions", body)])
    assert_freed(server)


def test_abandoned_studio_turn_frees_its_slot_and_keeps_the_answer_so_far(server: Server) -> None:
    status, session = server.request("POST", "/api/sessions", {})
    assert status == 201
    turn = {"content": "Count from one to one thousand, in words.", "params": {"max_tokens": 3000}}
    conn = server.send(f"/api/sessions/{session['id']}/chat", turn)
    try:
        answer = conn.getresponse()
        assert answer.status == 200
        # The first words (after `{"loading": ...}` if the model had to load first).
        while not answer.readline().startswith(b'data: {"text"'):
            pass
    finally:
        conn.close()
    assert_freed(server)
    status, saved = server.request("GET", f"/api/sessions/{session['id']}")
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant"]
