"""A model's SHA-256: of the file, or of a folder's files in name order, remembered.

What a battle stores to say which bytes answered: two files of one name are
told apart, one file under two names is known for the same. Hashing reads the
whole model (seconds a gigabyte), so the answer is kept in the cache folder,
keyed by the path, size and modification time of every file hashed: a file
changed in place is hashed again, one left alone never is.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from scheda import settings

CHUNK = 1 << 20
_lock = threading.Lock()  # one writer of the remembered digests per process


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))


def _key(path: Path, files: list[Path]) -> str:
    stats = [(str(p.relative_to(path) if p != path else p.name), p.stat()) for p in files]
    return json.dumps(
        [str(path), [(name, st.st_size, st.st_mtime_ns) for name, st in stats]], sort_keys=True
    )


def _memory() -> Path:
    return settings.cache_dir() / "digests.json"


def _remembered() -> dict[str, str]:
    try:
        known = json.loads(_memory().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _remember(key: str, digest: str) -> None:
    memory = _memory()
    with _lock:
        known = _remembered()
        known[key] = digest
        try:
            memory.parent.mkdir(parents=True, exist_ok=True)
            partial = memory.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(known), encoding="utf-8")
            partial.replace(memory)  # whole or not at all, for a reader in another process
        except OSError:
            pass  # a read-only cache costs a hash next time, nothing more


def sha256(path: Path) -> str:
    """The hex SHA-256 of a model file, or of a folder's files one after another."""
    path = path.resolve()
    files = _files(path)
    key = _key(path, files)
    known = _remembered().get(key)
    if known:
        return known
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
    value = digest.hexdigest()
    _remember(key, value)
    return value
