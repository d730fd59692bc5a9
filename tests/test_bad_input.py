"""Bad model input gets one clean line and a non-zero exit: never a traceback, never a hang.

Every damaged input is made from the real models (the embedded SmolLM2 GGUF and
the MiniLM folder), copied into a temporary folder, and checked twice: through
the library (`read_spec` raises `ModelFileError` naming the path) and through
the command (`python -m scheda card PATH`: one `error:` line on stderr, nothing
on stdout, a non-zero exit, within `CLI_TIMEOUT` seconds).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from scheda.errors import ModelFileError, ModelNotFoundError
from scheda.readers import read_spec
from scheda.resolve import resolve
from tests.commands import run_scheda

CLI_TIMEOUT = 60
MB = 1_000_000


def _copy(source: Path, target: Path, limit: int | None = None, head: bytes = b"") -> Path:
    """`target` holds `head`, then `source` from byte len(head), up to `limit` bytes in all."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        dst.write(head)
        src.seek(len(head))
        left = None if limit is None else limit - len(head)
        while left is None or left > 0:
            chunk = src.read(1 << 20 if left is None else min(1 << 20, left))
            if not chunk:
                break
            dst.write(chunk)
            left = None if left is None else left - len(chunk)
    return target


def _folder_copy(minilm: Path, target: Path) -> Path:
    """The MiniLM folder, copied but for its 90 MB weight file, which is a symlink."""
    shutil.copytree(minilm, target, ignore=shutil.ignore_patterns("model.safetensors"))
    (target / "model.safetensors").symlink_to(minilm / "model.safetensors")
    return target


def _safetensors_head(minilm: Path) -> bytes:
    """MiniLM's safetensors header: the u64 length, then that many bytes of JSON."""
    with open(minilm / "model.safetensors", "rb") as f:
        prefix = f.read(8)
        return prefix + f.read(struct.unpack("<Q", prefix)[0])


# Each case: (file or folder under the fixture's root, words the message must hold).
CASES = {
    "gguf cut in its tensor data": ("cut-50MB.gguf", "truncated"),
    "gguf cut in its header": ("cut-200KB.gguf", "truncated"),
    "text file named .gguf": ("notes.gguf", "not a GGUF file"),
    "empty file": ("empty.gguf", "not a GGUF file"),
    "folder without config.json": ("no-config", "no config.json"),
    "config.json not JSON": ("bad-config", "not valid JSON"),
    "safetensors header length huge": ("huge-length", "corrupt safetensors header"),
    "safetensors header JSON garbled": ("garbled-header", "corrupt safetensors header"),
}


@pytest.fixture(scope="module")
def bad_inputs(
    tmp_path_factory: pytest.TempPathFactory, smollm_path: Path, minilm_path: Path
) -> Path:
    """Every damaged input, made once: the big copies are three (50, 90 and 90 MB)."""
    root = tmp_path_factory.mktemp("bad-input")
    _copy(smollm_path, root / "cut-50MB.gguf", limit=50 * MB)
    _copy(smollm_path, root / "cut-200KB.gguf", limit=200_000)
    (root / "notes.gguf").write_text("These are my notes, not a model.\n", encoding="utf-8")
    (root / "empty.gguf").write_bytes(b"")
    (root / "no-config").mkdir()
    (root / "no-config" / "notes.txt").write_text("no model here\n", encoding="utf-8")

    folder = _folder_copy(minilm_path, root / "bad-config")
    text = (minilm_path / "config.json").read_text(encoding="utf-8")
    (folder / "config.json").write_text(text[: len(text) // 2], encoding="utf-8")  # cut mid-way

    weights, head = minilm_path / "model.safetensors", _safetensors_head(minilm_path)
    for name, damaged in (
        ("huge-length", struct.pack("<Q", 0xFFFF_FFFF_FFFF_FF00) + head[8:]),
        ("garbled-header", head[:8] + b"#!{[" + head[12:]),  # same length, not JSON
    ):
        folder = _folder_copy(minilm_path, root / name)
        (folder / "model.safetensors").unlink()
        _copy(weights, folder / "model.safetensors", head=damaged)
        assert (folder / "model.safetensors").stat().st_size == weights.stat().st_size
    return root


def _cli(*args: str, cwd: Path | None = None, hf_home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.pop("SCHEDA_DEBUG", None)
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    return run_scheda(*args, env=env, cwd=cwd, timeout=CLI_TIMEOUT)


def _assert_one_clean_line(done: subprocess.CompletedProcess[str]) -> str:
    """A non-zero exit, nothing on stdout, one `error:` line on stderr; the line."""
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert done.returncode != 0, done.stdout
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and done.stderr.endswith("\n"), done.stderr
    assert lines[0].startswith("error:") and lines[0].removeprefix("error:").strip()
    return lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_library_raises_model_file_error_naming_the_path(bad_inputs: Path, case: str) -> None:
    name, words = CASES[case]
    path = bad_inputs / name
    with pytest.raises(ModelFileError) as caught:
        read_spec(path)
    message = str(caught.value)
    assert str(path) in message and words in message
    assert "\n" not in message


@pytest.mark.parametrize("case", list(CASES))
def test_cli_prints_one_error_line(bad_inputs: Path, tmp_path: Path, case: str) -> None:
    name, words = CASES[case]
    path = bad_inputs / name
    line = _assert_one_clean_line(_cli("card", str(path), hf_home=tmp_path))
    assert str(path) in line and words in line


def test_cli_names_the_bad_one_beside_a_good_one(
    bad_inputs: Path, minilm_path: Path, tmp_path: Path
) -> None:
    """Side by side with a good model, the error still says which file is bad."""
    bad = bad_inputs / "cut-200KB.gguf"
    line = _assert_one_clean_line(_cli("card", str(minilm_path), str(bad), hf_home=tmp_path))
    assert str(bad) in line


# References that resolve to nothing: (reference, words the message must hold).
REFERENCES = {
    "no-such-model": (
        "'no-such-model' is not a model",
        ".gguf file",
        "HF model folder",
        "'default'",
        "org/name in the local Hugging Face cache",
        "catalog name",
    ),
    "./missing.gguf": ("./missing.gguf", "no such file or folder"),
    "someorg/somerepo": (
        "'someorg/somerepo'",
        "not in the local Hugging Face cache",
        "`scheda pull someorg/somerepo`",  # the Hub CLI of the locked huggingface_hub is `hf`
    ),
}


@pytest.mark.parametrize("ref", list(REFERENCES))
def test_reference_to_nothing_in_the_library(
    ref: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # ./missing.gguf is missing here
    with pytest.raises(ModelNotFoundError) as caught:
        resolve(ref)
    for words in REFERENCES[ref]:
        assert words in str(caught.value)


def test_missing_path_in_read_spec(tmp_path: Path) -> None:
    path = tmp_path / "missing.gguf"
    with pytest.raises(ModelFileError, match="no such file or folder") as caught:
        read_spec(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("ref", list(REFERENCES))
def test_reference_to_nothing_in_the_cli(ref: str, tmp_path: Path) -> None:
    hf_home = tmp_path / "hf-home"  # an empty cache, offline
    hf_home.mkdir()
    line = _assert_one_clean_line(_cli("card", ref, cwd=tmp_path, hf_home=hf_home))
    for words in REFERENCES[ref]:
        assert words in line
