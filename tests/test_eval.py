"""`scheda eval`: the log-likelihood scorers, MMLU and JSONL multiple choice, resuming, the CLI.

The scorers run the real embedded model (llama.cpp) and its converted folder
(transformers). MMLU runs on the real data beside the project when it is
there, and skips saying so when it is not.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from scheda.errors import UsageError
from scheda.evaluation.base import EvalModel, ItemResult
from scheda.evaluation.gsm8k import GSM8K
from scheda.evaluation.multiple_choice import LETTERS, MMLU, JsonlChoice
from scheda.evaluation.runner import make_task, open_run, published_label, run_task
from scheda.evaluation.scorer import Scored, Scorer
from scheda.evaluation.scorer_llamacpp import LlamaCppScorer
from scheda.evaluation.scorer_transformers import TransformersScorer
from scheda.evaluation.tasks import TASKS
from scheda.stores.evals import EvalStore
from tests.conftest import SCIENCE
from tests.needs import SHARED_DATA as SHARED

needs_mmlu = pytest.mark.usefixtures("mmlu_data")
TEXTS = [
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Il gatto dorme sul divano mentre fuori piove.",
]
# llama.cpp runs the Q4_1 weights with activations rounded to 8 bits (its Q8_1 dot
# products); transformers runs the same weights dequantized to float16, in float32.
# That rounding moves a token's log-probability by a few hundredths of a nat on average,
# and by more on the odd unlikely token, by an amount that depends on which SIMD kernels
# llama.cpp was built with. Measured on the three texts below: mean 0.04-0.12 and worst
# 0.38 nats with the AVX2 build the Makefile makes, mean 0.04-0.12 and worst 0.24 with an
# AVX-512 build. A scorer reading the wrong position is off by several nats on most
# tokens, so both bounds still catch it, and both are far below the gaps between choices
# that decide an answer.
TOLERANCE_NATS = 0.5  # any one token
MEAN_TOLERANCE_NATS = 0.15  # the mean over a text


@pytest.fixture(scope="module")
def gguf_scorer(smollm_path: Path) -> Iterator[LlamaCppScorer]:
    with LlamaCppScorer(smollm_path, context=2048) as s:
        yield s


@pytest.fixture(scope="module")
def hf_scorer(smollm_hf: Path) -> Iterator[TransformersScorer]:
    with TransformersScorer(smollm_hf, context=2048) as s:
        yield s


# The scorers' heavy packages, watched in a fresh process (this one has loaded them all).
BACKEND_PACKAGES = ("llama_cpp", "torch", "transformers")


def _loaded_after(code: str) -> list[str]:
    """Which of BACKEND_PACKAGES a fresh interpreter has loaded after running `code`."""
    watch = (
        f"import json, sys\nprint(json.dumps(sorted(set({BACKEND_PACKAGES!r}) & set(sys.modules))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{watch}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_scorer_contract_loads_no_backend() -> None:
    assert _loaded_after("import scheda.evaluation.scorer") == []
    # The modules that open a scorer import the contract, not a backend.
    assert _loaded_after("import scheda.evaluation.base, scheda.evaluation.compare") == []


def test_open_scorer_loads_only_the_backend_asked_for(smollm_path: Path) -> None:
    code = (
        "from pathlib import Path\nfrom scheda.evaluation.scorer import open_scorer\n"
        f"open_scorer(Path({str(smollm_path)!r}), context=256).close()"
    )
    assert _loaded_after(code) == ["llama_cpp"]


@pytest.mark.slow
def test_the_two_scorers_agree_token_by_token(
    gguf_scorer: LlamaCppScorer, hf_scorer: TransformersScorer
) -> None:
    for text in TEXTS:
        tokens = gguf_scorer.tokenize(text)
        assert hf_scorer.tokenize(text) == tokens
        a, b = gguf_scorer.score(tokens, 1), hf_scorer.score(tokens, 1)
        assert len(a.logprobs) == len(b.logprobs) == len(tokens) - 1
        gaps = [abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)]
        assert max(gaps) < TOLERANCE_NATS, (text, max(gaps))
        assert sum(gaps) / len(gaps) < MEAN_TOLERANCE_NATS, (text, sum(gaps) / len(gaps))
        agree = sum(x == y for x, y in zip(a.greedy, b.greedy, strict=True)) / len(a.greedy)
        assert agree >= 0.9


def test_known_logprob_is_not_shifted(gguf_scorer: LlamaCppScorer) -> None:
    """ " of" after "The capital" is likely (about -0.3), not the -10 a shifted reading gives."""
    scored, n = gguf_scorer.loglikelihood("The capital", " of")
    assert n == 1
    assert -0.6 < scored.total < -0.1
    assert scored.is_greedy


@pytest.mark.parametrize("make", ["gguf_scorer", pytest.param("hf_scorer", marks=pytest.mark.slow)])
def test_a_reused_prefix_gives_the_same_numbers(make: str, request: pytest.FixtureRequest) -> None:
    scorer: Scorer = request.getfixturevalue(make)
    prefix = "Question: what is two plus two?\nAnswer:"
    first, _ = scorer.loglikelihood(prefix, " four")
    scorer.loglikelihood(prefix, " five")  # the cache now holds the prefix and " five"
    again, _ = scorer.loglikelihood(prefix, " four")
    assert again.logprobs == pytest.approx(first.logprobs, abs=1e-3)
    tokens = scorer.tokenize(prefix + " four")
    scorer.score(scorer.tokenize("Something else entirely."), 1)  # a cold cache
    cold = scorer.score(tokens, len(tokens) - len(first.logprobs))
    assert cold.logprobs == pytest.approx(first.logprobs, abs=1e-3)


@pytest.mark.parametrize("make", ["gguf_scorer", pytest.param("hf_scorer", marks=pytest.mark.slow)])
def test_scorer_refuses_nothing_to_score_in_one_line(
    make: str, request: pytest.FixtureRequest
) -> None:
    """An empty text, or a start outside it, is the caller's to fix: a UsageError, not a crash."""
    scorer: Scorer = request.getfixturevalue(make)
    tokens = scorer.tokenize("The capital")
    for call in (
        lambda: scorer.score([], 1),
        lambda: scorer.score(tokens, 0),
        lambda: scorer.score(tokens, len(tokens) + 1),
        lambda: scorer.next_logprobs([]),
    ):
        with pytest.raises(UsageError) as error:
            call()
        assert "\n" not in str(error.value) and ": " in str(error.value)


@pytest.mark.parametrize("make", ["gguf_scorer", pytest.param("hf_scorer", marks=pytest.mark.slow)])
def test_one_pass_for_single_token_choices(make: str, request: pytest.FixtureRequest) -> None:
    """MMLU's letters come from one next-token distribution; the same as one at a time."""
    scorer: Scorer = request.getfixturevalue(make)
    context = "Which planet is red?\nA. Mars\nB. Venus\nC. Earth\nD. Jupiter\nAnswer:"
    letters = [" A", " B", " C", " D"]
    together = scorer.choices(context, letters)
    one_by_one = [scorer.loglikelihood(context, c)[0] for c in letters]
    assert [len(s.logprobs) for s in together] == [1, 1, 1, 1]
    assert [s.total for s in together] == pytest.approx([s.total for s in one_by_one], abs=1e-3)
    assert [s.is_greedy for s in together] == [s.is_greedy for s in one_by_one]


# Choices decoded together against one at a time. transformers in float32 computes the
# same sums with the tails stacked along the batch: the same numbers but for rounding.
# llama.cpp's CPU matrix kernels change with the number of tokens in a batch (here the
# numbers are identical up to 62 tokens and move from 68). With Q4_1 weights and 8-bit
# activations the two paths differ as the two engines do: a few hundredths of a nat on
# average, a few tenths at worst on an unlikely token, neither nearer to float32.
# On a GPU transformers loads the folder in float16, whose GEMM kernels also change with
# the batch's shape: 0.004 nats on average and 0.02 at most were seen on an H100.
BATCHED = {"gguf_scorer": (0.1, 0.5), "hf_scorer": (1e-4, 1e-3), "half": (0.02, 0.1)}


def batched_tolerance(scorer: Scorer) -> tuple[float, float]:
    """(mean, max) nats allowed between choices decoded together and one at a time."""
    if isinstance(scorer, LlamaCppScorer):
        return BATCHED["gguf_scorer"]
    assert isinstance(scorer, TransformersScorer)
    full = scorer.engine.dtype == torch.float32
    return BATCHED["hf_scorer" if full else "half"]


def assert_batched_close(scorer: Scorer, together: list[Scored], one_by_one: list[Scored]) -> None:
    assert [len(s.logprobs) for s in together] == [len(s.logprobs) for s in one_by_one]
    gaps = [
        abs(x - y)
        for a, b in zip(together, one_by_one, strict=True)
        for x, y in zip(a.logprobs, b.logprobs, strict=True)
    ]
    mean, worst = batched_tolerance(scorer)
    assert sum(gaps) / len(gaps) <= mean and max(gaps) <= worst, (sum(gaps) / len(gaps), max(gaps))


QUESTION = "Question: Which of these animals lives in the sea?\nAnswer:"
ANSWERS = [
    " the octopus, which has eight arms",
    " a camel",
    " the red fox of the northern forests",
    " cows",
    " an eagle that nests on high cliffs over the valley",
]


@pytest.mark.parametrize("make", ["gguf_scorer", pytest.param("hf_scorer", marks=pytest.mark.slow)])
def test_choices_decoded_together_score_as_one_by_one(
    make: str, request: pytest.FixtureRequest
) -> None:
    scorer: Scorer = request.getfixturevalue(make)
    one_by_one = [scorer.loglikelihood(QUESTION, c)[0] for c in ANSWERS]
    together = scorer.choices(QUESTION, ANSWERS)
    assert min(len(s.logprobs) for s in together) == 1 < max(len(s.logprobs) for s in together)
    assert_batched_close(scorer, together, one_by_one)
    # The decision is the same: the likeliest answer, in total and per token.
    best = max(range(len(ANSWERS)), key=lambda i: together[i].total)
    assert best == max(range(len(ANSWERS)), key=lambda i: one_by_one[i].total)


@pytest.mark.slow
@pytest.mark.parametrize("make", ["gguf_scorer", pytest.param("hf_scorer", marks=pytest.mark.slow)])
def test_more_choices_than_one_batch_holds(make: str, request: pytest.FixtureRequest) -> None:
    """40 choices go in groups; afterwards the cache holds the question alone, nothing of
    the choices: the next score is the same as on a cold cache."""
    scorer: Scorer = request.getfixturevalue(make)
    answers = [f" answer number {i} of many" for i in range(40)]
    together = scorer.choices(QUESTION, answers)
    assert len(together) == 40
    one_by_one = [scorer.loglikelihood(QUESTION, c)[0] for c in answers[::13]]
    assert_batched_close(scorer, together[::13], one_by_one)
    scorer.choices(QUESTION, answers)
    warm, _ = scorer.loglikelihood(QUESTION, " a shark")
    scorer.score(scorer.tokenize("Something else entirely."), 1)  # a cold cache
    cold, _ = scorer.loglikelihood(QUESTION, " a shark")
    assert warm.logprobs == pytest.approx(cold.logprobs, abs=batched_tolerance(scorer)[1])


@pytest.mark.slow
def test_choices_longer_than_a_batch(smollm_path: Path) -> None:
    """Tails over llama.cpp's batch are scored by the chunked path, unchanged. A batch of
    64 tokens and tails of 80 take the path 512 and 530 would, at a sixth of the cost."""
    scorer = LlamaCppScorer(smollm_path, context=512, batch=64)
    long = [" " + " ".join(["sea"] * 80), " " + " ".join(["land"] * 80)]
    try:
        together = scorer.choices(QUESTION, long)
        assert min(len(s.logprobs) for s in together) > scorer.n_batch
        one_by_one = [scorer.loglikelihood(QUESTION, c)[0] for c in long]
    finally:
        scorer.close()
    for a, b in zip(together, one_by_one, strict=True):
        assert a.total == pytest.approx(b.total, abs=1e-3)


def test_trailing_space_moves_to_the_continuation(gguf_scorer: LlamaCppScorer) -> None:
    a, _ = gguf_scorer.loglikelihood("The capital of France is ", "Paris")
    b, _ = gguf_scorer.loglikelihood("The capital of France is", " Paris")
    assert a.logprobs == pytest.approx(b.logprobs)


# A few-shot header of about 100 tokens shared by every question, as MMLU's subjects have.
HEADER = "The following are questions about animals, with answers.\n\n" + "".join(
    f"Question: Which sound does a {animal} make?\nAnswer: {sound}\n\n"
    for animal, sound in [
        ("dog", "it barks"),
        ("cat", "it meows"),
        ("cow", "it moos"),
        ("duck", "it quacks"),
        ("sheep", "it bleats"),
    ]
)
ITEMS = [
    (HEADER + "Question: Which sound does a frog make?\nAnswer:", [" A", " B", " C", " D"]),
    (HEADER + "Question: Which sound does a pig make?\nAnswer:", [" it oinks", " it sings"]),
    (QUESTION, ANSWERS[:3]),
    (HEADER + "Question: Which sound does a crow make?\nAnswer:", [" A", " B"]),
]


def scored_items(scorer: Scorer, items: list[tuple[str, list[str]]]) -> list[list[Scored]]:
    return [scorer.choices(context, choices) for context, choices in items]


@pytest.mark.slow
def test_an_items_figures_do_not_depend_on_what_came_before(
    gguf_scorer: LlamaCppScorer,
) -> None:
    """Bit for bit, whatever the cache held: the items in order, reversed, and each after
    a text that shares some of the header (or nothing of it)."""
    in_order = scored_items(gguf_scorer, ITEMS)
    assert scored_items(gguf_scorer, ITEMS[::-1]) == in_order[::-1]
    mixed = []
    for cut, item in zip((150, 31, 0, 97), ITEMS, strict=True):
        # The previous call shares the first `cut` characters of the header only.
        gguf_scorer.loglikelihood(HEADER[:cut] + " A zebra", " crossing")
        mixed += scored_items(gguf_scorer, [item])
    assert mixed == in_order


def decoded_batches(scorer: LlamaCppScorer, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the batches the scorer decodes from now on, in order."""
    decoded: list[int] = []
    decode = scorer._decode

    def counting(chunk: list[int], *args: int, **kwargs: int) -> list[tuple[int, int]]:
        decoded.append(len(chunk))
        return decode(chunk, *args, **kwargs)

    monkeypatch.setattr(scorer, "_decode", counting)
    return decoded


@pytest.mark.slow
def test_echo_recalls_the_rows_of_shared_blocks_bit_for_bit(
    gguf_scorer: LlamaCppScorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prompts scored from their first token (echo's), one after another, that differ
    only at their ends: the rows of the blocks they share are recalled, not decoded
    again, and every figure is what a scorer with an empty cache gives."""
    question = HEADER + "Question: Which sound does a frog make?\nAnswer:"
    prompts = [gguf_scorer.tokenize(question + end) for end in (" A", " B", " it croaks")]
    decoded = decoded_batches(gguf_scorer, monkeypatch)
    in_turn = []
    for prompt in prompts:
        decoded.clear()
        in_turn.append(gguf_scorer.score(prompt, 1, top=2))
        assert sum(decoded) < len(prompt) or not in_turn[:-1]  # the first decodes it all
    assert in_turn[1].logprobs[:-1] == in_turn[0].logprobs[:-1]
    alone = []
    for prompt in prompts:
        gguf_scorer.chunk_logits(prompt[:8], 0)  # the cache emptied: nothing to recall
        alone.append(gguf_scorer.score(prompt, 1, top=2))
    assert in_turn == alone
    again = gguf_scorer.score(prompts[2], 5, top=2)  # from another token: decoded anew
    assert again.logprobs == alone[2].logprobs[4:]


@pytest.mark.slow
def test_an_items_figures_do_not_depend_on_the_thread_count(smollm_path: Path) -> None:
    """One thread (a Ray worker's) and two give the same bits. The hard case: a last
    block of one token after more than 512 cells, where llama.cpp's flash attention
    would split the cache among the threads."""
    with (
        LlamaCppScorer(smollm_path, context=2048, threads=1) as one,
        LlamaCppScorer(smollm_path, context=2048, threads=2) as two,
    ):
        tokens = one.tokenize(" ".join(f"word{i}" for i in range(200)))[:513]
        assert one.blocks(tokens)[-2:] == [512, 513]  # the last block is one token
        assert np.array_equal(one.next_logprobs(tokens), two.next_logprobs(tokens))


def test_a_shared_header_is_decoded_once(
    gguf_scorer: LlamaCppScorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the first question, each further one decodes its own tokens alone: the
    header ends with a blank line, where a block ends. A prefix that does not is
    decoded again from its last whole block at most."""
    decoded = decoded_batches(gguf_scorer, monkeypatch)
    # Its tokens as a question sees them: the last blank line is two newline tokens there
    # (and one "\n\n" token at the end of the text alone).
    header = len(gguf_scorer.tokenize(HEADER[:-1])) + 1
    assert header > gguf_scorer.block
    scored_items(gguf_scorer, [ITEMS[0]])
    for context, choices in (ITEMS[1], ITEMS[3]):
        decoded.clear()
        scored_items(gguf_scorer, [(context, choices)])
        assert sum(decoded) == len(gguf_scorer.tokenize(context)) - header
    # The same questions after a header without its last blank line.
    cut = HEADER.rstrip("\n")
    gguf_scorer.choices(cut + " Question: Which sound does a frog make?\nAnswer:", [" A"])
    decoded.clear()
    context = cut + " Question: Which sound does a crow make?\nAnswer:"
    gguf_scorer.choices(context, [" A", " B"])
    shared = len(gguf_scorer.tokenize(cut + " Question: Which sound does a"))
    own = len(gguf_scorer.tokenize(context)) - shared
    assert own < sum(decoded) < own + gguf_scorer.block


# -- MMLU ------------------------------------------------------------------------------------


class ConstantScorer(Scorer):
    """A baseline that always answers one letter: it must score that letter's share."""

    context = 100_000

    def __init__(self, letter: str) -> None:
        self.letter = letter

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return [ord(c) for c in text]

    def piece(self, token: int) -> str:
        return chr(token)

    def next_logprobs(self, tokens: Sequence[int]) -> np.ndarray:
        lp = np.full(256, -5.0)
        lp[ord(self.letter)] = 0.0
        return lp

    def score(self, tokens: Sequence[int], start: int, top: int = 0) -> Scored:
        picked = tokens[start:] == [ord(" "), ord(self.letter)]
        return Scored((0.0 if picked else -5.0,) * (len(tokens) - start), (picked,))

    @property
    def vocab_size(self) -> int:
        return 256

    def bos(self) -> int | None:
        return None

    def chunk_logits(self, tokens: Sequence[int], first: int) -> np.ndarray:
        rows = range(first, len(tokens) - 1)
        return np.stack([self.next_logprobs(tokens[: i + 1]) for i in rows])


@needs_mmlu
def test_constant_answer_scores_its_share() -> None:
    task = MMLU(limit=20, data_dir=SHARED)
    items = task.items()
    model = EvalModel(Path("unused"))
    model._scorer = ConstantScorer("C")
    results = list(task.run(items, model))
    share = sum(i.data["gold"] == LETTERS.index("C") for i in items) / len(items)
    assert sum(r.metrics["acc"] for r in results) / len(results) == pytest.approx(share)
    assert len(results) == 57 * 20


@needs_mmlu
def test_mmlu_prompt_is_lm_evals() -> None:
    task = MMLU(shots=2, limit=1, data_dir=SHARED, subjects=["astronomy"])
    [item] = task.items()
    context = item.data["context"]
    assert context.startswith(
        "The following are multiple choice questions (with answers) about astronomy.\n\n"
    )
    assert context.count("\nAnswer:") == 3 and context.endswith("\nAnswer:")
    assert "\nA. " in context and "\nD. " in context
    # No dev split here: the exemplars are the first test rows, and are not scored.
    assert item.key == "astronomy/2"
    assert "no dev split" in task.config()["exemplars"]


@pytest.mark.slow
@needs_mmlu
def test_mmlu_on_the_model_is_repeatable_and_resumes(smollm_path: Path, tmp_path: Path) -> None:
    subjects = ["astronomy", "marketing"]
    store = EvalStore(tmp_path / "evals.sqlite3")
    model = EvalModel(smollm_path, context=2048)
    try:
        whole, summary = run_task(
            MMLU(limit=3, data_dir=SHARED, subjects=subjects, shots=2), model, store, "default"
        )
        assert summary["items"] == 6 and set(summary["groups"]) == set(subjects)

        class Stop(Exception):
            pass

        def stop_after_three(done: int, total: int) -> None:
            if done == 3:
                raise Stop

        task = MMLU(limit=3, data_dir=SHARED, subjects=subjects, shots=1)  # another run
        with pytest.raises(Stop):
            run_task(task, model, store, "default", stop_after_three)
        seen: list[int] = []
        run, resumed = run_task(task, model, store, "default", lambda d, t: seen.append(d))
        assert seen[0] == 3 and seen[-1] == 6  # it went on from the fourth item
        assert resumed["items"] == 6 and run.id != whole.id
        # Same run, same numbers: the first configuration again, from scratch.
        other = EvalStore(tmp_path / "other.sqlite3")
        again_run, again = run_task(
            MMLU(limit=3, data_dir=SHARED, subjects=subjects, shots=2), model, other, "default"
        )
        assert again["metrics"] == summary["metrics"]
        details = [r.detail["logliks"] for r in other.results(again_run.id)]
        assert details == [r.detail["logliks"] for r in store.results(whole.id)]
        other.close()
    finally:
        model.close()
        store.close()


# -- any multiple choice from JSONL ----------------------------------------------------------


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


ARC_LIKE: list[dict[str, Any]] = [
    *SCIENCE,
    {
        "question": "How many legs has a spider?",
        "choices": ["six", "eight"],
        "answer": 1,
        "split": "fewshot",
    },
]


@pytest.mark.slow
def test_jsonl_multiple_choice(smollm_path: Path, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "science.jsonl", ARC_LIKE)
    task = JsonlChoice(path, shots=1)
    assert task.name == "science" and len(task.items()) == 3
    assert task.prefix == "How many legs has a spider?\nAnswer: eight\n\n"
    model = EvalModel(smollm_path, context=2048)
    try:
        results = list(task.run(task.items(), model))
    finally:
        model.close()
    assert [r.key for r in results] == ["0", "1", "2"]
    for r in results:
        assert set(r.metrics) == {"acc", "acc_norm"}
        assert len(r.detail["logliks"]) == len(ARC_LIKE[int(r.key)]["choices"])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not JSON"),
        ('{"choices": ["a", "b"], "answer": 0}', "'question'"),
        ('{"question": "q", "choices": ["a"], "answer": 0}', "at least two"),
        ('{"question": "q", "choices": ["a", "b"], "answer": 2}', "index of the right choice"),
    ],
)
def test_bad_jsonl_says_which_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "ok", "choices": ["a", "b"], "answer": 1}\n' + line + "\n")
    with pytest.raises(UsageError, match=message) as error:
        JsonlChoice(path)
    assert "bad.jsonl:2" in str(error.value)


def test_unknown_task_is_one_line() -> None:
    with pytest.raises(
        UsageError,
        match=r"unknown task 'mmlux': known are mmlu, agieval, commonsense_qa, .*, "
        r"truthfulqa_mc2, or a path",
    ):
        make_task("mmlux", None, None, None)


def test_each_task_is_declared_once_in_the_registry() -> None:
    """A task made from its name takes the registry's default shots, and its published label is
    a row of the catalog's spec sheets; the task classes read their defaults (shots, version)
    from their entry, so a class made directly agrees with one made from its name."""
    from scheda import catalog

    rows = set()
    for name in catalog.names():
        found = catalog.lookup(name)
        assert found is not None
        rows |= {*found[0].benchmarks, *found[0].instruct_benchmarks}
    # every row of every card has its task, and every task's label is a card's row (or none)
    assert rows <= {info.published for info in TASKS.values()}
    for name, info in TASKS.items():
        module, _, class_name = info.runs.partition(":")
        task_class = getattr(importlib.import_module(module), class_name)
        assert task_class.name == name and task_class.version == info.version >= 1
        assert info.metric in task_class.metrics or name == "humaneval", name
        assert published_label(name) == info.published
        assert info.published is None or info.published in rows
        assert info.method
    for name in ("mmlu", "gsm8k", "humaneval"):
        task = make_task(name, None, 1, SHARED)
        assert (task.name, task.shots) == (name, TASKS[name].shots)
        assert TASKS[name].runs.endswith(":" + type(task).__name__)
    assert MMLU(limit=1, data_dir=SHARED).shots == TASKS["mmlu"].shots == 5
    assert GSM8K().shots == TASKS["gsm8k"].shots == 8
    assert published_label("mine.jsonl") is None


def test_a_new_task_version_is_a_run_of_its_own(tmp_path: Path) -> None:
    """A task's first version adds nothing to a run's config (runs stored before versions
    resume); a later one is part of it, so an earlier version's run is not resumed as it."""
    task = make_task("gsm8k", None, 1, SHARED)
    model = tmp_path / "model.gguf"
    with EvalStore(tmp_path / "evals.sqlite3") as store:
        first, _, _ = open_run(task, store, "model", model, 1)
        assert "version" not in first.config
        assert open_run(task, store, "model", model, 1)[0].id == first.id  # resumed
        task.version = 2
        second, _, _ = open_run(task, store, "model", model, 1)
        assert second.id != first.id and second.config["version"] == 2


# -- the command -----------------------------------------------------------------------------


def scheda(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SCHEDA_DATA_DIR": str(data)}
    return subprocess.run(
        [sys.executable, "-m", "scheda", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.slow
def test_cli_runs_lists_and_reports(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "science.jsonl", ARC_LIKE)
    done = scheda("eval", "default", "--tasks", str(path), "--json", data=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    [summary] = report["results"]
    assert summary["task"] == "science" and summary["items"] == 3
    assert set(summary["metrics"]) == {"acc", "acc_norm"}
    listed = scheda("eval", "list", "--json", data=tmp_path)
    [run] = json.loads(listed.stdout)
    assert run["id"] == summary["run"] and run["summary"]["items"] == 3
    table = scheda("eval", "default", "--tasks", str(path), data=tmp_path)
    assert "science" in table.stdout and "acc_norm" in table.stdout


def test_cli_bad_task_is_one_line(tmp_path: Path) -> None:
    done = scheda("eval", "default", "--tasks", "nope", data=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: unknown task 'nope'")
    assert len(done.stderr.strip().splitlines()) == 1


def test_results_keep_their_group(tmp_path: Path) -> None:
    store = EvalStore(tmp_path / "e.sqlite3")
    run = store.start("m", tmp_path, "t", {"shots": 0}, 1)
    store.add(run.id, ItemResult("k", {"acc": 1.0}, {"x": 1}, "g"))
    [back] = store.results(run.id)
    assert (back.key, back.group, back.metrics) == ("k", "g", {"acc": 1.0})
    assert store.start("m", tmp_path, "t", {"shots": 0}, 1).id == run.id  # unfinished: resumed
    store.finish(run.id, {"items": 1})
    assert store.start("m", tmp_path, "t", {"shots": 0}, 1).id != run.id
    store.close()
