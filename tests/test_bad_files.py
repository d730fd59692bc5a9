"""Bad model input: one clean line and a non-zero exit, never a traceback or a hang."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from scheda.errors import ModelFileError
from scheda.spec import read_spec


def _copy_prefix(source: Path, target: Path, size: int) -> Path:
    with open(source, "rb") as src, open(target, "wb") as dst:
        dst.write(src.read(size))
    return target


def _minilm_copy(folder: Path, target: Path) -> Path:
    """A copy of the MiniLM folder whose big weight file is a symlink, to damage the rest."""
    target.mkdir()
    for item in folder.iterdir():
        if item.is_file() and item.name != "model.safetensors":
            shutil.copy(item, target / item.name)
    (target / "model.safetensors").symlink_to(folder / "model.safetensors")
    return target


@pytest.fixture(scope="module")
def bad(tmp_path_factory, smollm_path) -> dict[str, Path]:
    from tests.conftest import minilm_folder

    root = tmp_path_factory.mktemp("bad")
    minilm = minilm_folder()
    cases = {
        "truncated tensor data": _copy_prefix(smollm_path, root / "cut.gguf", 50_000_000),
        "truncated header": _copy_prefix(smollm_path, root / "head.gguf", 200_000),
        "not gguf": root / "text.gguf",
        "empty file": root / "empty.gguf",
        "folder without config": root / "no-config",
    }
    cases["not gguf"].write_text("this is a text file, not a model\n")
    cases["empty file"].write_bytes(b"")
    cases["folder without config"].mkdir()
    (cases["folder without config"] / "README.md").write_text("nothing here")

    broken_config = _minilm_copy(minilm, root / "broken-config")
    (broken_config / "config.json").write_text('{"model_type": "bert", ')
    cases["config not json"] = broken_config

    header = (minilm / "model.safetensors").read_bytes()[:100_000]
    (length,) = struct.unpack("<Q", header[:8])
    huge = _minilm_copy(minilm, root / "huge-header")
    (huge / "model.safetensors").unlink()
    (huge / "model.safetensors").write_bytes(struct.pack("<Q", 2**62) + header[8:])
    cases["safetensors header length"] = huge
    garbled = _minilm_copy(minilm, root / "garbled-header")
    (garbled / "model.safetensors").unlink()
    body = bytearray(header[: 8 + length])
    body[8 + length // 2 : 8 + length // 2 + 16] = b"}}}}\x00\xff{{{{::::,,"
    (garbled / "model.safetensors").write_bytes(bytes(body))
    cases["safetensors header garbled"] = garbled
    return cases


CASES = [
    ("truncated tensor data", "truncated"),
    ("truncated header", ""),
    ("not gguf", "not a GGUF file"),
    ("empty file", "not a GGUF file"),
    ("folder without config", "no config.json"),
    ("config not json", "not valid JSON"),
    ("safetensors header length", "corrupt safetensors header"),
    ("safetensors header garbled", "corrupt safetensors header"),
]


@pytest.mark.parametrize(("case", "message"), CASES, ids=[c for c, _ in CASES])
def test_library_raises_model_file_error_naming_the_path(bad, case: str, message: str) -> None:
    with pytest.raises(ModelFileError) as raised:
        read_spec(bad[case])
    text = str(raised.value)
    assert str(bad[case]) in text and message in text
    assert "\n" not in text


@pytest.mark.parametrize(("case", "message"), CASES, ids=[c for c, _ in CASES])
def test_cli_prints_one_line_and_exits_non_zero(bad, case: str, message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scheda", "card", str(bad[case])],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_a_bad_file_among_good_ones_is_named(bad) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scheda", "card", "default", str(bad["not gguf"])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and str(bad["not gguf"]) in done.stderr


def test_config_json_with_wrong_types(tmp_path) -> None:
    from tests.conftest import minilm_folder

    folder = _minilm_copy(minilm_folder(), tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = "six"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="num_hidden_layers should be a number"):
        read_spec(folder)
