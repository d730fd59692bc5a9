"""llama.cpp's BPE tokenizer rebuilt from a GGUF's own vocabulary, for `scheda tokens`.

Splitting a sentence should not cost loading a model: llama.cpp has no
vocabulary-only load in the engine scheda runs (xllamacpp starts a whole
server), so for the tokenizers proven to split exactly as llama.cpp does,
the GGUF's tokens, types and merges go into a `tokenizers.Tokenizer` (the
library's BPE, with llama.cpp's pre-tokenizer regexes) and llama.cpp is not
started at all. Anything not proven is `None`, and the caller asks llama.cpp.

What is proven (tests/test_gguf_tokens.py, against the llama.cpp scheda runs):
the embedded model ("smollm") on every MMLU and GSM8K question, choice and
answer, scheda's own code, Italian and accented text, emoji, whitespace runs,
special tokens and every assigned Unicode character; each other name in
`PRE_TOKENIZERS`, in a copy of that model whose header names it, on the varied
texts, and one name of each kind of split on scheda's code and a fifth of the
characters too. What is refused, model by model or text by text, because
llama.cpp does something the library does not:

- another tokenizer model (SentencePiece, WordPiece, Unigram...) or
  pre-tokenizer, or none named (llama.cpp's default regexes);
- a token that looks like an end-of-turn or fill-in-the-middle token but is
  not typed as one (llama.cpp retypes it as special), an empty token (it
  renames it), a token or merge that is not UTF-8, a merge with no space or a
  repeated one (llama.cpp keeps the first, the library the last), and two
  special tokens that overlap (llama.cpp matches the longest first, the
  library the leftmost);
- models whose special tokens llama.cpp strips spaces around (chosen there by
  name: Phi-3, some Jina and Nomic encoders);
- a text holding a byte that has no token (llama.cpp drops it after merging,
  the library before), an unassigned code point (llama.cpp splits each one
  apart), or a character that cannot be UTF-8 (a lone surrogate);
- a normal token whose text is not GPT-2's byte marks (llama.cpp shows it as
  "[UNK_BYTE_...]").
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from scheda.engines.base import Token
from scheda.pieces import byte_level_bytes, byte_marks
from scheda.readers.gguf_vocab import GgufVocab, read_vocab

# llama.cpp's pre-tokenizer regexes (src/llama-vocab.cpp, llm_tokenizer_bpe), applied in turn.
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")


@dataclass(frozen=True)
class PreTokenizer:
    regexes: tuple[str, ...]
    ignore_merges: bool = False  # a word that is a whole token is not merged (Llama 3)


_GPT2 = PreTokenizer((GPT2,))
_DIGITS_GPT2 = PreTokenizer((r"\p{N}", GPT2))
_LLAMA3 = PreTokenizer((LLAMA3,), ignore_merges=True)
_QWEN2 = PreTokenizer((QWEN2,))

# tokenizer.ggml.pre -> what llama.cpp does for it; each name is tested against llama.cpp.
PRE_TOKENIZERS = {
    "gpt-2": _GPT2,
    "phi-2": _GPT2,
    "mpt": _GPT2,
    "olmo": _GPT2,
    "smollm": _DIGITS_GPT2,
    "starcoder": _DIGITS_GPT2,
    "refact": _DIGITS_GPT2,
    "llama-bpe": _LLAMA3,
    "llama3": _LLAMA3,
    "llama-v3": _LLAMA3,
    "falcon3": _LLAMA3,
    "qwen2": _QWEN2,
    "deepseek-r1-qwen": _QWEN2,
}

# llama.cpp's token types (tokenizer.ggml.token_type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED = 1, 2, 3, 4
SPECIAL = (UNKNOWN, CONTROL, USER_DEFINED)  # matched in the text before splitting

# Texts llama.cpp makes special tokens of whatever their type says: its end-of-generation
# and fill-in-the-middle guesses, and gpt-oss's (llama_vocab::impl::load).
CONTROL_LOOKING = frozenset(
    {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
        "<|end_of_text|>", "<EOT>", "_<EOT>", "<｜end▁of▁sentence｜>", "<end_of_utterance>",
        "<|eom_id|>", "<|return|>", "<|call|>",
        "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
        "<|code_prefix|>", "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>",
        "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|fim_middle|>", "<fim-middle>", "<fim_middle>",
        "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>", "<|fim_pad|>", "<fim-pad>",
        "<fim_pad>", "<PAD>", "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>",
        "<reponame>", "<|file_sep|>", "<|channel|>", "<|message|>", "<|start|>",
        "<|constrain|>",
    }
)  # fmt: skip
# Models whose special tokens llama.cpp strips spaces around, chosen by these names.
STRIPPING_NAMES = ("phi-3", "phi3")
STRIPPING_ARCHS = ("nomic-bert-moe", "jina-bert-v3")


class GgufTokenizer:
    """A GGUF's BPE vocabulary in `tokenizers`, answering only where it equals llama.cpp."""

    def __init__(
        self, texts: list[str], types: list[int], tokenizer: Any, missing: frozenset[int]
    ) -> None:
        self.texts = texts
        self.types = types
        self.tokenizer = tokenizer
        self.missing = missing  # bytes with no token: a text holding one is left to llama.cpp
        marks = b"".join(re.escape(bytes([b])) for b in sorted(missing))
        self._missing = re.compile(b"[" + marks + b"]") if missing else None
        self._pieces: dict[int, bytes] = {}

    def tokenize(self, text: str) -> list[Token] | None:
        """llama.cpp's tokens for `text` (no BOS), or None where they are not proven equal."""
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate
            return None
        if self._missing is not None and self._missing.search(raw):
            return None
        if not text.isascii() and any(unicodedata.category(c) == "Cn" for c in set(text)):
            return None
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        pieces = self._pieces
        for i in set(ids).difference(pieces):
            piece = self.piece(i)
            if piece is None:
                return None
            pieces[i] = piece
        return [Token(i, pieces[i]) for i in ids]

    def piece(self, token: int) -> bytes | None:
        """What llama.cpp's token_to_piece (special tokens shown) gives for a token."""
        kind, text = self.types[token], self.texts[token]
        if kind in SPECIAL:
            return text.encode("utf-8")
        if kind == NORMAL:
            return byte_level_bytes(text)
        return b""  # unused and byte-typed tokens show nothing in llama.cpp


def build(vocab: GgufVocab) -> GgufTokenizer | str:
    """The vocabulary in `tokenizers`; or why llama.cpp would read it otherwise."""
    pre = PRE_TOKENIZERS.get(vocab.pre or "")
    if vocab.model != "gpt2" or pre is None:
        return f"tokenizer {vocab.model} with pre-tokenizer {vocab.pre}: not proven"
    texts = vocab.tokens or []
    types = vocab.token_types or [NORMAL] * len(texts)
    ids = dict(zip(texts, range(len(texts)), strict=False))
    why = vocab.odd or _refusal(vocab, texts, types, ids)
    if why:
        return why
    specials = [t for t, kind in zip(texts, types, strict=True) if kind in SPECIAL]
    if _overlapping(specials):
        return "the end of a special token is the start of another"
    pairs = cast(list[tuple[str, str]], [tuple(m.split(" ", 1)) for m in vocab.merges or []])
    if any(len(pair) != 2 or not pair[0] for pair in pairs):
        return "a merge has no space, or starts with one"
    from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers

    try:
        tokenizer = Tokenizer(models.BPE(ids, pairs, ignore_merges=pre.ignore_merges))
    except Exception as exc:  # a merge of what is no token: llama.cpp would fall back to bytes
        return f"the library refused the merges ({exc})"
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in pre.regexes]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    missing = frozenset(b for mark, b in byte_marks().items() if mark not in ids)
    return GgufTokenizer(texts, types, tokenizer, missing)


def _refusal(
    vocab: GgufVocab, texts: list[str], types: list[int], ids: dict[str, int]
) -> str | None:
    """What llama.cpp would read otherwise than the library, if anything."""
    if not texts or len(types) != len(texts):
        return "no tokens, or not one type per token"
    if len(ids) != len(texts) or "" in ids:
        return "a token is repeated or empty"
    name, arch = (vocab.name or "").lower(), vocab.architecture or ""
    if any(n in name for n in STRIPPING_NAMES) or any(a in arch for a in STRIPPING_ARCHS):
        return "llama.cpp strips the spaces around this model's special tokens"
    if any(types[ids[t]] not in SPECIAL for t in CONTROL_LOOKING if t in ids):
        return "a token looks like an end-of-turn or infill token but is not typed special"
    merges = vocab.merges or []
    if len(set(merges)) != len(merges):
        return "a merge is repeated (llama.cpp keeps the first, the library the last)"
    return None


def _overlapping(specials: list[str]) -> bool:
    """Whether one special token's end is another's start.

    Only then can llama.cpp (each special token in turn, the longest first) and
    the library (the leftmost match, the longest of those) match different ones:
    two matches that overlap otherwise are one inside the other, and both take
    the outer one.
    """
    starts = {s[:i] for s in specials for i in range(1, len(s))}
    return any(s[i:] in starts for s in specials for i in range(1, len(s)))


def vocabulary_tokenizer(path: Path) -> GgufTokenizer | None:
    """The GGUF's tokenizer when proven equal to llama.cpp's, else None."""
    tokenizer = _tokenizer(path)
    return tokenizer if isinstance(tokenizer, GgufTokenizer) else None


def refusal(path: Path) -> str | None:
    """Why the GGUF's vocabulary alone does not answer; None when it does."""
    tokenizer = _tokenizer(path)
    return tokenizer if isinstance(tokenizer, str) else None


def _tokenizer(path: Path) -> GgufTokenizer | str:
    """Kept in memory per file, size and modification time: the server asks again for every
    text, and a file replaced under the same name is read again."""
    stat = os.stat(path)
    return _load(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=8)
def _load(path: str, _size: int, _mtime_ns: int) -> GgufTokenizer | str:
    return build(read_vocab(Path(path)))
