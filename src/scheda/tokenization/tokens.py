"""How a model's tokenizer splits a text, shown so that people can read it.

GGUF models tokenize as llama.cpp does: through the file's own vocabulary
in `tokenizers` where that is proven to give llama.cpp's tokens
(`gguf_tokens.py`: no model is loaded, the answer takes a fraction of a
second), else through llama.cpp itself. HF folders tokenize through
`tokenizers` and their `tokenizer.json`. Each token comes back as raw bytes;
`group` joins the tokens whose bytes only make whole characters together ("è"
split over two byte-level tokens shows as "è"), and byte-level marks (GPT-2's
"Ġ", SentencePiece's "▁", "<0xC3>") are decoded (`pieces.py`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from scheda.engines.base import Token
from scheda.errors import ModelFileError, UsageError
from scheda.pieces import hf_piece, is_byte_level
from scheda.spec import ModelSpec

MAX_UTF8_BYTES = 4

# A text to llama.cpp's own tokens, for what the vocabulary alone cannot answer.
LlamaTokens = Callable[[Path, str], list[Token]]


@dataclass
class Piece:
    """One readable unit: whole characters and the token ids that make them."""

    ids: list[int]
    text: str


@dataclass
class Tokenization:
    model: str
    tokenizer: str | None
    text: str
    tokens: list[Token]
    pieces: list[Piece]

    @property
    def chars_per_token(self) -> float:
        return len(self.text) / len(self.tokens) if self.tokens else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "tokenizer": self.tokenizer,
            "count": len(self.tokens),
            "characters": len(self.text),
            "chars_per_token": round(self.chars_per_token, 3),
            "ids": [t.id for t in self.tokens],
            "pieces": [{"ids": p.ids, "text": p.text} for p in self.pieces],
        }


def group(tokens: list[Token]) -> list[Piece]:
    """Join tokens until their bytes decode as whole UTF-8 characters."""
    pieces: list[Piece] = []
    ids: list[int] = []
    pending = b""
    for token in tokens:
        ids.append(token.id)
        pending += token.piece
        try:
            text = pending.decode("utf-8")
        except UnicodeDecodeError as exc:
            incomplete_tail = exc.reason == "unexpected end of data"
            if incomplete_tail and len(pending) - exc.start < MAX_UTF8_BYTES:
                continue  # the next token finishes this character
            text = pending.decode("utf-8", errors="replace")
        pieces.append(Piece(ids, text))
        ids, pending = [], b""
    if ids:
        pieces.append(Piece(ids, pending.decode("utf-8", errors="replace")))
    return pieces


def tokenize(spec: ModelSpec, text: str, llama: LlamaTokens | None = None) -> Tokenization:
    """Tokenize a text with a model's own tokenizer.

    `llama` is how to ask llama.cpp when a GGUF's vocabulary cannot answer alone
    (the server passes its loaded engine); by default a llama.cpp engine is
    started for the question.
    """
    if spec.source == "catalog" or not spec.path:
        raise UsageError(
            f"{spec.name} is a catalog entry with no file: "
            "`tokens` needs a .gguf file or an HF folder"
        )
    path = Path(spec.path)
    if path.is_dir():
        tokens = _hf_tokens(path, text)
    else:
        own = _vocabulary_tokens(path, text)
        tokens = own if own is not None else (llama or llamacpp_tokens)(path, text)
    return Tokenization(spec.name, spec.tokenizer, text, tokens, group(tokens))


def _vocabulary_tokens(path: Path, text: str) -> list[Token] | None:
    """llama.cpp's tokens from the GGUF's vocabulary alone; None where not proven equal."""
    from scheda.tokenization.gguf_tokens import vocabulary_tokenizer

    tokenizer = vocabulary_tokenizer(path)
    return tokenizer.tokenize(text) if tokenizer is not None else None


def llamacpp_tokens(path: Path, text: str) -> list[Token]:
    """llama.cpp's own tokens, from an engine started for the question."""
    from scheda.engines import open_model

    # The smallest context, as tokenizing needs the vocabulary, not a KV cache; one thread,
    # as it computes nothing (more threads only make llama.cpp's start slower).
    with open_model(path, "llama.cpp", context=256, warmup=False, threads=1) as engine:
        return engine.tokenize(text)


def _hf_tokens(folder: Path, text: str) -> list[Token]:
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise ModelFileError(f"{folder}: no tokenizer.json (scheda reads HF tokenizers from it)")
    stat = path.stat()
    tokenizer, byte_level = _hf_tokenizer(str(path), stat.st_size, stat.st_mtime_ns)
    encoding = tokenizer.encode(text, add_special_tokens=False)
    return [
        Token(i, hf_piece(t, byte_level))
        for i, t in zip(encoding.ids, encoding.tokens, strict=True)
    ]


@lru_cache(maxsize=8)
def _hf_tokenizer(path: str, _size: int, _mtime_ns: int) -> tuple[Any, bool]:
    """A tokenizer.json loaded, and whether it writes bytes as byte-level marks. Kept per
    file, size and modification time: the studio asks again as the user types."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(path)
        decoder = json.loads(Path(path).read_text(encoding="utf-8")).get("decoder")
        byte_level = is_byte_level(decoder)
    except Exception as exc:
        raise ModelFileError(f"{path}: cannot load the tokenizer ({exc})") from exc
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer, byte_level
