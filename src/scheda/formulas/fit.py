"""How much memory a model needs: pure, cited formulas, checked against llama.cpp.

    total = weights + KV cache + compute buffer + output buffer + runtime

- Weights: the file's own tensor bytes, or, for another precision, matrix
  parameters at that type's bits per weight plus 1-D tensors (norms, biases)
  at F32, which llama.cpp's quantizers keep. Bits per weight are GGML's block
  sizes (gguf-py's GGML_QUANT_SIZES: Q8_0 is 34 bytes per 32 weights = 8.5
  bits, Q4_0 18 per 32 = 4.5, not 4); Q4_K_M mixes Q4_K (4.5) with Q6_K
  (6.5625) for half the attn_v/ffn_down tensors and the output head: 4.85 on
  average, as published GGUF files of Llama 2 7B (4.84) and Llama 3 8B (4.90)
  show.
- KV cache: 2 (K and V) x layers x KV heads x head dim x positions x batch x
  bytes per element (F16 = 2, llama.cpp's default). GQA shrinks it by the
  group size; a sliding window (Mistral v0.1: 4096) caps the positions.
- Compute buffer: llama.cpp reserves its graph for the worst micro-batch
  (n_ubatch = 512 tokens, or the context if smaller): the live activations,
  about ubatch x 4 bytes x (3 x ffn + 5 x hidden), plus the F16 attention
  mask of ubatch x context with flash attention. Calibrated against llama.cpp's
  own `sched_reserve` figures on the embedded model (15.0, 16.6 and 22.0 MiB
  at contexts 512, 2048 and 8192; this formula gives 15.1, 16.6 and 22.6).
- Output buffer: the logits of one output row per sequence, vocab x 4 bytes.
- Runtime: the engine's own tables (the vocabulary, merges, the token-piece
  cache, server state): 8 MiB plus 160 bytes per vocabulary entry, calibrated
  on the embedded model's measured process memory (`scheda fit --measure`).

The articles' rule of thumb (5, 2.5 and 1.25 GB per billion parameters at
FP32, FP16 and INT8) sits beside it for comparison.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from scheda import settings
from scheda.spec import ModelSpec

MiB = 1 << 20
GiB = 1 << 30

# name -> (bits per weight of a weight matrix, how it is stored)
PRECISIONS: dict[str, tuple[float, str]] = {
    "FP32": (32.0, "4 bytes a weight"),
    "FP16/BF16": (16.0, "2 bytes a weight"),
    "Q8_0": (8.5, "blocks of 32 int8 + one F16 scale"),
    "Q4_K_M": (4.85, "Q4_K with Q6_K for sensitive tensors"),
    "Q4_0": (4.5, "blocks of 32 4-bit + one F16 scale"),
}
# The articles: GB per billion parameters, weights plus about 25%.
RULE_OF_THUMB_GB_PER_B = {"FP32": 5.0, "FP16/BF16": 2.5, "Q8_0": 1.25}

KV_BYTES_F16 = 2
N_UBATCH = 512
RUNTIME_BASE = 8 * MiB
RUNTIME_PER_VOCAB = 160
CONTEXT_STEP = 256  # llama.cpp pads the context to this


@dataclass(frozen=True)
class Breakdown:
    """Bytes a model needs at one precision, context and batch."""

    precision: str
    context: int
    batch: int
    weights: int
    kv_cache: int
    compute_buffer: int
    output_buffer: int
    runtime: int

    @property
    def engine(self) -> int:
        """The engine's own memory: compute, output and runtime together."""
        return self.compute_buffer + self.output_buffer + self.runtime

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.engine

    def to_dict(self) -> dict[str, int | str]:
        return {**asdict(self), "engine": self.engine, "total": self.total}


def precisions_for(spec: ModelSpec) -> list[str]:
    """Standard precisions, and the file's own where it is one of a kind."""
    names = list(PRECISIONS)
    if spec.tensor_bytes:
        names.append("file")
    return names


def weight_bytes(spec: ModelSpec, precision: str) -> int:
    """Weights at a precision; "file" is the file's exact tensor bytes."""
    if precision == "file":
        if not spec.tensor_bytes:
            # A bug, not a user's mistake: `estimate` asks for "file" only where the spec has it.
            raise ValueError(f"{spec.name} has no file to read its own size from")
        return spec.tensor_bytes
    bits, _ = PRECISIONS[precision]
    total = spec.parameters or 0
    vectors = min(spec.vector_parameters or 0, total)
    return round((total - vectors) * bits / 8 + vectors * 4)


def kv_positions(spec: ModelSpec, context: int) -> int:
    """Positions a layer keeps: the context, capped by a sliding window."""
    if spec.sliding_window:
        return min(context, spec.sliding_window)
    return context


def kv_cache_bytes(
    spec: ModelSpec, context: int, batch: int = 1, kv_bytes: int = KV_BYTES_F16
) -> int:
    """2 x layers x KV heads x head dim x positions x batch x bytes (zero for encoders)."""
    if spec.kind == "encoder":
        return 0
    per_position = 2 * (spec.layers or 0) * (spec.kv_heads or 0) * (spec.head_dim or 0)
    return per_position * kv_positions(spec, context) * batch * kv_bytes


def compute_buffer_bytes(spec: ModelSpec, context: int, batch: int = 1) -> int:
    """llama.cpp's worst-case graph reservation for one micro-batch."""
    ubatch = min(N_UBATCH, context * batch)
    hidden, ffn = spec.hidden or 0, spec.ffn or 4 * (spec.hidden or 0)
    activations = ubatch * 4 * (3 * ffn + 5 * hidden)
    mask = ubatch * context * 2
    return activations + mask


def output_buffer_bytes(spec: ModelSpec, batch: int = 1) -> int:
    return (spec.vocab_size or 0) * 4 * batch


def runtime_bytes(spec: ModelSpec) -> int:
    return RUNTIME_BASE + (spec.vocab_size or 0) * RUNTIME_PER_VOCAB


def estimate(
    spec: ModelSpec, precision: str = "file", context: int | None = None, batch: int = 1
) -> Breakdown:
    """The memory breakdown of a model at one precision, context and batch."""
    if precision == "file" and not spec.tensor_bytes:
        precision = "FP16/BF16"
    context = settings.context_for(context, spec.context)
    return Breakdown(
        precision=precision,
        context=context,
        batch=batch,
        weights=weight_bytes(spec, precision),
        kv_cache=kv_cache_bytes(spec, context, batch),
        compute_buffer=compute_buffer_bytes(spec, context, batch),
        output_buffer=output_buffer_bytes(spec, batch),
        runtime=runtime_bytes(spec),
    )


def rule_of_thumb_bytes(spec: ModelSpec, precision: str) -> int | None:
    """The articles' GB-per-billion figure, in bytes, where they give one."""
    per_b = RULE_OF_THUMB_GB_PER_B.get(precision)
    if per_b is None or not spec.parameters:
        return None
    return round(spec.parameters / 1e9 * per_b * 1e9)


def longest_context(spec: ModelSpec, precision: str, budget: int, batch: int = 1) -> int | None:
    """The longest context (a multiple of 256, up to the model's own) that fits a budget."""
    top = settings.model_context(spec.context)
    if estimate(spec, precision, min(CONTEXT_STEP, top), batch).total > budget:
        return None
    if estimate(spec, precision, top, batch).total <= budget:
        return top
    low, high = 1, top // CONTEXT_STEP  # in steps; low fits, high does not
    while high - low > 1:
        mid = (low + high) // 2
        if estimate(spec, precision, mid * CONTEXT_STEP, batch).total <= budget:
            low = mid
        else:
            high = mid
    return low * CONTEXT_STEP
