"""A Hub on loopback for the tests: the file protocol `huggingface_hub`'s client speaks.

No hub is reachable from a test, so this serves what the client asks for when
it lists a repository, resolves a file and downloads it, and nothing more:

    GET  /api/models/ORG/NAME[/revision/REV]   the listing (`HfApi.model_info`): the commit,
                                               and with ?blobs=true every file's size, git
                                               blob id and, for LFS files, sha256 and size
    HEAD /ORG/NAME/resolve/REV/PATH            a file's metadata: `ETag` and `X-Repo-Commit`;
    GET  (the same)                            an LFS file answers 302 to the storage host with
                                               `X-Linked-Etag` (its sha256) and `X-Linked-Size`,
                                               as the Hub does, other files 200; `Range` gives
                                               206 with `Content-Range`
    GET  /api/datasets/ORG/NAME[/revision/REV] and /datasets/ORG/NAME/resolve/REV/PATH: the
                                               same for a dataset repository (`add_dataset`),
                                               whose parquet files are LFS as on the Hub;
                                               GET /api/datasets/ORG/NAME/tree/REV[/PATH] lists
                                               its files (`snapshot_download` of a dataset)
    GET  http://STORAGE/SHA256                 an LFS file's bytes, by range, on a second port:
                                               another origin, so the client sends no token there
    GET  /api/models?search=&author=&filter=&gated=&sort=&direction=&limit=&full=&expand=...
                                               the model search (`HfApi.list_models`): the
                                               repositories whose id holds `search`
                                               (case-insensitive), of `author`, carrying every
                                               `filter` tag; sorted by downloads, likes,
                                               lastModified, createdAt or trendingScore (highest
                                               first; `direction=1` lowest first), any other sort
                                               a 400; `limit` per page (at most `page_size`), the
                                               next page named by a `Link: <...>; rel="next"`
                                               header (a `cursor` in it), as the Hub pages;
                                               `expand` (or `expand[]`) picks the properties
                                               answered (id and _id always): author, cardData,
                                               createdAt, disabled, downloads, gated,
                                               lastModified, library_name, likes, private, sha,
                                               siblings (names only, as the Hub lists them there),
                                               tags, pipeline_tag, trendingScore; `full=true`
                                               all of them but cardData, which `cardData=true`
                                               adds; without either, the Hub's short default

Errors carry the headers the client maps to its exceptions: `X-Error-Code:
RepoNotFound` (404, or 401 for a private repository without a token),
`GatedRepo` (401 without a token, 403 with a token not granted access),
`RevisionNotFound`, `EntryNotFound`. The files are real: the embedded GGUF and
the MiniLM folder, read from where their packages put them. REV is main or the
repository's commit, or a branch added with `branch=` (as the Hub keeps its
parquet conversion of a dataset on `refs/convert/parquet`) or that branch's commit.

Switches for the failure cases: `gated` and `private` repositories (`tokens`
open them), `drop[file] = N` (the next whole download of that file stops
after N bytes, the connection closed mid-body, once), `corrupt[file] = offset` (that
byte served flipped, always), `no_ranges` (ranges ignored, whole files sent).
`log` records every request (method, path, Range header).

What the search says of a repository is set per repository in `meta` (a `Meta`:
downloads, likes, tags, licence, card data, lastModified, library); what it does
not set is derived from the files as the Hub derives it (the `gguf` and
`safetensors` tags, `license:` from the licence, the card data from README.md's
YAML front matter). `Repo.salt` changes a repository's commit (a new push).
`delay_s` answers every request, on both ports, after that many seconds;
`peak` is the most requests that were in flight at once since the last `reset`,
so a test sees that a client's requests overlapped.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

LFS_SUFFIXES = (".gguf", ".safetensors", ".bin", ".parquet")
LFS_SIZE = 10 << 20
CHUNK = 1 << 16
_DIGESTS: dict[tuple[str, int], tuple[str, str]] = {}  # (path, size) -> (sha1 blob id, sha256)


@dataclass
class Entry:
    """One file of a repository: its bytes' source, and the digests the Hub publishes."""

    source: Path | bytes

    @property
    def size(self) -> int:
        return len(self.source) if isinstance(self.source, bytes) else self.source.stat().st_size

    @property
    def lfs(self) -> bool:
        name = self.source.name if isinstance(self.source, Path) else ""
        return name.endswith(LFS_SUFFIXES) or self.size >= LFS_SIZE

    def digests(self) -> tuple[str, str]:
        """(git blob id of the content, sha256), computed once per file."""
        key = (str(self.source) if isinstance(self.source, Path) else "", self.size)
        if isinstance(self.source, Path) and key in _DIGESTS:
            return _DIGESTS[key]
        sha1 = hashlib.sha1(f"blob {self.size}\0".encode())
        sha256 = hashlib.sha256()
        for chunk in self.chunks(0, self.size):
            sha1.update(chunk)
            sha256.update(chunk)
        found = (sha1.hexdigest(), sha256.hexdigest())
        if isinstance(self.source, Path):
            _DIGESTS[key] = found
        return found

    @property
    def pointer(self) -> bytes:
        """The LFS pointer git stores in the file's place."""
        return (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.digests()[1]}\n"
            f"size {self.size}\n"
        ).encode()

    @property
    def blob_id(self) -> str:
        if not self.lfs:
            return self.digests()[0]
        return hashlib.sha1(f"blob {len(self.pointer)}\0".encode() + self.pointer).hexdigest()

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        """The bytes in [start, end)."""
        if isinstance(self.source, bytes):
            yield self.source[start:end]
            return
        with self.source.open("rb") as f:
            f.seek(start)
            left = end - start
            while left > 0:
                data = f.read(min(CHUNK, left))
                if not data:
                    return
                left -= len(data)
                yield data


@dataclass
class Repo:
    files: dict[str, Entry]
    gated: bool = False
    private: bool = False
    salt: str = ""  # a new value is a new commit of the same files
    branches: dict[str, Repo] = field(default_factory=dict)  # by name, besides main

    def at(self, rev: str | None) -> Repo | None:
        """The files at a revision: main, a branch, or either's commit; None for no such one."""
        if rev in (None, "main", self.commit):
            return self
        return next((b for n, b in self.branches.items() if rev in (n, b.commit)), None)

    @property
    def commit(self) -> str:
        text = json.dumps([self.salt, sorted((n, e.size) for n, e in self.files.items())])
        return hashlib.sha1(text.encode()).hexdigest()


@dataclass
class Meta:
    """What the model search tells of a repository beyond its files."""

    downloads: int = 0
    likes: int = 0
    tags: list[str] = field(default_factory=list)
    license: str | None = None
    card: dict[str, Any] | None = None  # None: README.md's front matter, as the Hub parses it
    last_modified: str = "2026-01-01T00:00:00.000Z"
    created: str = "2025-06-01T00:00:00.000Z"
    library: str | None = None
    pipeline_tag: str | None = "text-generation"


SORTS = {
    "downloads": lambda r: r["downloads"],
    "likes": lambda r: r["likes"],
    "lastModified": lambda r: r["lastModified"],
    "createdAt": lambda r: r["createdAt"],
    "trendingScore": lambda r: r["trendingScore"],
}
# The properties a search answers without `expand` or `full`, as the Hub does.
SHORT = (
    "id",
    "_id",
    "likes",
    "trendingScore",
    "private",
    "downloads",
    "tags",
    "pipeline_tag",
    "library_name",
    "createdAt",
    "modelId",
)
FULL = (*SHORT, "author", "sha", "lastModified", "gated", "disabled", "siblings")


def folder_files(folder: Path) -> dict[str, Path | bytes]:
    """Every file under a folder, by its path relative to it."""
    return {
        p.relative_to(folder).as_posix(): p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@dataclass
class Hub:
    """The repositories served, the switches, and the log of requests."""

    repos: dict[str, Repo] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    drop: dict[str, int] = field(default_factory=dict)
    corrupt: dict[str, int] = field(default_factory=dict)
    no_ranges: bool = False
    meta: dict[str, Meta] = field(default_factory=dict)
    delay_s: float = 0.0
    page_size: int = 1000  # the Hub's own cap on a page of search results
    in_flight: int = 0
    peak: int = 0
    log: list[tuple[str, str, str | None]] = field(default_factory=list)
    url: str = ""
    storage: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(
        self,
        repo: str,
        files: dict[str, Path | bytes],
        branch: str = "",
        *,
        gated: bool = False,
        private: bool = False,
        meta: Meta | None = None,
    ) -> None:
        """A repository's main branch, or with `branch` a branch of one added before; `meta` is
        what the search says of it beyond its files."""
        entries = {n: Entry(s) for n, s in files.items()}
        if branch:
            self.repos[repo].branches[branch] = Repo(entries)
        else:
            self.repos[repo] = Repo(entries, gated=gated, private=private)
        if meta is not None:
            self.meta[repo] = meta

    def add_dataset(
        self,
        repo: str,
        files: dict[str, Path | bytes],
        branch: str = "",
        *,
        gated: bool = False,
        private: bool = False,
    ) -> None:
        """A dataset repository: the Hub keeps datasets apart from models, under datasets/."""
        self.add(DATASETS + repo, files, branch, gated=gated, private=private)

    def reset(self) -> None:
        """The switches off and the log empty (the repositories stay)."""
        with self.lock:
            self.tokens.clear()
            self.drop.clear()
            self.corrupt.clear()
            self.no_ranges = False
            self.meta.clear()
            self.delay_s = 0.0
            self.page_size = 1000
            self.peak = self.in_flight
            self.log.clear()
            for name in [n for n, r in self.repos.items() if r.gated or r.private]:
                del self.repos[name]
            for repo in self.repos.values():
                repo.salt = ""

    def requests(self, path_part: str = "") -> list[tuple[str, str, str | None]]:
        with self.lock:
            return [r for r in self.log if path_part in r[1]]

    def model(self, name: str, repo: Repo, granted: bool) -> dict[str, Any] | None:
        """Everything the search can tell of a model repository; None if it is not shown."""
        if name.startswith(DATASETS) or (repo.private and not granted):
            return None
        meta = self.meta.get(name, Meta())
        names = list(repo.files)
        gguf = any(n.endswith(".gguf") for n in names)
        card = meta.card if meta.card is not None else _front_matter(repo.files.get("README.md"))
        licence = meta.license or card.get("license")
        library = meta.library or (
            "gguf" if gguf else "transformers" if "config.json" in names else None
        )
        tags = [
            *(["gguf"] if gguf else []),
            *(["safetensors"] if any(n.endswith(".safetensors") for n in names) else []),
            *([library] if library and library != "gguf" else []),
            *([f"license:{licence}"] if licence else []),
            *meta.tags,
        ]
        return {
            "_id": repo.commit[:24],
            "id": name,
            "modelId": name,
            "author": name.split("/")[0],
            "sha": repo.commit,
            "private": repo.private,
            "gated": "auto" if repo.gated else False,
            "disabled": False,
            "downloads": meta.downloads,
            "likes": meta.likes,
            "trendingScore": meta.likes,
            "lastModified": meta.last_modified,
            "createdAt": meta.created,
            "library_name": library,
            "pipeline_tag": meta.pipeline_tag,
            "tags": list(dict.fromkeys(tags)),
            "cardData": {**card, **({"license": licence} if licence else {})},
            "siblings": [{"rfilename": n} for n in names],
        }

    def by_sha(self, sha256: str) -> tuple[str, Entry] | None:
        every = [r for repo in self.repos.values() for r in (repo, *repo.branches.values())]
        for repo in every:
            for name, entry in repo.files.items():
                if entry.lfs and entry.digests()[1] == sha256:
                    return name, entry
        return None


DATASETS = "datasets/"  # the key prefix of a dataset repository, as in the Hub's own URLs
SEARCH = "/api/models"
RESOLVE = re.compile(r"^/(?P<repo>(?:datasets/)?[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
# A branch's name may hold slashes (refs/convert/parquet): the client quotes them, and the
# path is read unquoted, so REV is the rest of the path here.
API = re.compile(
    r"^/api/(?P<kind>models|datasets)/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>.+))?$"
)
TREE = re.compile(
    r"^/api/(?P<kind>models|datasets)/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$"
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body in separate writes: no 40 ms stalls
    hub: Hub
    storage_role = False

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._route(body=False)

    def do_GET(self) -> None:
        try:
            self._route(body=True)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client stopped reading (a refused answer)

    # -- routing ---------------------------------------------------------------------------

    def _route(self, body: bool) -> None:
        with self.hub.lock:
            self.hub.in_flight += 1
            self.hub.peak = max(self.hub.peak, self.hub.in_flight)
        try:
            if self.hub.delay_s:
                time.sleep(self.hub.delay_s)
            self._answer(body)
        finally:
            with self.hub.lock:
                self.hub.in_flight -= 1

    def _answer(self, body: bool) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        with self.hub.lock:
            self.hub.log.append((self.command, path, self.headers.get("Range")))
        if self.storage_role:
            found = self.hub.by_sha(path.strip("/"))
            if found is None:
                return self._error(404, "EntryNotFound", "no such blob")
            return self._send_file(found[0], found[1], body)
        if path.rstrip("/") == SEARCH:
            return self._search(parse_qs(parts.query))
        api = API.match(path)
        if api is not None:
            repo = (DATASETS if api["kind"] == "datasets" else "") + api["repo"]
            return self._listing(repo, api["rev"], parse_qs(parts.query))
        tree = TREE.match(path)
        if tree is not None:
            repo = (DATASETS if tree["kind"] == "datasets" else "") + tree["repo"]
            return self._tree(repo, tree["rev"], tree["path"] or "")
        resolve = RESOLVE.match(path)
        if resolve is not None:
            return self._resolve(resolve["repo"], resolve["rev"], resolve["path"], body)
        self._error(404, None, "not a route of the test Hub")

    def _repo(self, name: str, files: bool) -> Repo | None:
        """The repository if this request may see it; else the error is sent."""
        repo = self.hub.repos.get(name)
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        granted = token in self.hub.tokens
        if repo is None or (repo.private and not granted):
            status = 401 if repo is not None and not token else 404
            self._error(status, "RepoNotFound", f"Repository Not Found for url: {self.path}.")
            return None
        if repo.gated and files and not granted:
            status, what = (403, "has not been granted access") if token else (401, "is not")
            self._error(
                status,
                "GatedRepo",
                f"Access to model {name} is restricted: the user {what} authenticated.",
            )
            return None
        return repo

    def _listing(self, name: str, rev: str | None, query: dict[str, list[str]]) -> None:
        found = self._repo(name, files=False)
        if found is None:
            return
        repo = found.at(rev)
        if repo is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for file, entry in repo.files.items():
            sibling: dict[str, Any] = {"rfilename": file}
            if blobs:
                sibling.update(size=entry.size, blobId=entry.blob_id)
                if entry.lfs:
                    sibling["lfs"] = {
                        "sha256": entry.digests()[1],
                        "size": entry.size,
                        "pointerSize": len(entry.pointer),
                    }
            siblings.append(sibling)
        data = {
            "_id": repo.commit[:24],
            "id": name.removeprefix(DATASETS),
            "modelId": name.removeprefix(DATASETS),
            "sha": repo.commit,
            "private": found.private,
            "gated": "auto" if found.gated else False,
            "disabled": False,
            "tags": [],
            "siblings": siblings,
            "lastModified": "2026-01-01T00:00:00.000Z",
        }
        self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def _search(self, query: dict[str, list[str]]) -> None:
        """The model search, one page of it (see the module's docstring)."""
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        granted = token in self.hub.tokens
        one = {k: v[-1] for k, v in query.items()}
        sort, direction = one.get("sort"), one.get("direction", "-1")
        if sort is not None and sort not in SORTS:
            return self._error(400, None, f"Invalid sort parameter: {sort}")
        try:
            limit = min(int(one.get("limit", "1000")), 1000, self.hub.page_size)
            cursor = int(one.get("cursor", "0"))
        except ValueError:
            return self._error(400, None, "limit and cursor must be integers")
        with self.hub.lock:
            repos = list(self.hub.repos.items())
        found = [m for name, repo in repos if (m := self.hub.model(name, repo, granted))]
        found = [m for m in found if _matches(m, one, query.get("filter", []))]
        if sort is not None:
            found.sort(key=SORTS[sort], reverse=direction != "1")
        page = found[cursor : cursor + limit]
        picked = _properties(query, one)
        data = [{k: m[k] for k in m if k in picked} for m in page]
        headers = {"Content-Type": "application/json"}
        if cursor + limit < len(found):
            following = {k: v for k, v in query.items() if k != "cursor"}
            following["cursor"] = [str(cursor + limit)]
            link = f"{self.hub.url}{SEARCH}?{urlencode(following, doseq=True)}"
            headers["Link"] = f'<{link}>; rel="next"'
        self._send(200, json.dumps(data).encode(), headers)

    def _tree(self, name: str, rev: str, under: str) -> None:
        """Every file under a folder, recursively (the client asks `recursive=true`), with the
        folders on the way, as the Hub's tree API lists them."""
        found = self._repo(name, files=True)
        repo = None if found is None else found.at(rev)
        if found is None:
            return
        if repo is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        prefix = under.strip("/") + "/" if under.strip("/") else ""
        entries: list[dict[str, Any]] = []
        folders: set[str] = set()
        for file, entry in sorted(repo.files.items()):
            if not file.startswith(prefix):
                continue
            parts = file.split("/")
            for depth in range(1, len(parts)):
                folders.add("/".join(parts[:depth]))
            item: dict[str, Any] = {
                "type": "file",
                "oid": entry.blob_id,
                "size": entry.size,
                "path": file,
            }
            if entry.lfs:
                item["lfs"] = {
                    "oid": entry.digests()[1],
                    "size": entry.size,
                    "pointerSize": len(entry.pointer),
                }
            entries.append(item)
        entries += [
            {"type": "directory", "oid": "0" * 40, "size": 0, "path": f}
            for f in sorted(folders)
            if f.startswith(prefix)
        ]
        self._send(200, json.dumps(entries).encode(), {"Content-Type": "application/json"})

    def _resolve(self, name: str, rev: str, file: str, body: bool) -> None:
        found = self._repo(name, files=True)
        repo = None if found is None else found.at(rev)
        if found is None:
            return
        if repo is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        entry = repo.files.get(file)
        commit = {"X-Repo-Commit": repo.commit}
        if entry is None:
            return self._error(404, "EntryNotFound", f"{file} does not exist", commit)
        if entry.lfs:
            sha256 = entry.digests()[1]
            headers = {
                **commit,
                "ETag": f'"{entry.blob_id}"',
                "X-Linked-Etag": f'"{sha256}"',
                "X-Linked-Size": str(entry.size),
                "Location": f"{self.hub.storage}/{sha256}",
            }
            return self._send(302, b"", headers, body=body)
        self._send_file(file, entry, body, {**commit, "ETag": f'"{entry.blob_id}"'})

    # -- answers ---------------------------------------------------------------------------

    def _error(
        self, status: int, code: str | None, message: str, extra: dict[str, str] | None = None
    ) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), headers)

    def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool = True) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(data)

    def _send_file(
        self, file: str, entry: Entry, body: bool, extra: dict[str, str] | None = None
    ) -> None:
        size = entry.size
        start, end = 0, size  # [start, end)
        wanted = self.headers.get("Range")
        status = 200
        if wanted and not self.hub.no_ranges:
            found = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
            if found is None or int(found[1]) >= size:
                return self._error(416, None, f"unsatisfiable range {wanted}")
            start = int(found[1])
            end = min(size, int(found[2]) + 1) if found[2] else size
            status = 206
        self.send_response(status)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if not body:
            return
        with self.hub.lock:
            drop = self.hub.drop.pop(file, None) if status == 200 else None
        flip = self.hub.corrupt.get(file)
        sent = start
        for chunk in entry.chunks(start, end):
            if flip is not None and sent <= flip < sent + len(chunk):
                at = flip - sent
                chunk = chunk[:at] + bytes([chunk[at] ^ 0xFF]) + chunk[at + 1 :]
            if drop is not None and sent + len(chunk) - start > drop:
                self.wfile.write(chunk[: max(0, drop - (sent - start))])
                self.wfile.flush()
                self.close_connection = True  # the body cut short: the client sees it end
                return
            self.wfile.write(chunk)
            sent += len(chunk)


def _front_matter(entry: Entry | None) -> dict[str, Any]:
    """A README's YAML front matter, the card data the Hub answers; {} without one."""
    if entry is None:
        return {}
    text = b"".join(entry.chunks(0, entry.size)).decode("utf-8", "replace")
    found = re.match(r"^---\n(.*?)\n---", text, re.DOTALL)
    if found is None:
        return {}
    import yaml

    data = yaml.safe_load(found[1])
    return data if isinstance(data, dict) else {}


def _matches(model: dict[str, Any], one: dict[str, str], filters: list[str]) -> bool:
    """Whether a model answers the search's query, author, gated and filter (tags) terms."""
    if one.get("search", "").lower() not in model["id"].lower():
        return False
    if "author" in one and model["author"].lower() != one["author"].lower():
        return False
    if "gated" in one and bool(model["gated"]) != (one["gated"].lower() == "true"):
        return False
    tags = {*model["tags"], model["library_name"], model["pipeline_tag"]}
    return all(f in tags for f in filters)


def _properties(query: dict[str, list[str]], one: dict[str, str]) -> set[str]:
    """The properties a search answers: `expand`'s, else `full`'s, else the short default."""
    expand = query.get("expand", []) + query.get("expand[]", [])
    if expand:
        return {"id", "_id", *expand}
    picked = set(FULL if one.get("full", "").lower() == "true" else SHORT)
    return picked | ({"cardData"} if one.get("cardData", "").lower() == "true" else set())


@contextmanager
def serving(hub: Hub) -> Iterator[Hub]:
    """The Hub and its storage host on two loopback ports until the block ends."""
    servers = []
    for storage in (False, True):
        handler = type("Handler", (_Handler,), {"hub": hub, "storage_role": storage})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    hub.url = f"http://127.0.0.1:{servers[0].server_address[1]}"
    hub.storage = f"http://127.0.0.1:{servers[1].server_address[1]}"
    try:
        yield hub
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
