"""The transformers engine: the mechanics on a tiny random Llama, chat on the converted SmolLM."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest
import torch

from scheda.engines import Generation, open_model
from scheda.engines.base import Message
from scheda.errors import EngineError
from scheda.sampling import Sampling

if TYPE_CHECKING:
    # Imported for the annotations alone: transformers imported while the tests are collected
    # would read the Hub's settings (HF_HUB_OFFLINE, the endpoint) before other modules'
    # tests set them.
    from scheda.engines.transformers import TransformersEngine

pytestmark = pytest.mark.slow

ITALIAN = "ChatGPT è incredibile! 🙂"
PROMPT = "The quick brown fox"
GREEDY = Sampling(temperature=0, max_tokens=12)


@pytest.fixture(scope="module")
def tiny(tiny_llama: Path) -> Iterator[TransformersEngine]:
    with open_model(tiny_llama, "transformers", context=2048) as engine:
        assert engine.name == "transformers"
        yield cast("TransformersEngine", engine)


@pytest.fixture(scope="module")
def smol(smollm_hf: Path) -> Iterator[TransformersEngine]:
    with open_model(smollm_hf, "transformers", context=512) as engine:
        assert engine.name == "transformers"
        yield cast("TransformersEngine", engine)


# -- loading ----------------------------------------------------------------------------------


def test_loads_where_auto_says_within_the_trained_context(tiny: TransformersEngine) -> None:
    assert tiny.name == "transformers"
    if torch.cuda.is_available():  # auto takes the GPU where there is one
        assert tiny.device.type == "cuda"
    else:
        assert str(tiny.device) == "cpu" and tiny.dtype == torch.float32
    assert tiny.context == 256  # asked 2048; the model was trained on 256 positions
    assert tiny.load_s > 0
    assert {"generate", "stream", "cancel", "n", "seed", "logprobs"} <= tiny.capabilities
    assert "chat" not in tiny.capabilities  # no chat template


def test_an_hf_folder_opens_in_transformers(tiny_llama: Path) -> None:
    with open_model(str(tiny_llama), warmup=False) as engine:
        assert engine.name == "transformers"


def test_quantizing_needs_a_cuda_gpu(tiny_llama: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(EngineError, match="needs an NVIDIA GPU with CUDA") as caught:
        open_model(tiny_llama, "transformers", quantize="4bit")
    assert "\n" not in str(caught.value) and "--quantize" in str(caught.value)


# -- tokens -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [ITALIAN, "def f(x):\n\treturn x  # ok", " two  spaces"])
def test_pieces_are_the_bytes_of_the_text(
    smol: TransformersEngine, tiny: TransformersEngine, text: str
) -> None:
    for engine in (smol, tiny):
        tokens = engine.tokenize(text)
        assert b"".join(t.piece for t in tokens) == text.encode("utf-8")
        assert engine.detokenize([t.id for t in tokens]) == text


def test_accented_character_split_over_two_tokens(smol: TransformersEngine) -> None:
    tokens = smol.tokenize("ChatGPT è incredibile!")
    assert [t.id for t in tokens][2:4] == [5549, 118]
    assert [t.piece for t in tokens][2:4] == [b" \xc3", b"\xa8"]
    assert smol.count_tokens("ChatGPT è incredibile!") == 8


# -- generation: the mechanics on the tiny model ----------------------------------------------


def test_greedy_is_deterministic_and_ends_at_max_tokens(tiny: TransformersEngine) -> None:
    first = tiny.generate(PROMPT, GREEDY)
    second = tiny.generate(PROMPT, GREEDY)
    assert first.text == second.text and first.text
    assert first.finish_reason == "length"
    assert first.completion_tokens == 12
    assert first.prompt_tokens == tiny.count_tokens(PROMPT)
    timings = first.timings
    assert 0 < timings.first_token_s <= timings.total_s
    assert timings.tokens_per_s > 0 and timings.prompt_tokens_per_s > 0
    assert timings.load_s == tiny.load_s


def test_the_same_seed_gives_the_same_text(tiny: TransformersEngine) -> None:
    def run(seed: int) -> str:
        return tiny.generate(PROMPT, Sampling(temperature=0.8, seed=seed, max_tokens=16)).text

    assert run(7) == run(7)
    assert run(7) != run(8)  # 16 tokens of a 342-token vocabulary: a tie is not plausible


def test_n_gives_independent_samples(tiny: TransformersEngine) -> None:
    result = tiny.generate(PROMPT, Sampling(temperature=1.0, seed=1, max_tokens=10, n=2))
    assert len(result.samples) == 2
    assert result.samples[0].text != result.samples[1].text
    assert result.completion_tokens == sum(s.completion_tokens for s in result.samples)
    assert all(s.finish_reason in ("stop", "length") for s in result.samples)


def test_a_stop_string_cuts_the_text(tiny: TransformersEngine) -> None:
    text = tiny.generate(PROMPT, GREEDY).text
    stop = next(
        text[i : i + 2]
        for i in range(2, len(text) - 1)
        if "\ufffd" not in text[i : i + 2] and text[i : i + 2].strip()
    )
    result = tiny.generate(PROMPT, Sampling(temperature=0, max_tokens=12, stop=[stop]))
    assert result.finish_reason == "stop" and result.samples[0].stop_sequence == stop
    assert result.text == text[: text.find(stop)]
    assert result.completion_tokens < 12


def test_ignore_eos_goes_on_to_max_tokens(smol: TransformersEngine) -> None:
    conversation = [Message("user", "What is the capital of France?")]
    short = smol.chat(conversation, Sampling(temperature=0, max_tokens=40))
    assert short.finish_reason == "stop" and short.completion_tokens < 40
    longer = smol.chat(conversation, Sampling(temperature=0, max_tokens=40, ignore_eos=True))
    assert longer.finish_reason == "length" and longer.completion_tokens == 40
    assert longer.text.startswith(short.text)


def test_the_context_caps_the_request(tiny: TransformersEngine) -> None:
    unit = "1 2 3 4 5 6 7 8 9 10 "
    prompt = unit * ((tiny.context - 20) // tiny.count_tokens(unit))
    room = tiny.context - tiny.count_tokens(prompt)
    assert 0 < room < 50
    result = tiny.generate(prompt, Sampling(temperature=0, max_tokens=50))
    assert result.finish_reason == "length" and result.completion_tokens == room
    with pytest.raises(EngineError, match="more than the 256-token context"):
        tiny.generate(prompt * 2, GREEDY)


def test_streamed_text_is_the_final_text(tiny: TransformersEngine) -> None:
    chunks: list[tuple[int, str]] = []
    sampling = Sampling(temperature=1.0, seed=3, max_tokens=24, n=2, stop=["e"])
    result = tiny.generate(PROMPT, sampling, on_text=lambda i, t: chunks.append((i, t)))
    for index, sample in enumerate(result.samples):
        assert "".join(t for i, t in chunks if i == index) == sample.text
    assert "e" not in result.samples[0].text and "e" not in result.samples[1].text


def test_stream_iterator_ends_with_the_generation(tiny: TransformersEngine) -> None:
    items = list(tiny.stream(PROMPT, GREEDY))
    assert isinstance(items[-1], Generation)
    last = items[-1]
    assert isinstance(last, Generation)
    texts = [item[1] for item in items[:-1] if not isinstance(item, Generation)]
    assert len(texts) == len(items) - 1 and "".join(texts) == last.text


def test_cancel_from_the_callback_stops_early(tiny: TransformersEngine) -> None:
    cancel = threading.Event()
    chunks: list[str] = []

    def on_text(index: int, text: str) -> None:
        chunks.append(text)
        if len(chunks) == 3:
            cancel.set()

    sampling = Sampling(temperature=0, max_tokens=100)
    result = tiny.generate(PROMPT, sampling, on_text=on_text, cancel=cancel)
    assert result.finish_reason == "cancelled"
    assert 3 <= result.completion_tokens < 20
    assert result.text == "".join(chunks)

    already = tiny.generate(PROMPT, sampling, cancel=cancel)  # set before it starts
    assert already.finish_reason == "cancelled" and already.completion_tokens == 0


def test_logprobs_with_alternatives(tiny: TransformersEngine) -> None:
    result = tiny.generate(PROMPT, Sampling(temperature=0, max_tokens=6, logprobs=3))
    entries = result.samples[0].logprobs
    assert entries is not None and len(entries) == result.completion_tokens == 6
    for entry in entries:
        assert entry.logprob <= 0
        assert len(entry.top) == 3
        values = [v for _, v in entry.top]
        assert values == sorted(values, reverse=True)
        assert entry.top[0] == (entry.token, entry.logprob)  # greedy takes the likeliest
    assert tiny.generate(PROMPT, GREEDY).samples[0].logprobs is None


# -- chat -------------------------------------------------------------------------------------


def test_chat_goes_through_the_template(smol: TransformersEngine) -> None:
    conversation = [Message("user", "What is the capital of France?")]
    prompt = smol.chat_prompt(conversation)
    assert prompt.startswith("<|im_start|>system\n")
    assert prompt.endswith(
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    streamed: list[str] = []
    # "." might begin the stop string, so the stream holds it back until <|im_end|> decides.
    sampling = Sampling(temperature=0, max_tokens=24, stop=[".@@"])
    result = smol.chat(conversation, sampling, on_text=lambda i, t: streamed.append(t))
    assert result.finish_reason == "stop"  # <|im_end|>
    assert "Paris" in result.text and "<|im_end|>" not in result.text
    assert result.text.endswith(".") and "".join(streamed) == result.text
    # The template wrote <|im_start|> itself: nothing is added in front of it.
    assert result.prompt_tokens == len(smol.tokenize(prompt))


def test_no_chat_template_says_so(tiny: TransformersEngine) -> None:
    with pytest.raises(EngineError, match="no chat template"):
        tiny.chat([Message("user", "hi")], GREEDY)


# -- a GPU ------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_float16_on_cuda(smollm_hf: Path) -> None:
    with open_model(smollm_hf, "transformers", device="cuda", dtype="float16") as engine:
        assert engine.name == "transformers"
        loaded = cast("TransformersEngine", engine)
        assert loaded.device.type == "cuda" and loaded.dtype == torch.float16
        result = engine.generate("The capital of France is", Sampling(temperature=0, max_tokens=8))
        assert result.text.startswith(" Paris")
        streamed: list[str] = []
        sampled = engine.generate(
            "Once upon a time",
            Sampling(temperature=0.8, seed=1, max_tokens=16, n=2, logprobs=2),
            on_text=lambda i, t: streamed.append(t) if i == 0 else None,
        )
        assert "".join(streamed) == sampled.samples[0].text
        assert sampled.samples[1].logprobs is not None
