"""A GGUF's vocabulary in `tokenizers` against llama.cpp itself: token for token, piece for piece.

`scheda tokens` answers from the file's vocabulary (scheda/gguf_tokens.py) only
where that is proven to give llama.cpp's tokens, so the proof is here, against
the llama.cpp scheda runs (xllamacpp's /tokenize, the engine's `tokenize`):

- the embedded model (pre-tokenizer "smollm") on every MMLU and GSM8K question,
  choice and answer beside the project, on scheda's own code and the studio's
  files, on Italian and accented text, emoji, whitespace runs and special tokens,
  and on every assigned Unicode character in a few neighbourhoods;
- every other pre-tokenizer it names, on a copy of the embedded model whose
  header names that pre-tokenizer (llama.cpp then splits with that one's regexes):
  the varied texts and scheda's code for each name, and every assigned character
  for one name of each kind of split;
- what it refuses goes to llama.cpp, and gives llama.cpp's tokens.

The whole proof (every sentence, every assigned character: about three minutes on two
cores) runs with SCHEDA_FULL_PROOF=1; the suite runs a fixed sample of it (every sixth
block of sentences, every twelfth character; for the other pre-tokenizers, a twenty-fifth
of the characters and every fourth source file), to keep within its time budget. Run the
whole proof when the tokenizer code, the `tokenizers` lock or xllamacpp moves.
"""

from __future__ import annotations

import csv
import json
import os
import struct
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from scheda.engines import open_model
from scheda.engines.base import Token
from scheda.errors import ModelFileError
from scheda.pieces import byte_marks
from scheda.readers.gguf_vocab import GgufVocab, read_vocab
from scheda.spec import ModelSpec
from scheda.tokenization import gguf_tokens
from scheda.tokenization.gguf_tokens import (
    PRE_TOKENIZERS,
    GgufTokenizer,
    build,
    refusal,
    vocabulary_tokenizer,
)
from scheda.tokenization.tokens import tokenize

SOURCE = Path(__file__).resolve().parents[1] / "src" / "scheda"
FULL = os.environ.get("SCHEDA_FULL_PROOF", "") not in ("", "0")
# How much of the proof the suite runs (1: all of it).
SENTENCE_BLOCKS = 1 if FULL else 6
CHARACTERS = 1 if FULL else 12
OTHER_CHARACTERS = 5 if FULL else 25
OTHER_CODE_FILES = 1 if FULL else 4  # scheda's own files, for the other pre-tokenizers
ITALIAN = "ChatGPT è incredibile!"
# Text of the kinds a tokenizer gets wrong first: accents, scripts, emoji, digits, spaces.
VARIED = [
    ITALIAN,
    "perché così? Più città, lunedì: 3,14 € — «ciao» l'amico dell'anno; però è già là",
    "naïve café résumé Ångström São Paulo Zürich ÆØÅ æøå Œuvre ß ẞ ﬁ ＡＢＣ",
    "emoji 👍🏽 👨‍👩‍👧‍👦 🇮🇹 ❤️ 🤖🤖🤖 e\u0301 combining \u200b\u200d\u2060 zero width",
    "  leading",
    "trailing   ",
    "a\n\n\nb \n \n\t\ttabs\t and\r\nCRLF\r\nends\r",
    " \u00a0nbsp\u00a0 \u2009thin\u3000ideographic\u2028line\u2029para\x0bvt\x0cff\x85nel",
    " " * 50 + "x" * 300 + "\n" * 20,
    "1234567890 12 123 1234 12345 3.14159 1,000,000 ١٢٣ ²³ ½ Ⅻ 〇",
    "日本語のテキスト 中文文本 한국어 텍스트",
    "Привет мир Ελληνικά עברית العربية हिन्दी ไทย",
    "don't I'll we've they're it's I'M YOU'RE 'S 'quoted'",
    "def f(x):\n    return x**2  # comment\n\n\tif a != b: {'k': [1, 2]}\n",
    "<|im_start|>user\nciao<|im_end|>\n<|im_start|>assistant\n",
    "x<|endoftext|>y <|im_start <|im_start| <|im_end|><|im_end|>",
    "\x00\x01\x7f control \x1b[0m",
]


@pytest.fixture(scope="module")
def llama(smollm_path: Path) -> Iterator[Any]:
    with open_model(smollm_path, "llama.cpp", context=256, warmup=False, threads=1) as engine:
        yield engine


def _specials(path: Path) -> list[str]:
    vocab = read_vocab(path)
    assert vocab.tokens is not None and vocab.token_types is not None
    return [t for t, k in zip(vocab.tokens, vocab.token_types, strict=True) if k != 1]


def _varied(path: Path) -> list[str]:
    specials = _specials(path)
    return [*VARIED, "".join(specials), " ".join(specials), "\n".join(VARIED)]


def _code(step: int = 1) -> list[str]:
    """Every `step`-th of scheda's own source files (Python, the studio's JS, CSS, HTML)."""
    files = sorted(SOURCE.rglob("*.py")) + sorted((SOURCE / "server" / "static").glob("*.*"))
    return [p.read_text(encoding="utf-8") for p in files[::step]]


def _assert_same(engine: Any, path: Path, texts: list[str]) -> None:
    """Each text: the vocabulary's tokens and pieces are llama.cpp's."""
    own = vocabulary_tokenizer(path)
    assert own is not None, refusal(path)
    for text in texts:
        mine = own.tokenize(text)
        assert mine is not None, f"the vocabulary refused {text[:80]!r}"
        theirs = engine.tokenize(text)
        if mine != theirs:
            pytest.fail(_difference(text, mine, theirs))


def _difference(text: str, mine: list[Token], theirs: list[Token]) -> str:
    pairs = enumerate(zip(mine, theirs, strict=False))
    at = next((i for i, (a, b) in pairs if a != b), min(len(mine), len(theirs)))
    near = b"".join(t.piece for t in theirs[max(0, at - 8) : at + 8])
    return (
        f"token {at} of {len(theirs)} differs, near {near!r}:\n"
        f"  vocabulary {mine[at : at + 4]}\n  llama.cpp  {theirs[at : at + 4]}\n"
        f"  text {text[:100]!r}..."
    )


def _sweep(path: Path, private_step: int, step: int = 1) -> list[str]:
    """Every `step`-th assigned character (private use every `private_step`-th) between
    letters, doubled, between digits and after spaces, in blocks; but those whose bytes
    have no token in the vocabulary, which it refuses (and later tests send to llama.cpp)."""
    own = vocabulary_tokenizer(path)
    assert own is not None, refusal(path)
    chars = []
    for c in map(chr, range(0x110000)):
        kind = unicodedata.category(c)
        if kind in ("Cn", "Cs") or (kind == "Co" and ord(c) % private_step):
            continue
        if own.missing.isdisjoint(c.encode()):
            chars.append(c)
    chars = chars[::step]
    blocks = [chars[i : i + 2048] for i in range(0, len(chars), 2048)]
    return ["".join(f"a{c}b {c}{c} 1{c}2 {c}  x\n" for c in block) for block in blocks]


# -- the embedded model -------------------------------------------------------------------


def test_the_default_model_is_answered_without_llama_cpp(
    smollm: ModelSpec, smollm_path: Path
) -> None:
    assert refusal(smollm_path) is None

    def no_llama(path: Path, text: str) -> list[Token]:
        raise AssertionError("llama.cpp was asked")

    result = tokenize(smollm, ITALIAN, no_llama)
    assert [p.text for p in result.pieces] == ["Chat", "GPT", " è", " incred", "ib", "ile", "!"]
    assert result.tokens[2:4] == [Token(5549, b" \xc3"), Token(118, b"\xa8")]


@pytest.mark.slow
def test_every_benchmark_sentence_splits_as_in_llama_cpp(
    llama: Any, smollm_path: Path, mmlu_data: Path, gsm8k_data: Path
) -> None:
    """Every MMLU question and choice, every GSM8K question and answer, in blocks."""
    texts = []
    for subject in sorted(mmlu_data.glob("*_test.csv")):
        with subject.open(newline="", encoding="utf-8") as f:
            texts.append("\n".join("\n".join(row[:5]) for row in csv.reader(f) if row))
    for split in ("train", "test"):
        lines = (gsm8k_data / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
        for start in range(0, len(rows), 500):
            block = rows[start : start + 500]
            texts.append("\n\n".join(f"{r['question']}\n{r['answer']}" for r in block))
    assert len(texts) >= 57 + 18
    _assert_same(llama, smollm_path, texts[::SENTENCE_BLOCKS])


@pytest.mark.slow
def test_code_and_varied_text_split_as_in_llama_cpp(llama: Any, smollm_path: Path) -> None:
    _assert_same(llama, smollm_path, _varied(smollm_path) + _code())


@pytest.mark.slow
def test_every_assigned_character_splits_as_in_llama_cpp(llama: Any, smollm_path: Path) -> None:
    _assert_same(llama, smollm_path, _sweep(smollm_path, private_step=97, step=CHARACTERS))


# -- every pre-tokenizer named ------------------------------------------------------------

# One name of each other kind of split gets scheda's code and a fifth of the characters
# too; the other names only need to show that llama.cpp splits them that way.
SWEPT = {"gpt-2", "llama-bpe", "qwen2"}


@pytest.mark.slow
@pytest.mark.parametrize("pre", sorted(set(PRE_TOKENIZERS) - {"smollm"}))
def test_each_pre_tokenizer_named_splits_as_in_llama_cpp(
    pre: str, smollm_path: Path, tmp_path: Path
) -> None:
    copy = _with_pre(smollm_path, tmp_path / f"{pre}.gguf", pre)
    try:
        texts = _varied(copy)
        if pre in SWEPT:
            texts += _code(OTHER_CODE_FILES) + _sweep(copy, private_step=997, step=OTHER_CHARACTERS)
        with open_model(copy, "llama.cpp", context=256, warmup=False, threads=1) as engine:
            _assert_same(engine, copy, texts)
    finally:
        copy.unlink()


def _with_pre(source: Path, target: Path, pre: str) -> Path:
    """A copy of a GGUF whose tokenizer.ggml.pre names `pre`; tensors as they were.

    The header is rewritten with the new string, padded to the file's alignment so
    that the tensor data (whose offsets count from its start) follow unchanged.
    """
    data = source.read_bytes()
    _, _, tensors, keys = struct.unpack_from("<4sIQQ", data)
    at, span, alignment = 24, (0, 0), 32
    for _ in range(keys):
        key, at = _gguf_string(data, at)
        (kind,) = struct.unpack_from("<I", data, at)
        start, at = at + 4, _skip_value(data, at + 4, kind)
        if key == "tokenizer.ggml.pre":
            span = (start, at)
        if key == "general.alignment":
            (alignment,) = struct.unpack_from("<I", data, start)
    for _ in range(tensors):
        _, at = _gguf_string(data, at)
        (dims,) = struct.unpack_from("<I", data, at)
        at += 4 + 8 * dims + 4 + 8
    tensor_data = -(-at // alignment) * alignment
    name = pre.encode()
    header = data[: span[0]] + struct.pack("<Q", len(name)) + name + data[span[1] : at]
    header += b"\0" * (-len(header) % alignment)
    target.write_bytes(header + data[tensor_data:])
    return target


GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _gguf_string(data: bytes, at: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<Q", data, at)
    return data[at + 8 : at + 8 + n].decode(), at + 8 + n


def _skip_value(data: bytes, at: int, kind: int) -> int:
    if kind == 8:
        return _gguf_string(data, at)[1]
    if kind == 9:
        item, count = struct.unpack_from("<IQ", data, at)
        at += 12
        for _ in range(count):
            at = _skip_value(data, at, item)
        return at
    return at + GGUF_SIZES[kind]


# -- what is refused goes to llama.cpp ---------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "unassigned \U000e0080 and \u0378",  # llama.cpp splits each unassigned code point apart
        "a byte with no token: \x04",
        "plane 4: \U00042019\U00042019",  # its lead byte has no token either
    ],
)
def test_a_text_the_vocabulary_cannot_answer_gets_llama_cpp_s_tokens(
    text: str, llama: Any, smollm: ModelSpec, smollm_path: Path
) -> None:
    own = vocabulary_tokenizer(smollm_path)
    assert own is not None and own.tokenize(text) is None
    asked: list[str] = []

    def ask(path: Path, question: str) -> list[Token]:
        asked.append(question)
        tokens: list[Token] = llama.tokenize(question)
        return tokens

    result = tokenize(smollm, text, ask)
    assert asked == [text]
    assert result.tokens == llama.tokenize(text)


def test_a_lone_surrogate_is_left_to_llama_cpp(smollm_path: Path) -> None:
    own = vocabulary_tokenizer(smollm_path)
    assert own is not None and own.tokenize("bad \udcff byte") is None


def _vocab(path: Path) -> GgufVocab:
    vocab = read_vocab(path)
    assert vocab.tokens and vocab.token_types and vocab.merges
    return vocab


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda v: replace(v, pre=None), "not proven"),
        (lambda v: replace(v, pre="deepseek-llm"), "not proven"),
        (lambda v: replace(v, model="llama"), "not proven"),
        (lambda v: replace(v, name="Phi-3 mini"), "strips the spaces"),
        (lambda v: replace(v, architecture="nomic-bert-moe"), "strips the spaces"),
        (lambda v: replace(v, odd="a string in the header is not UTF-8"), "not UTF-8"),
        (lambda v: replace(v, tokens=[*v.tokens[:-1], v.tokens[0]]), "repeated or empty"),
        (lambda v: replace(v, tokens=[*v.tokens[:-1], ""]), "repeated or empty"),
        (lambda v: replace(v, token_types=v.token_types[:-1]), "one type per token"),
        (lambda v: replace(v, token_types=[1] * len(v.tokens)), "looks like an end-of-turn"),
        (lambda v: replace(v, merges=[*v.merges, v.merges[0]]), "a merge is repeated"),
        (lambda v: replace(v, merges=[*v.merges, "Ġ"]), "no space"),
        (lambda v: replace(v, merges=[*v.merges, " Ġ a"]), "starts with one"),
        (lambda v: replace(v, merges=[*v.merges, "Ġ zzzq"]), "refused the merges"),
        (lambda v: _with_special(v, "im_end|><|x"), "special token is the start of another"),
    ],
)
def test_a_vocabulary_llama_cpp_reads_otherwise_is_refused(
    smollm_path: Path, change: Callable[[GgufVocab], GgufVocab], why: str
) -> None:
    vocab = _vocab(smollm_path)
    assert not isinstance(build(vocab), str)
    refused = build(change(vocab))
    assert isinstance(refused, str) and why in refused


def _with_special(vocab: GgufVocab, text: str) -> GgufVocab:
    """The vocabulary with its last token replaced by a special (control) token."""
    assert vocab.tokens is not None and vocab.token_types is not None
    return replace(
        vocab, tokens=[*vocab.tokens[:-1], text], token_types=[*vocab.token_types[:-1], 3]
    )


def test_a_vocabulary_with_every_byte_answers_every_text() -> None:
    """A toy byte-level vocabulary with a token for each byte: nothing is missing."""
    marks = list(byte_marks())
    vocab = GgufVocab(
        model="gpt2",
        pre="gpt-2",
        tokens=[*marks, "Ġt", "<|end|>"],
        token_types=[1] * len(marks) + [1, 3],
        merges=["Ġ t"],
        architecture="gpt2",
        name="toy",
        odd=None,
    )
    toy = build(vocab)
    assert isinstance(toy, GgufTokenizer) and not toy.missing
    found = toy.tokenize("a t\x04<|end|>")
    assert found is not None
    assert [t.piece for t in found] == [b"a", b" t", b"\x04", b"<|end|>"]


def test_a_file_replaced_under_the_same_name_is_read_again(
    smollm_path: Path, tmp_path: Path
) -> None:
    copy = _with_pre(smollm_path, tmp_path / "model.gguf", "smollm")
    assert vocabulary_tokenizer(copy) is not None
    _with_pre(smollm_path, copy, "deepseek-llm")  # written again: another modification time
    assert vocabulary_tokenizer(copy) is None
    assert "not proven" in (refusal(copy) or "")
    gguf_tokens._load.cache_clear()


# -- the reader ---------------------------------------------------------------------------


def test_the_reader_reads_the_tokenizer_keys(smollm_path: Path) -> None:
    vocab = _vocab(smollm_path)
    assert (vocab.model, vocab.pre, vocab.architecture) == ("gpt2", "smollm", "llama")
    assert vocab.tokens is not None and vocab.token_types is not None and vocab.merges is not None
    assert len(vocab.tokens) == len(vocab.token_types) == 49152
    assert len(vocab.merges) == 48900 and vocab.merges[0] == "Ġ t"
    assert vocab.tokens[:2] == ["<|endoftext|>", "<|im_start|>"] and vocab.odd is None


def test_a_damaged_header_is_a_clean_error_never_a_hang(smollm_path: Path, tmp_path: Path) -> None:
    """Cut anywhere in the header, or with an array's length damaged: ModelFileError."""
    data = smollm_path.read_bytes()[: 4 << 20]
    end = _values_end(data)
    target = tmp_path / "damaged.gguf"
    for cut in [*range(0, 64, 3), *range(64, end, 37_813), end - 1, end + 100]:
        target.write_bytes(data[:cut])
        with pytest.raises(ModelFileError, match=str(target)):
            read_vocab(target)
    for key in (b"tokenizer.ggml.tokens", b"tokenizer.ggml.token_type", b"tokenizer.ggml.merges"):
        count_at = data.index(key) + len(key) + 8  # the value type, the item type, the count
        for count in (1 << 40, (1 << 64) - 1):
            target.write_bytes(data[:count_at] + struct.pack("<Q", count) + data[count_at + 8 :])
            with pytest.raises(ModelFileError, match="truncated"):
                read_vocab(target)


def _values_end(data: bytes) -> int:
    """Where a GGUF's keys and values end (and its tensor table begins)."""
    (keys,) = struct.unpack_from("<Q", data, 16)
    at = 24
    for _ in range(keys):
        _, at = _gguf_string(data, at)
        (kind,) = struct.unpack_from("<I", data, at)
        at = _skip_value(data, at + 4, kind)
    return at


def test_what_llama_cpp_would_read_otherwise_is_said(smollm_path: Path, tmp_path: Path) -> None:
    """A token that is not UTF-8: the vocabulary says so, and is refused."""
    data = bytearray(smollm_path.read_bytes())
    at = data.index(b"<|im_start|>")  # the second token, in the tokens array
    data[at + 2] = 0xFF  # no UTF-8 text has this byte
    target = tmp_path / "not-utf8.gguf"
    target.write_bytes(bytes(data))
    vocab = read_vocab(target)
    assert vocab.odd == "a string of tokenizer.ggml.tokens is not UTF-8"
    assert vocab.tokens is not None and vocab.tokens[1] == "<|\ufffdm_start|>"
    assert refusal(target) == vocab.odd
    gguf_tokens._load.cache_clear()
