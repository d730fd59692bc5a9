"""The llama.cpp engine on the embedded model: sampling, samples, streaming, cancel, chat."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheda.engines import Generation, Message, open_model
from scheda.engines.base import Guide
from scheda.engines.llamacpp import LlamaCppEngine
from scheda.errors import EngineError, UsageError
from scheda.sampling import Sampling

PROMPT = "The capital of France is"
# A chat template that knows tools, in the Hermes style Qwen 2.5 uses (<tools>, <tool_call>).
HERMES = Path(__file__).parent / "templates" / "hermes_tools.jinja"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def engine(smollm_path: Path) -> Iterator[LlamaCppEngine]:
    with open_model(smollm_path, "llama.cpp", context=1024, parallel=2) as loaded:
        assert isinstance(loaded, LlamaCppEngine)
        yield loaded


def greedy(max_tokens: int = 8, **kw: object) -> Sampling:
    return Sampling(max_tokens=max_tokens, temperature=0, **kw)  # type: ignore[arg-type]


def test_greedy_text_is_the_models_answer(engine: LlamaCppEngine) -> None:
    result = engine.generate(PROMPT, greedy())
    assert result.text.startswith(" Paris")
    assert result.finish_reason == "length"
    assert result.completion_tokens == 8
    assert result.prompt_tokens == len(engine.tokenize(PROMPT, add_special=True))
    t = result.timings
    assert 0 < t.first_token_s <= t.total_s
    assert t.tokens_per_s > 0 and t.prompt_tokens_per_s > 0
    assert t.load_s == engine.load_s > 0


def test_the_same_seed_gives_the_same_text(engine: LlamaCppEngine) -> None:
    sampling = Sampling(max_tokens=24, temperature=1.0, seed=1234)
    first = engine.generate("Once upon a time", sampling).text
    second = engine.generate("Once upon a time", sampling).text
    others = {
        engine.generate("Once upon a time", Sampling(24, 1.0, seed=s)).text for s in (1, 2, 3)
    }
    assert first == second
    assert len(others | {first}) > 1  # different seeds wander apart


def test_n_samples_come_back_separately(engine: LlamaCppEngine) -> None:
    result = engine.generate("Once upon a time", Sampling(max_tokens=12, temperature=1.2, n=2))
    assert len(result.samples) == 2
    assert all(s.completion_tokens == 12 for s in result.samples)
    assert result.completion_tokens == 24


def test_more_samples_than_slots_is_an_error(engine: LlamaCppEngine) -> None:
    with pytest.raises(EngineError, match="3 samples need 3 parallel slots"):
        engine.generate(PROMPT, Sampling(n=3))


def test_a_stop_sequence_ends_the_text_before_it(engine: LlamaCppEngine) -> None:
    result = engine.generate(PROMPT, greedy(40, stop=["!", "."]))
    assert result.text == " Paris"
    assert result.finish_reason == "stop" and result.samples[0].stop_sequence == "."
    assert result.prompt_tokens > 0  # the stream ended at the stop, before llama.cpp's usage


def test_streamed_pieces_add_up_to_the_text(engine: LlamaCppEngine) -> None:
    pieces: list[str] = []
    result = engine.generate(PROMPT, greedy(10), lambda i, t: pieces.append(t))
    assert len(pieces) >= 5
    assert "".join(pieces) == result.text


def test_stream_iterator_yields_text_then_the_generation(engine: LlamaCppEngine) -> None:
    items = list(engine.stream(PROMPT, greedy(6)))
    *texts, last = items
    assert isinstance(last, Generation)
    assert "".join(t for _, t in texts) == last.text  # type: ignore[misc]


def test_cancel_stops_at_the_next_token(engine: LlamaCppEngine) -> None:
    cancel = threading.Event()
    pieces: list[str] = []

    def on_text(_: int, text: str) -> None:
        pieces.append(text)
        if len(pieces) == 3:
            cancel.set()

    result = engine.generate("Once upon a time", Sampling(max_tokens=200), on_text, cancel)
    assert result.finish_reason == "cancelled"
    assert result.completion_tokens < 10
    # The slot is free again: the next request runs to its end.
    assert engine.generate(PROMPT, greedy(4)).finish_reason == "length"


def test_logprobs_of_generated_tokens(engine: LlamaCppEngine) -> None:
    result = engine.generate(PROMPT, greedy(4, logprobs=3))
    logprobs = result.samples[0].logprobs
    assert logprobs is not None and len(logprobs) == 4
    first = logprobs[0]
    assert first.token == " Paris"
    assert first.logprob <= 0
    assert len(first.top) == 3
    # Greedy picks the likeliest token: it heads its own list of alternatives.
    assert first.top[0][0] == first.token


def test_chat_goes_through_the_models_template(engine: LlamaCppEngine) -> None:
    messages = [Message("system", "Answer in one word."), Message("user", "What is 2+2?")]
    prompt = engine.chat_prompt(messages)
    assert prompt.startswith("<|im_start|>system\nAnswer in one word.<|im_end|>")
    assert prompt.endswith("<|im_start|>assistant\n")
    result = engine.chat(messages, greedy(12))
    assert result.text.strip()
    assert result.prompt_tokens == len(engine.tokenize(prompt, add_special=False))
    assert "chat" in engine.capabilities


def test_detokenize_inverts_tokenize(engine: LlamaCppEngine) -> None:
    text = "Sì, è così: 42 € al giorno."
    ids = [t.id for t in engine.tokenize(text)]
    assert engine.detokenize(ids) == text


def test_a_prompt_over_the_context_is_a_clear_error(engine: LlamaCppEngine) -> None:
    with pytest.raises(EngineError, match=r"more than the 1024-token context"):
        engine.generate("word " * 1200, greedy(1))


@pytest.mark.slow
def test_no_max_tokens_fills_the_context_and_no_more(smollm_path: Path) -> None:
    """llama.cpp rounds a small slot up to 256 tokens; an answer stops at the asked context."""
    endless = Sampling(max_tokens=0, temperature=0, ignore_eos=True)
    with open_model(smollm_path, "llama.cpp", context=64) as small:
        plain = small.generate("Once upon a time", endless)
        chat = small.chat([Message("user", "Tell me a long story.")], endless)
        for answer in (plain, chat):
            assert answer.finish_reason == "length"
            assert answer.prompt_tokens + answer.samples[0].completion_tokens == 64


def test_the_llama_cpp_listener_is_locked(engine: LlamaCppEngine) -> None:
    """llama.cpp's own HTTP listener stays on loopback and refuses callers without the key."""
    assert engine._address.startswith("http://127.0.0.1:")
    request = urllib.request.Request(
        engine._address + "/completion", data=b'{"prompt": "hi", "n_predict": 1}'
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    refused.value.close()
    assert refused.value.code == 401


def test_default_context_is_capped_by_training(smollm_path: Path) -> None:
    with open_model(smollm_path, "llama.cpp") as loaded:
        assert isinstance(loaded, LlamaCppEngine)
        assert loaded.trained_context == 8192
        assert loaded.context == 4096  # llama-server's default, under the trained 8192


def test_open_model_picks_the_engine_from_the_reference() -> None:
    with open_model("default", context=256) as loaded:
        assert loaded.name == "llama.cpp"


def test_open_model_refuses_what_cannot_run(minilm_path: Path, smollm_path: Path) -> None:
    with pytest.raises(UsageError, match="catalog entry"):
        open_model("llama-3-8b")
    with pytest.raises(UsageError, match=r"llama\.cpp runs GGUF files"):
        open_model(str(minilm_path), engine="llama.cpp")
    with pytest.raises(UsageError, match="scheda convert"):
        open_model(str(smollm_path), engine="transformers")
    with pytest.raises(UsageError, match="unknown engine"):
        open_model("default", engine="vllm-next")


@pytest.fixture(scope="module")
def hermes(smollm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppEngine]:
    """The embedded model, its template replaced by one that knows tools."""
    copy = tmp_path_factory.mktemp("hermes") / "smollm-hermes.gguf"
    rewrite = [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", str(smollm_path), str(copy)]
    subprocess.run([*rewrite, "--chat-template-file", str(HERMES), "--force"], check=True)
    with open_model(copy, "llama.cpp", context=1024) as loaded:
        assert isinstance(loaded, LlamaCppEngine)
        yield loaded


def test_a_template_that_knows_tools_shows_them_and_a_required_call_is_made(
    hermes: LlamaCppEngine,
) -> None:
    """With "auto", tools go to llama.cpp as they are: its template shows them (its parser
    would read the calls). A required call is held by the generic format's grammar, which
    this small model needs (llama.cpp's own handling let it answer in prose); the call and
    its result then render back through the model's own template."""
    assert hermes.template_knows_tools
    asked = [Message("user", "What is the weather in Paris?")]
    assert "<tools>" in hermes.chat_prompt(asked, Guide(tools=[WEATHER]))
    guide = Guide(tools=[WEATHER], tool_choice="required", parallel_tool_calls=False)
    assert "<tools>" not in hermes.chat_prompt(asked, guide)
    result = hermes.chat(asked, greedy(40), guide=guide)
    (call,) = result.samples[0].tool_calls
    assert call.name == "get_weather" and json.loads(call.arguments)["city"]
    assert result.finish_reason == "tool_calls" and result.completion_tokens > 5
    answered = [*asked, Message("assistant", "", [call]), Message("tool", "Sunny.", [], call.id)]
    assert "<tool_response>\nSunny.\n</tool_response>" in hermes.chat_prompt(answered)
