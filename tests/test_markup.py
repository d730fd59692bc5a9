"""Text from outside is shown as written, never read as Rich markup.

A model file's metadata, a saved session and the text to split are untrusted: a name
like "[blink]..." must print with its brackets and style nothing. Each command runs as
a user runs it, with colours forced on (FORCE_COLOR), so that markup read as markup
would leave its escape codes in the output: blink (SGR 5) and hyperlinks (OSC 8),
which scheda itself never draws.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from scheda.stores import evals
from scheda.stores.comparisons import ComparisonStore
from scheda.stores.sessions import FILENAME, SessionStore
from tests.commands import run_scheda
from tests.gguf_variants import relabelled

NAME = "[blink]Evil[/blink]-[link=https://example.invalid]name[/link]"
LICENCE = "[blink]licence[/blink]"
# Read by no command's terminal output today (the card says "present"), set all the same:
# should one be printed later, the checks below hold it to the same rule.
HIDDEN = {
    "general.description": "[blink]description[/blink]",
    "general.basename": "[blink]basename[/blink]",
    "tokenizer.chat_template": "{{ '[blink]' }}{% for m in messages %}{{ m.content }}{% endfor %}",
}
TEXT = "[blink]ciao[/blink] [link=https://example.invalid]mondo[/link]"
TITLE = "[blink]titolo[/blink]"
MESSAGE = "What is a [link=https://example.invalid]scheda[/link]?"
SYSTEM = "[blink]You answer in Italian.[/blink]"

SGR = re.compile(r"\x1b\[([0-9;]*)m")
EXTENDED_COLOURS = {"38", "48", "58"}  # 38;5;N or 38;2;R;G;B: their numbers are no attributes


@pytest.fixture(scope="module")
def marked(tmp_path_factory: pytest.TempPathFactory, smollm_path: Path) -> Path:
    """The embedded model with markup in its name, licence, description and template."""
    folder = tmp_path_factory.mktemp("markup")
    strings = {"general.name": NAME, "general.license": LICENCE, **HIDDEN}
    return relabelled(smollm_path, folder / "marked.gguf", strings)


def coloured(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    """`scheda ARGS` with colours forced on and a wide terminal, its stores in `data`."""
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "300", "SCHEDA_DATA_DIR": str(data)}
    env.pop("NO_COLOR", None)
    result = run_scheda(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result


def attributes(output: str) -> set[int]:
    """Every text attribute the output's escape codes switch on (1 bold, 5 blink, ...)."""
    found: set[int] = set()
    for match in SGR.finditer(output):
        params = match.group(1).split(";")
        i = 0
        while i < len(params):
            if params[i] in EXTENDED_COLOURS:
                i += 3 if params[i + 1 : i + 2] == ["5"] else 5
                continue
            found.add(int(params[i] or 0))
            i += 1
    return found


def assert_shown_literally(output: str, *texts: str) -> None:
    assert SGR.search(output), "no styling at all: colours were not forced on"
    for text in texts:
        assert text in output, text
    assert 5 not in attributes(output), "something blinks: markup was read as markup"
    assert "\x1b]8;" not in output, "a hyperlink: markup was read as markup"


def test_card_shows_the_files_name_and_licence_as_written(marked: Path, tmp_path: Path) -> None:
    result = coloured("card", str(marked), data=tmp_path)
    assert_shown_literally(result.stdout, NAME, LICENCE)
    assert "present" in result.stdout  # the template is there, and only said to be


def test_fit_shows_the_files_name_as_written(marked: Path, tmp_path: Path) -> None:
    result = coloured("fit", str(marked), "--gpu", "t4", data=tmp_path)
    assert_shown_literally(result.stdout, NAME)


def test_tokens_show_the_name_and_the_pieces_as_written(marked: Path, tmp_path: Path) -> None:
    result = coloured("tokens", str(marked), "default", TEXT, data=tmp_path)
    assert_shown_literally(result.stdout, NAME)
    # Each piece is in a row of its own and on a colour of its own in the strip: the
    # brackets are there, among the pieces.
    pieces = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)
    assert "[" in pieces and "link=https://example.invalid" in pieces.replace("␣", " ")


@pytest.fixture
def stored(tmp_path: Path) -> str:
    """A session whose title, system prompt and messages carry markup."""
    with SessionStore(tmp_path / FILENAME) as store:
        session = store.create("default", system=SYSTEM)
        store.add_message(session.id, "user", MESSAGE)
        store.add_message(session.id, "assistant", TEXT)
        store.rename(session.id, TITLE)
        return session.id


def test_sessions_list_and_show_the_stored_text_as_written(stored: str, tmp_path: Path) -> None:
    listed = coloured("sessions", "list", data=tmp_path)
    assert_shown_literally(listed.stdout, TITLE)
    shown = coloured("sessions", "show", stored, data=tmp_path)
    assert_shown_literally(shown.stdout, TITLE, SYSTEM, MESSAGE, TEXT)


# -- stored evaluation runs and comparisons --------------------------------------------------

TASK = "[blink]domande[/blink].jsonl"
REFERENCE = "[blink]riferimento.gguf"  # a file name: no "/" in it, the tag left open


def comparison(folder: Path) -> dict[str, Any]:
    """A stored comparison's record as `compare` writes it, with names from outside: the
    reference and its text, and a candidate on transformers (whose label has brackets)."""
    row = {"size": 1, "bits_per_weight": 8.0, "memory": 2, "type": "Q8_0"}
    return {
        "reference": str(folder / REFERENCE),
        "created": time.time(),
        "context": 512,
        "memory_context": 2048,
        "text": {"name": TEXT, "about": TITLE, "tokens": 9, "chunks": 1, "scored": 4},
        "how": {"size": {"kind": "read", "how": NAME}},
        "cache": {"how": MESSAGE, "bytes": 3},
        "rows": [
            {**row, "path": str(folder / REFERENCE), "role": "reference", "engine": "llama.cpp"},
            {**row, "path": str(folder / "hf"), "role": "candidate", "engine": "transformers"},
        ],
    }


@pytest.fixture
def stored_comparison(tmp_path: Path) -> str:
    """An evaluation run and a comparison stored with names from outside; the comparison's id."""
    with contextlib.closing(evals.EvalStore(tmp_path / evals.FILENAME)) as store:
        store.start(NAME, tmp_path / "marked.gguf", TASK, {"shots": 0}, 1)
    with contextlib.closing(ComparisonStore(tmp_path / evals.FILENAME)) as comparisons:
        return comparisons.add(comparison(tmp_path))


def test_eval_list_shows_the_stored_names_as_written(
    stored_comparison: str, tmp_path: Path
) -> None:
    assert_shown_literally(coloured("eval", "list", data=tmp_path).stdout, NAME, TASK)


def test_compare_list_shows_the_stored_names_as_written(
    stored_comparison: str, tmp_path: Path
) -> None:
    assert_shown_literally(coloured("compare", "list", data=tmp_path).stdout, REFERENCE, TEXT)


def test_compare_show_shows_the_stored_names_and_the_engines_label_as_written(
    stored_comparison: str, tmp_path: Path
) -> None:
    shown = coloured("compare", "show", stored_comparison, data=tmp_path).stdout
    assert_shown_literally(shown, REFERENCE.removesuffix(".gguf"), "hf [transformers]")
    assert_shown_literally(shown, NAME, TITLE, MESSAGE)
