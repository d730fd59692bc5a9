"""The lazy GGUF header reader against the `gguf` package, and on damaged headers.

`gguf` is the oracle: its constants equal scheda's small tables, and its own
eager reader (`GGUFReader`) reads the same values and the same tensor table
from files its own writer wrote, in both byte orders. The real embedded model
shows what laziness buys: its card reads the header in a few large reads and
never decodes the vocabulary. Damaged headers are built byte by byte here, so
that each check has a file that fails it alone.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scheda.errors import ModelFileError
from scheda.readers import gguf_file
from scheda.readers import gguf_types as types
from scheda.readers.gguf_file import read_gguf
from scheda.readers.gguf_header import GGUFHeader, read_header
from scheda.readers.source import BLOCK, BufferedSource, FileSource

# The constants ------------------------------------------------------------------------------


def test_the_tables_equal_gguf_constants() -> None:
    import gguf

    assert {
        t.value: (t.name, *gguf.GGML_QUANT_SIZES[t]) for t in gguf.GGMLQuantizationType
    } == types.QUANT_TYPES
    # llama.cpp's list of file types is ahead of gguf's: Q2_0 (41) is in llama.h, and its
    # quantizer makes it, but not yet in gguf.LlamaFileType; llama-cpp-python names it.
    import llama_cpp

    ahead = {41: "MOSTLY_Q2_0"}
    assert {n: getattr(llama_cpp, "LLAMA_FTYPE_" + name) for n, name in ahead.items()} == {41: 41}
    assert {t.value: t.name for t in gguf.LlamaFileType} | ahead == types.FILE_TYPES
    assert {t.value: t.name for t in gguf.GGUFValueType} == types.VALUE_TYPES
    assert (types.STRING, types.ARRAY) == (gguf.GGUFValueType.STRING, gguf.GGUFValueType.ARRAY)
    numpy_types = gguf.GGUFReader.gguf_scalar_to_np
    assert set(types.SCALARS) == {t.value for t in numpy_types}
    for kind, code in types.SCALARS.items():
        dtype = np.dtype(numpy_types[gguf.GGUFValueType(kind)])
        assert struct.calcsize("<" + code) == dtype.itemsize, code
        expected_kind = {"?": "b", "f": "f", "d": "f"}.get(code, "i" if code.islower() else "u")
        assert dtype.kind == expected_kind, code
    assert struct.pack("<I", gguf.GGUF_MAGIC) == types.MAGIC
    assert types.DEFAULT_ALIGNMENT == gguf.GGUF_DEFAULT_ALIGNMENT
    assert tuple(gguf.gguf_reader.READER_SUPPORTED_VERSIONS) == types.VERSIONS


def test_the_keys_are_ggufs() -> None:
    from gguf import Keys

    pairs = [
        (types.ARCHITECTURE, Keys.General.ARCHITECTURE),
        (types.NAME, Keys.General.NAME),
        (types.LICENSE, Keys.General.LICENSE),
        (types.FILE_TYPE, Keys.General.FILE_TYPE),
        (types.SPLIT_NO, Keys.Split.LLM_KV_SPLIT_NO),
        (types.SPLIT_COUNT, Keys.Split.LLM_KV_SPLIT_COUNT),
        (types.SPLIT_TENSORS, Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT),
        (types.ALIGNMENT, Keys.General.ALIGNMENT),
        (types.BLOCK_COUNT, Keys.LLM.BLOCK_COUNT),
        (types.CONTEXT_LENGTH, Keys.LLM.CONTEXT_LENGTH),
        (types.EMBEDDING_LENGTH, Keys.LLM.EMBEDDING_LENGTH),
        (types.FEED_FORWARD_LENGTH, Keys.LLM.FEED_FORWARD_LENGTH),
        (types.VOCAB_SIZE, Keys.LLM.VOCAB_SIZE),
        (types.HEAD_COUNT, Keys.Attention.HEAD_COUNT),
        (types.HEAD_COUNT_KV, Keys.Attention.HEAD_COUNT_KV),
        (types.KEY_LENGTH, Keys.Attention.KEY_LENGTH),
        (types.SLIDING_WINDOW, Keys.Attention.SLIDING_WINDOW),
        (types.ROPE_FREQ_BASE, Keys.Rope.FREQ_BASE),
        (types.TOKENIZER_MODEL, Keys.Tokenizer.MODEL),
        (types.TOKENIZER_PRE, Keys.Tokenizer.PRE),
        (types.TOKENS, Keys.Tokenizer.LIST),
        (types.CHAT_TEMPLATE, Keys.Tokenizer.CHAT_TEMPLATE),
    ]
    assert [ours for ours, _ in pairs] == [theirs for _, theirs in pairs]


# Byte sources -------------------------------------------------------------------------------


def test_a_file_source_reads_ranges_and_counts_them(tmp_path: Path) -> None:
    path = tmp_path / "bytes"
    path.write_bytes(bytes(range(256)) * 4)
    with FileSource(path) as source:
        assert (source.name, source.size) == (str(path), 1024)
        assert source.read(10, 3) == bytes([10, 11, 12])
        assert source.read(1020, 100) == bytes([252, 253, 254, 255])  # cut at the end
        assert source.read(2000, 10) == b"" and source.read(5, 0) == b""
        assert (source.requests, source.bytes_read) == (2, 7)


def test_a_buffered_source_turns_small_reads_into_few_large_ones(tmp_path: Path) -> None:
    path = tmp_path / "bytes"
    path.write_bytes(bytes(range(256)) * 1024)  # 256 KiB
    with FileSource(path) as file, BufferedSource(file, block=64 * 1024) as source:
        data = b"".join(source.read(offset, 4) for offset in range(0, 256 * 1024, 4))
        assert data == path.read_bytes()
        assert (file.requests, file.bytes_read) == (4, 256 * 1024)
        assert source.read(100, 8) == bytes(range(100, 108))  # back before the block: re-read
        assert file.requests == 5


# The gguf package as the oracle -------------------------------------------------------------


def _write_every_type(path: Path, big_endian: bool) -> None:
    """A GGUF with a value of every type, arrays of each, and tensors of several types."""
    from gguf import GGMLQuantizationType, GGUFEndian, GGUFValueType, GGUFWriter

    order = GGUFEndian.BIG if big_endian else GGUFEndian.LITTLE
    writer = GGUFWriter(path, "llama", endianess=order)
    writer.add_custom_alignment(64)
    scalars = {
        GGUFValueType.UINT8: 200,
        GGUFValueType.INT8: -100,
        GGUFValueType.UINT16: 60_000,
        GGUFValueType.INT16: -30_000,
        GGUFValueType.UINT32: 4_000_000_000,
        GGUFValueType.INT32: -2_000_000_000,
        GGUFValueType.FLOAT32: 0.1,
        GGUFValueType.BOOL: True,
        GGUFValueType.UINT64: (1 << 64) - 1,
        GGUFValueType.INT64: -(1 << 63),
        GGUFValueType.FLOAT64: 1e300,
        GGUFValueType.STRING: "naïve «text» ✓",
    }
    for kind, value in scalars.items():
        writer.add_key_value(f"test.{kind.name.lower()}", value, kind)
        items = ["", "b", "çç"] if kind == GGUFValueType.STRING else [value, value, value]
        writer.add_key_value(f"test.{kind.name.lower()}s", items, GGUFValueType.ARRAY, kind)
    writer.add_key_value("tokenizer.ggml.tokens", ["a", "bb", "ccc"], GGUFValueType.ARRAY)
    rng = np.random.default_rng(0)
    swap = big_endian  # the writer wants tensor data in its file's byte order
    for name, shape, storage in [
        ("token_embd.weight", (4, 64), GGMLQuantizationType.Q8_0),
        ("blk.0.attn_norm.weight", (64,), GGMLQuantizationType.F32),
        ("output.weight", (2, 3, 64), GGMLQuantizationType.F16),
    ]:
        if storage == GGMLQuantizationType.Q8_0:
            data = rng.integers(0, 256, (4, 64 // 32 * 34), dtype=np.uint8)
            writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=storage)
            continue
        dtype = np.float32 if storage == GGMLQuantizationType.F32 else np.float16
        data = rng.standard_normal(shape).astype(dtype)
        writer.add_tensor(name, data.byteswap() if swap else data, raw_dtype=storage)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


@pytest.mark.parametrize("big_endian", [False, True], ids=["little-endian", "big-endian"])
def test_values_and_tensors_equal_gguf_readers(tmp_path: Path, big_endian: bool) -> None:
    from gguf import GGUFReader

    path = tmp_path / "every-type.gguf"
    _write_every_type(path, big_endian)
    oracle = GGUFReader(path, "r")
    with FileSource(path) as source:
        header = read_header(source)
        assert header.order == (">" if big_endian else "<")
        expected = {k: f.contents() for k, f in oracle.fields.items() if not k.startswith("GGUF.")}
        assert {key: header.value(key) for key in header.fields} == expected
        assert header.value("test.float32") == pytest.approx(0.1, rel=1e-7)
        assert header.value("no.such.key") is None
    assert (header.alignment, header.data_offset) == (64, oracle.data_offset)
    assert [
        (t.name, t.dims, t.type_name, t.data_offset, t.n_elements, t.n_bytes)
        for t in header.tensors
    ] == [
        (
            t.name,
            tuple(int(d) for d in t.shape),
            t.tensor_type.name,
            t.data_offset,
            t.n_elements,
            t.n_bytes,
        )
        for t in oracle.tensors
    ]


def test_the_card_reads_no_vocabulary(smollm_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The card of the real model: the header in a few large reads, no token decoded."""
    asked: list[str] = []
    sources: list[FileSource] = []
    value = GGUFHeader.value

    def recorded(self: GGUFHeader, key: str) -> object:
        asked.append(key)
        return value(self, key)

    class Recorded(FileSource):
        def __init__(self, path: Path) -> None:
            super().__init__(path)
            sources.append(self)

    monkeypatch.setattr(GGUFHeader, "value", recorded)
    monkeypatch.setattr(gguf_file, "FileSource", Recorded)
    spec = read_gguf(smollm_path)
    assert spec.vocab_size == 49152
    assert not {"tokenizer.ggml.tokens", "tokenizer.ggml.merges"} & set(asked)
    assert "general.name" in asked
    with FileSource(smollm_path) as source:
        header_end = read_header(source).data_offset
    (source,) = sources
    assert source.requests <= header_end // BLOCK + 1  # each block once, values kept
    assert source.bytes_read <= header_end + BLOCK < source.size // 20


# Damaged headers, byte by byte -------------------------------------------------------------

U32, U64, STR, ARR, F32_TENSOR = 4, 10, 8, 9, 0


def _string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def _gguf(
    metadata: list[tuple[bytes, int, bytes]] | None = None,
    tensors: list[tuple[bytes, list[int], int, int]] | None = None,
    version: int = 3,
) -> bytes:
    """A GGUF file: metadata (key, value type, packed value) after a llama architecture,
    tensors (name, dimensions, storage type, offset) after one F32 tensor of 4 weights."""
    metadata = [(b"general.architecture", STR, _string(b"llama")), *(metadata or [])]
    tensors = [(b"w", [4], F32_TENSOR, 0), *(tensors or [])]
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(metadata))
    for key, kind, value in metadata:
        out += _string(key) + struct.pack("<I", kind) + value
    for name, dims, kind, offset in tensors:
        out += _string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, kind, offset)
    out += b"\0" * (-len(out) % 32)
    return out + b"\0" * 64  # tensor data


def _array(kind: int, items: list[bytes], count: int | None = None) -> bytes:
    return struct.pack("<IQ", kind, len(items) if count is None else count) + b"".join(items)


def test_a_hand_built_file_reads(tmp_path: Path) -> None:
    path = tmp_path / "small.gguf"
    path.write_bytes(
        _gguf(
            [
                (b"llama.block_count", U32, struct.pack("<I", 2)),
                (b"tokenizer.ggml.tokens", ARR, _array(STR, [_string(b"a"), _string(b"\xff")])),
                (b"x.nested", ARR, _array(ARR, [_array(U32, [struct.pack("<I", 7)])])),
            ]
        )
    )
    spec = read_gguf(path)
    assert (spec.parameters, spec.layers, spec.vocab_size) == (4, 2, 2)  # b"\xff" never decoded
    with FileSource(path) as source:
        assert read_header(source).value("x.nested") == [[7]]


DAMAGED: dict[str, tuple[dict[str, Any], str]] = {
    "version 1": ({"version": 1}, "GGUF version 1"),
    "unknown value type": ({"metadata": [(b"k", 13, b"")]}, "value type 13, unknown to GGUF"),
    "unknown item type": ({"metadata": [(b"k", ARR, _array(99, []))]}, "items of type 99"),
    "key not UTF-8": (
        {"metadata": [(b"\xff", U32, b"\0" * 4)]},
        "a metadata key at byte 69 is not UTF-8",
    ),
    "key twice": (
        {"metadata": [(b"general.architecture", STR, _string(b"x"))]},
        "general.architecture appears twice",
    ),
    "name not UTF-8": ({"metadata": [(b"general.name", STR, _string(b"\xc3("))]}, "not UTF-8"),
    "string past the end": (
        {"metadata": [(b"k", STR, struct.pack("<Q", 1 << 40))]},
        "truncated",
    ),
    "a trillion strings": (
        {"metadata": [(b"k", ARR, _array(STR, [], count=1 << 40))]},
        "1,099,511,627,776 array items",
    ),
    "nested too deep": (
        {"metadata": [(b"k", ARR, struct.pack("<IQ", ARR, 1) * 9 + struct.pack("<IQ", U32, 0))]},
        "nests arrays over 8 deep",
    ),
    "alignment not a power of two": (
        {"metadata": [(b"general.alignment", U32, struct.pack("<I", 48))]},
        "general.alignment is 48",
    ),
    "alignment of the wrong type": (
        {"metadata": [(b"general.alignment", U64, struct.pack("<Q", 32))]},
        "should be a UINT32, found a UINT64",
    ),
    "tensor twice": ({"tensors": [(b"w", [4], F32_TENSOR, 16)]}, "tensor w appears twice"),
    "unknown storage type": ({"tensors": [(b"v", [4], 4, 16)]}, "storage type 4, unknown"),
    "five dimensions": ({"tensors": [(b"v", [1] * 5, F32_TENSOR, 16)]}, "5 dimensions"),
    "row not whole blocks": ({"tensors": [(b"v", [40], 8, 16)]}, "blocks of 32"),
    "tensor past the end": ({"tensors": [(b"v", [4, 4], F32_TENSOR, 16)]}, "truncated: tensor v"),
    "a key of a megabyte": ({"metadata": [(b"k" * (1 << 20), U32, b"\0" * 4)]}, "claims 1,048,576"),
    "a layer count of NaN": (
        {"metadata": [(b"llama.block_count", 6, struct.pack("<f", float("nan")))]},
        "llama.block_count should be a number",
    ),
    "tokens not a list": (
        {"metadata": [(b"tokenizer.ggml.tokens", U32, b"\0" * 4)]},
        "tokenizer.ggml.tokens should be a list",
    ),
}


@pytest.mark.parametrize("case", DAMAGED)
def test_a_damaged_header_is_one_error_naming_the_file(tmp_path: Path, case: str) -> None:
    parts, words = DAMAGED[case]
    path = tmp_path / "damaged.gguf"
    path.write_bytes(_gguf(**parts))
    with pytest.raises(ModelFileError) as caught:
        read_gguf(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and words in message, message
    assert "\n" not in message


def test_a_chat_template_is_never_decoded(tmp_path: Path) -> None:
    """Only its presence is shown: one that is not UTF-8 does not stop the card."""
    path = tmp_path / "template.gguf"
    path.write_bytes(_gguf([(b"tokenizer.chat_template", STR, _string(b"\xff{{ x }}"))]))
    assert read_gguf(path).chat_template is True
    path.write_bytes(_gguf([(b"tokenizer.chat_template", STR, _string(b""))]))
    assert read_gguf(path).chat_template is False


def test_a_value_too_large_to_be_a_header_value_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scheda.readers import gguf_header

    monkeypatch.setattr(gguf_header, "MAX_DECODED", 100)
    path = tmp_path / "large.gguf"
    path.write_bytes(_gguf([(b"general.name", STR, _string(b"n" * 101))]))
    with pytest.raises(ModelFileError, match=r"general\.name takes 101 bytes"):
        read_gguf(path)


def test_counts_past_the_end_stop_before_any_loop(tmp_path: Path) -> None:
    blob = bytearray(_gguf())
    path = tmp_path / "counts.gguf"
    for at, what in ((8, "tensors"), (16, "metadata keys")):
        damaged = bytearray(blob)
        struct.pack_into("<Q", damaged, at, (1 << 64) - 1)
        path.write_bytes(bytes(damaged))
        with pytest.raises(ModelFileError, match=f"18,446,744,073,709,551,615 {what}"):
            read_gguf(path)


def test_an_unreadable_file_is_a_model_file_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="cannot be read"):
        read_gguf(tmp_path / "missing.gguf")
