"""Real GGUF files made from the embedded model, for a repository of several: the same
weights requantized (Q4_1 dequantized and quantized again as Q8_0, which llama.cpp
loads like any Q8_0 file), and the same file split in parts as `llama-gguf-split`
writes them (the `gguf` package's writer does the splitting)."""

from __future__ import annotations

import functools
from collections.abc import Collection
from pathlib import Path
from typing import Any

from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, Keys
from gguf.quants import dequantize, quantize

MOSTLY_Q8_0 = 7


def _writer_from(
    reader: GGUFReader, writer: GGUFWriter, file_type: int | None, skip: Collection[str] = ()
) -> None:
    """Every metadata value of `reader` into `writer` (the architecture it already has), but
    the keys in `skip`."""
    for field in reader.fields.values():
        if field.name == Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name in skip:
            continue
        kind = field.types[0]
        value: Any = field.contents()
        if field.name == Keys.General.FILE_TYPE and file_type is not None:
            value = file_type
        sub = field.types[-1] if kind == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, kind, sub_type=sub)


@functools.cache
def _reader(source: Path) -> GGUFReader:
    """A file's reader, once: a parse walks the vocabulary field by field (seconds)."""
    return GGUFReader(source)


def _architecture(reader: GGUFReader) -> str:
    return str(reader.fields[Keys.General.ARCHITECTURE].contents())


def requantized(source: Path, out: Path) -> Path:
    """The model with every Q4_1 tensor stored as Q8_0 instead."""
    reader = _reader(source)
    writer = GGUFWriter(out, _architecture(reader))
    _writer_from(reader, writer, MOSTLY_Q8_0)
    for tensor in reader.tensors:
        kind, data = tensor.tensor_type, tensor.data
        if kind == GGMLQuantizationType.Q4_1:
            kind = GGMLQuantizationType.Q8_0
            data = quantize(dequantize(data, GGMLQuantizationType.Q4_1), kind)
        writer.add_tensor(tensor.name, data, raw_dtype=kind)
    _finish(writer)
    return out


def split(source: Path, folder: Path, parts: int = 2) -> list[Path]:
    """The model split in `parts` files, NAME-0000i-of-0000N.gguf, as llama-gguf-split does."""
    reader = _reader(source)
    per_part = -(-len(reader.tensors) // parts)
    stem = source.name.removesuffix(".gguf")
    writer = GGUFWriter(folder / f"{stem}.gguf", _architecture(reader), split_max_tensors=per_part)
    _writer_from(reader, writer, None)
    _copy_tensors(reader, writer)
    _finish(writer)
    return sorted(folder.glob(f"{stem}-*-of-*.gguf"))


def _copy_tensors(reader: GGUFReader, writer: GGUFWriter) -> None:
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)


def _finish(writer: GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def relabelled(source: Path, out: Path, strings: dict[str, str]) -> Path:
    """The same model with these string values in its metadata (set or replaced), as a
    file from anywhere could carry them."""
    reader = _reader(source)
    writer = GGUFWriter(out, _architecture(reader))
    _writer_from(reader, writer, None, skip=strings)
    for key, value in strings.items():
        writer.add_string(key, value)
    _copy_tensors(reader, writer)
    _finish(writer)
    return out
