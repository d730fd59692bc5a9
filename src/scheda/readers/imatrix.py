"""Importance matrices as llama-imatrix writes them: GGUF (`name.in_sum2`, `name.counts`) or
the legacy binary format, read as llama-quantize reads them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheda.errors import UsageError
from scheda.readers import gguf_types


@dataclass
class Imatrix:
    """Per tensor, the mean squared activation of each input column (llama-imatrix's output)."""

    values: dict[str, Any]  # tensor name -> float32 numpy array
    datasets: list[str]
    chunks: int


def load_imatrix(path: Path) -> Imatrix:
    """An importance matrix as llama-quantize reads it: GGUF (`name.in_sum2`, `name.counts`)
    or the legacy binary format; the sums divided by their counts, as it does."""
    with path.open("rb") as f:
        magic = f.read(4)
    try:
        return _imatrix_gguf(path) if magic == gguf_types.MAGIC else _imatrix_legacy(path)
    except (ValueError, IndexError, OSError, KeyError) as exc:
        raise UsageError(
            f"--imatrix {path}: not an importance matrix llama.cpp reads ({exc})"
        ) from exc


def _imatrix_gguf(path: Path) -> Imatrix:
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(path))
    sums: dict[str, Any] = {}
    counts: dict[str, Any] = {}
    for tensor in reader.tensors:
        name = tensor.name
        if name.endswith(".in_sum2"):
            sums[name[: -len(".in_sum2")]] = np.asarray(tensor.data, dtype=np.float32).ravel()
        elif name.endswith(".counts"):
            counts[name[: -len(".counts")]] = np.asarray(tensor.data, dtype=np.float32).ravel()
    if not sums or set(sums) != set(counts):
        raise ValueError("its sums and counts do not pair up")
    values = {}
    for name, total in sums.items():
        count = np.rint(counts[name])
        per = total.reshape(len(count), -1)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(count[:, None] > 0, per / count[:, None], 1.0)
        values[name] = mean.astype(np.float32).ravel()
    field_ = reader.get_field("imatrix.datasets")
    datasets = [str(bytes(field_.parts[i]), "utf-8") for i in field_.data] if field_ else []
    chunks = reader.get_field("imatrix.chunk_count")
    count_ = int(chunks.parts[chunks.data[0]][0]) if chunks else 0
    return Imatrix(values, datasets, count_)


def _imatrix_legacy(path: Path) -> Imatrix:
    import numpy as np

    data = path.read_bytes()
    at = 0

    def take(fmt: str, n: int = 1) -> Any:
        nonlocal at
        out = np.frombuffer(data, dtype=fmt, count=n, offset=at)
        at += out.nbytes
        return out

    entries = int(take("<i4")[0])
    if entries < 1:
        raise ValueError("no entries")
    values = {}
    for _ in range(entries):
        length = int(take("<i4")[0])
        name = data[at : at + length].decode()
        at += length
        ncall, nval = (int(v) for v in take("<i4", 2))
        sums = take("<f4", nval).astype(np.float32)
        values[name] = sums / ncall if ncall > 0 else sums
    chunks, datasets = 0, []
    if at + 8 <= len(data):
        chunks = int(take("<i4")[0])
        length = int(take("<i4")[0])
        if length > 0:
            datasets.append(data[at : at + length].decode(errors="replace"))
    return Imatrix(values, datasets, chunks)
