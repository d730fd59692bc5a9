"""What was read of each repository, remembered by commit: a repeated search reads nothing.

A repository's files cannot change without its commit changing, and the
search answer gives each repository's commit (`sha`), so the commit is the
validator: a repository whose commit is the one remembered is answered from
here with no request at all; a new commit is read again and replaces the old
entry. Offline the entries answer for the cached repositories they hold.

One JSON file per repository and commit, under the cache folder
(`search/ORG--NAME/SHA.json`), written whole to a temporary name and renamed,
so concurrent searches never read half an entry. What is kept: the spec the
remote reader read (the catalog's facts are added when it is used, so a newer
catalog applies), the sha256 the Hub publishes for each LFS file, and a
failure that the files themselves cause (no config.json, a broken header);
a refusal (gated) or a network failure is not kept: it may pass.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from scheda import settings
from scheda.spec import GGUFFile, ModelSpec, RemoteRead, TensorGroup

VERSION = 1  # of the entry's shape: an entry of another version is read again
COMMIT = re.compile(r"^[0-9a-f]{40}$")
REPO = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass
class Read:
    """What was read of a repository at one commit: its spec, or why it could not be read."""

    repo: str
    sha: str
    spec: ModelSpec | None
    sha256: dict[str, str] = field(default_factory=dict)  # an LFS file's name -> its sha256
    error: str | None = None  # one line: why the repository could not be read
    origin: str = "hub"  # read now on the Hub; "cache": kept here; "local": the HF cache's files


def folder() -> Path:
    return settings.cache_dir() / "search"


def entry_path(repo: str, sha: str) -> Path | None:
    """Where a repository's entry at a commit lives; None for a name or commit that could not
    be a file name safely (the Hub's are letters, digits, '-', '_', '.' and 40 hex digits)."""
    if not REPO.match(repo) or ".." in repo or not COMMIT.match(sha):
        return None
    return folder() / repo.replace("/", "--") / f"{sha}.json"


def load(repo: str, sha: str | None) -> Read | None:
    """The entry for this repository at this commit, or None (a miss: read it)."""
    path = entry_path(repo, sha) if sha else None
    if path is None or sha is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != VERSION:
            return None
        spec = spec_from_dict(data["spec"]) if data["spec"] is not None else None
        return Read(repo, sha, spec, dict(data["sha256"]), data["error"], "cache")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing or damaged: the cache can always be made again


def store(read: Read) -> None:
    """Keep the entry, replacing the repository's entries at other commits."""
    path = entry_path(read.repo, read.sha)
    if path is None:
        return
    data = {
        "version": VERSION,
        "repo": read.repo,
        "sha": read.sha,
        "spec": asdict(read.spec) if read.spec is not None else None,
        "sha256": read.sha256,
        "error": read.error,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(temporary, path)
        for old in path.parent.glob("*.json"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError:
        pass  # a cache that cannot be written costs the next search its reads, nothing more


def spec_from_dict(data: dict[str, Any]) -> ModelSpec:
    """A spec from `asdict`'s dict, its nested records made again."""
    known = {f.name for f in fields(ModelSpec)}
    values = {k: v for k, v in data.items() if k in known}
    values["quantization"] = {
        name: TensorGroup(**group) for name, group in (data.get("quantization") or {}).items()
    }
    remote = data.get("remote")
    if remote is not None:
        ggufs = [GGUFFile(**g) for g in remote.get("ggufs", [])]
        values["remote"] = RemoteRead(**{**remote, "ggufs": ggufs})
    return ModelSpec(**values)
