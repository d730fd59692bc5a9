"""Read a GGUF file's spec: metadata and tensor table only, never the tensor data.

`gguf_header` walks the header lazily through a byte source; this module reads
the few values a spec sheet shows and groups the tensor table by storage type.
A split GGUF (`NAME-00001-of-00003.gguf`) is one model: the first part holds
the metadata, and every part the table of its own tensors, so each part's
header is read and their tables joined. The sources may be local files or HTTP
range requests (`readers/hub.py`). A GGUF file is untrusted input: anything
unreadable becomes one `ModelFileError` naming the file.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from scheda.errors import ModelFileError, SchedaError
from scheda.readers import gguf_types as keys
from scheda.readers.gguf_files import split_names, split_part
from scheda.readers.gguf_header import GGUFHeader, read_header
from scheda.readers.source import ByteSource, FileSource
from scheda.readers.text import clean
from scheda.spec import ModelSpec, TensorGroup

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
    """The spec of one GGUF file (of every part, from a split GGUF's first); raises
    ModelFileError for anything unreadable."""
    split = split_part(path.name)
    if split is not None and split[1] != 1:
        raise _not_first(str(path), split[1])
    parts = [path.with_name(name) for name in split_names(path.name)]
    with ExitStack() as stack:
        sources = []
        for part in parts:
            if part != path and not part.is_file():
                raise ModelFileError(
                    f"{path}: a split GGUF whose part {part.name} is missing beside it"
                )
            try:
                sources.append(stack.enter_context(FileSource(part)))
            except OSError as exc:
                raise ModelFileError(f"{part}: cannot be read ({exc.strerror or exc})") from exc
        return read_gguf_sources(sources, path.stem, str(path))


def read_gguf_sources(sources: list[ByteSource], stem: str, path: str) -> ModelSpec:
    """The spec of a GGUF model from its file's source, or its split parts' in order.
    `stem` names a model whose metadata names none; `path` is what the spec's path says."""
    headers = []
    for source in sources:
        try:
            headers.append(read_header(source))
        except SchedaError:  # a damaged file, or the network's error reading it
            raise
        except Exception as exc:  # a check the header reader lacks: still one line
            raise ModelFileError(f"{source.name}: damaged GGUF header ({_describe(exc)})") from exc
    try:
        return _spec_from_headers(stem, path, headers)
    except SchedaError:
        raise
    except Exception as exc:
        raise ModelFileError(f"{path}: damaged GGUF header ({_describe(exc)})") from exc


def _describe(exc: Exception) -> str:
    text = clean(exc, 120) or type(exc).__name__
    return text if len(text) > 3 else f"{type(exc).__name__}: {text}"


class _Fields:
    """Typed access to metadata values, with the architecture prefix filled in."""

    def __init__(self, header: GGUFHeader) -> None:
        self.header = header
        self.arch = ""
        self.arch = str(self.get(keys.ARCHITECTURE) or "")

    def get(self, key: str) -> Any:
        return self.header.value(key.replace("{arch}", self.arch))

    def integer(self, key: str) -> int | None:
        value = self.get(key)
        if isinstance(value, list):  # per-layer arrays: the largest layer decides memory
            if not all(_is_number(v) for v in value):
                raise self._not_a_number(key, value)
            value = max(value) if value else None
        if value is None:
            return None
        if not _is_number(value) or not math.isfinite(value):
            raise self._not_a_number(key, value)
        return int(value)

    def number(self, key: str) -> float | None:
        value = self.get(key)
        if value is None:
            return None
        if not _is_number(value):
            raise self._not_a_number(key, value)
        return float(value)

    def present(self, key: str) -> bool:
        """Whether a value is set and not empty; a string is not decoded (a chat template
        is never shown, only whether there is one)."""
        found = self.header.fields.get(key.replace("{arch}", self.arch))
        if found is None:
            return False
        if found.type == keys.STRING or found.item_type is not None:
            return found.count > 0
        return bool(self.get(key))

    def vocabulary(self) -> int | None:
        """`{arch}.vocab_size`, else the length of the token list (its strings unread)."""
        size = self.integer(keys.VOCAB_SIZE)
        tokens = self.header.fields.get(keys.TOKENS)
        if size or tokens is None:
            return size or None
        if tokens.item_type is None:
            raise ModelFileError(
                f"{self.header.name}: metadata {keys.TOKENS} should be a list of tokens"
            )
        return tokens.count

    def _not_a_number(self, key: str, value: Any) -> ModelFileError:
        key = key.replace("{arch}", self.arch)
        return ModelFileError(
            f"{self.header.name}: metadata {clean(key, 60)} should be a number, "
            f"found {clean(value, 40)!r}"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _spec_from_headers(stem: str, path: str, headers: list[GGUFHeader]) -> ModelSpec:
    header = headers[0]
    meta = _Fields(header)
    _check_split(header, meta, len(headers))
    if not meta.arch:
        raise ModelFileError(f"{path}: GGUF file without general.architecture")
    groups, parameters, vectors, tensor_bytes, names = _tensor_table(headers)
    told = meta.integer(keys.SPLIT_TENSORS)
    if told is not None and told != len(names):
        raise ModelFileError(
            f"{path}: a split GGUF of {told:,} tensors whose parts hold {len(names):,}"
        )

    heads = meta.integer(keys.HEAD_COUNT)
    hidden = meta.integer(keys.EMBEDDING_LENGTH)
    head_dim = meta.integer(keys.KEY_LENGTH)
    if head_dim is None and heads and hidden:
        head_dim = hidden // heads
    tok_model = meta.get(keys.TOKENIZER_MODEL)
    file_type = meta.integer(keys.FILE_TYPE)
    licence = meta.get(keys.LICENSE)

    spec = ModelSpec(
        name=clean(meta.get(keys.NAME) or stem),
        source="gguf",
        path=path,
        architecture=clean(meta.arch),
        kind="encoder" if meta.arch in ENCODERS else "decoder",
        parameters=parameters,
        vector_parameters=vectors,
        layers=meta.integer(keys.BLOCK_COUNT),
        hidden=hidden,
        heads=heads,
        kv_heads=meta.integer(keys.HEAD_COUNT_KV) or heads,
        head_dim=head_dim,
        ffn=meta.integer(keys.FEED_FORWARD_LENGTH),
        context=meta.integer(keys.CONTEXT_LENGTH),
        rope_base=meta.number(keys.ROPE_FREQ_BASE),
        sliding_window=meta.integer(keys.SLIDING_WINDOW),
        vocab_size=meta.vocabulary(),
        tokenizer=TOKENIZER_KINDS.get(str(tok_model), clean(tok_model) if tok_model else None),
        tokenizer_detail=_tokenizer_detail(meta),
        tied_embeddings="output.weight" not in names,
        file_type=_file_type_name(file_type, groups),
        quantization=groups,
        tensor_bytes=tensor_bytes,
        file_size=sum(h.size for h in headers),
        licence=clean(licence) if licence else None,
        chat_template=meta.present(keys.CHAT_TEMPLATE),
    )
    return spec


def _check_split(header: GGUFHeader, meta: _Fields, parts: int) -> None:
    """A split GGUF is read from its first part, with as many parts as it says it has."""
    number, count = meta.integer(keys.SPLIT_NO), meta.integer(keys.SPLIT_COUNT)
    if number:
        raise _not_first(header.name, number + 1)
    if (count or 1) != parts:
        told = "no parts" if parts == 1 else f"{parts} parts by its name"
        raise ModelFileError(f"{header.name}: a split GGUF of {count} parts, with {told}")


def _not_first(name: str, number: int) -> ModelFileError:
    return ModelFileError(
        f"{name}: part {number} of a split GGUF: give the first part "
        "(NAME-00001-of-000NN.gguf), which reads every part"
    )


def _tensor_table(
    headers: list[GGUFHeader],
) -> tuple[dict[str, TensorGroup], int, int, int, set[str]]:
    """Group tensors by storage type (the header has checked each lies inside the file)."""
    groups: dict[str, TensorGroup] = {}
    parameters = vectors = total_bytes = 0
    names: set[str] = set()
    header = headers[0]
    for tensor in (t for h in headers for t in h.tensors):
        if tensor.name in names:
            raise ModelFileError(
                f"{header.name}: the tensor {clean(tensor.name, 60)} appears in two parts"
            )
        group = groups.setdefault(tensor.type_name, TensorGroup())
        group.tensors += 1
        group.parameters += tensor.n_elements
        group.bytes += tensor.n_bytes
        if len(group.names) <= NAMES_KEPT:
            group.names.append(clean(tensor.name, 60))
        parameters += tensor.n_elements
        total_bytes += tensor.n_bytes
        if len([d for d in tensor.dims if d > 1]) <= 1:
            vectors += tensor.n_elements
        names.add(tensor.name)
    for group in groups.values():
        if group.tensors > NAMES_KEPT:
            group.names = []
    if not groups:
        raise ModelFileError(f"{header.name}: the GGUF file holds no tensors")
    return groups, parameters, vectors, total_bytes, names


def _file_type_name(file_type: int | None, groups: dict[str, TensorGroup]) -> str:
    """`general.file_type` as llama.cpp names it (Q4_1), or the commonest tensor type."""
    name = keys.FILE_TYPES.get(file_type) if file_type is not None else None
    if name is not None:
        return name.removeprefix("MOSTLY_").replace("ALL_", "")
    return max(groups.items(), key=lambda item: item[1].parameters)[0]


def _tokenizer_detail(meta: _Fields) -> str | None:
    model = meta.get(keys.TOKENIZER_MODEL)
    pre = meta.get(keys.TOKENIZER_PRE)
    parts = [
        f"model {clean(model, 40)}" if model else "",
        f"pre-tokenizer {clean(pre, 40)}" if pre else "",
    ]
    return ", ".join(p for p in parts if p) or None
