"""Which GGUF files make a model, and which quantization each is, from their names alone.

A repository of GGUF files holds one model at several quantizations, named as
llama.cpp's tools name them: `SmolLM2-135M-Instruct.Q4_1.gguf`,
`Llama-3.2-1B-Instruct-Q4_K_M.gguf`, `qwen2.5-7b-instruct-q8_0.gguf`. A model
too big for one file is split by `llama-gguf-split` into parts named
`NAME-00001-of-00003.gguf`, which read and load as one model from the first.

A tag picks one model as llama.cpp's `-hf org/name:Q4_K_M` and Ollama's
`hf.co/org/name:Q4_K_M` do: the quantization in the name, case-insensitive.
With no tag, a folder or repository holding one model means it, and one
holding several means its Q4_K_M, llama.cpp's default; otherwise the user
names one. Pure functions over names and sizes: the local folder and the Hub
listing go through the same ones.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from scheda.errors import ModelNotFoundError
from scheda.spec import GGUFFile

SPLIT = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
# A quantization as names carry it: Q4_K_M, IQ2_XXS, Q4_0_4_4, TQ1_0, F16, BF16, MXFP4...
QUANT = re.compile(
    r"^(?:I?Q\d+(?:_[A-Z0-9]+)*|TQ\d_\d|F16|F32|F64|BF16|MXFP4(?:_MOE)?|NVFP4)$", re.IGNORECASE
)
DEFAULT_TAG = "Q4_K_M"  # what llama.cpp's -hf takes when no tag is given


def split_part(name: str) -> tuple[str, int, int] | None:
    """(the name without the part suffix, part number from 1, parts) for a split GGUF part."""
    found = SPLIT.match(name)
    if found is None:
        return None
    return found["stem"], int(found["no"]), int(found["count"])


def split_names(first: str) -> list[str]:
    """Every part's name, from the first part's (just `first` if it is not split)."""
    part = split_part(first)
    if part is None:
        return [first]
    stem, _, count = part
    return [f"{stem}-{n:05d}-of-{count:05d}.gguf" for n in range(1, count + 1)]


def quant_of(name: str) -> str | None:
    """The quantization a GGUF's name tells (`Q4_K_M`), upper-case; None if it tells none."""
    base = name.rsplit("/", 1)[-1]
    part = split_part(base)
    stem = part[0] if part else re.sub(r"\.gguf$", "", base, flags=re.IGNORECASE)
    found = [t for t in re.split(r"[-.]", stem) if QUANT.match(t)]
    return found[-1].upper() if found else None


def ggufs(sizes: Mapping[str, int]) -> list[GGUFFile]:
    """The GGUF models among some files (name -> size): split parts grouped under the first,
    incomplete splits left out, in name order."""
    names = {n for n in sizes if n.lower().endswith(".gguf")}
    models = []
    for name in sorted(names):
        part = split_part(name.rsplit("/", 1)[-1])
        if part is not None and part[1] != 1:
            continue
        parts = split_names(name) if part is None else _parts(name)
        if not all(p in names for p in parts):
            continue
        models.append(GGUFFile(name, sum(sizes[p] for p in parts), quant_of(name), parts))
    return models


def _parts(first: str) -> list[str]:
    folder, _, base = first.rpartition("/")
    prefix = f"{folder}/" if folder else ""
    return [prefix + p for p in split_names(base)]


def pick(models: list[GGUFFile], where: str, tag: str | None, file: str | None) -> GGUFFile:
    """The model a tag or a file name picks; with neither, the only one or the Q4_K_M.
    ModelNotFoundError says what there is to pick from."""
    if not models:
        raise ModelNotFoundError(f"{where} holds no GGUF file")
    if file is not None:
        for m in models:
            if file in m.parts or file == m.file.rsplit("/", 1)[-1]:
                return m
        raise ModelNotFoundError(f"{where} has no GGUF file {file!r}: {_listing(models)}")
    if tag is not None:
        found = [m for m in models if m.quant == tag.upper()]
        if len(found) == 1:
            return found[0]
        if found:
            names = ", ".join(m.file for m in found)
            raise ModelNotFoundError(
                f"{where}: several files are {tag.upper()} ({names}): pick one with --file"
            )
        raise ModelNotFoundError(f"{where} has no {tag.upper()} file: {_listing(models)}")
    if len(models) == 1:
        return models[0]
    default = [m for m in models if m.quant == DEFAULT_TAG]
    if len(default) == 1:
        return default[0]
    raise ModelNotFoundError(
        f"{where} holds several GGUF files ({_listing(models)}): name one with :TAG after "
        "the repository, or --file NAME"
    )


def _listing(models: list[GGUFFile]) -> str:
    tags = sorted({m.quant for m in models if m.quant})
    untagged = [m.file for m in models if not m.quant]
    shown = []
    if tags:
        shown.append("tags " + ", ".join(tags))
    if untagged:
        shown.append("files " + ", ".join(untagged[:6]) + (" ..." if len(untagged) > 6 else ""))
    return "; ".join(shown)
