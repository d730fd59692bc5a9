"""Read a GGUF file's spec through the `gguf` package: metadata and tensor table only.

The reader memory-maps the file and never touches tensor data. A GGUF file is
untrusted input: any failure of the parser, and any tensor that would reach
past the end of the file, becomes one `ModelFileError` naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scheda.errors import ModelFileError
from scheda.readers.text import clean
from scheda.spec import ModelSpec, TensorGroup

GGUF_MAGIC = b"GGUF"

# tokenizer.ggml.model -> the tokenizer kind a spec sheet names.
TOKENIZER_KINDS = {
    "gpt2": "BPE",
    "llama": "SentencePiece",
    "bert": "WordPiece",
    "t5": "SentencePiece (Unigram)",
    "rwkv": "RWKV (greedy)",
    "plamo2": "PLaMo-2 (Aho-Corasick)",
}
# Architectures that encode only: no KV cache, no generation.
ENCODERS = {"bert", "nomic-bert", "jina-bert-v2", "t5encoder", "modern-bert"}
NAMES_KEPT = 2  # a tensor group lists its names only when this short


def read_gguf(path: Path) -> ModelSpec:
    """The spec of one GGUF file; raises ModelFileError for anything unreadable."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head != GGUF_MAGIC:
        raise ModelFileError(
            f"{path}: not a GGUF file (it starts with {head!r}, a GGUF file with b'GGUF')"
        )
    try:
        reader = _open_reader(path)
        spec = _spec_from_reader(path, reader)
    except ModelFileError:
        raise
    except Exception as exc:  # the parser's own errors: numpy, struct, unicode...
        raise ModelFileError(f"{path}: damaged GGUF header ({_describe(exc)})") from exc
    return spec


def _open_reader(path: Path) -> Any:
    import numpy as np
    from gguf import GGUFReader, GGUFValueType

    item_sizes: dict[Any, int] = {}

    class CheckedReader(GGUFReader):
        """GGUFReader that stops at the end of the file.

        gguf reads by slicing its memory map, so a read past the end yields a short
        or empty array instead of an error: an array of numbers whose length field
        is damaged then loops up to 2**64 times, growing a list each time (a hang
        that eats memory), and a tensor cut short fails in numpy's reshape.
        """

        def _get(self, offset: Any, dtype: Any, count: Any = 1, override_order: Any = None) -> Any:
            size = item_sizes.get(dtype) or item_sizes.setdefault(dtype, np.dtype(dtype).itemsize)
            end = int(offset) + size * int(count)
            if end > len(self.data):
                raise ModelFileError(
                    f"{path}: truncated: it needs bytes up to {end:,} but has {len(self.data):,}"
                )
            return super()._get(offset, dtype, count, override_order)

        def _get_field_parts(self, orig_offs: int, raw_type: int) -> Any:
            if raw_type == GGUFValueType.ARRAY:  # item type (u32), then item count (u64)
                count = int(self._get(orig_offs + 4, np.uint64)[0])
                if count > len(self.data) - orig_offs:  # every item takes a byte at least
                    raise ModelFileError(
                        f"{path}: damaged GGUF header: an array of {count:,} items "
                        f"at byte {orig_offs:,} cannot fit in the file"
                    )
            return super()._get_field_parts(orig_offs, raw_type)

    return CheckedReader(path, "r")


def _describe(exc: Exception) -> str:
    text = clean(exc, 120) or type(exc).__name__
    return text if len(text) > 3 else f"{type(exc).__name__}: {text}"


class _Fields:
    """Typed access to metadata values, with the architecture prefix filled in."""

    def __init__(self, reader: Any, path: Path) -> None:
        self.fields = reader.fields
        self.path = path
        self.arch = ""
        self.arch = str(self.get("general.architecture") or "")

    def get(self, key: str) -> Any:
        field = self.fields.get(key.replace("{arch}", self.arch))
        return None if field is None else field.contents()

    def integer(self, key: str) -> int | None:
        value = self.get(key)
        if isinstance(value, list):  # per-layer arrays: the largest layer decides memory
            value = max(value) if value else None
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._not_a_number(key, value)
        return int(value)

    def number(self, key: str) -> float | None:
        value = self.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._not_a_number(key, value)
        return float(value)

    def _not_a_number(self, key: str, value: Any) -> ModelFileError:
        key = key.replace("{arch}", self.arch)
        return ModelFileError(
            f"{self.path}: metadata {clean(key, 60)} should be a number, found {clean(value, 40)!r}"
        )


def _spec_from_reader(path: Path, reader: Any) -> ModelSpec:
    meta = _Fields(reader, path)
    if not meta.arch:
        raise ModelFileError(f"{path}: GGUF file without general.architecture")
    file_size = path.stat().st_size
    groups, parameters, vectors, tensor_bytes, names = _tensor_table(path, reader, file_size)

    heads = meta.integer("{arch}.attention.head_count")
    hidden = meta.integer("{arch}.embedding_length")
    head_dim = meta.integer("{arch}.attention.key_length")
    if head_dim is None and heads and hidden:
        head_dim = hidden // heads
    tokens = meta.fields.get("tokenizer.ggml.tokens")
    vocab = meta.integer("{arch}.vocab_size") or (len(tokens.data) if tokens else None)
    tok_model = meta.get("tokenizer.ggml.model")
    file_type = meta.integer("general.file_type")

    spec = ModelSpec(
        name=clean(meta.get("general.name") or path.stem),
        source="gguf",
        path=str(path),
        architecture=clean(meta.arch),
        kind="encoder" if meta.arch in ENCODERS else "decoder",
        parameters=parameters,
        vector_parameters=vectors,
        layers=meta.integer("{arch}.block_count"),
        hidden=hidden,
        heads=heads,
        kv_heads=meta.integer("{arch}.attention.head_count_kv") or heads,
        head_dim=head_dim,
        ffn=meta.integer("{arch}.feed_forward_length"),
        context=meta.integer("{arch}.context_length"),
        rope_base=meta.number("{arch}.rope.freq_base"),
        sliding_window=meta.integer("{arch}.attention.sliding_window"),
        vocab_size=vocab,
        tokenizer=TOKENIZER_KINDS.get(str(tok_model), clean(tok_model) if tok_model else None),
        tokenizer_detail=_tokenizer_detail(meta),
        tied_embeddings="output.weight" not in names,
        file_type=_file_type_name(file_type, groups),
        quantization=groups,
        tensor_bytes=tensor_bytes,
        file_size=file_size,
        licence=clean(meta.get("general.license")) if meta.get("general.license") else None,
        chat_template=bool(meta.get("tokenizer.chat_template")),
    )
    return spec


def _tensor_table(
    path: Path, reader: Any, file_size: int
) -> tuple[dict[str, TensorGroup], int, int, int, set[str]]:
    """Group tensors by storage type; check that each one lies inside the file."""
    groups: dict[str, TensorGroup] = {}
    parameters = vectors = total_bytes = 0
    names: set[str] = set()
    for tensor in reader.tensors:
        n_elements, n_bytes = int(tensor.n_elements), int(tensor.n_bytes)
        end = int(tensor.data_offset) + n_bytes
        if end > file_size:
            raise ModelFileError(
                f"{path}: truncated: tensor {clean(tensor.name, 60)} ends at byte {end:,} "
                f"but the file has {file_size:,} bytes"
            )
        group = groups.setdefault(tensor.tensor_type.name, TensorGroup())
        group.tensors += 1
        group.parameters += n_elements
        group.bytes += n_bytes
        if len(group.names) <= NAMES_KEPT:
            group.names.append(clean(tensor.name, 60))
        parameters += n_elements
        total_bytes += n_bytes
        if len([d for d in tensor.shape if int(d) > 1]) <= 1:
            vectors += n_elements
        names.add(str(tensor.name))
    for group in groups.values():
        if group.tensors > NAMES_KEPT:
            group.names = []
    if not groups:
        raise ModelFileError(f"{path}: the GGUF file holds no tensors")
    return groups, parameters, vectors, total_bytes, names


def _file_type_name(file_type: int | None, groups: dict[str, TensorGroup]) -> str:
    """`general.file_type` as llama.cpp names it (Q4_1), or the commonest tensor type."""
    if file_type is not None:
        from gguf import LlamaFileType

        try:
            return LlamaFileType(file_type).name.removeprefix("MOSTLY_").replace("ALL_", "")
        except ValueError:
            pass
    return max(groups.items(), key=lambda item: item[1].parameters)[0]


def _tokenizer_detail(meta: _Fields) -> str | None:
    model = meta.get("tokenizer.ggml.model")
    pre = meta.get("tokenizer.ggml.pre")
    parts = [
        f"model {clean(model, 40)}" if model else "",
        f"pre-tokenizer {clean(pre, 40)}" if pre else "",
    ]
    return ", ".join(p for p in parts if p) or None
