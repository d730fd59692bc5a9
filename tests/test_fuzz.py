"""Fuzz the GGUF and safetensors header readers with mutations of real headers.

A model file is untrusted input. Whatever its bytes, a reader returns a spec
(or a header dict) or raises `ModelFileError`: any other exception, and a
parse that does not end within `TIME_LIMIT` seconds, fails the test.

The inputs are real-shaped and small, so that many examples run in seconds:

- GGUF: a file written with `gguf.GGUFWriter` that copies every metadata key
  and value of the embedded SmolLM2 model, with the three tokenizer arrays cut
  to `TOKENS_KEPT` entries and five of its tensors (same names and storage
  types: Q8_0, Q4_1, F32) at tiny shapes. It parses in about half a
  millisecond, the real file with its 49,152-token vocabulary in about 20 ms
  (the reader steps over the vocabulary; `gguf.GGUFReader` took 3.5 s).
- safetensors: MiniLM's tensor names, dtypes and ranks at tiny shapes, written
  with `safetensors.numpy.save_file` with MiniLM's `__metadata__`.
- config.json: the real MiniLM config with hypothesis' JSON values put in
  place of its keys, in a copy of the MiniLM folder whose 90 MB weight file
  is a symlink.

Mutation positions are weighted toward the fields where a damaged number
sends a parser astray: the fixed GGUF header, every key's length and value
type, every array's item type and length, every tensor-info field, and the
safetensors length prefix.

The readers run in one long-lived worker process (`_Worker`): a parse that
hangs is killed after `TIME_LIMIT` seconds and reported as a failure, a crash
(a Rust panic, a segfault) is reported instead of ending the run, and any
warning a reader emits fails the example, as it would print a second line
beside the CLI's one-line error. All tests are derandomized: CI sees the same
examples on every run.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import pickle
import select
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheda.readers.gguf_file import read_gguf
from scheda.readers.hf_folder import read_hf_folder, read_safetensors_header
from scheda.spec import ModelSpec

if TYPE_CHECKING:
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType
    from hypothesis.vendor.pretty import RepresentationPrinter

    # (key, value, value type, item type) of one metadata entry, as GGUFWriter takes it
    GgufMetadatum = tuple[str, object, GGUFValueType, GGUFValueType | None]
    # (name, data, storage type) of one tensor
    GgufTensor = tuple[str, npt.NDArray[np.generic], GGMLQuantizationType]

T = TypeVar("T")
TIME_LIMIT = 3.0  # seconds for one parse; a healthy one takes milliseconds
TOKENS_KEPT = 300
# Tensors of the real file, kept at tiny shapes: every storage type it uses.
GGUF_TENSORS = (
    "token_embd.weight",
    "blk.0.attn_norm.weight",
    "blk.0.ffn_down.weight",
    "blk.0.attn_q.weight",
    "output_norm.weight",
)
TINY_ROW = 64  # elements per row: a multiple of every quantization block used here

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Numbers that break length, count, type and offset fields.
SMALL_NUMBERS = (0, 1, 2, 3, 4, 7, 8, 9, 10, 12, 13, 31, 32, 33, 255, 256)
EDGES = tuple((1 << bits) + d for bits in (15, 16, 31, 32, 40, 62, 63) for d in (-1, 0))
INTERESTING = (*SMALL_NUMBERS, *EDGES, (1 << 64) - 1)


# The readers run in a worker process, so that a hang or a crash (a Rust panic that
# aborts, a segfault) is caught and killed there, and never stops the test run.
# Warnings are recorded: on the command line one would print beside the error.
_WORKER = r"""
import importlib, os, pickle, sys, traceback, warnings
from scheda.errors import ModelFileError

requests, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)  # a reader that prints cannot garble the replies
while head := requests.read(8):
    module, name, path = pickle.loads(requests.read(int.from_bytes(head, "little")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for hidden in (DeprecationWarning, PendingDeprecationWarning, ImportWarning):
            warnings.simplefilter("ignore", hidden)  # hidden from CLI users too
        try:
            reply = ["ok", getattr(importlib.import_module(module), name)(path)]
        except ModelFileError as exc:
            reply = ["error", str(exc)]
        except BaseException:  # pyo3's PanicException is a BaseException
            reply = ["escaped", traceback.format_exc()]
    reply.append([f"{w.category.__name__}: {w.message}" for w in caught])
    data = pickle.dumps(reply)
    replies.write(len(data).to_bytes(8, "little") + data)
    replies.flush()
"""


class _Worker:
    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
        return self.process

    def stop(self) -> None:
        process = self.process
        if process is not None:
            process.kill()
            process.wait()
            assert process.stdin is not None and process.stdout is not None  # both PIPE
            process.stdin.close()
            process.stdout.close()
            self.process = None

    def run(self, read: Callable[[Path], object], path: Path) -> tuple[str, object, list[str]]:
        """("ok", result | "error", message | "escaped", traceback | "hang", ""), warnings."""
        process = self._start()
        stdin, stdout = process.stdin, process.stdout
        assert stdin is not None and stdout is not None  # both PIPE
        request = pickle.dumps((read.__module__, read.__name__, path))
        stdin.write(len(request).to_bytes(8, "little") + request)
        stdin.flush()
        deadline = time.monotonic() + TIME_LIMIT
        data = b""
        while len(data) < 8 or len(data) < 8 + int.from_bytes(data[:8], "little"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([stdout], [], [], left)[0]:
                self.stop()
                return "hang", "", []
            chunk = os.read(stdout.fileno(), 1 << 20)
            if not chunk:
                self.stop()
                return (
                    "escaped",
                    f"the reader's process died (exit status {process.returncode})",
                    [],
                )
            data += chunk
        kind, value, caught = pickle.loads(data[8:])
        return kind, value, caught


_worker = _Worker()


@pytest.fixture(scope="module", autouse=True)
def _stop_worker() -> Iterator[None]:
    yield
    _worker.stop()


def _outcome(read: Callable[[Path], T], path: Path) -> T | None:
    """The reader's result, or None for a ModelFileError naming the path; else a failure."""
    kind, value, caught = _worker.run(read, path)
    if kind == "hang":
        raise AssertionError(f"the reader did not finish within {TIME_LIMIT} s")
    if kind == "escaped":
        raise AssertionError(f"an exception other than ModelFileError escaped:\n{value}")
    assert not caught, f"the reader warned (a CLI user would see it): {caught}"
    if kind == "error":
        assert isinstance(value, str), f"an error message that is not text: {value!r}"
        assert value.strip(), "an empty error message"
        assert str(path) in value, f"the message names no file: {value}"
        return None
    return cast(T, value)  # unpickled from the worker, where `read` returned it


class _Scratch:
    """Fresh file names in one folder; each file is deleted once read."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.names = itertools.count()

    @contextlib.contextmanager
    def file(self, data: bytes, suffix: str) -> Iterator[Path]:
        path = self.folder / f"f{next(self.names)}{suffix}"
        path.write_bytes(data)
        try:
            yield path
        finally:
            path.unlink()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> _Scratch:
    return _Scratch(tmp_path_factory.mktemp("fuzz"))


def _apply(blob: bytes, edits: Iterable[tuple[int, bytes]], cut: int | None) -> bytes:
    out = bytearray(blob)
    for pos, value in edits:
        if pos < len(out):
            out[pos : pos + len(value)] = value[: len(out) - pos]
    return bytes(out if cut is None else out[:cut])


def _values() -> st.SearchStrategy[bytes]:
    """Bytes to write at a position: one random byte, or a telling u8/u32/u64."""
    return st.one_of(
        st.binary(min_size=1, max_size=1),
        st.binary(min_size=2, max_size=8),
        st.sampled_from(INTERESTING).map(lambda v: struct.pack("<Q", v)),
        st.sampled_from(INTERESTING).map(lambda v: struct.pack("<I", v & 0xFFFFFFFF)),
        st.sampled_from(INTERESTING).map(lambda v: bytes([v & 0xFF])),
    )


# GGUF -------------------------------------------------------------------------------------


@dataclass
class GgufSample:
    blob: bytes  # the whole small file
    data_offset: int  # where the header ends and tensor data begins
    info_start: int  # where the tensor-info table begins
    numbers: list[tuple[int, int]]  # (offset, width) of every length, count, type, offset...
    arrays: list[tuple[int, int]]  # ...and of each array's item type and length
    metadata: list[GgufMetadatum]  # (key, value, type, item type)
    tensors: list[GgufTensor]  # (name, data, storage type)

    # short, in hypothesis' failure reports
    def _repr_pretty_(self, printer: RepresentationPrinter, cycle: bool) -> None:
        printer.text(f"GgufSample({len(self.blob):,} bytes, header {self.data_offset:,})")


def _number_fields(reader: GGUFReader) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Where the header keeps its numbers: key and string lengths, value types, array
    item types and lengths, scalar values, tensor dimension counts, dimensions,
    storage types and data offsets. String bytes are left out."""
    numbers: list[tuple[int, int]] = []
    arrays: list[tuple[int, int]] = []
    for field in [*reader.fields.values(), *(t.field for t in reader.tensors)]:
        pos = field.offset
        for i, part in enumerate(field.parts[:10]):
            if part.dtype != np.uint8 or part.size == 1:  # not the bytes of a string
                width = part.dtype.itemsize
                numbers += [(pos + k * width, width) for k in range(part.size)]
                if field.types and field.types[0].name == "ARRAY" and i in (3, 4):
                    arrays.append((pos, width))
            pos += int(part.nbytes)
    return sorted(set(numbers)), sorted(set(arrays))


def _write_gguf(
    path: Path, arch: str, metadata: Iterable[GgufMetadatum], tensors: Iterable[GgufTensor]
) -> None:
    from gguf import GGUFWriter

    writer = GGUFWriter(path, arch)  # writes general.architecture: metadata may overwrite it
    for key, value, vtype, item_type in metadata:
        writer.add_key_value(key, value, vtype, sub_type=item_type)
    for name, data, storage in tensors:
        writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=storage)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory: pytest.TempPathFactory, smollm_path: Path) -> GgufSample:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType

    real = GGUFReader(smollm_path, "r")
    metadata: list[GgufMetadatum] = []
    for key, field in real.fields.items():
        if key.startswith("GGUF."):
            continue  # the writer writes these itself
        vtype = field.types[0]
        if vtype == GGUFValueType.ARRAY:
            cut = slice(0, TOKENS_KEPT) if key.startswith("tokenizer.ggml.") else slice(None)
            metadata.append((key, field.contents(cut), vtype, field.types[-1]))
        else:
            metadata.append((key, field.contents(), vtype, None))
    rng = np.random.default_rng(0)
    tensors: list[GgufTensor] = []
    for tensor in real.tensors:
        if tensor.name not in GGUF_TENSORS:
            continue
        shape = (4, TINY_ROW) if len(tensor.shape) > 1 else (TINY_ROW,)
        data: npt.NDArray[np.generic]
        if tensor.tensor_type == GGMLQuantizationType.F32:
            data = rng.standard_normal(shape).astype(np.float32)
        else:  # quantized: rows of bytes, as gguf stores them
            block, size = GGML_QUANT_SIZES[tensor.tensor_type]
            data = rng.integers(0, 256, (*shape[:-1], shape[-1] // block * size), dtype=np.uint8)
        tensors.append((tensor.name, data, tensor.tensor_type))
    path = tmp_path_factory.mktemp("gguf") / "small.gguf"
    _write_gguf(path, "llama", metadata, tensors)

    small = GGUFReader(path, "r")
    assert [t.name for t in small.tensors] == [t[0] for t in tensors]
    assert len(small.fields["tokenizer.ggml.tokens"].data) == TOKENS_KEPT
    numbers, arrays = _number_fields(small)
    return GgufSample(
        blob=path.read_bytes(),
        data_offset=small.data_offset,
        info_start=small.tensors[0].field.offset,
        numbers=numbers,
        arrays=arrays,
        metadata=metadata,
        tensors=tensors,
    )


def test_small_gguf_reads_like_the_real_one(small_gguf: GgufSample, scratch: _Scratch) -> None:
    """The fuzz seed is sound: it reads, with the real model's architecture numbers."""
    with scratch.file(small_gguf.blob, ".gguf") as path:
        spec = _outcome(read_gguf, path)
    assert isinstance(spec, ModelSpec)
    numbers = (spec.architecture, spec.layers, spec.hidden, spec.heads, spec.kv_heads)
    assert numbers == ("llama", 30, 576, 9, 3)
    assert spec.vocab_size == 49152 and spec.tokenizer == "BPE" and spec.chat_template
    assert set(spec.quantization) == {"Q8_0", "Q4_1", "F32"}
    assert len(small_gguf.numbers) > 100 and len(small_gguf.arrays) == 8


def _number_edits(
    blob: bytes, fields: list[tuple[int, int]]
) -> st.SearchStrategy[tuple[int, bytes]]:
    """A new value for one header number, at its own width: a telling value, the old
    value off by a little, or any value."""

    def edit(field: tuple[int, int], mode: str, number: int) -> tuple[int, bytes]:
        pos, width = field
        old = int.from_bytes(blob[pos : pos + width], "little")
        value = {"set": number, "add": old + number, "xor": old ^ number}[mode]
        return pos, (value % (1 << (8 * width))).to_bytes(width, "little")

    return st.builds(
        edit,
        st.sampled_from(fields),
        st.sampled_from(["set", "add", "xor"]),
        st.one_of(
            st.sampled_from(INTERESTING),
            st.integers(-9, 9),
            st.integers(0, 7).map(lambda bit: 1 << (8 * bit + 7)),  # a high bit of a byte
            st.integers(0, (1 << 64) - 1),
        ),
    )


def _gguf_edits(sample: GgufSample) -> st.SearchStrategy[tuple[int, bytes]]:
    header = sample.data_offset
    raw = st.tuples(
        st.one_of(
            st.integers(0, 63),  # magic, version, tensor and key counts, the first key
            st.integers(0, 4095),  # the first few KB: keys, value types, strings
            st.integers(sample.info_start, header - 1),  # the tensor-info table
            st.integers(0, header - 1),
        ),
        _values(),
    )
    return st.one_of(
        _number_edits(sample.blob, sample.numbers),
        _number_edits(sample.blob, sample.numbers),
        _number_edits(sample.blob, [f for f in sample.numbers if f[0] >= sample.info_start]),
        _number_edits(sample.blob, sample.arrays),
        raw,
    )


def _gguf_cuts(sample: GgufSample) -> st.SearchStrategy[int | None]:
    near, items = st.integers(-2, 9), st.integers(0, 64)
    return st.one_of(
        st.none(),  # the whole file, tensor data included
        st.none(),
        st.just(sample.data_offset),  # header only: every tensor points past the end
        st.integers(0, len(sample.blob)),
        st.builds(lambda f, d: max(0, f[0] + d), st.sampled_from(sample.numbers), near),
        # inside an array, at an item boundary when its items are 1, 2, 4 or 8 bytes
        st.builds(lambda f, n: f[0] + 12 + 4 * n, st.sampled_from(sample.arrays), items),
    )


@settings(FUZZ, max_examples=600)
@given(data=st.data())
def test_mutated_gguf_header(
    small_gguf: GgufSample, scratch: _Scratch, data: st.DataObject
) -> None:
    edits = data.draw(st.lists(_gguf_edits(small_gguf), min_size=1, max_size=4), label="edits")
    cut = data.draw(_gguf_cuts(small_gguf), label="cut")
    with scratch.file(_apply(small_gguf.blob, edits, cut), ".gguf") as path:
        spec = _outcome(read_gguf, path)
    assert spec is None or isinstance(spec, ModelSpec)


@settings(FUZZ, max_examples=150)
@given(cut=st.integers(0, 1 << 14))
def test_truncated_gguf(small_gguf: GgufSample, scratch: _Scratch, cut: int) -> None:
    """Cut anywhere (past the end too): only the whole file reads."""
    with scratch.file(small_gguf.blob[:cut], ".gguf") as path:
        spec = _outcome(read_gguf, path)
    assert (spec is not None) == (cut >= len(small_gguf.blob))


def test_gguf_cut_at_every_field(small_gguf: GgufSample, scratch: _Scratch) -> None:
    """A cut at, or a byte either side of, every number in the header is a clean error."""
    ends = {pos for pos, _ in small_gguf.numbers} | {small_gguf.data_offset}
    for cut in sorted({max(0, p + d) for p in ends for d in (-1, 0, 1)}):
        with scratch.file(small_gguf.blob[:cut], ".gguf") as path:
            assert _outcome(read_gguf, path) is None, f"cut at {cut} read as a whole file"


@pytest.mark.parametrize("item_type", [None, 0, 5, 7])  # as written (INT32), UINT8, INT32, BOOL
@pytest.mark.parametrize("length", [1 << 20, 1 << 40, 0xFFFFFFFFFFFFFFFF])
def test_gguf_number_array_with_damaged_length(
    small_gguf: GgufSample, scratch: _Scratch, item_type: int | None, length: int
) -> None:
    """A damaged length on an array of numbers, in a file that ends inside it: no hang.

    gguf's parser reads past the end of the file as empty arrays, so unbounded it
    loops `length` times, growing a list each time: a hang that eats memory.
    """
    from gguf import GGUFReader

    with scratch.file(small_gguf.blob, ".gguf") as path:
        field = GGUFReader(path, "r").fields["tokenizer.ggml.token_type"]
    item_type_at = field.offset + sum(int(p.nbytes) for p in field.parts[:3])
    blob = bytearray(small_gguf.blob)
    if item_type is not None:
        struct.pack_into("<I", blob, item_type_at, item_type)
    struct.pack_into("<Q", blob, item_type_at + 4, length)
    for cut in (item_type_at + 12 + 4 * 100, small_gguf.data_offset, len(blob)):
        with scratch.file(bytes(blob[:cut]), ".gguf") as path:
            assert _outcome(read_gguf, path) is None


@st.composite
def _typed_values(draw: st.DrawFn) -> tuple[object, GGUFValueType, GGUFValueType | None]:
    """A GGUF metadata value of any type: (value, value type, item type)."""
    from gguf import GGUFValueType as T

    ints = {
        T.UINT8: (0, 255),
        T.INT8: (-128, 127),
        T.UINT16: (0, 0xFFFF),
        T.INT16: (-0x8000, 0x7FFF),
        T.UINT32: (0, 0xFFFFFFFF),
        T.INT32: (-(1 << 31), (1 << 31) - 1),
        T.UINT64: (0, (1 << 64) - 1),
        T.INT64: (-(1 << 63), (1 << 63) - 1),
    }
    floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
    scalar = draw(st.sampled_from([*ints, T.FLOAT32, T.FLOAT64, T.BOOL, T.STRING]))
    others: dict[GGUFValueType, st.SearchStrategy[object]] = {
        T.FLOAT32: floats,
        T.FLOAT64: st.floats(),
        T.BOOL: st.booleans(),
        T.STRING: st.text(),
    }
    one = st.integers(*ints[scalar]) if scalar in ints else others[scalar]
    if draw(st.booleans()):
        return draw(one), scalar, None
    return draw(st.lists(one, min_size=1, max_size=5)), T.ARRAY, scalar  # the writer refuses []


@settings(FUZZ, max_examples=200)
@given(data=st.data())
def test_gguf_metadata_of_any_type(
    small_gguf: GgufSample, scratch: _Scratch, data: st.DataObject
) -> None:
    """The real keys with values of any type and size, written by gguf's own writer."""
    keys = [key for key, *_ in small_gguf.metadata]
    changes = data.draw(
        st.dictionaries(st.sampled_from(keys), _typed_values(), min_size=1, max_size=4),
        label="changes",
    )
    metadata: list[GgufMetadatum] = [
        (key, *changes[key]) if key in changes else (key, value, vtype, item_type)
        for key, value, vtype, item_type in small_gguf.metadata
    ]
    path = scratch.folder / f"typed{next(scratch.names)}.gguf"
    try:
        _write_gguf(path, "llama", metadata, small_gguf.tensors)
        spec = _outcome(read_gguf, path)
    finally:
        path.unlink(missing_ok=True)
    assert spec is None or isinstance(spec, ModelSpec)


# safetensors ------------------------------------------------------------------------------

NUMPY_DTYPES = {"F32": np.float32, "I64": np.int64, "F16": np.float16, "I32": np.int32}


@dataclass
class SafetensorsSample:
    blob: bytes  # the whole small file
    header: dict[str, Any]  # its parsed JSON header
    header_end: int  # 8 + header length
    folder: Path  # a minimal HF folder (config.json) to hold a mutated copy

    def _repr_pretty_(self, printer: RepresentationPrinter, cycle: bool) -> None:
        printer.text(f"SafetensorsSample({len(self.blob):,} bytes, header {self.header_end:,})")


@pytest.fixture(scope="module")
def small_safetensors(
    tmp_path_factory: pytest.TempPathFactory, minilm_path: Path
) -> SafetensorsSample:
    from safetensors.numpy import save_file

    with open(minilm_path / "model.safetensors", "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        real = json.loads(f.read(length))
    tensors: dict[str, npt.NDArray[np.generic]] = {}
    for name, entry in real.items():
        if name != "__metadata__":
            shape = [min(d, 3) for d in entry["shape"]]
            data = np.arange(math.prod(shape), dtype=NUMPY_DTYPES[entry["dtype"]])
            tensors[name] = data.reshape(shape)
    folder = tmp_path_factory.mktemp("safetensors")
    path = folder / "small.safetensors"
    save_file(tensors, str(path), metadata=real["__metadata__"])
    blob = path.read_bytes()
    path.unlink()
    (length,) = struct.unpack("<Q", blob[:8])
    shutil.copy(minilm_path / "config.json", folder / "config.json")
    header = json.loads(blob[8 : 8 + length])
    assert set(header) == set(real)
    return SafetensorsSample(blob, header, 8 + length, folder)


def _check_safetensors(sample: SafetensorsSample, scratch: _Scratch, blob: bytes) -> None:
    """The header reader, then the whole folder reader on the same file."""
    with scratch.file(blob, ".safetensors") as path:
        header = _outcome(read_safetensors_header, path)
    assert header is None or isinstance(header, dict)
    path = sample.folder / "model.safetensors"
    path.write_bytes(blob)
    try:
        spec = _outcome(read_hf_folder, sample.folder)
    finally:
        path.unlink()
    assert (spec is None) == (header is None)


def test_small_safetensors_reads(small_safetensors: SafetensorsSample, scratch: _Scratch) -> None:
    with scratch.file(small_safetensors.blob, ".safetensors") as path:
        header = _outcome(read_safetensors_header, path)
    assert header is not None and len(header) == len(small_safetensors.header) - 1
    assert header["embeddings.position_ids"] == ("I64", [1, 3])


def _st_positions(sample: SafetensorsSample) -> st.SearchStrategy[int]:
    return st.one_of(
        st.integers(0, 7),  # the little-endian u64 header length
        st.integers(8, 300),  # "{", __metadata__, the first entries
        st.integers(0, sample.header_end - 1),
        st.integers(0, len(sample.blob) - 1),
    )


@settings(FUZZ, max_examples=500)
@given(data=st.data())
def test_mutated_safetensors_bytes(
    small_safetensors: SafetensorsSample, scratch: _Scratch, data: st.DataObject
) -> None:
    sample = small_safetensors
    edits = data.draw(
        st.lists(st.tuples(_st_positions(sample), _values()), min_size=1, max_size=8),
        label="edits",
    )
    cut = data.draw(
        st.one_of(st.none(), st.integers(0, sample.header_end), st.integers(0, len(sample.blob))),
        label="cut",
    )
    _check_safetensors(sample, scratch, _apply(sample.blob, edits, cut))


_JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
JSON_VALUES = st.recursive(
    _JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
_SIZES = st.one_of(
    st.integers(min_value=-(1 << 65), max_value=1 << 65),
    st.sampled_from([0, 1, 3, -1, 1 << 31, 1 << 32, 1 << 63, (1 << 64) - 1, 1 << 64]),
)
_ENTRY_FIELDS = {
    "dtype": st.one_of(
        st.sampled_from(["F32", "I64", "F16", "BF16", "BOOL", "U8", "F8_E4M3", "F64", "X", ""]),
        JSON_VALUES,
    ),
    "shape": st.one_of(st.lists(_SIZES, max_size=5), JSON_VALUES),
    "data_offsets": st.one_of(st.lists(_SIZES, min_size=0, max_size=3), JSON_VALUES),
}


@st.composite
def _header_edits(draw: st.DrawFn, header: dict[str, Any]) -> dict[str, Any]:
    """A structurally mutated copy of a safetensors JSON header."""
    out: dict[str, Any] = json.loads(json.dumps(header))
    names = sorted(out)
    for _ in range(draw(st.integers(1, 4))):
        name = draw(st.sampled_from(names))
        action = draw(st.sampled_from(["field", "field", "field", "drop", "replace", "swap"]))
        if action == "drop":
            out.pop(name, None)
        elif action == "replace":
            out[name] = draw(JSON_VALUES)
        elif action == "swap":
            other = draw(st.sampled_from(names))
            if isinstance(out.get(name), dict) and isinstance(out.get(other), dict):
                a, b = out[name].get("data_offsets"), out[other].get("data_offsets")
                out[name]["data_offsets"], out[other]["data_offsets"] = b, a
        elif isinstance(out.get(name), dict):
            key = draw(st.sampled_from([*_ENTRY_FIELDS, "format", "extra"]))
            value = _ENTRY_FIELDS.get(key, JSON_VALUES)
            out[name][key] = draw(value)
    return out


@settings(FUZZ, max_examples=500)
@given(data=st.data())
def test_mutated_safetensors_header_json(
    small_safetensors: SafetensorsSample, scratch: _Scratch, data: st.DataObject
) -> None:
    sample = small_safetensors
    header = data.draw(_header_edits(sample.header), label="header")
    text = json.dumps(header, allow_nan=True).encode()
    text += b" " * data.draw(st.integers(0, 8), label="padding")
    length = data.draw(st.sampled_from(["right", "short", "long", "any"]), label="length")
    prefix = {
        "right": len(text),
        "short": max(0, len(text) - 1),
        "long": len(text) + 1,
        "any": data.draw(st.integers(0, (1 << 64) - 1), label="prefix"),
    }[length]
    blob = struct.pack("<Q", prefix) + text + sample.blob[sample.header_end :]
    _check_safetensors(sample, scratch, blob)


# config.json ------------------------------------------------------------------------------

CONFIG_EXTRA_KEYS = (
    "num_key_value_heads",
    "head_dim",
    "rope_theta",
    "sliding_window",
    "n_layer",
    "d_model",
    "tie_word_embeddings",
    "quantization_config",
    "text_config",
    "padded_vocab_size",
)


@pytest.fixture(scope="module")
def minilm_copy(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    """The MiniLM folder, copied but for its 90 MB weight file, which is a symlink."""
    folder = tmp_path_factory.mktemp("minilm") / "model"
    shutil.copytree(minilm_path, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    (folder / "model.safetensors").symlink_to(minilm_path / "model.safetensors")
    return folder


@pytest.fixture(scope="module")
def minilm_config(minilm_path: Path) -> dict[str, Any]:
    return cast(
        dict[str, Any], json.loads((minilm_path / "config.json").read_text(encoding="utf-8"))
    )


@st.composite
def _configs(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    config = dict(base)
    keys = sorted({*base, *CONFIG_EXTRA_KEYS})
    for key in draw(st.lists(st.sampled_from(sorted(base)), max_size=3)):
        config.pop(key, None)
    for key in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=6)):
        if key == "text_config" and draw(st.booleans()):
            config[key] = draw(st.dictionaries(st.sampled_from(keys), JSON_VALUES, max_size=4))
        elif key == "quantization_config" and draw(st.booleans()):
            config[key] = draw(
                st.dictionaries(st.sampled_from(["quant_method", "bits"]), JSON_VALUES, max_size=2)
            )
        else:
            config[key] = draw(JSON_VALUES)
    return config


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_mutated_config_json(
    minilm_copy: Path, minilm_config: dict[str, Any], data: st.DataObject
) -> None:
    config = data.draw(_configs(minilm_config), label="config")
    (minilm_copy / "config.json").write_text(json.dumps(config, allow_nan=True), encoding="utf-8")
    spec = _outcome(read_hf_folder, minilm_copy)
    assert spec is None or isinstance(spec, ModelSpec)


@pytest.mark.parametrize("config", [[], "bert", 3, None, [{"hidden_size": 384}]])
def test_config_json_that_is_not_an_object(minilm_copy: Path, config: object) -> None:
    (minilm_copy / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert _outcome(read_hf_folder, minilm_copy) is None
