"""Where a task's data comes from: a folder the user names, or the dataset's repository on the Hub.

`--data DIR` holds the original release files (or the Hub's own parquet
files): a task looks in DIR/<task>/ first, then in DIR itself. With no folder
holding its files, the task reads the split from the dataset's repository on
the Hugging Face Hub, downloaded once with `huggingface_hub` into its standard
cache (HF_HOME) and found there offline afterwards. The Hub keeps a dataset as
parquet files under its configs (`CONFIG/SPLIT-00000-of-00001.parquet`, or
`data/SPLIT-...` for a dataset with one config); those are what is fetched,
and only those of the split the task scores. A dataset whose main branch holds
only a loading script (Rowan/hellaswag, allenai/quac) has its parquet files in
the Hub's own conversion, the `refs/convert/parquet` branch
(`CONFIG/SPLIT/0000.parquet`): that branch is asked when main has none. A
dataset kept as other files (GPQA's CSV) has the one it needs fetched by name
(`hub_file`), into the same cache.

Every failure is one line that says what to do: the folder that lacks the
files, the gated dataset and the token that was (or was not) sent, the Hub
out of reach with nothing in the cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from scheda.errors import UsageError, install_hint

Row = dict[str, Any]
T = TypeVar("T")
# The branch where the Hub keeps its own parquet conversion of a dataset.
CONVERTED = "refs/convert/parquet"


@dataclass(frozen=True)
class Source:
    """A task's data: what a local folder must hold, and the dataset on the Hub."""

    task: str  # the task's name: DIR/<task>/ is where its files are looked for first
    files: str  # what the folder must hold, in words ("ARC-Challenge-Test.jsonl")
    repo: str  # the dataset's repository on the Hugging Face Hub
    config: str | None = None  # None: the dataset's one config (files under data/)
    split: str = "test"
    gated: bool = False  # the Hub asks for accepted terms and a token (GPQA)

    @property
    def folder_hint(self) -> str:
        return f"--data DIR with {self.files} (in DIR/{self.task}/ or DIR)"

    @property
    def where(self) -> str:
        """Both places the data can come from, for a message."""
        on_hub = self.repo + (f" ({self.config})" if self.config else "")
        return f"{self.folder_hint}, or {on_hub} from the Hugging Face Hub"

    def patterns(self) -> list[str]:
        """The split's parquet files in the Hub's layouts: a config's folder, the one config's
        data/ folder, and the Hub's own conversion (CONFIG/SPLIT/NNNN.parquet, on CONVERTED)."""
        config = self.config or "default"
        return [
            f"{config}/{self.split}-*.parquet",
            f"{config}/{self.split}/*.parquet",
            f"data/{self.split}-*.parquet",
            f"{self.split}-*.parquet",
        ]


def local_folder(
    source: Source, data_dir: Path | None, found: Callable[[Path], bool]
) -> Path | None:
    """DIR/<task> or DIR, whichever `found` says holds the task's files; None when neither
    does (the data then comes from the Hub). A DIR/<task> folder without them is an error:
    the user meant it for this task."""
    if data_dir is None:
        return None
    # `scheda eval --data DIR` hands a task DIR/<task> itself when that folder exists.
    own = data_dir if data_dir.name == source.task else data_dir / source.task
    if own.is_dir():
        if not found(own):
            raise UsageError(f"{source.task}: {own} does not hold {source.files}")
        return own
    return data_dir if data_dir.is_dir() and found(data_dir) else None


def load(
    source: Source,
    data_dir: Path | None,
    found: Callable[[Path], bool],
    read_local: Callable[[Path], T],
    read_hub: Callable[[list[Row]], T],
) -> T:
    """The task's data from the folder when it holds it, else from the Hub."""
    folder = local_folder(source, data_dir, found)
    if folder is not None:
        return read_local(folder)
    return read_hub(hub_rows(source))


def parquet_rows(paths: list[Path]) -> list[Row]:
    """Every row of the parquet files, in file order, as plain Python values."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(f"reading parquet needs pyarrow: {install_hint('eval')}") from None
    rows: list[Row] = []
    for path in sorted(paths):
        try:
            rows.extend(pq.read_table(path).to_pylist())
        except Exception as exc:  # pyarrow's errors have no common base worth naming
            raise UsageError(f"{path}: not a readable parquet file ({exc})") from None
    return rows


def hub_rows(source: Source) -> list[Row]:
    """The split's rows from the Hub's parquet files, via the local cache when it has them:
    the main branch's, else the Hub's conversion's (a dataset kept as a loading script)."""
    from huggingface_hub.errors import LocalEntryNotFoundError, RevisionNotFoundError

    # Offline, main is missing from the cache when it had no files for the split (nothing was
    # kept): the conversion is looked up before saying the cache has none.
    paths = _split_files(source, None, LocalEntryNotFoundError) or _split_files(
        source, CONVERTED, RevisionNotFoundError
    )
    if not paths:
        raise UsageError(
            f"{source.task}: {source.repo} has no parquet files for the {source.split} split "
            f"({', '.join(source.patterns())}), on its main branch or on {CONVERTED}; "
            f"use {source.folder_hint}"
        )
    rows = parquet_rows(paths)
    if not rows:
        raise UsageError(f"{source.task}: the {source.split} split of {source.repo} is empty")
    return rows


def _split_files(source: Source, revision: str | None, missing: type[Exception]) -> list[Path]:
    """The split's parquet files at a revision of the dataset (None: main); none where the
    client raises `missing` (that revision does not exist, or is not in the cache)."""
    import fnmatch

    folder = _snapshot(source, revision, missing)
    if folder is None:
        return []
    patterns = source.patterns()
    return [
        p
        for p in folder.rglob("*.parquet")
        if any(fnmatch.fnmatch(p.relative_to(folder).as_posix(), pat) for pat in patterns)
    ]


def hub_file(source: Source, filename: str) -> Path:
    """One file of the dataset's repository (GPQA keeps its splits as CSV files, not parquet),
    from the cache when it is there, downloaded the first time."""
    from huggingface_hub import constants, hf_hub_download

    return Path(
        _fetched(
            source,
            lambda: hf_hub_download(
                source.repo,
                filename,
                repo_type="dataset",
                local_files_only=constants.HF_HUB_OFFLINE,
            ),
        )
    )


def _snapshot(source: Source, revision: str | None, missing: type[Exception]) -> Path | None:
    """The dataset's split files at the revision, in the Hugging Face cache (downloaded the
    first time); None where the client raises `missing`."""
    from huggingface_hub import constants, snapshot_download

    def fetch() -> str | None:
        try:
            with _quiet_snapshot():
                return snapshot_download(
                    source.repo,
                    repo_type="dataset",
                    revision=revision,
                    allow_patterns=source.patterns(),
                    local_files_only=constants.HF_HUB_OFFLINE,
                )
        except missing:
            return None

    found = _fetched(source, fetch)
    return None if found is None else Path(found)


@contextmanager
def _quiet_snapshot() -> Iterator[None]:
    """The client's "No files matched" warning held back: main without the split is how a
    dataset kept as a loading script looks, and its conversion is asked next; the warning
    would be a stray line in the command's output."""
    import logging

    log = logging.getLogger("huggingface_hub._snapshot_download")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _fetched(source: Source, fetch: Callable[[], T]) -> T:
    """What `fetch` gives (a path in the cache); its failures each one line that says what
    to do."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    nowhere = f"{source.task}: no data here: pass {source.where}"
    try:
        return fetch()
    except GatedRepoError:
        raise UsageError(_gated(source)) from None
    except RepositoryNotFoundError:
        raise UsageError(
            f"{source.task}: the Hub has no dataset {source.repo} (or it is private and "
            f"{_token_said()}); pass {source.folder_hint}"
        ) from None
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hub is out of reach"
        raise UsageError(f"{nowhere} ({why}, and the cache has none)") from None
    except (HfHubHTTPError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"{nowhere} ({source.repo}: {reason})") from None


def _token_said() -> str:
    """Which token the client sent, by its last four characters, or that it sent none."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        return "no token was sent"
    return f"the token ending in ...{token[-4:]} was sent"


def _gated(source: Source) -> str:
    return (
        f"{source.task}: {source.repo} is gated on the Hugging Face Hub and {_token_said()}: "
        f"accept its terms on its page, then set HF_TOKEN to a token of that account "
        f"(or run `hf auth login`); or pass --data DIR with {source.files}"
    )
