"""A Hub repository's spec read over the network, without downloading its weights.

`org/name` (or `org/name:Q4_K_M` for a GGUF repository) that is not in the
local cache is read where it lies, through `huggingface_hub`, which brings the
endpoint (`HF_ENDPOINT`), the token (`HF_TOKEN` or the Hub CLI's login) and the
offline switch (`HF_HUB_OFFLINE=1`, which keeps scheda off the network):

- one listing (`HfApi.model_info` with file metadata): the commit, every
  file's size and, for LFS files, the sha256 the Hub publishes;
- a GGUF repository's models from their names (`gguf_files`), one picked by
  tag or file name, and its header read by HTTP range requests on the resolve
  URL at that commit, in 1 MiB blocks (`BufferedSource`): the metadata's size
  plus at most 1 MiB, never the tensors; a split GGUF's every part's header;
- an HF repository read by the same reader as a folder on disk
  (`hf_folder.read_hf_folder` over a `HubFolder`): config.json, two range
  requests per safetensors file (its length, then its JSON header), the start
  of tokenizer.json and of README.md, tokenizer_config.json.

Every source counts its requests and bytes; the spec records them
(`ModelSpec.remote`). A redirect the Hub answers a range request with (LFS
files live on a storage host) is followed and not counted; later reads of that
file go straight to where it led, without the token if that is another host.
The Hub's errors become one line that says what to do (`hub_errors`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from scheda.errors import HubAccessError, HubError, ModelFileError, ModelNotFoundError
from scheda.readers import gguf_files
from scheda.readers.hf_folder import Folder, read_hf_folder
from scheda.readers.source import ByteSource
from scheda.spec import GGUFFile, ModelSpec, RemoteRead

if TYPE_CHECKING:
    from huggingface_hub.hf_api import ModelInfo

# org/name, optionally :TAG. Hub names are letters, digits, "-", "_" and "."; no ":".
REFERENCE = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?::(?P<tag>[\w.-]+))?$")
LOGIN = "`hf auth login`"
WHOLE = 1 << 20  # a file this small may come whole from a server that ignores ranges


@dataclass(frozen=True)
class RepoRef:
    """A Hub repository reference: org/name, and a GGUF's quantization tag if given."""

    repo: str
    tag: str | None = None

    def __str__(self) -> str:
        return f"{self.repo}:{self.tag}" if self.tag else self.repo


def parse_ref(ref: str) -> RepoRef | None:
    """`org/name` or `org/name:TAG` as a repository reference; None for anything else."""
    found = REFERENCE.match(ref)
    if found is None or ref.startswith((".", "~")) or ".." in found["repo"]:
        return None
    return RepoRef(found["repo"], found["tag"])


def online() -> bool:
    """Whether scheda may reach the Hub: not with HF_HUB_OFFLINE=1."""
    from huggingface_hub import constants

    return not constants.is_offline_mode()


def endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def resolve_url(repo: str, revision: str, file: str) -> str:
    """The file's resolve URL at a revision, on the configured endpoint."""
    return f"{endpoint()}/{repo}/resolve/{quote(revision, safe='')}/{quote(file)}"


# -- the listing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HubFile:
    """One file of a repository, as the listing tells it."""

    name: str
    size: int
    blob_id: str | None  # the git blob id (sha1 of "blob SIZE\0" + content)
    sha256: str | None  # an LFS file's sha256, which the Hub publishes


@dataclass
class Listing:
    """A repository's files at one commit."""

    repo: str
    commit: str
    files: dict[str, HubFile]
    requests: int = 1

    @property
    def ggufs(self) -> list[GGUFFile]:
        return gguf_files.ggufs({name: f.size for name, f in self.files.items()})

    def is_gguf(self, ref: RepoRef, file: str | None) -> bool:
        """A GGUF repository, or a GGUF asked for: the tag or a .gguf file name says so;
        else GGUF files and no config.json with safetensors beside it."""
        if ref.tag or (file and file.lower().endswith(".gguf")):
            return True
        has_hf = "config.json" in self.files and any(n.endswith(".safetensors") for n in self.files)
        return bool(self.ggufs) and not has_hf


def listing(repo: str) -> Listing:
    """The repository's files at the commit its main branch is at (one request)."""
    from huggingface_hub import HfApi

    with hub_errors(repo):
        info = HfApi(endpoint=endpoint()).model_info(repo, files_metadata=True)
    return _listing(repo, info)


def _listing(repo: str, info: ModelInfo) -> Listing:
    if not info.sha:
        raise HubError(f"the Hub's listing of {repo} names no commit: is HF_ENDPOINT a Hub?")
    files = {}
    for sibling in info.siblings or []:
        lfs = sibling.lfs
        size = lfs.size if lfs is not None else sibling.size
        if size is None:
            raise HubError(f"the Hub's listing of {repo} gives no size for {sibling.rfilename}")
        files[sibling.rfilename] = HubFile(
            sibling.rfilename, size, sibling.blob_id, lfs.sha256 if lfs is not None else None
        )
    return Listing(repo, info.sha, files)


# -- range reads -----------------------------------------------------------------------------


@dataclass
class Tally:
    """The sources a read opened, for its cost."""

    sources: list[HttpSource] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.sources)

    @property
    def bytes(self) -> int:
        return sum(s.bytes_read for s in self.sources)

    @property
    def files(self) -> list[str]:
        return list(dict.fromkeys(s.file for s in self.sources if s.requests))


class HttpSource(ByteSource):
    """A file on the Hub read by HTTP range requests through `huggingface_hub`'s session
    (its endpoint, token and offline switch); each read is one request."""

    def __init__(self, listing: Listing, file: str) -> None:
        super().__init__()
        from huggingface_hub.utils._headers import build_hf_headers  # its defining module

        self.repo, self.file = listing.repo, file
        self.name = f"{listing.repo}/{file}"
        self.size = listing.files[file].size
        self.url = resolve_url(listing.repo, listing.commit, file)
        self.headers = build_hf_headers()

    def _fetch(self, offset: int, length: int) -> bytes:
        from huggingface_hub import get_session, hf_raise_for_status

        # Identity: a compressed answer to a range would not be the bytes asked for.
        headers = {
            **self.headers,
            "Range": f"bytes={offset}-{offset + length - 1}",
            "Accept-Encoding": "identity",
        }
        with hub_errors(self.repo), get_session().stream("GET", self.url, headers=headers) as got:
            if got.status_code >= 400:
                got.read()  # the error's body, for its message
            hf_raise_for_status(got)
            # A server that ignores ranges sends the whole file: taken if it is small.
            whole = got.status_code == 200 and self.size <= WHOLE
            if got.status_code != 206 and not whole:
                raise HubError(
                    f"{self.name}: the server answered {got.status_code} to a range request: "
                    "it does not serve byte ranges, so scheda cannot read the header alone"
                )
            data = got.read()
            if got.history:  # redirected to storage: read there from now on
                self._follow(str(got.url))
        if whole:
            data = data[offset : offset + length]
        if len(data) != length:
            raise HubError(
                f"{self.name}: asked for {length:,} bytes at {offset:,}, received {len(data):,}"
            )
        return data

    def _follow(self, url: str) -> None:
        if urlsplit(url)[:2] != urlsplit(self.url)[:2]:
            self.headers = {k: v for k, v in self.headers.items() if k.lower() != "authorization"}
        self.url = url

    def close(self) -> None:
        """Nothing to free: the session is `huggingface_hub`'s, shared."""


class HubFolder(Folder):
    """A Hub repository as the HF folder reader sees it: files by range requests."""

    def __init__(self, listing: Listing, tally: Tally) -> None:
        self.listing, self.tally = listing, tally
        self.name = listing.repo.rsplit("/", 1)[-1]
        self.path = listing.repo

    def where(self, file: str) -> str:
        return f"{self.listing.repo}/{file}"

    def exists(self, file: str) -> bool:
        return file in self.listing.files

    def weight_files(self) -> list[str]:
        return sorted(n for n in self.listing.files if "/" not in n and n.endswith(".safetensors"))

    def size(self, file: str) -> int:
        return self.listing.files[file].size

    def open(self, file: str) -> ByteSource:
        source = HttpSource(self.listing, file)
        self.tally.sources.append(source)
        return source


# -- the spec --------------------------------------------------------------------------------


def read_remote(
    ref: RepoRef, file: str | None = None, found: Listing | None = None, strict: bool = False
) -> ModelSpec:
    """The spec of a Hub repository's model, read without downloading its weights; its
    `remote` record says what the read took and, for a GGUF repository, what it holds.
    `found` is the repository's listing when the caller has it; `strict`: see `pick_gguf`."""
    found = found or listing(ref.repo)
    tally = Tally()
    with hub_errors(ref.repo):
        if found.is_gguf(ref, file):
            spec, models = _read_gguf(found, ref, file, tally, strict), found.ggufs
        elif file is not None:
            raise ModelNotFoundError(f"--file picks a GGUF file; {ref.repo} is an HF repository")
        elif "config.json" in found.files:
            spec, models = read_hf_folder(HubFolder(found, tally)), []
        else:
            names = ", ".join(sorted(found.files)[:8]) or "no files"
            raise ModelFileError(
                f"{ref.repo} holds neither GGUF files nor an HF model (config.json): {names}"
            )
    spec.remote = RemoteRead(
        repo=ref.repo,
        revision=found.commit,
        files_read=tally.files,
        bytes=tally.bytes,
        requests=found.requests + tally.requests,
        ggufs=models,
    )
    return spec


def pick_gguf(found: Listing, ref: RepoRef, file: str | None, strict: bool = False) -> GGUFFile:
    """The GGUF model a tag or file picks. With neither, in a repository of several models
    and no Q4_K_M: the first, unless `strict` (a download must be named)."""
    models = found.ggufs
    if strict or ref.tag or file or len(models) <= 1:
        return gguf_files.pick(models, ref.repo, ref.tag, file)
    try:
        return gguf_files.pick(models, ref.repo, None, None)
    except ModelNotFoundError:
        return models[0]


def gguf_ref(repo: str, models: list[GGUFFile], chosen: GGUFFile) -> str:
    """The reference that names this model: org/name:TAG where the tag is the model's alone."""
    if chosen.quant and sum(m.quant == chosen.quant for m in models) == 1:
        return f"{repo}:{chosen.quant}"
    return repo


def _read_gguf(
    found: Listing, ref: RepoRef, file: str | None, tally: Tally, strict: bool
) -> ModelSpec:
    from scheda.readers.gguf_file import read_gguf_sources

    chosen = pick_gguf(found, ref, file, strict)
    with ExitStack() as stack:
        sources: list[ByteSource] = []
        for part in chosen.parts:
            source = HttpSource(found, part)
            tally.sources.append(source)
            sources.append(stack.enter_context(source))
        stem = re.sub(r"\.gguf$", "", chosen.file.rsplit("/", 1)[-1], flags=re.IGNORECASE)
        return read_gguf_sources(sources, stem, gguf_ref(found.repo, found.ggufs, chosen))


# -- errors ----------------------------------------------------------------------------------


def token_source() -> str | None:
    """Where the token `huggingface_hub` sends comes from: HF_TOKEN, the CLI's login, none."""
    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        return "HF_TOKEN"
    from huggingface_hub import get_token

    return LOGIN if get_token() else None


def _token_advice(repo: str, gated: bool) -> str:
    source = token_source()
    if source is None:
        return f"no token was sent: set HF_TOKEN, or run {LOGIN}" + (
            "" if gated else ", if the repository is yours or shared with you"
        )
    where = "the token in HF_TOKEN" if source == "HF_TOKEN" else f"the token from {LOGIN}"
    if gated:
        return f"{where} was sent, and its account has not been granted access yet"
    return f"{where} was sent and cannot see it"


@contextmanager
def hub_errors(repo: str) -> Iterator[None]:
    """`huggingface_hub`'s and the network's errors as one line that says what to do."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except GatedRepoError as exc:
        raise HubAccessError(
            f"{repo} is gated ({_status(exc)}): accept its conditions at {endpoint()}/{repo}, "
            f"logged in; {_token_advice(repo, gated=True)}"
        ) from None
    except RepositoryNotFoundError as exc:
        if _status(exc) == 404 and token_source() is None:
            raise ModelNotFoundError(
                f"{repo}: not a file or folder here, and no such repository on the Hub "
                f"({endpoint()}), or a private one ({_token_advice(repo, gated=False)})"
            ) from None
        raise HubAccessError(
            f"{repo}: no such repository on the Hub, or a private one ({_status(exc)}): "
            f"{_token_advice(repo, gated=False)}"
        ) from None
    except (RevisionNotFoundError, RemoteEntryNotFoundError) as exc:
        raise ModelNotFoundError(f"{repo}: not on the Hub ({_first_line(exc)})") from None
    except HfHubHTTPError as exc:
        status = _status(exc)
        if status in (401, 403):
            raise HubAccessError(
                f"the Hub refused access to {repo} ({status}): {_token_advice(repo, False)}"
            ) from None
        raise HubError(f"the Hub answered {status} for {repo}: {_first_line(exc)}") from None
    except OfflineModeIsEnabled:
        raise HubError(f"{repo}: HF_HUB_OFFLINE is set, so scheda stays off the Hub") from None
    except httpx2.HTTPError as exc:
        raise HubError(
            f"cannot reach the Hub at {endpoint()} ({type(exc).__name__}: {_first_line(exc)}): "
            "check the connection, or set HF_HUB_OFFLINE=1 to use only local files"
        ) from None


def _status(exc: Any) -> int | str:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None) or "no status"


def _first_line(exc: BaseException) -> str:
    from scheda.readers.text import clean

    lines = [line for line in str(exc).splitlines() if line.strip()]
    return clean(lines[0] if lines else type(exc).__name__, 160)
