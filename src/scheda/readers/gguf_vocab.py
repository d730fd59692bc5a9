"""A GGUF file's vocabulary: the `tokenizer.ggml.*` values `scheda tokens` needs.

The header is walked by `gguf_header` (every length, count and extent
checked there); the two big string arrays, the tokens and the merges, are
then decoded here in one tight loop over their bytes, read at once: the
walk has already checked that each string lies inside the array. Decoding
them item by item through the header's cursor takes five times as long, and
a vocabulary of 10**5 tokens is what `scheda tokens` waits on.

What is not as llama.cpp would read it (a token that is not UTF-8, a key of
another type, a big-endian file) is said in `GgufVocab.odd`: the caller then
asks llama.cpp itself rather than guess. A damaged header is the walk's
`ModelFileError`, as for `scheda card`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scheda.errors import ModelFileError
from scheda.readers import gguf_types as types
from scheda.readers.gguf_header import MAX_DECODED, GGUFHeader, read_header
from scheda.readers.source import FileSource

INTEGERS = (0, 1, 2, 3, 4, 5, 10, 11)  # GGUF's integer value types (u8 ... i64)


@dataclass(frozen=True)
class GgufVocab:
    """The tokenizer a GGUF file carries, as written there."""

    model: str | None  # tokenizer.ggml.model: "gpt2" (BPE), "llama" (SentencePiece)...
    pre: str | None  # tokenizer.ggml.pre: the pre-tokenizer llama.cpp applies
    tokens: list[str] | None
    token_types: list[int] | None
    merges: list[str] | None
    architecture: str | None
    name: str | None
    odd: str | None = None  # what here is not as llama.cpp reads it, if anything


def read_vocab(path: Path) -> GgufVocab:
    """The vocabulary of a GGUF file; ModelFileError for a damaged header."""
    try:
        source = FileSource(path)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    with source:
        header = read_header(source)
        return _vocab(header)


def _vocab(header: GGUFHeader) -> GgufVocab:
    vocab = GgufVocab(
        model=_text(header, types.TOKENIZER_MODEL),
        pre=_text(header, types.TOKENIZER_PRE),
        tokens=None,
        token_types=None,
        merges=None,
        architecture=_text(header, types.ARCHITECTURE),
        name=_text(header, types.NAME),
    )
    if header.order != "<":  # xllamacpp reads little-endian files
        return replace(vocab, odd="a big-endian file")
    odd: list[str] = []

    def array(key: str, *kinds: int) -> Any:
        found = header.fields.get(key)
        if found is None:
            return None
        if found.type != types.ARRAY or found.item_type not in kinds:
            odd.append(f"{key} is not an array of the type llama.cpp reads")
            return None
        if found.item_type != types.STRING:
            return header.value(key)
        strings, not_utf8 = _strings(header, key)
        if not_utf8:
            odd.append(f"a string of {key} is not UTF-8")
        return strings

    vocab = replace(
        vocab,
        tokens=array(types.TOKENS, types.STRING),
        token_types=array("tokenizer.ggml.token_type", *INTEGERS),
        merges=array("tokenizer.ggml.merges", types.STRING),
    )
    return replace(vocab, odd=odd[0]) if odd else vocab


def _text(header: GGUFHeader, key: str) -> str | None:
    found = header.fields.get(key)
    if found is None or found.type != types.STRING:
        return None
    text = header.value(key)
    return text if isinstance(text, str) else None


def _strings(header: GGUFHeader, key: str) -> tuple[list[str], bool]:
    """An array of strings decoded in one loop; and whether a string was not UTF-8 (it is
    then decoded with U+FFFD in its place, for the caller to refuse, not to use)."""
    found = header.fields[key]
    if found.size > MAX_DECODED:  # as the header's own `value` refuses it
        raise ModelFileError(
            f"{header.name}: metadata {key} takes {found.size:,} bytes, more than a header "
            f"value can ({MAX_DECODED:,}): the file is damaged"
        )
    data = header.source.read(found.offset, found.size)
    try:
        return _decode(data, found.count, "strict"), False
    except UnicodeDecodeError:
        return _decode(data, found.count, "replace"), True


def _decode(data: bytes, count: int, errors: str) -> list[str]:
    """`count` strings (a u64 length, then the bytes) from the start of `data`: the header
    walk has checked that every one ends inside it."""
    unpack = struct.Struct("<Q").unpack_from
    view = memoryview(data)
    out: list[str] = []
    append = out.append
    at = 0
    for _ in range(count):
        (n,) = unpack(view, at)
        at += 8
        append(str(view[at : at + n], "utf-8", errors))
        at += n
    return out
