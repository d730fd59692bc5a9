"""`scheda pull`: a Hub model into the standard cache, once it is known to fit.

1. The verdict first. The model is read on the Hub without downloading it
   (`readers/hub.py`), and its need at the context the engines will take is
   set against the target: this host's RAM, or a `--gpu` or `--memory`. One
   that will not fit is refused with the numbers and what would fit instead
   (the repository's smaller quantizations, a shorter context, a bigger
   device), unless forced.
2. The disk next: the bytes still to fetch, and a margin, against the free
   space where the cache lies, before any byte is downloaded.
3. Then the download, into `huggingface_hub`'s cache (HF_HUB_CACHE, else
   HF_HOME/hub), laid out as it lays it out, so that its own tools,
   transformers and scheda find the model there, offline, by `org/name:TAG`.

Why scheda moves the bytes itself: the locked `huggingface_hub` downloads each
file to a temporary name unique to its process and deletes it on any failure,
so a download stopped by Ctrl-C or a dead connection starts again from zero,
and it checks the size only. scheda keeps the partial file where older
versions of `huggingface_hub` kept theirs (`blobs/ETAG.incomplete`) and
continues it with a range request, through `huggingface_hub`'s own `http_get`
(which also resumes by itself when a connection drops mid-file). The finished
file is checked against what the Hub publishes (an LFS file's sha256, any
other's git blob id) before it is moved into place: a damaged download is
deleted, never cached. `hf_hub_download` then links each blob into the
snapshot as it does any blob it finds, and `refs/main` names the commit.

The token is `huggingface_hub`'s (HF_TOKEN, else the Hub CLI's login); a gated
or private repository answers with a line that says which and what to do.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from scheda import settings
from scheda.errors import HubError, PullRefusedError, UsageError
from scheda.formulas import hardware
from scheda.formulas.fit import Breakdown, estimate, longest_context
from scheda.formulas.fit_report import FileFit, file_fits
from scheda.formulas.hardware import Device
from scheda.readers.hub import (
    HubFile,
    Listing,
    RepoRef,
    gguf_ref,
    hub_errors,
    listing,
    online,
    parse_ref,
    pick_gguf,
    read_remote,
    resolve_url,
)
from scheda.spec import ModelSpec
from scheda.units import size

MiB = 1 << 20
DISK_MARGIN = 64 * MiB  # and 1% more: the filesystem's own blocks, the cache's small files
# Files an HF repository may hold that the engines never read: other formats' weights.
OTHER_FORMATS = (
    ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".onnx_data", ".ot",
    ".tflite", ".mlmodel", ".gguf", ".npz", ".pb",
)  # fmt: skip
PYTORCH = (".bin", ".pt", ".pth")
OTHER_FOLDERS = ("onnx/", "openvino/", "coreml/", "tf/", "flax/", "jax/", "mlx/")
Progress = Callable[[int, int], None]  # (bytes so far, bytes in all), resumed bytes included


@dataclass
class Plan:
    """What a pull would fetch, and the verdict on the target."""

    ref: RepoRef
    listing: Listing
    spec: ModelSpec
    files: list[HubFile]
    reference: str  # what names the model offline once it is here
    device: Device
    context: int
    need: Breakdown
    others: list[FileFit] = field(default_factory=list)  # a GGUF repository's other files

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def fits(self) -> bool:
        return self.need.total <= self.device.usable

    def verdict(self) -> str:
        """One line: the need, the target, and whether it fits."""
        need = self.need
        parts = f"weights {size(need.weights)}, KV cache {size(need.kv_cache)}"
        return (
            f"{self.reference} ({size(self.size)} to download) needs {size(need.total)} at "
            f"context {self.context:,} ({parts}, engine {size(need.engine)}); "
            f"{self.device.label} has {size(self.device.usable)} usable: "
            + ("it fits." if self.fits else "it will not fit.")
        )

    def instead(self) -> list[str]:
        """What would fit on the target instead, most useful first."""
        out = [
            f"{f.quant or f.file} ({size(f.size)}, needs {size(f.total)})"
            for f in sorted(self.others, key=lambda f: -f.size)
            if f.fits.get(self.device.key) and not f.read
        ][:3]
        longest = longest_context(self.spec, "file", self.device.usable)
        if longest:
            out.append(f"this file at a context of {longest:,} or less (--context)")
        bigger = [g.name for g in hardware.GPUS if self.need.total <= g.usable][:2]
        if bigger:
            out.append("a bigger device: " + " or ".join(bigger))
        return out

    def refusal(self) -> str:
        instead = self.instead()
        would = f" Would fit: {'; '.join(instead)}." if instead else ""
        return f"{self.verdict()}{would} --force pulls it anyway."

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "repo": self.ref.repo,
            "revision": self.listing.commit,
            "files": [{"file": f.name, "size": f.size} for f in self.files],
            "size": self.size,
            "device": self.device.key,
            "usable": self.device.usable,
            "context": self.context,
            "need": self.need.to_dict(),
            "fits": self.fits,
            "instead": [] if self.fits else self.instead(),
        }


def plan(
    ref: str, file: str | None = None, context: int | None = None, device: Device | None = None
) -> Plan:
    """Read the model on the Hub and weigh it against the target (this host by default)."""
    repo = parse_ref(ref)
    if repo is None:
        raise UsageError(f"{ref!r}: scheda pull takes a Hub repository, org/name or org/name:TAG")
    if not online():
        raise HubError("HF_HUB_OFFLINE is set, so scheda stays off the Hub: unset it to pull")
    found = listing(repo.repo)
    spec = read_remote(repo, file, found, strict=True)
    remote = spec.remote
    assert remote is not None  # read_remote always records its read
    if remote.ggufs:
        chosen = pick_gguf(found, repo, file, strict=True)
        files = [found.files[p] for p in chosen.parts]
        reference = gguf_ref(repo.repo, remote.ggufs, chosen)
    else:
        files = model_files(found)
        reference = repo.repo
    device = device or hardware.host()
    context = settings.context_for(context, spec.context)
    need = estimate(spec, "file", context)
    others = file_fits(spec, remote.ggufs, context, 1, [device]) if remote.ggufs else []
    return Plan(repo, found, spec, files, reference, device, context, need, others)


def model_files(found: Listing) -> list[HubFile]:
    """An HF repository's files an engine reads: all but other formats' weights (PyTorch's
    own are kept where there are no safetensors: transformers reads them then)."""
    skipped: tuple[str, ...] = OTHER_FORMATS
    if not any(n.endswith(".safetensors") for n in found.files):
        skipped = tuple(s for s in OTHER_FORMATS if s not in PYTORCH)
    return [
        f
        for name, f in sorted(found.files.items())
        if name != ".gitattributes"
        and not name.lower().endswith(skipped)
        and not name.startswith(OTHER_FOLDERS)
    ]


@dataclass
class Pulled:
    """Where the model lies now, and what the pull took."""

    path: Path  # the GGUF file (a split's first part) or the snapshot folder
    reference: str
    downloaded: int  # bytes fetched by this pull
    resumed: int  # bytes a previous pull had left, continued from
    files: list[str]  # the files fetched (and checked) by this pull

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "reference": self.reference,
            "downloaded": self.downloaded,
            "resumed": self.resumed,
            "files": self.files,
        }


def pull(
    plan: Plan,
    force: bool = False,
    progress: Progress | None = None,
    free_space: Callable[[Path], int] | None = None,
) -> Pulled:
    """Refuse what will not fit (unless `force`) or what the disk cannot hold, then
    download, check and cache. `free_space` measures the disk (tests give it less)."""
    if not plan.fits and not force:
        raise PullRefusedError(plan.refusal())
    cache = cache_dir()
    storage = cache / _folder(plan.ref.repo)
    todo = [f for f in plan.files if not (storage / "blobs" / _etag(f)).exists()]
    have = sum(_partial(storage, f) for f in todo)
    left = sum(f.size for f in todo) - have
    _check_disk(plan.reference, cache, left, free_space or free_bytes)
    total, done = have + left, have
    if progress:
        progress(done, total)

    def moved(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    for f in todo:
        _download(plan.listing, f, storage, moved)
    path = _link(plan)
    return Pulled(path, plan.reference, left, have, [f.name for f in todo])


def cache_dir() -> Path:
    """`huggingface_hub`'s cache: HF_HUB_CACHE, else HF_HOME/hub."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser()


def free_bytes(path: Path) -> int:
    """Free bytes on the disk a folder is (or would be) on."""
    for folder in (path, *path.parents):
        if folder.exists():
            return shutil.disk_usage(folder).free
    return shutil.disk_usage(Path.cwd()).free


def _check_disk(reference: str, cache: Path, left: int, free: Callable[[Path], int]) -> None:
    want = left + left // 100 + DISK_MARGIN if left else 0
    have = free(cache)
    if want > have:
        raise PullRefusedError(
            f"{reference} needs {size(left)} more on disk (and {size(want - left)} to spare) and "
            f"{cache} has {size(have)} free: free some space, or point HF_HUB_CACHE (or "
            "HF_HOME) at a bigger disk; nothing was downloaded"
        )


def _folder(repo: str) -> str:
    return "models--" + repo.replace("/", "--")


def _etag(f: HubFile) -> str:
    """The name the cache stores the file's blob under: its ETag on the Hub."""
    etag = f.sha256 or f.blob_id
    if not etag:
        raise HubError(f"the Hub's listing gives {f.name} no checksum: it cannot be verified")
    return etag


def _partial(storage: Path, f: HubFile) -> int:
    path = storage / "blobs" / f"{_etag(f)}.incomplete"
    return min(path.stat().st_size, f.size) if path.is_file() else 0


def _download(found: Listing, f: HubFile, storage: Path, moved: Callable[[int], None]) -> None:
    """One file into blobs/ETAG, continued from its partial file, checked, then moved."""
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils._fixes import WeakFileLock  # their defining modules
    from huggingface_hub.utils._headers import build_hf_headers

    etag = _etag(f)
    blob = storage / "blobs" / etag
    partial = blob.with_name(f"{etag}.incomplete")
    url = resolve_url(found.repo, found.commit, f.name)
    with hub_errors(found.repo):
        meta = get_hf_file_metadata(url)
    if meta.etag != etag:
        raise HubError(
            f"{found.repo}/{f.name}: the Hub serves ETag {meta.etag} and its listing said "
            f"{etag}: the repository changed meanwhile; run the pull again"
        )
    headers = build_hf_headers()
    if urlsplit(meta.location)[:2] != urlsplit(url)[:2]:  # storage: no token there
        headers.pop("authorization", None)
    blob.parent.mkdir(parents=True, exist_ok=True)
    lock = storage.parent / ".locks" / storage.name / f"{etag}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(lock), open(partial, "ab") as out, hub_errors(found.repo):
        start = out.tell()
        if start > f.size:  # longer than the file: not a part of it
            out.truncate(0)
            start = 0
        http_get(
            meta.location,
            out,
            resume_size=start,
            headers=headers,
            expected_size=f.size,
            tqdm_class=cast(Any, _bar(moved)),
        )
    _verify(found.repo, f, partial)
    os.replace(partial, blob)


def _verify(repo: str, f: HubFile, path: Path) -> None:
    """The file against the Hub's checksum; a damaged one is deleted."""
    if f.sha256:
        digest, what, expected = hashlib.sha256(), "sha256", f.sha256
    else:
        digest, what = hashlib.sha1(f"blob {f.size}\0".encode()), "git blob id"
        expected = _etag(f)
    with open(path, "rb") as data:
        while chunk := data.read(8 * MiB):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        path.unlink(missing_ok=True)
        raise HubError(
            f"{repo}/{f.name}: the downloaded file's {what} is {digest.hexdigest()[:16]}…, "
            f"the Hub publishes {expected[:16]}…: the damaged download was deleted; run the "
            "pull again"
        )


class _Bar:
    """What `http_get` takes for a progress bar: told each chunk, shows nothing itself."""

    moved: Callable[[int], None]

    def __init__(self, **_: Any) -> None:
        pass

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def update(self, n: int | float | None = 1) -> None:
        self.moved(int(n or 0))

    def close(self) -> None:
        pass


def _bar(moved: Callable[[int], None]) -> type[_Bar]:
    return type("Bar", (_Bar,), {"moved": staticmethod(moved)})


def _link(plan: Plan) -> Path:
    """Each blob linked into the snapshot by `hf_hub_download` (it finds the blob and
    fetches nothing), and refs/main set to the commit: the model resolves offline."""
    from huggingface_hub import hf_hub_download

    found = plan.listing
    paths = []
    with hub_errors(found.repo):
        for f in plan.files:
            paths.append(Path(hf_hub_download(found.repo, f.name, revision=found.commit)))
    snapshot = paths[0].parents[len(Path(plan.files[0].name).parts) - 1]
    refs = cache_dir() / _folder(found.repo) / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    temporary = refs / f".main.{os.getpid()}"
    temporary.write_text(found.commit)
    os.replace(temporary, refs / "main")
    return paths[0] if plan.spec.source == "gguf" else snapshot
