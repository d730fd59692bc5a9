"""Strings from model files are untrusted: make them safe to print on one line."""

import unicodedata

MAX_LEN = 200


def clean(value: object, limit: int = MAX_LEN) -> str:
    """Printable text: control characters dropped, length capped."""
    text = str(value)
    text = "".join(
        " " if ch in "\r\n\t" else ch
        for ch in text
        if ch in "\r\n\t" or unicodedata.category(ch)[0] != "C"
    )
    return text if len(text) <= limit else text[: limit - 1] + "…"
