"""Byte sources: the bytes of a model file, read by range, wherever the file lies.

A header reader asks a source for `read(offset, length)` and knows nothing of
where the bytes come from: a local file now, HTTP range requests later. Every
source counts the requests it served and the bytes it returned, so a reader's
cost can be measured and kept small. `BufferedSource` reads ahead in large
blocks, so that a parser's many small reads (a length here, a type there)
become a few large requests.

A leaf: it imports nothing from scheda, and raises only what the operating
system raises (`OSError`); the reader that uses it turns that into its own
error naming the file.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

BLOCK = 1 << 20  # read-ahead: a model header is 1-10 MB, mostly its vocabulary


class ByteSource(ABC):
    """Bytes by range, with the requests and bytes served counted."""

    name: str  # what an error message names: a path, later a URL
    size: int  # the length in bytes

    def __init__(self) -> None:
        self.requests = 0
        self.bytes_read = 0

    def read(self, offset: int, length: int) -> bytes:
        """The bytes at [offset, offset + length), fewer where the source ends."""
        length = min(length, self.size - offset)
        if offset < 0 or length <= 0:
            return b""
        data = self._fetch(offset, length)
        self.requests += 1
        self.bytes_read += len(data)
        return data

    @abstractmethod
    def _fetch(self, offset: int, length: int) -> bytes:
        """At most `length` bytes from `offset`; both lie inside the source."""

    @abstractmethod
    def close(self) -> None:
        """Free what the source holds open (a file, a connection)."""

    def __enter__(self) -> ByteSource:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


class FileSource(ByteSource):
    """A local file, opened once; raises `OSError` if it cannot be opened."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.name = str(path)
        self._file: BinaryIO = open(path, "rb")  # noqa: SIM115 (closed by close())
        self.size = self._file.seek(0, 2)

    def _fetch(self, offset: int, length: int) -> bytes:
        self._file.seek(offset)
        return self._file.read(length)

    def close(self) -> None:
        self._file.close()


class BufferedSource(ByteSource):
    """Another source read ahead in blocks: a read inside the last block costs no request.

    Its own counts are the parser's reads; the wrapped source's are what it cost.
    """

    def __init__(self, source: ByteSource, block: int = BLOCK) -> None:
        super().__init__()
        self.source, self.block = source, block
        self.name, self.size = source.name, source.size
        self._data, self._start = b"", 0

    def window(self, offset: int, length: int) -> tuple[bytes, int]:
        """Buffered bytes that hold [offset, offset + length) (less where the source ends),
        and the offset they start at: a parser's inner loop may index them directly."""
        end = min(offset + length, self.size)
        if offset < self._start or end > self._start + len(self._data):
            self._data = self.source.read(offset, max(length, self.block))
            self._start = offset
        return self._data, self._start

    def _fetch(self, offset: int, length: int) -> bytes:
        data, start = self.window(offset, length)
        return data[offset - start : offset - start + length]

    def close(self) -> None:
        self.source.close()
