"""How does it split my text: `scheda tokens`, pieces and ids, several models side by side."""

from __future__ import annotations

from typing import Annotated

import typer

from scheda.cli.common import JsonOpt, MarkdownOpt, one_format
from scheda.display.terminal import console, emit_json
from scheda.errors import UsageError


def tokens(
    args: Annotated[
        list[str],
        typer.Argument(metavar="MODEL... TEXT", help="One or more models, then the text to split."),
    ],
    as_json: JsonOpt = False,
    markdown: MarkdownOpt = False,
) -> None:
    """How each model's tokenizer splits a text: pieces, ids and the count."""
    from scheda.display import render
    from scheda.resolve import resolve
    from scheda.tokenization.tokens import tokenize

    one_format(as_json, markdown)
    if len(args) < 2:
        raise UsageError(
            'give at least one model and a text: scheda tokens default "ChatGPT è incredibile!"'
        )
    *models, text = args
    results = [tokenize(resolve(m), text) for m in models]
    if as_json:
        emit_json({"text": text, "models": [r.to_dict() for r in results]})
    elif markdown:
        typer.echo(render.tokens_markdown(results))
    else:
        console().print(render.tokens_view(results))
