"""Tokens through the real GGUF tokenizer (llama.cpp) and the real MiniLM tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scheda.cli import app
from scheda.engines.base import Token
from scheda.errors import UsageError
from scheda.resolve import resolve
from scheda.spec import ModelSpec
from scheda.tokenization.tokens import group, tokenize

ITALIAN = "ChatGPT è incredibile!"
runner = CliRunner()


def test_smollm_splits_the_accented_character_but_shows_it_whole(smollm: ModelSpec) -> None:
    result = tokenize(smollm, ITALIAN)
    assert len(result.tokens) == 8
    # Byte-level BPE cuts "è" (0xC3 0xA8) across two tokens...
    raw = [t.piece for t in result.tokens]
    assert b" \xc3" in raw and b"\xa8" in raw
    # ...and the readable pieces join them: never "Ã¨", never two halves.
    texts = [p.text for p in result.pieces]
    assert " è" in texts
    assert all("Ã" not in t and "\ufffd" not in t for t in texts)
    assert "".join(texts) == ITALIAN
    joined = next(p for p in result.pieces if p.text == " è")
    assert len(joined.ids) == 2


def test_minilm_wordpiece_tokens(minilm: ModelSpec) -> None:
    result = tokenize(minilm, ITALIAN)
    assert [p.text for p in result.pieces] == [
        "chat",
        "##gp",
        "##t",
        "e",
        "inc",
        "##red",
        "##ib",
        "##ile",
        "!",
    ]
    assert result.tokens[0].id == 11834


def test_group_joins_only_incomplete_characters() -> None:
    tokens = [Token(1, b"a"), Token(2, b"\xe2\x82"), Token(3, b"\xac"), Token(4, b"b")]
    assert [(p.ids, p.text) for p in group(tokens)] == [([1], "a"), ([2, 3], "€"), ([4], "b")]
    # A byte that never completes is shown with the replacement mark, not swallowed.
    broken = group([Token(1, b"\xff"), Token(2, b"x")])
    assert broken[0].text == "\ufffd" and broken[1].text == "x"


def test_side_by_side_json_counts_tokens_per_model(minilm_path: Path) -> None:
    result = runner.invoke(app, ["tokens", "default", str(minilm_path), ITALIAN, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["text"] == ITALIAN
    counts = [m["count"] for m in data["models"]]
    assert counts == [8, 9]
    assert data["models"][0]["chars_per_token"] == round(len(ITALIAN) / 8, 3)
    assert {"ids": [5549, 118], "text": " è"} in data["models"][0]["pieces"]


def test_terminal_view_shows_pieces_and_ids(minilm_path: Path) -> None:
    result = runner.invoke(
        app, ["tokens", "default", str(minilm_path), ITALIAN], env={"COLUMNS": "120"}
    )
    assert result.exit_code == 0, result.output
    assert "Same text, each tokenizer" in result.stdout
    assert "␣è" in result.stdout and "5549 + 118" in result.stdout
    assert "Ã" not in result.stdout


def test_tokens_needs_a_file_not_a_catalog_name() -> None:
    with pytest.raises(UsageError, match="catalog entry"):
        tokenize(resolve("llama-3-8b"), "ciao")


def test_tokens_needs_model_and_text() -> None:
    result = runner.invoke(app, ["tokens", "ciao"])
    assert result.exit_code != 0
    assert "at least one model and a text" in str(result.exception)
