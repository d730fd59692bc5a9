"""The raw bytes an HF tokenizer's token string stands for.

Byte-level BPE (GPT-2's) writes every byte as a printable mark ("Ġ" is a
space), SentencePiece writes a space as "▁" and unknown bytes as "<0xC3>".
`tokens` shows these bytes to people, the transformers engines return them
as `Token.piece`, and `gguf_tokens` reads a GGUF's byte-level vocabulary with
the same table; all take them from here, so an engine needs no `tokens`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def byte_marks() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, inverted: the marks byte-level BPE writes bytes as."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, codes, strict=True)}


def is_byte_level(decoder: Any) -> bool:
    """Whether a tokenizer.json `decoder` section writes bytes as GPT-2's byte-level marks."""
    return "ByteLevel" in json.dumps(decoder)


def byte_level_bytes(token: str) -> bytes | None:
    """The bytes a byte-level BPE token string stands for; None if a character is no byte mark."""
    table = byte_marks()
    try:
        return bytes([table[ch] for ch in token])
    except KeyError:
        return None


def hf_piece(token: str, byte_level: bool) -> bytes:
    """The raw bytes an HF token string stands for ("Ġ", "▁" and "<0xC3>" decoded)."""
    if byte_level:
        raw = byte_level_bytes(token)
        if raw is not None:
            return raw
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        try:
            return bytes([int(token[3:5], 16)])  # SentencePiece byte fallback
        except ValueError:
            pass
    return token.replace("▁", " ").encode("utf-8")
