"""The spec record: what a model is, read from its file, folder or catalog row.

Every reader (GGUF, HF folder, catalog) fills one `ModelSpec`; `card` prints
it, `fit` computes memory from it, later engines load from its `path`.
Fields a source cannot tell stay `None`, and the card says "unknown".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TensorGroup:
    """All tensors of one storage type (Q4_1, F32, BF16...) in a file."""

    tensors: int = 0
    parameters: int = 0
    bytes: int = 0
    names: list[str] = field(default_factory=list)  # kept only while short


@dataclass
class GGUFFile:
    """One GGUF model a repository or folder holds: a file, or a split GGUF's parts."""

    file: str  # its name in the repository (a split GGUF's first part)
    size: int  # bytes, every part together
    quant: str | None  # the quantization its name tells (Q4_K_M), the tag that picks it
    parts: list[str] = field(default_factory=list)  # every file, in order (one if not split)


@dataclass
class RemoteRead:
    """What reading a spec from a Hub repository took, and the model files it lists."""

    repo: str  # org/name
    revision: str  # the commit read
    files_read: list[str]  # the files whose bytes were read
    bytes: int  # bytes of those files read
    requests: int  # HTTP requests, the repository listing's included
    ggufs: list[GGUFFile] = field(default_factory=list)  # a GGUF repository's models


@dataclass
class ModelSpec:
    """The spec sheet of one model. Counts are exact where the source is a file."""

    name: str
    source: str  # "gguf", "hf" or "catalog"
    path: str | None = None
    architecture: str | None = None
    kind: str = "decoder"  # "decoder" or "encoder"
    parameters: int | None = None
    # Elements of 1-D tensors (norms, biases): quantizers keep them in F32.
    vector_parameters: int | None = None
    layers: int | None = None
    hidden: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    ffn: int | None = None
    context: int | None = None
    rope_base: float | None = None
    sliding_window: int | None = None
    vocab_size: int | None = None
    tokenizer: str | None = None  # "BPE", "SentencePiece", "WordPiece", ...
    tokenizer_detail: str | None = None
    tied_embeddings: bool | None = None
    file_type: str | None = None  # the file's own precision label
    quantization: dict[str, TensorGroup] = field(default_factory=dict)
    tensor_bytes: int | None = None
    file_size: int | None = None
    licence: str | None = None
    # The model card's `base_model:` and `datasets:` (an HF folder's README.md front matter).
    base_model: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    chat_template: bool | None = None
    # Published facts, from the catalog family the model matched.
    family: str | None = None
    catalog_name: str | None = None
    published_parameters: int | None = None
    training_tokens: str | None = None
    knowledge_cutoff: str | None = None
    licence_terms: str | None = None
    benchmarks: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Set when the spec was read from a Hub repository over the network.
    remote: RemoteRead | None = None

    @property
    def attention(self) -> str | None:
        """MHA, GQA or MQA, from the query and KV head counts."""
        if not self.heads or not self.kv_heads:
            return None
        if self.kv_heads == self.heads:
            return "MHA"
        if self.kv_heads == 1:
            return "MQA"
        return "GQA"

    @property
    def gqa_group(self) -> int | None:
        """Query heads that share one KV head (1 for MHA)."""
        if not self.heads or not self.kv_heads:
            return None
        return self.heads // self.kv_heads

    @property
    def bits_per_weight(self) -> float | None:
        """Tensor bits over parameters: the weighted average over every tensor type."""
        if not self.tensor_bytes or not self.parameters:
            return None
        return self.tensor_bytes * 8 / self.parameters

    @property
    def file_bits_per_parameter(self) -> float | None:
        """Whole-file bits over parameters (metadata and vocabulary included)."""
        if not self.file_size or not self.parameters:
            return None
        return self.file_size * 8 / self.parameters

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape documented in docs/json.md."""
        data = asdict(self)
        data["attention"] = self.attention
        data["gqa_group"] = self.gqa_group
        data["bits_per_weight"] = _round(self.bits_per_weight)
        data["file_bits_per_parameter"] = _round(self.file_bits_per_parameter)
        return data


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
