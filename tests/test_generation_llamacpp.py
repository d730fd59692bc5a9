"""The batch generator: greedy answers with the few-shot prefix shared, on the embedded model.

Its answers are checked against the scorer's exact log-likelihoods (every token the
likeliest, or within a near tie of it), its stop strings and finish reasons against
llama.cpp's server's rules, and its groups, its clean stop and its one-line errors on
real prompts of the spec sheet's tasks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scheda.engines.base import Generation
from scheda.errors import PromptTooLongError
from scheda.evaluation.base import EvalModel
from scheda.evaluation.generation_llamacpp import (
    SHARED_PREFIX,
    SLOTS,
    BatchGenerator,
    decoding,
    groups_of,
)
from scheda.evaluation.gsm8k import GSM8K
from scheda.evaluation.runner import run_config
from scheda.evaluation.scorer_llamacpp import LlamaCppScorer
from scheda.sampling import Sampling
from tests.needs import GSM8K_DIR

pytest.importorskip("llama_cpp", reason="the batch generator needs llama-cpp-python (eval extra)")

# The scorer computes attention with flash attention, the generator as matrix products, in
# other batch shapes: over the 135M model's 30 layers a token's log-probability comes out up
# to about 0.14 apart between the two (measured here on these questions). A token within
# this of the scorer's likeliest is a near tie; a wrong position or sequence would be
# nats away.
NEAR_TIE = 0.25


@pytest.fixture(scope="module")
def scorer(smollm_path: Path) -> Iterator[LlamaCppScorer]:
    scorer = LlamaCppScorer(smollm_path, context=4096)
    yield scorer
    scorer.close()


def greedy(max_tokens: int, stop: list[str]) -> Sampling:
    return Sampling(temperature=0.0, max_tokens=max_tokens, stop=stop, seed=0)


def gsm8k_prompts(n: int, shots: int = 1) -> list[str]:
    task = GSM8K(shots, limit=n, data_dir=GSM8K_DIR, max_tokens=24)
    return [task.prompt(item.data["question"]) for item in task.items()]


def answers(generator: BatchGenerator, texts: list[str], sampling: Sampling) -> list[Generation]:
    found = dict(generator.generate(texts, sampling))
    assert sorted(found) == list(range(len(texts)))  # each prompt answered once
    return [found[i] for i in range(len(texts))]


@pytest.mark.slow
@pytest.mark.usefixtures("gsm8k_data")
def test_every_token_is_the_likeliest_or_a_near_tie(scorer: LlamaCppScorer) -> None:
    """Six GSM8K questions, more than fit at once (width 4): each answer, scored by the
    scorer, is the model's greedy continuation of its own prompt."""
    texts = gsm8k_prompts(6)
    generator = BatchGenerator.on(scorer, 4)
    found = answers(generator, texts, greedy(20, []))
    checked = exact = 0
    for text, generation in zip(texts, found, strict=True):
        prompt = generator.tokenize(text)
        whole = generator.tokenize(text + generation.text)
        if whole[: len(prompt)] != prompt or not generation.text:
            continue  # the answer's first token merged with the prompt's last
        scored = scorer.score(whole, len(prompt), top=1)
        best = [top[0][1] for top in scored.top]
        assert all(lp >= b - NEAR_TIE for lp, b in zip(scored.logprobs, best, strict=True))
        checked += len(scored.logprobs)
        exact += sum(scored.greedy)
        assert generation.finish_reason == "length" and generation.completion_tokens == 20
        assert generation.prompt_tokens == len(prompt)
        assert generation.cached_tokens is not None and 0 < generation.cached_tokens < len(prompt)
    assert checked >= 5 * 16  # nearly every answer was checked
    assert exact >= 0.9 * checked  # near ties are the exception


@pytest.mark.slow
@pytest.mark.usefixtures("gsm8k_data")
def test_stop_strings_end_the_text_where_they_begin(scorer: LlamaCppScorer) -> None:
    """With the task's own stop strings: an answer stopped by one holds none of them and
    names the one that ended it; one that ran out of tokens says so."""
    texts = gsm8k_prompts(6)
    stop = ["\n", "="]  # the exemplars' answers have both early on
    found = answers(BatchGenerator.on(scorer, 3), texts, greedy(48, stop))
    assert any(g.samples[0].stop_sequence is not None for g in found)
    for generation in found:
        sample = generation.samples[0]
        assert not any(s in sample.text for s in stop)
        if sample.finish_reason == "length":
            assert sample.completion_tokens == 48 and sample.stop_sequence is None
        else:
            assert sample.finish_reason == "stop"
            assert sample.stop_sequence in (*stop, None)  # None: the end-of-text token


@pytest.mark.slow
@pytest.mark.usefixtures("gsm8k_data")
def test_the_same_call_gives_the_same_answers_and_a_stopped_one_leaves_nothing(
    scorer: LlamaCppScorer,
) -> None:
    """Greedy answers from one batch shape are reproducible; a consumer that stops after
    the first answer frees the context, and the next call is the same as before it."""
    texts = gsm8k_prompts(4)
    generator = BatchGenerator.on(scorer, 2)
    first = [g.text for g in answers(generator, texts, greedy(10, []))]
    stream = generator.generate(texts, greedy(10, []))
    next(stream)
    stream.close()  # the generator's finally frees its context here
    again = [g.text for g in answers(generator, texts, greedy(10, []))]
    assert again == first
    assert generator.prefix_seconds > 0


@pytest.mark.slow
@pytest.mark.usefixtures("gsm8k_data")
def test_prompts_of_several_prefixes_are_all_answered(scorer: LlamaCppScorer) -> None:
    """GSM8K questions 1-shot and 0-shot (two prefixes: the exemplar, and next to nothing)
    on two answer sequences: every prompt comes back once, and the same as when its group
    is generated alone."""
    one_shot, zero_shot = gsm8k_prompts(3, shots=1), gsm8k_prompts(3, shots=0)
    texts = one_shot + zero_shot
    generator = BatchGenerator.on(scorer, 2)
    assert len(groups_of([generator.tokenize(t) for t in texts])) == 2
    together = [g.text for g in answers(generator, texts, greedy(10, []))]
    alone = [g.text for g in answers(generator, one_shot, greedy(10, []))]
    alone += [g.text for g in answers(generator, zero_shot, greedy(10, []))]
    assert sum(a == b for a, b in zip(together, alone, strict=True)) >= 4
    # The 135M model may end a zero-shot answer at once (end of text is a likely first token).
    assert sum(bool(t) for t in together) >= 4


def test_groups_share_a_long_prefix_and_split_where_it_changes() -> None:
    few_shot = list(range(100, 400))
    gsm8k = [[1, *few_shot, 7, 8, 9], [1, *few_shot, 7, 5], [1, *few_shot, 6, 6, 6, 6]]
    other = [[1, *range(500, 800), 3, 3], [1, *range(500, 800), 4]]
    groups = groups_of([*gsm8k, *other])
    assert [list(g.waiting) for g in groups] == [[0, 1, 2], [3, 4]]
    assert groups[0].prefix == [1, *few_shot]
    assert groups[1].prefix == [1, *range(500, 800)]
    # Zero-shot prompts share little but stay one group: they still decode together.
    questions = [[1, *range(600, 650)], [1, *range(700, 760)], [1, *range(800, 840)]]
    short = groups_of(questions)
    assert len(short) == 1 and short[0].prefix == [1]
    # After a few-shot group, the same: a group of one takes the next prompt.
    after = groups_of([*gsm8k, *questions])
    assert [list(g.waiting) for g in after] == [[0, 1, 2], [3, 4, 5]]
    # One prompt per few-shot prefix (a limit of 1): one group, nothing to share.
    assert len(groups_of([gsm8k[0], other[0]])) == 1


def test_only_greedy_decoding_is_the_generators() -> None:
    assert BatchGenerator.handles(greedy(16, ["\n"]))
    assert not BatchGenerator.handles(Sampling(temperature=0.7, max_tokens=16))
    assert not BatchGenerator.handles(Sampling(temperature=0.0, n=2))
    assert not BatchGenerator.handles(Sampling(temperature=0.0, repeat_penalty=1.1))


def test_a_prompt_over_the_context_is_one_line(scorer: LlamaCppScorer) -> None:
    generator = BatchGenerator.on(scorer, 2)
    with pytest.raises(PromptTooLongError, match="context: shorten it"):
        list(generator.generate(["word " * (generator.trained + 10)], greedy(4, [])))


def test_gguf_answers_on_the_generator_and_the_run_says_so(
    smollm_path: Path, minilm_path: Path
) -> None:
    """A GGUF's greedy answers come from the generator, and its runs are not merged with
    runs on the engine's slots; an HF folder keeps the slots and its run's configuration."""
    assert decoding(smollm_path) == SHARED_PREFIX and decoding(minilm_path) == SLOTS
    task = GSM8K(2, limit=2, data_dir=GSM8K_DIR)
    assert run_config(task, 4, smollm_path)["decoding"] == SHARED_PREFIX
    assert "decoding" not in run_config(task, 4, minilm_path)
    model = EvalModel(smollm_path, parallel=4)
    try:
        generator = model.generator()
        assert generator is not None and generator.width == 4
        assert EvalModel(smollm_path, shared_prefix=False).generator() is None
        assert EvalModel(minilm_path).generator() is None
    finally:
        model.close()
