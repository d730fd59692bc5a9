"""The repositories a search names: the Hub's model search, or offline the local cache.

Online, one call to the Hub's model search (`HfApi.list_models`), asking only
for what a row shows and what the cache is keyed by (`expand`): each
repository's commit (`sha`), downloads, likes, gated, licence (card data and
tags) and card data (its `model-index` is the quality the repository declares).
The search answer holds no file sizes, so each repository's listing is read
later, and only where the cache does not already hold that commit.

Offline (`HF_HUB_OFFLINE=1`), the models in the local Hugging Face cache whose
name holds the query (`huggingface_hub.scan_cache_dir`), each at the commit its
`main` points to; the answer says that it is the cache, not the Hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheda.errors import HubError, ModelNotFoundError, UsageError
from scheda.readers.hub import hub_errors, online
from scheda.readers.text import clean

if TYPE_CHECKING:
    from huggingface_hub.hf_api import ExpandModelProperty_T as Expand
    from huggingface_hub.hf_api import ModelInfo
    from huggingface_hub.hf_api import ModelSort_T as ModelSort

# --sort's words, and the Hub's names for them (`list_models` spells lastModified so).
SORTS: dict[str, ModelSort] = {
    "downloads": "downloads",
    "likes": "likes",
    "recent": "last_modified",
}
EXPAND: list[Expand] = [
    "sha",
    "downloads",
    "likes",
    "gated",
    "private",
    "lastModified",
    "cardData",
    "tags",
]
MAX_LIMIT = 100  # repositories read for one search: each one costs a few requests


@dataclass(frozen=True)
class Found:
    """One repository the search names, with what the search answer tells of it."""

    repo: str
    sha: str | None  # the commit its main branch is at; None if the answer gave none
    downloads: int | None = None  # None offline: the cache does not know
    likes: int | None = None
    gated: bool = False
    licence: str | None = None
    card_data: dict[str, Any] | None = None  # the model card's metadata (model-index...)
    last_modified: str | None = None
    snapshot: Path | None = None  # offline: the repository's snapshot folder in the cache


@dataclass
class SearchAnswer:
    query: str
    found: list[Found]
    offline: bool
    note: str | None = None  # said under the table: where the repositories came from


def search(query: str, sort: str = "downloads", limit: int = 20) -> SearchAnswer:
    """The repositories whose name holds the query: the Hub's, or offline the cache's."""
    if sort not in SORTS:
        raise UsageError(f"--sort must be one of {', '.join(SORTS)}, got {sort!r}")
    if not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"--limit must be between 1 and {MAX_LIMIT}, got {limit}")
    if not online():
        found = cached_models(query)[:limit]
        note = (
            "HF_HUB_OFFLINE is set: these are the models in the local Hugging Face cache "
            "whose name holds the query, not the Hub's; unset it to search the Hub"
        )
        return SearchAnswer(query, found, offline=True, note=note)
    return SearchAnswer(query, hub_search(query, sort, limit), offline=False)


def hub_search(query: str, sort: str, limit: int) -> list[Found]:
    """One call to the Hub's model search, the first `limit` answers."""
    from huggingface_hub import HfApi

    from scheda.readers.hub import endpoint

    api = HfApi(endpoint=endpoint())
    try:
        with hub_errors(f"the model search {query!r}"):
            infos = list(
                api.list_models(
                    search=query or None,
                    sort=SORTS[sort],
                    limit=limit,
                    expand=EXPAND,
                )
            )
    except ModelNotFoundError:  # said of a repository; here the search itself is missing
        raise HubError(
            f"{endpoint()} has no model search (/api/models answered 404): is HF_ENDPOINT a Hub?"
        ) from None
    return [_found(info) for info in infos]


def _found(info: ModelInfo) -> Found:
    card = info.card_data.to_dict() if info.card_data is not None else None
    return Found(
        repo=info.id,
        sha=info.sha,
        downloads=info.downloads,
        likes=info.likes,
        gated=bool(info.gated),
        licence=licence_of(card, info.tags),
        card_data=card,
        last_modified=info.last_modified.isoformat() if info.last_modified else None,
    )


def licence_of(card: dict[str, Any] | None, tags: list[str] | None) -> str | None:
    """The licence the card data names, else a `license:` tag; cleaned, it is the Hub's text."""
    value = (card or {}).get("license")
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    if not value:
        value = next((t.split(":", 1)[1] for t in tags or [] if t.startswith("license:")), None)
    return clean(str(value), 40) if value else None


def cached_models(query: str) -> list[Found]:
    """The model repositories in the local HF cache whose name holds the query, at the
    commit `main` points to (else the newest one there), in name order."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound, CorruptedCacheException

    try:
        info = scan_cache_dir()
    except CacheNotFound:
        return []
    except CorruptedCacheException as exc:
        raise HubError(f"the local Hugging Face cache cannot be read: {exc}") from None
    found = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or query.lower() not in repo.repo_id.lower():
            continue
        revisions = sorted(repo.revisions, key=lambda r: ("main" in r.refs, r.last_modified))
        if not revisions:
            continue
        newest = revisions[-1]
        found.append(Found(repo.repo_id, newest.commit_hash, snapshot=newest.snapshot_path))
    return found
