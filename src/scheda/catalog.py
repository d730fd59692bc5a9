"""The catalog: open model families the articles name, with their architecture numbers.

It lets `card` and `fit` work from a name with no file (`scheda fit
llama-3-70b --gpu t4`), and adds published facts (training tokens, cutoff,
licence terms, benchmark scores) to the card of a file whose architecture
numbers match a row. Every row's parameter count is recomputed from its
numbers by `decoder_parameters` and checked against the published count in
the tests.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from scheda.spec import ModelSpec

_LLAMA2_TERMS = (
    "Llama 2 Community License: commercial use allowed, but a product with over "
    "700 million monthly active users needs a separate licence from Meta; an "
    "acceptable-use policy applies; the outputs may not be used to improve other "
    "large language models."
)
_LLAMA3_TERMS = (
    "Meta Llama 3 Community License: commercial use allowed, but a product with over "
    "700 million monthly active users in the preceding month needs a separate licence "
    "from Meta; an acceptable-use policy applies; access needs a registration form."
)

# Meta's Llama 3 model card, as the articles quote it (base models).
_BASE_BENCHMARKS = {
    "llama-3-8b": (66.6, 45.9, 72.6, 76.1, 61.1, 78.6, 76.4, 44.4, 75.7, 58.4),
    "llama-2-7b": (45.7, 28.8, 57.6, 73.3, 38.1, 53.7, 72.2, 39.6, 65.5, 37.9),
    "llama-2-13b": (53.8, 38.7, 67.6, 75.4, 47.0, 67.6, 72.1, 44.9, 66.9, 49.8),
    "llama-3-70b": (79.5, 63.0, 83.8, 83.1, 81.3, 93.0, 85.6, 51.1, 79.0, 79.7),
    "llama-2-70b": (69.7, 54.8, 78.7, 81.8, 65.7, 85.3, 82.6, 49.4, 73.1, 70.2),
}
_BASE_BENCHMARK_NAMES = (
    "MMLU (5-shot)",
    "AGIEval English (3-5 shot)",
    "CommonSenseQA (7-shot)",
    "Winogrande (5-shot)",
    "BIG-Bench Hard (3-shot, CoT)",
    "ARC-Challenge (25-shot)",
    "SQuAD (1-shot)",
    "QuAC (1-shot, F1)",
    "BoolQ (0-shot)",
    "DROP (3-shot, F1)",
)
_INSTRUCT_BENCHMARK_NAMES = (
    "MMLU (5-shot)",
    "GPQA (0-shot)",
    "HumanEval (0-shot)",
    "GSM-8K (8-shot, CoT)",
    "MATH (4-shot, CoT)",
)
_INSTRUCT_BENCHMARKS = {
    "llama-3-70b": (82.0, 39.5, 81.7, 93.0, 50.4),
    "llama-2-70b": (52.9, 21.0, 25.6, 57.5, 11.6),
}


@dataclass(frozen=True)
class Family:
    """Facts shared by every size of one family."""

    name: str
    architecture: str
    tokenizer: str
    rope_base: float
    licence: str
    licence_terms: str
    training_tokens: str | None = None
    qkv_bias: bool = False
    sliding_window: int | None = None
    instruct_suffix: str = "instruct"


@dataclass(frozen=True)
class CatalogModel:
    """One row of the catalog: a model size with its architecture numbers."""

    name: str
    family: Family
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    tied: bool
    context: int
    published_parameters: int
    # False for rows whose published count is rounded ("about 33.3B").
    exact: bool = True
    cutoff: str | None = None
    training_tokens: str | None = None
    benchmarks: dict[str, float] = field(default_factory=dict)
    instruct_benchmarks: dict[str, float] = field(default_factory=dict)

    @property
    def vector_parameters(self) -> int:
        """Norm weights (two a layer and a final one) and Qwen's QKV biases."""
        count = 2 * self.layers * self.hidden + self.hidden
        if self.family.qkv_bias:
            count += self.layers * (self.heads + 2 * self.kv_heads) * self.head_dim
        return count

    def numbers(self) -> tuple[int, ...]:
        """The architecture fingerprint used to match a file to this row."""
        return (self.layers, self.hidden, self.heads, self.kv_heads, self.ffn, self.vocab)


def decoder_parameters(m: CatalogModel) -> int:
    """Parameters of a decoder-only transformer from its architecture numbers.

    Per layer: Q and O projections (hidden x heads*head_dim each), K and V
    (hidden x kv_heads*head_dim each: GQA shrinks them), a gated MLP of three
    hidden x ffn matrices, two norm vectors; QKV biases where the family has
    them (Qwen1.5). Then the token embeddings, the final norm and an output
    head unless it is tied to the embeddings.
    """
    q_and_o = 2 * m.hidden * m.heads * m.head_dim
    k_and_v = 2 * m.hidden * m.kv_heads * m.head_dim
    mlp = 3 * m.hidden * m.ffn
    norms = 2 * m.hidden
    bias = (m.heads + 2 * m.kv_heads) * m.head_dim if m.family.qkv_bias else 0
    per_layer = q_and_o + k_and_v + mlp + norms + bias
    embeddings = m.vocab * m.hidden
    head = 0 if m.tied else m.vocab * m.hidden
    return m.layers * per_layer + embeddings + m.hidden + head


LLAMA2 = Family(
    "Llama 2",
    "llama",
    "SentencePiece",
    10_000.0,
    "llama2",
    _LLAMA2_TERMS,
    training_tokens="2T (40% more than Llama 1)",
    instruct_suffix="chat",
)
LLAMA3 = Family(
    "Llama 3",
    "llama",
    "BPE",
    500_000.0,
    "llama3",
    _LLAMA3_TERMS,
    training_tokens="15T+ of publicly available online data (about 7x Llama 2, 4x the code)",
)
CODELLAMA = Family("Code Llama", "llama", "SentencePiece", 1_000_000.0, "llama2", _LLAMA2_TERMS)
GEMMA = Family(
    "Gemma",
    "gemma",
    "SentencePiece",
    10_000.0,
    "gemma",
    "Gemma Terms of Use: commercial use allowed under a prohibited-use policy.",
)
MISTRAL = Family(
    "Mistral",
    "llama",
    "SentencePiece",
    10_000.0,
    "apache-2.0",
    "Apache 2.0: no use restrictions.",
    sliding_window=4096,
)
QWEN15 = Family(
    "Qwen1.5",
    "qwen2",
    "BPE",
    1_000_000.0,
    "tongyi-qianwen",
    "Tongyi Qianwen licence: see the model card for commercial terms.",
    qkv_bias=True,
    instruct_suffix="chat",
)
PHI3 = Family("Phi-3", "phi3", "SentencePiece", 10_000.0, "mit", "MIT: no use restrictions.")
DEEPSEEK_CODER = Family(
    "DeepSeek-Coder",
    "llama",
    "BPE",
    100_000.0,
    "deepseek",
    "DeepSeek licence: commercial use allowed under a use policy.",
)


def _row(name: str, family: Family, numbers: str, published: int, **extra: object) -> CatalogModel:
    layers, hidden, heads, kv, head_dim, ffn, vocab, tied, context = numbers.split()
    base = _BASE_BENCHMARKS.get(name, ())
    instruct = _INSTRUCT_BENCHMARKS.get(name, ())
    return CatalogModel(
        name,
        family,
        int(layers),
        int(hidden),
        int(heads),
        int(kv),
        int(head_dim),
        int(ffn),
        int(vocab),
        tied == "yes",
        int(context),
        published,
        benchmarks=dict(zip(_BASE_BENCHMARK_NAMES, base, strict=False)),
        instruct_benchmarks=dict(zip(_INSTRUCT_BENCHMARK_NAMES, instruct, strict=False)),
        **extra,  # type: ignore[arg-type]
    )


# name, family, "layers hidden heads kv head_dim ffn vocab tied context", published count
MODELS: tuple[CatalogModel, ...] = (
    _row(
        "llama-2-7b",
        LLAMA2,
        "32 4096 32 32 128 11008 32000 no 4096",
        6_738_415_616,
        cutoff="September 2022",
    ),
    _row(
        "llama-2-13b",
        LLAMA2,
        "40 5120 40 40 128 13824 32000 no 4096",
        13_015_864_320,
        cutoff="September 2022",
    ),
    _row(
        "llama-2-70b",
        LLAMA2,
        "80 8192 64 8 128 28672 32000 no 4096",
        68_976_648_192,
        cutoff="September 2022",
    ),
    _row(
        "llama-3-8b",
        LLAMA3,
        "32 4096 32 8 128 14336 128256 no 8192",
        8_030_261_248,
        cutoff="March 2023",
    ),
    _row(
        "llama-3-70b",
        LLAMA3,
        "80 8192 64 8 128 28672 128256 no 8192",
        70_553_706_496,
        cutoff="December 2023",
    ),
    _row("gemma-2b", GEMMA, "18 2048 8 1 256 16384 256000 yes 8192", 2_506_172_416),
    _row("gemma-7b", GEMMA, "28 3072 16 16 256 24576 256000 yes 8192", 8_537_680_896),
    _row("mistral-7b", MISTRAL, "32 4096 32 8 128 14336 32000 no 32768", 7_241_732_096),
    _row("qwen1.5-0.5b", QWEN15, "24 1024 16 16 64 2816 151936 yes 32768", 463_987_712),
    _row("qwen1.5-1.8b", QWEN15, "24 2048 16 16 128 5504 151936 no 32768", 1_836_828_672),
    _row("qwen1.5-4b", QWEN15, "40 2560 20 20 128 6912 151936 no 32768", 3_950_369_280),
    _row("qwen1.5-7b", QWEN15, "32 4096 32 32 128 11008 151936 no 32768", 7_721_324_544),
    _row("qwen1.5-14b", QWEN15, "40 5120 40 40 128 13696 152064 no 32768", 14_167_290_880),
    _row("qwen1.5-32b", QWEN15, "64 5120 40 8 128 27392 152064 no 32768", 32_512_218_112),
    _row("qwen1.5-72b", QWEN15, "80 8192 64 64 128 24576 152064 no 32768", 72_287_920_128),
    _row("qwen1.5-110b", QWEN15, "80 8192 64 8 128 49152 152064 no 32768", 111_209_914_368),
    _row("phi-3-mini", PHI3, "32 3072 32 32 96 8192 32064 no 4096", 3_821_079_552),
    _row("phi-3-medium", PHI3, "40 5120 40 10 128 17920 32064 no 4096", 13_960_238_080),
    _row(
        "deepseek-coder-1.3b",
        DEEPSEEK_CODER,
        "24 2048 16 16 128 5504 32256 no 16384",
        1_346_471_936,
    ),
    _row(
        "deepseek-coder-6.7b",
        DEEPSEEK_CODER,
        "32 4096 32 32 128 11008 32256 no 16384",
        6_740_512_768,
    ),
    _row(
        "deepseek-coder-33b",
        DEEPSEEK_CODER,
        "62 7168 56 8 128 19200 32256 no 16384",
        33_300_000_000,
        exact=False,
    ),
    _row("codellama-7b", CODELLAMA, "32 4096 32 32 128 11008 32016 no 16384", 6_738_546_688),
    _row("codellama-13b", CODELLAMA, "40 5120 40 40 128 13824 32016 no 16384", 13_016_028_160),
    _row("codellama-34b", CODELLAMA, "48 8192 64 8 128 22016 32000 no 16384", 33_743_970_304),
    _row(
        "codellama-70b",
        CODELLAMA,
        "80 8192 64 8 128 28672 32016 no 16384",
        69_000_000_000,
        exact=False,
    ),
)

_BY_NAME = {m.name: m for m in MODELS}


def names() -> list[str]:
    """Every catalog name, in catalog order."""
    return [m.name for m in MODELS]


def _normalise(name: str) -> str:
    name = name.strip().lower().replace("_", "-").replace(" ", "-")
    name = name.removeprefix("meta-").replace("code-llama", "codellama")
    return (
        name.replace("llama3", "llama-3")
        .replace("llama2", "llama-2")
        .replace("mistral-7b-v0.1", "mistral-7b")
    )


def lookup(name: str) -> tuple[CatalogModel, bool] | None:
    """The catalog row for a name, and whether the name asked for the instruct/chat variant."""
    key = _normalise(name)
    if key in _BY_NAME:
        return _BY_NAME[key], False
    for suffix in ("-instruct", "-chat", "-it"):
        if key.endswith(suffix) and key[: -len(suffix)] in _BY_NAME:
            return _BY_NAME[key[: -len(suffix)]], True
    return None


def suggest(name: str) -> list[str]:
    """Close catalog names, for a 'did you mean' hint."""
    return difflib.get_close_matches(_normalise(name), names(), n=3, cutoff=0.6)


def match(spec: ModelSpec) -> CatalogModel | None:
    """The row whose architecture numbers equal a file's, if any."""
    numbers = (spec.layers, spec.hidden, spec.heads, spec.kv_heads, spec.ffn, spec.vocab_size)
    for m in MODELS:
        if m.numbers() == numbers:
            return m
    return None


def add_published_facts(spec: ModelSpec, m: CatalogModel, instruct: bool = False) -> None:
    """Copy a catalog row's published facts onto a spec read from a file or the catalog."""
    spec.family = m.family.name
    spec.catalog_name = m.name + (f"-{m.family.instruct_suffix}" if instruct else "")
    spec.published_parameters = m.published_parameters
    spec.training_tokens = m.training_tokens or m.family.training_tokens
    spec.knowledge_cutoff = m.cutoff
    spec.licence_terms = m.family.licence_terms
    spec.licence = spec.licence or m.family.licence
    spec.benchmarks = dict(m.instruct_benchmarks if instruct else m.benchmarks)


def with_published_facts(spec: ModelSpec) -> ModelSpec:
    """A spec read from a file, with the published facts of the row its numbers match.

    Readers say only what the file says; `resolve` calls this for every reader alike.
    A file that matches no row gets no facts: none is invented.
    """
    found = match(spec)
    if found is not None:
        add_published_facts(spec, found)
    return spec


def catalog_spec(m: CatalogModel, instruct: bool = False) -> ModelSpec:
    """A spec record for a catalog row: architecture numbers, no file."""
    spec = ModelSpec(
        name=m.name + (f"-{m.family.instruct_suffix}" if instruct else ""),
        source="catalog",
        architecture=m.family.architecture,
        parameters=decoder_parameters(m),
        vector_parameters=m.vector_parameters,
        layers=m.layers,
        hidden=m.hidden,
        heads=m.heads,
        kv_heads=m.kv_heads,
        head_dim=m.head_dim,
        ffn=m.ffn,
        context=m.context,
        rope_base=m.family.rope_base,
        sliding_window=m.family.sliding_window,
        vocab_size=m.vocab,
        tokenizer=m.family.tokenizer,
        tied_embeddings=m.tied,
        file_type="BF16",
    )
    add_published_facts(spec, m, instruct)
    if not m.exact:
        spec.notes.append(
            "the published count is rounded; the exact count here is computed from "
            "the architecture numbers"
        )
    return spec
