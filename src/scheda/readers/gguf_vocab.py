"""A GGUF file's vocabulary: the `tokenizer.ggml.*` metadata, and nothing else.

`scheda tokens` needs the tokens, their types and the BPE merges, not the
spec sheet: this reads the header's key-value section in one pass, keeping
only those keys, without the `gguf` package and without touching the tensor
table or the tensors. The file is untrusted: every length is checked against
the bytes left, and a header that does not add up is a `ModelFileError`.
A file of a kind this reader does not know (GGUF version 1, big-endian) is
`None`: llama.cpp itself answers for those.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scheda.errors import ModelFileError

GGUF_MAGIC = b"GGUF"
VERSIONS = (2, 3)  # what llama.cpp reads; 1 had 32-bit lengths
STRING, ARRAY = 8, 9
STRING_ARRAY = -1  # what `_Header.value` calls an array of strings
INTEGERS = (0, 1, 2, 3, 4, 5, 10, 11)
# The fixed-size GGUF value types: type code -> struct format.
SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
# The keys read, and the fields of `GgufVocab` they fill.
FIELDS = {
    "general.architecture": "architecture",
    "general.name": "name",
    "tokenizer.ggml.model": "model",
    "tokenizer.ggml.pre": "pre",
    "tokenizer.ggml.tokens": "tokens",
    "tokenizer.ggml.token_type": "token_types",
    "tokenizer.ggml.merges": "merges",
}
KEPT = frozenset(FIELDS)

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


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
    odd: str | None  # what in these keys is not as llama.cpp writes it, if anything


class _Header:
    """Sequential, bounds-checked reads over the memory-mapped file."""

    def __init__(self, path: Path, data: memoryview) -> None:
        self.path = path
        self.data = data
        self.size = len(data)
        self.offset = 0
        self.undecodable = False

    def need(self, n: int) -> None:
        if n < 0 or self.offset + n > self.size:
            raise ModelFileError(
                f"{self.path}: truncated GGUF header: it needs bytes up to "
                f"{self.offset + n:,} but the file has {self.size:,}"
            )

    def u32(self) -> int:
        self.need(4)
        (value,) = _U32.unpack_from(self.data, self.offset)
        self.offset += 4
        return int(value)

    def u64(self) -> int:
        self.need(8)
        (value,) = _U64.unpack_from(self.data, self.offset)
        self.offset += 8
        return int(value)

    def strings(self, count: int, keep: bool) -> list[str]:
        """`count` strings, decoded only when kept.

        One tight loop, as a vocabulary has 10**5 of them: a length that runs past
        the end of the file shows once the loop is done, as an offset past the end
        (each string moves it on by 8 bytes at least, so the loop always ends).
        """
        start = self.offset
        try:
            try:
                out, end = _strings(self.data, start, count, keep, "strict")
            except UnicodeDecodeError:
                self.undecodable = True
                out, end = _strings(self.data, start, count, keep, "replace")
        except struct.error:  # a length field itself lies past the end
            out, end = [], self.size + 1
        self.offset = start
        self.need(end - start)
        self.offset = end
        return out

    def scalars(self, kind: int, count: int, keep: bool) -> list[int | float | bool]:
        fmt = SCALARS.get(kind)
        if fmt is None:
            raise ModelFileError(f"{self.path}: damaged GGUF header: unknown value type {kind}")
        width = struct.calcsize(fmt)
        self.need(count * width)
        start = self.offset
        self.offset += count * width
        return list(struct.unpack_from(f"<{count}{fmt}", self.data, start)) if keep else []

    def value(self, kind: int, keep: bool) -> tuple[int, object]:
        """A value of this GGUF type, with its type: an array's is its items' (arrays of
        strings are `STRING_ARRAY`); the value itself only when kept."""
        if kind == STRING:
            strings = self.strings(1, keep)
            return STRING, strings[0] if keep else None
        if kind == ARRAY:
            item, count = self.u32(), self.u64()
            if item == STRING:
                self.need(count * 8)  # each string takes 8 bytes at least
                return STRING_ARRAY, self.strings(count, keep)
            if item == ARRAY:
                raise ModelFileError(f"{self.path}: damaged GGUF header: an array of arrays")
            return item, self.scalars(item, count, keep)
        values = self.scalars(kind, 1, keep)
        return kind, values[0] if keep else None


def _strings(
    data: memoryview, offset: int, count: int, keep: bool, errors: str
) -> tuple[list[str], int]:
    """The strings from `offset` on, and where they end; struct.error past the end of `data`."""
    u64 = _U64.unpack_from
    out: list[str] = []
    if not keep:
        for _ in range(count):
            offset += 8 + u64(data, offset)[0]
        return out, offset
    append = out.append
    for _ in range(count):
        (n,) = u64(data, offset)
        offset += 8
        end = offset + n
        append(str(data[offset:end], "utf-8", errors))
        offset = end
    return out, offset


def read_vocab(path: Path) -> GgufVocab | None:
    """The vocabulary of a GGUF file; None for a GGUF kind this reader does not read."""
    try:
        with (
            open(path, "rb") as f,
            mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped,
            memoryview(mapped) as data,
        ):
            return _read(path, data)
    except (OSError, ValueError) as exc:  # unreadable, or empty (mmap refuses 0 bytes)
        raise ModelFileError(f"{path}: cannot read the GGUF file ({exc})") from exc


def _read(path: Path, data: memoryview) -> GgufVocab | None:
    header = _Header(path, data)
    header.need(24)
    if bytes(data[:4]) != GGUF_MAGIC:
        raise ModelFileError(f"{path}: not a GGUF file")
    header.offset = len(GGUF_MAGIC)
    if header.u32() not in VERSIONS:
        return None  # version 1, or a big-endian file (its version reads as 2**24 or more)
    header.u64()  # the tensor count: the tensor table is not read here
    found: dict[str, tuple[int, object]] = {}
    for _ in range(header.u64()):
        key = header.strings(1, keep=True)[0]
        keep = key in KEPT
        kind, value = header.value(header.u32(), keep)
        if keep:
            found[key] = kind, value

    def get(key: str, *kinds: int) -> Any:
        kind, value = found.get(key, (None, None))
        return value if kind in kinds else None

    vocab = GgufVocab(
        model=get("tokenizer.ggml.model", STRING),
        pre=get("tokenizer.ggml.pre", STRING),
        tokens=get("tokenizer.ggml.tokens", STRING_ARRAY),
        token_types=get("tokenizer.ggml.token_type", *INTEGERS),
        merges=get("tokenizer.ggml.merges", STRING_ARRAY),
        architecture=get("general.architecture", STRING),
        name=get("general.name", STRING),
        odd=None,
    )
    wrong = [k for k in KEPT if k in found and getattr(vocab, FIELDS[k]) is None]
    if header.undecodable:
        return replace(vocab, odd="a string in the header is not UTF-8")
    if wrong:
        return replace(vocab, odd=f"{wrong[0]} is not of the type llama.cpp reads")
    return vocab
