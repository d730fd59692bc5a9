"""GSM8K: the answer extraction on handcrafted and real answers, the prompt, a real run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scheda.errors import UsageError
from scheda.evaluation.base import EvalModel
from scheda.evaluation.gsm8k import (
    GSM8K,
    STOP,
    exact_match,
    extract_flexible,
    extract_strict,
    gold_answer,
    normalise,
)
from scheda.resolve import default_model_path
from tests.needs import GSM8K_DIR

needs_data = pytest.mark.usefixtures("gsm8k_data")


def read_rows(name: str) -> list[dict[str, str]]:
    with (GSM8K_DIR / name).open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


# -- extraction, as lm-eval's strict-match and flexible-extract filters read an answer ----------


@pytest.mark.parametrize(
    ("text", "strict"),
    [
        ("She pays 3 * 4 = <<3*4=12>>12 dollars.\n#### 12", "12"),
        ("#### 1,234\n\n", "1,234"),
        ("So the loss is 5.\n#### -5", "-5"),
        ("#### 3.5.", "3.5."),
        ("#### 7\nand later #### 8", "7"),  # the first one counts
        ("The answer is 12.", None),  # no "#### " at all
        ("####12", None),  # the space is part of the format
        ("#### $12", None),  # a dollar sign is not a digit here
    ],
)
def test_strict_extraction(text: str, strict: str | None) -> None:
    assert extract_strict(text) == strict


@pytest.mark.parametrize(
    ("text", "flexible"),
    [
        ("3 * 4 = 12 apples, then 12 + 5 = 17.", "17."),
        ("It costs $1,250 in all", "$1,250"),
        ("The temperature fell to -7 degrees", "-7"),
        ("First 5, then 9", "9"),  # the last number wins
        ("#### 42\n\n", "42"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_flexible_extraction(text: str, flexible: str | None) -> None:
    assert extract_flexible(text) == flexible


@pytest.mark.parametrize(
    ("extracted", "gold", "match"),
    [
        ("$1,250", "1250", 1.0),  # dollars and thousands separators dropped
        ("17.", "17", 1.0),  # one trailing full stop dropped
        ("-5", "-5", 1.0),
        ("5", "-5", 0.0),
        ("18.0", "18", 0.0),  # lm-eval compares text, not values
        ("18.00", "18", 0.0),
        (None, "18", 0.0),  # nothing extracted
    ],
)
def test_exact_match(extracted: str | None, gold: str, match: float) -> None:
    assert exact_match(extracted, gold) == match


def test_gold_is_the_number_after_the_marker() -> None:
    answer = "She has 2 * $500 = $<<2*500=1000>>1000.\nThen $1,000 - 30 = 970.\n#### 1,000"
    assert gold_answer(answer) == "1000"
    assert normalise("#### -3.") == "-3"


@needs_data
def test_strict_extraction_reads_every_train_answer() -> None:
    """On the 7,473 real train answers, strict extraction gives the gold number."""
    rows = read_rows("train.jsonl")
    assert len(rows) == 7473
    for row in rows:
        gold = gold_answer(row["answer"])
        assert re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", gold), row["answer"]
        assert exact_match(extract_strict(row["answer"]), gold) == 1.0, row["answer"]
        # The flexible reading of a worked answer ends on the same number.
        assert exact_match(extract_flexible(row["answer"]), gold) == 1.0, row["answer"]


# -- the prompt ---------------------------------------------------------------------------------


@needs_data
def test_prompt_has_eight_train_exemplars_and_a_shared_prefix() -> None:
    task = GSM8K(data_dir=GSM8K_DIR)
    train = read_rows("train.jsonl")
    indices = task.config()["exemplars"]
    assert len(indices) == 8 == len(set(indices))
    assert indices == GSM8K(data_dir=GSM8K_DIR).exemplar_indices  # fixed by the seed
    assert indices != GSM8K(data_dir=GSM8K_DIR, seed=1).exemplar_indices

    items = task.items()
    assert len(items) == 1319
    first, second = items[0], items[1]
    assert (first.key, second.key) == ("test/0", "test/1")
    one, two = task.prompt(first.data["question"]), task.prompt(second.data["question"])
    assert one.endswith(f"\n\nQuestion: {first.data['question']}\nAnswer:")
    assert two.endswith(f"\n\nQuestion: {second.data['question']}\nAnswer:")
    prefix = task.prefix()
    assert one.startswith(prefix) and two.startswith(prefix)
    # The prefix is the 8 exemplars, whole train answers, each followed by a blank line.
    expected = "".join(
        f"Question: {train[i]['question']}\nAnswer: {train[i]['answer']}\n\n" for i in indices
    )
    assert prefix == expected
    assert one.count("Question: ") == 9 and one.count("\n#### ") == 8

    sampling = task.sampling()
    assert sampling.temperature == 0 and sampling.max_tokens == 256 and sampling.seed == 0
    assert sampling.stop == STOP == ["Question:", "</s>", "<|im_end|>", "\n\n\n"]

    assert [i.key for i in GSM8K(limit=3, data_dir=GSM8K_DIR).items()] == [
        "test/0",
        "test/1",
        "test/2",
    ]


def test_missing_data_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"train\.jsonl or test\.jsonl"):
        GSM8K(data_dir=tmp_path).items()
    (tmp_path / "train.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n')
    (tmp_path / "test.jsonl").write_text("not json\n")
    with pytest.raises(UsageError, match=r"test\.jsonl:1: not a JSON line"):
        GSM8K(data_dir=tmp_path).items()
    # No folder: the hub, which tests never reach (no `datasets`, or offline): one line.
    with pytest.raises(UsageError, match=r"--data DIR") as error:
        GSM8K().items()
    assert "\n" not in str(error.value)


# -- a real run on the embedded model -----------------------------------------------------------

# A short run, for two CPU cores: two exemplars instead of eight (the prompt above is the
# full one; the prompt tokens are what costs), and few generated tokens.
RUN_SHOTS = 2
RUN_TOKENS = 16


@pytest.mark.slow
@needs_data
def test_run_sends_the_prompts_concurrently_and_scores_each() -> None:
    """Four questions through four parallel slots: one scored result per item."""
    task = GSM8K(RUN_SHOTS, limit=4, data_dir=GSM8K_DIR, max_tokens=RUN_TOKENS)
    items = task.items()
    model = EvalModel(default_model_path(), parallel=4)
    try:
        results = list(task.run(items, model))
    finally:
        model.close()
    assert sorted(r.key for r in results) == ["test/0", "test/1", "test/2", "test/3"]
    golds = {item.key: gold_answer(item.data["answer"]) for item in items}
    for result in results:
        detail = result.detail
        assert set(result.metrics) == set(task.metrics)
        assert all(value in (0.0, 1.0) for value in result.metrics.values())
        assert detail["gold"] == golds[result.key]
        assert detail["finish_reason"] in ("stop", "length")
        assert 0 <= detail["completion_tokens"] <= RUN_TOKENS
        # The scores are the extraction's, from the text that came back.
        assert detail["strict"] == extract_strict(detail["generation"])
        assert detail["flexible"] == extract_flexible(detail["generation"])
        assert result.metrics["exact_match_strict"] == exact_match(detail["strict"], detail["gold"])
        assert result.metrics["exact_match_flexible"] == exact_match(
            detail["flexible"], detail["gold"]
        )
    # The small model may end its answer at once (end of text first, a near tie with " The"),
    # but it does answer most questions in the exemplars' style.
    assert sum(bool(r.detail["generation"].strip()) for r in results) >= 2


@pytest.mark.slow
@needs_data
def test_run_is_reproducible_on_a_fresh_engine_with_one_slot() -> None:
    """Greedy decoding gives the same text again when the engine does the same work.

    With several slots it need not: llama.cpp's results are not bit-identical across
    batch shapes (what a prompt is batched with, how much of it the prompt cache
    already holds), so a near tie between two tokens can go either way
    (ggml-org/llama.cpp#6950, #7052).
    """
    task = GSM8K(RUN_SHOTS, limit=2, data_dir=GSM8K_DIR, max_tokens=RUN_TOKENS)
    runs = []
    for _ in range(2):
        model = EvalModel(default_model_path(), parallel=1)
        try:
            runs.append({r.key: r.detail["generation"] for r in task.run(task.items(), model)})
        finally:
            model.close()
    assert runs[0] == runs[1]
    assert len(runs[0]) == 2
