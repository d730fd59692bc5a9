"""Pure readers: a model file or folder in, a `ModelSpec` out, no tensors loaded.

A reader says only what the file says. The catalog's published facts
(training tokens, cutoff, licence terms, benchmarks) are added one level up,
by `resolve`, for every reader alike.
"""

from __future__ import annotations

from pathlib import Path

from scheda.errors import ModelFileError
from scheda.spec import ModelSpec


def read_spec(path: str | Path) -> ModelSpec:
    """Read the spec of a `.gguf` file or an HF model folder, without loading tensors."""
    path = Path(path)
    # Each reader is imported when used: importing scheda loads neither gguf nor yaml.
    if path.is_dir():
        from scheda.readers.hf_folder import read_hf_folder

        return read_hf_folder(path)
    if path.is_file():
        from scheda.readers.gguf_file import read_gguf

        return read_gguf(path)
    raise ModelFileError(f"{path}: no such file or folder")
