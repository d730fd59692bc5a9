"""A GGUF file's header read lazily from a byte source: metadata and the tensor table.

The header is walked once, in order, through a `BufferedSource` (a few large
reads). Each metadata value is located, not decoded: an array of numbers is
stepped over by its length, an array of strings by its strings' lengths, and
the bytes between are never looked at. A value is decoded when asked for
(`GGUFHeader.value`), so the card of a model with a 128k-token vocabulary
reads 128k lengths, not 128k strings, and never the tensor data.

A GGUF file is untrusted input. Every length, count and offset is checked
against the file's size before it is used: a string or an array that reaches
past the end, an array whose items could not fit in the file, a tensor whose
bytes would end past it ("truncated"), a value or storage type GGUF does not
define, a key or a tensor name that is not UTF-8, a key or tensor given twice.
Each is one `ModelFileError` naming the file, and no loop runs more times
than the file has bytes.

The layout, versions 2 and 3 (numbers little-endian, or all big-endian when
the version reads so):

    "GGUF", version u32, tensor count u64, key count u64
    per key:     key (string), value type u32, value
    per tensor:  name (string), dimension count u32, dimensions u64..., type u32, offset u64
    padding to `general.alignment` (32 by default), then the tensor data
    string = length u64 + UTF-8 bytes; array = item type u32 + item count u64 + items
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field, replace
from typing import Any

from scheda.errors import ModelFileError
from scheda.readers import gguf_types as types
from scheda.readers.source import BufferedSource, ByteSource
from scheda.readers.text import clean

SIZES = {kind: struct.calcsize("<" + code) for kind, code in types.SCALARS.items()}
UINT32 = 4
MAX_DIMS = 4  # llama.cpp's GGML_MAX_DIMS: it refuses a tensor with more
KEEP = 64 * 1024  # a value this small is kept while walking (a chat template is ~4-20 KB)
MAX_NAME = 64 * 1024  # a key or a tensor name (llama.cpp allows names of 63 bytes)
MAX_DECODED = 64 << 20  # a value asked for: 128k tokens take 2 MB, 280k merges 5 MB
MAX_NESTING = 8  # arrays of arrays: llama.cpp reads none; a bound keeps recursion short
# The fewest bytes each takes: what a count is checked against before a loop runs.
MIN_KEY = 8 + 4 + 1  # empty key, value type, a one-byte value
MIN_TENSOR = 8 + 4 + 4 + 8  # empty name, no dimensions, type, offset
MIN_ITEM = {types.STRING: 8, types.ARRAY: 4 + 8}


@dataclass(frozen=True)
class Field:
    """Where one metadata value lies; decoded only when asked for."""

    type: int  # a GGUF value type
    offset: int  # the value's first byte: a string's text, an array's first item
    item_type: int | None = None  # arrays only
    count: int = 1  # arrays: the number of items; strings: the number of bytes
    size: int = 0  # the bytes from `offset` to the value's end
    raw: bytes | None = None  # the value's bytes, kept while walking when they are few


@dataclass(frozen=True)
class Tensor:
    """One tensor-table entry, checked to lie inside the file."""

    name: str
    dims: tuple[int, ...]  # as GGUF stores them, the fastest-varying first
    type_name: str  # the storage type: F32, Q4_1, Q8_0...
    data_offset: int  # where its bytes start in the file
    n_elements: int
    n_bytes: int


@dataclass
class GGUFHeader:
    """The located metadata and the tensor table; values decode on demand."""

    source: BufferedSource
    version: int
    order: str  # struct's byte order: "<" or ">"
    fields: dict[str, Field] = field(default_factory=dict)
    tensors: list[Tensor] = field(default_factory=list)
    alignment: int = types.DEFAULT_ALIGNMENT
    data_offset: int = 0

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def size(self) -> int:
        return self.source.size

    def value(self, key: str) -> Any:
        """A metadata value decoded (str, int, float, bool or a list of them); None if absent.
        A value the walk did not keep is read again: the source must still be open."""
        found = self.fields.get(key)
        if found is None:
            return None
        if found.size > MAX_DECODED:  # a damaged length would make a memory error
            raise ModelFileError(
                f"{self.name}: metadata {clean(key, 60)} takes {found.size:,} bytes, more than "
                f"a header value can ({MAX_DECODED:,}): the file is damaged"
            )
        kind = found.type if found.item_type is None else found.item_type
        if kind not in SIZES and found.item_type is not None:  # strings or arrays, item by item
            cursor = _Cursor(self.source, self.order, found.offset)
            return _items(cursor, kind, found.count, key)
        raw = found.raw
        if raw is None:  # the walk checked that these bytes lie inside the file
            raw = self.source.read(found.offset, _payload(found))
        if kind == types.STRING:
            return _text(raw, self.name, f"metadata {clean(key, 60)}", found.offset)
        if found.item_type is None:
            return struct.unpack(self.order + types.SCALARS[kind], raw)[0]
        return list(struct.unpack(f"{self.order}{found.count}{types.SCALARS[kind]}", raw))


def read_header(source: ByteSource) -> GGUFHeader:
    """Walk the header of a GGUF file; raises ModelFileError for anything out of place."""
    buffered = source if isinstance(source, BufferedSource) else BufferedSource(source)
    cursor = _Cursor(buffered, "<", 0)
    head = buffered.read(0, 4)
    if head != types.MAGIC:
        raise ModelFileError(
            f"{source.name}: not a GGUF file (it starts with {head!r}, a GGUF file with b'GGUF')"
        )
    cursor.skip(4)
    version = cursor.u32()
    if version & 0xFFFF == 0:  # written on a big-endian machine: every number is swapped
        cursor = _Cursor(buffered, ">", cursor.pos)
        version = int.from_bytes(version.to_bytes(4, "little"), "big")
    if version not in types.VERSIONS:
        raise ModelFileError(
            f"{source.name}: GGUF version {version} (scheda reads versions 2 and 3)"
        )
    header = GGUFHeader(buffered, version, cursor.order)
    tensor_count, key_count = cursor.u64(), cursor.u64()
    cursor.fits(key_count, MIN_KEY, "metadata keys")
    for _ in range(key_count):
        key = cursor.text("a metadata key", MAX_NAME)
        if key in header.fields:
            raise cursor.damaged(f"the metadata key {clean(key, 60)} appears twice")
        header.fields[key] = _locate(cursor, cursor.u32(), key)
    cursor.fits(tensor_count, MIN_TENSOR, "tensors")
    entries = [_tensor_entry(cursor) for _ in range(tensor_count)]
    header.alignment = _alignment(header, cursor)
    header.data_offset = cursor.pos + -cursor.pos % header.alignment
    header.tensors = _tensors(cursor, entries, header.data_offset)
    return header


class _Cursor:
    """A position in the source, and reads that check the file's end before they happen."""

    def __init__(self, source: BufferedSource, order: str, pos: int) -> None:
        self.source, self.order, self.pos = source, order, pos
        self.size = source.size
        self._u32 = struct.Struct(order + "I")
        self._u64 = struct.Struct(order + "Q")

    def damaged(self, detail: str) -> ModelFileError:
        return ModelFileError(f"{self.source.name}: damaged GGUF header: {detail}")

    def truncated(self, end: int) -> ModelFileError:
        return ModelFileError(
            f"{self.source.name}: truncated: it needs bytes up to {end:,} but has {self.size:,}"
        )

    def fits(self, count: int, item_size: int, what: str) -> None:
        """Refuse a count whose items could not fit in the rest of the file (a file cut
        short, or a damaged count) before any loop runs over them."""
        need, left = count * item_size, self.size - self.pos
        if need > left:
            raise ModelFileError(
                f"{self.source.name}: truncated, or a damaged count: {count:,} {what} at byte "
                f"{self.pos:,} need {need:,} bytes at least, and {left:,} are left"
            )

    def skip(self, length: int) -> None:
        end = self.pos + length
        if end > self.size:
            raise self.truncated(end)
        self.pos = end

    def take(self, length: int) -> bytes:
        start = self.pos
        self.skip(length)
        return self.source.read(start, length)

    def u32(self) -> int:
        return int(self._u32.unpack(self.take(4))[0])

    def u64(self) -> int:
        return int(self._u64.unpack(self.take(8))[0])

    def text(self, what: str, limit: int = MAX_DECODED) -> str:
        start, length = self.pos, self.u64()
        if length > limit:
            raise self.damaged(f"{what} at byte {start:,} claims {length:,} bytes")
        return _text(self.take(length), self.source.name, what, start)

    def skip_strings(self, count: int) -> None:
        """Step over `count` strings by their lengths alone: the hot loop of a vocabulary
        (about 0.1 us a string), run block by block on the buffered bytes."""
        unpack, pos, left = self._u64.unpack_from, self.pos, count
        while left:
            data, start = self.source.window(pos, 8)
            rel, last = pos - start, len(data) - 8  # `last`: where a length can still start
            if rel > last:
                raise self.truncated(pos + 8)
            done = left
            for i in range(left):
                if rel > last:  # the next length lies past this block
                    done = i
                    break
                rel += unpack(data, rel)[0] + 8
            left -= done
            pos = start + rel
        if pos > self.size:
            raise self.truncated(pos)
        self.pos = pos


def _text(raw: bytes, name: str, what: str, at: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFileError(
            f"{name}: damaged GGUF header: {what} at byte {at:,} is not UTF-8 text"
        ) from None


def _payload(found: Field) -> int:
    """The bytes a scalar, a string or an array of scalars takes."""
    if found.item_type is not None:
        return found.count * SIZES[found.item_type]
    return found.count if found.type == types.STRING else SIZES[found.type]


def _locate(cursor: _Cursor, kind: int, key: str) -> Field:
    """Where a value of this type lies; the cursor steps past it. A small value's bytes
    are kept: the card asks for a few, and reading them again would cost a request."""
    if kind == types.ARRAY:
        item_type, count = cursor.u32(), cursor.u64()
        found = Field(kind, cursor.pos, item_type, count)
        if item_type not in SIZES:  # strings or arrays: only a walk finds the end
            _skip_items(cursor, item_type, count, key, depth=1)
            return replace(found, size=cursor.pos - found.offset)
        cursor.fits(count, SIZES[item_type], "array items")
    elif kind == types.STRING:
        length = cursor.u64()
        found = Field(kind, cursor.pos, count=length)
    elif kind in SIZES:
        found = Field(kind, cursor.pos)
    else:
        raise cursor.damaged(f"metadata {clean(key, 60)} has value type {kind}, unknown to GGUF")
    size = _payload(found)
    if size <= KEEP:
        return replace(found, size=size, raw=cursor.take(size))
    cursor.skip(size)
    return replace(found, size=size)


def _skip_items(cursor: _Cursor, kind: int, count: int, key: str, depth: int) -> None:
    if kind not in SIZES and kind not in MIN_ITEM:
        raise cursor.damaged(
            f"metadata {clean(key, 60)} holds items of type {kind}, unknown to GGUF"
        )
    cursor.fits(count, SIZES.get(kind) or MIN_ITEM[kind], "array items")
    if kind in SIZES:
        cursor.skip(count * SIZES[kind])
    elif kind == types.STRING:
        cursor.skip_strings(count)
    elif depth >= MAX_NESTING:
        raise cursor.damaged(f"metadata {clean(key, 60)} nests arrays over {MAX_NESTING} deep")
    else:
        for _ in range(count):
            _skip_items(cursor, cursor.u32(), cursor.u64(), key, depth + 1)


def _items(cursor: _Cursor, kind: int, count: int, key: str) -> list[Any]:
    """An array's items decoded (the header walk has checked that they fit)."""
    if kind in SIZES:
        data = cursor.take(count * SIZES[kind])
        return list(struct.unpack(f"{cursor.order}{count}{types.SCALARS[kind]}", data))
    if kind == types.STRING:
        return [cursor.text(f"an item of metadata {clean(key, 60)}") for _ in range(count)]
    return [_items(cursor, cursor.u32(), cursor.u64(), key) for _ in range(count)]


def _tensor_entry(cursor: _Cursor) -> tuple[str, tuple[int, ...], int, int]:
    """(name, dimensions, storage type, offset) as the tensor table stores them."""
    name = cursor.text("a tensor name", MAX_NAME)
    n_dims = cursor.u32()
    if n_dims > MAX_DIMS:
        raise cursor.damaged(f"tensor {clean(name, 60)} has {n_dims:,} dimensions (at most 4)")
    dims = struct.unpack(f"{cursor.order}{n_dims}Q", cursor.take(8 * n_dims))
    return name, dims, cursor.u32(), cursor.u64()


def _alignment(header: GGUFHeader, cursor: _Cursor) -> int:
    """`general.alignment`: a u32 power of two where the tensor data is aligned."""
    found = header.fields.get(types.ALIGNMENT)
    if found is None:
        return types.DEFAULT_ALIGNMENT
    if found.type != UINT32:
        kind = types.VALUE_TYPES.get(found.type, str(found.type))
        raise cursor.damaged(f"{types.ALIGNMENT} should be a UINT32, found a {kind}")
    alignment = int(header.value(types.ALIGNMENT))
    if alignment == 0 or alignment & (alignment - 1):
        raise cursor.damaged(f"{types.ALIGNMENT} is {alignment:,}, not a power of two")
    return alignment


def _tensors(
    cursor: _Cursor, entries: list[tuple[str, tuple[int, ...], int, int]], data_offset: int
) -> list[Tensor]:
    """The tensor table with exact sizes, each tensor checked to end inside the file."""
    tensors, seen = [], set()
    for name, dims, kind, offset in entries:
        shown = clean(name, 60)
        if name in seen:
            raise cursor.damaged(f"the tensor {shown} appears twice")
        seen.add(name)
        if kind not in types.QUANT_TYPES:
            raise cursor.damaged(f"tensor {shown} has storage type {kind}, unknown to gguf")
        type_name, block, block_bytes = types.QUANT_TYPES[kind]
        if block > 1 and (not dims or dims[0] % block):
            row = dims[0] if dims else 0
            raise cursor.damaged(
                f"tensor {shown} has rows of {row:,} weights, "
                f"and {type_name} stores them in blocks of {block}"
            )
        n_elements = math.prod(dims)
        n_bytes = n_elements * block_bytes // block
        start = data_offset + offset
        if start + n_bytes > cursor.size:
            raise ModelFileError(
                f"{cursor.source.name}: truncated: tensor {shown} ends at byte "
                f"{start + n_bytes:,} but the file has {cursor.size:,} bytes"
            )
        tensors.append(Tensor(name, dims, type_name, start, n_elements, n_bytes))
    return tensors
