"""The engine interface: what scheda asks of llama.cpp, transformers or vLLM.

An engine owns one loaded model. It tokenizes with the model's own
tokenizer and completes prompts with the engine's own sampling; scheda never
reimplements either. More capabilities (chat, streaming, cancel,
log-likelihoods) join this interface as the commands that need them arrive.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Token:
    """One token: its id and the raw bytes it stands for (a piece of UTF-8, maybe partial)."""

    id: int
    piece: bytes


class Engine(ABC):
    """A loaded model. Use it as a context manager, or call `close()`."""

    name: str = "engine"

    @abstractmethod
    def tokenize(self, text: str, add_special: bool = False) -> list[Token]:
        """The model's tokens for a text, with the bytes of each."""

    @abstractmethod
    def complete(
        self, prompt: str, max_tokens: int = 16, temperature: float = 0.0
    ) -> dict[str, Any]:
        """A plain completion, in OpenAI's completions shape."""

    @abstractmethod
    def close(self) -> None:
        """Free the model."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
