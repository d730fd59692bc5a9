"""A safetensors file's header read from a byte source: tensor names, dtypes and shapes.

The layout: a little-endian u64 `n`, then `n` bytes of JSON, then the tensor
data. The JSON maps each tensor name to `{"dtype", "shape", "data_offsets"}`
(offsets into the data), and `__metadata__` to a map of strings. Two reads,
whatever the file's size: the length, then the JSON; through an HTTP source
that is two range requests.

A header is untrusted input, checked as the `safetensors` library checks it
when it opens a file (its `Metadata::validate`): the length at most 100 MB and
inside the file, UTF-8 JSON of the right shape, a dtype it defines, shapes and
offsets of unsigned integers, each tensor's bytes equal to its shape times its
dtype's size, the tensors' extents back to back from 0, and the last one
ending exactly at the end of the file. Anything else is one `ModelFileError`
naming the file. `tests/test_fuzz.py` mutates a real header to hold it to that.
"""

from __future__ import annotations

import json
import math
from typing import Any

from scheda.errors import ModelFileError
from scheda.readers.source import ByteSource
from scheda.readers.text import clean

LENGTH = 8  # the u64 before the JSON
MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON
USIZE = (1 << 64) - 1
METADATA = "__metadata__"
# Bits per element of every dtype safetensors 0.8 defines.
DTYPE_BITS = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}

Header = dict[str, tuple[str, list[int]]]


def read_safetensors(source: ByteSource) -> Header:
    """Tensor name -> (dtype, shape), `__metadata__` left out; ModelFileError if corrupt."""
    name = source.name
    head = source.read(0, LENGTH)
    if len(head) < LENGTH:
        raise _corrupt(name, f"{source.size} bytes, too short for a header")
    length = int.from_bytes(head, "little")
    if length > MAX_HEADER:
        raise _corrupt(name, f"the header claims {length:,} bytes, over the {MAX_HEADER:,} allowed")
    if LENGTH + length > source.size:
        raise _corrupt(name, f"the header claims {length:,} bytes and the file has {source.size:,}")
    raw = source.read(LENGTH, length)
    if len(raw) != length:
        raise _corrupt(name, f"read {len(raw):,} of the header's {length:,} bytes")
    entries = _parse(name, raw)
    end = _validate(name, entries)
    if LENGTH + length + end != source.size:
        ends = LENGTH + length + end
        raise _corrupt(name, f"the tensors end at byte {ends:,} and the file at {source.size:,}")
    return {tensor: (dtype, shape) for tensor, (dtype, shape, _) in entries.items()}


def _corrupt(name: str, detail: str) -> ModelFileError:
    return ModelFileError(f"{name}: corrupt safetensors header ({detail})")


Entry = tuple[str, list[int], tuple[int, int]]


def _parse(name: str, raw: bytes) -> dict[str, Entry]:
    constants: list[str] = []  # NaN and Infinity: Python's JSON reads them, JSON has none
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=constants.append)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _corrupt(name, f"the header is not UTF-8 JSON: {clean(exc, 80)}") from None
    if constants:
        raise _corrupt(name, f"the header holds {constants[0]}, which is not JSON")
    if not isinstance(data, dict):
        raise _corrupt(name, f"the header is a JSON {type(data).__name__}, not an object")
    entries = {}
    for tensor, entry in data.items():
        if tensor == METADATA:
            if entry is not None and not (
                isinstance(entry, dict) and all(isinstance(v, str) for v in entry.values())
            ):
                raise _corrupt(name, f"{METADATA} should map names to strings")
            continue
        entries[tensor] = _entry(name, tensor, entry)
    return entries


def _entry(name: str, tensor: str, entry: Any) -> Entry:
    shown = clean(tensor, 60)
    if not isinstance(entry, dict):
        raise _corrupt(name, f"tensor {shown} is not an object")
    for key in ("dtype", "shape", "data_offsets"):
        if key not in entry:
            raise _corrupt(name, f"tensor {shown} has no {key}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise _corrupt(
            name, f"tensor {shown} has dtype {clean(dtype, 20)!r}, unknown to safetensors"
        )
    if not isinstance(shape, list) or not all(_usize(d) for d in shape):
        raise _corrupt(name, f"tensor {shown}: shape should be a list of unsigned integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_usize(o) for o in offsets)):
        raise _corrupt(name, f"tensor {shown}: data_offsets should be two unsigned integers")
    return dtype, shape, (offsets[0], offsets[1])


def _usize(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= USIZE


def _validate(name: str, entries: dict[str, Entry]) -> int:
    """The tensors' extents back to back from 0, each its shape's size; their end."""
    start = 0
    for tensor, (dtype, shape, (begin, end)) in sorted(entries.items(), key=lambda e: e[1][2]):
        shown = clean(tensor, 60)
        if begin != start or end < begin:
            raise _corrupt(
                name, f"tensor {shown} has data offsets {begin:,}-{end:,}, expected {start:,}"
            )
        bits = math.prod(shape) * DTYPE_BITS[dtype]
        if bits > USIZE:
            raise _corrupt(name, f"tensor {shown}: its shape overflows")
        if bits % 8:
            raise _corrupt(name, f"tensor {shown} does not end on a byte boundary")
        if end - begin != bits // 8:
            raise _corrupt(
                name,
                f"tensor {shown} takes {end - begin:,} bytes; its shape and dtype need "
                f"{bits // 8:,}",
            )
        start = end
    return start
