"""Every model on this machine, for `scheda serve --all` and `--models-dir`: names and headers
read, nothing loaded.

The local Hugging Face cache (`huggingface_hub.scan_cache_dir`): in each model
repository's snapshot (the one `main` points to, else the newest), a
`config.json` makes the snapshot an HF model folder and each GGUF model is one
model (a split GGUF's parts are one). Each is named as a reference names it
everywhere else in scheda (`resolve`), so that the name a client sends is the
one `scheda chat` takes: `org/name` for the folder, `org/name:TAG` for a GGUF
whose quantization tag is its own in the repository (what `scheda pull`
prints), `org/name` for a repository's only GGUF, else the file's path.

A folder (`--models-dir`), as llama.cpp's router reads one: each GGUF model
directly in it, named by its file (a split's name without the part suffix);
each subfolder an HF model folder (it holds `config.json`) or the GGUF models
in it, named by the subfolder when it holds one, by each file when several.
A projector (`mmproj-*.gguf`) is a vision model's part, not a model.

Each model's spec is read from its header (`resolve.read_spec`): one that
cannot be read is left out with a line that says why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from scheda.readers import gguf_files
from scheda.resolve import DEFAULT, default_model_path, read_spec
from scheda.spec import GGUFFile, ModelSpec


@dataclass(frozen=True)
class Found:
    """One model: the name a client sends, the file (a split's first part) or folder."""

    id: str
    path: Path
    spec: ModelSpec


@dataclass
class Discovery:
    """The models found, and one line for each that could not be read."""

    found: list[Found] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add(self, model_id: str, path: Path) -> None:
        try:
            spec = read_spec(path)
        # Whatever a header read raises (a truncated file, a permission, a format this
        # version does not know), the model cannot be offered; the others still can.
        except Exception as exc:
            why = _one_line(exc).removeprefix(f"{path}: ")  # the readers name the file too
            self.skipped.append(f"{path}: skipped, it cannot be read ({why})")
            return
        if model_id == DEFAULT:
            spec.name = "default (SmolLM2-135M-Instruct Q4_1)"
        self.found.append(Found(model_id, path, spec))

    def extend(self, other: Discovery) -> None:
        self.found += other.found
        self.skipped += other.skipped


def embedded() -> Discovery:
    """The model the packages ship (`default`), where it is installed."""
    found = Discovery()
    try:
        path = default_model_path()
    except Exception as exc:  # not installed: nothing to offer, and the line says how to
        found.skipped.append(f"default: skipped ({_one_line(exc)})")
        return found
    found.add(DEFAULT, path)
    return found


def in_hf_cache(cache_dir: Path | None = None) -> Discovery:
    """Every model in the local Hugging Face cache (its default folder unless one is given)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound, CorruptedCacheException

    found = Discovery()
    try:
        info = scan_cache_dir(cache_dir)
    except CacheNotFound:
        return found
    except (CorruptedCacheException, OSError) as exc:
        found.skipped.append(f"the Hugging Face cache cannot be read: {_one_line(exc)}")
        return found
    for warning in info.warnings:  # a repository's folder that is not whole
        found.skipped.append(f"the Hugging Face cache: skipped {_one_line(warning)}")
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revision = max(repo.revisions, key=lambda r: ("main" in r.refs, r.last_modified))
        snapshot = Path(revision.snapshot_path)
        sizes = {
            f.file_path.relative_to(snapshot).as_posix(): f.size_on_disk for f in revision.files
        }
        _repository(found, repo.repo_id, snapshot, sizes, "main" in revision.refs)
    return found


def _repository(
    found: Discovery, repo: str, snapshot: Path, sizes: Mapping[str, int], main: bool
) -> None:
    from scheda.readers.hub import gguf_ref

    folder = "config.json" in sizes
    if folder:
        found.add(repo if main else str(snapshot), snapshot)
    models = gguf_files.ggufs(sizes)
    for model in models:
        if _projector(model.file):
            continue
        ref = gguf_ref(repo, models, model)
        # A bare org/name means the folder where there is one, else the file `resolve` picks.
        named = main and (ref != repo or (not folder and _picked(models, repo) is model))
        found.add(ref if named else str(snapshot / model.file), snapshot / model.file)


def _picked(models: list[GGUFFile], repo: str) -> GGUFFile | None:
    try:
        return gguf_files.pick(models, repo, None, None)
    except Exception:  # several files, none the default: org/name alone names none of them
        return None


def in_folder(folder: Path) -> Discovery:
    """Every model in a folder, as llama.cpp's router reads `--models-dir`."""
    found = Discovery()
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        found.skipped.append(f"{folder}: skipped, it cannot be read ({_one_line(exc)})")
        return found
    for model in _ggufs(entries):
        found.add(_stem(model.file), folder / model.file)
    for sub in entries:
        if sub.is_dir() and not sub.name.startswith("."):
            _subfolder(found, sub)
    return found


def _subfolder(found: Discovery, sub: Path) -> None:
    """A subfolder is one HF model folder, or holds GGUF models (a split's parts, several
    quantizations, a model beside its projector)."""
    if (sub / "config.json").is_file():
        found.add(sub.name, sub)
        return
    try:
        models = _ggufs(sorted(sub.iterdir()))
    except OSError as exc:
        found.skipped.append(f"{sub}: skipped, it cannot be read ({_one_line(exc)})")
        return
    for model in models:
        found.add(sub.name if len(models) == 1 else _stem(model.file), sub / model.file)


def _ggufs(entries: Iterable[Path]) -> list[GGUFFile]:
    sizes = {p.name: _size(p) for p in entries if p.suffix.lower() == ".gguf" and p.is_file()}
    return [m for m in gguf_files.ggufs(sizes) if not _projector(m.file)]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # the header read says what is wrong with it


def _stem(name: str) -> str:
    """A GGUF model's name from its file: a split's without the part suffix."""
    part = gguf_files.split_part(name)
    return part[0] if part else Path(name).stem


def _projector(name: str) -> bool:
    return name.rsplit("/", 1)[-1].lower().startswith("mmproj")


def _one_line(exc: object) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
