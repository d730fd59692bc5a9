"""Sentence embeddings from an encoder folder (BERT, MiniLM, MPNet...), with transformers.

The folder's sentence-transformers files say how a sentence becomes one
vector, and scheda follows them exactly as the `sentence-transformers`
library does: `1_Pooling/config.json` names the pooling (mean over the real
tokens, the CLS token, or the max), `modules.json` lists a `Normalize` step
when vectors are scaled to length 1, and `sentence_bert_config.json` gives
the longest input (`max_seq_length`). A folder without those files gets
mean pooling and normalisation, the common choice.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import torch
import transformers

from scheda.engines.base import Embedder, Token, check_token_ids, stopwatch
from scheda.errors import ModelFileError
from scheda.formulas.hardware import physical_cores
from scheda.pieces import hf_piece, is_byte_level

BATCH = 32  # sentences per forward pass


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class EmbeddingEngine(Embedder):
    """An encoder that turns texts into vectors: an `Embedder`, not an `Engine` (it does not
    generate)."""

    name = "transformers"
    capabilities = frozenset({"embed"})

    def __init__(self, path: Path, threads: int | None = None) -> None:
        elapsed = stopwatch()
        self.path = Path(path)
        torch.set_num_threads(threads or physical_cores())
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(
                self.path, local_files_only=True
            )
            self.model = transformers.AutoModel.from_pretrained(
                self.path, local_files_only=True, dtype=torch.float32
            ).eval()
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"{self.path}: cannot load it as an encoder ({exc})") from exc
        self.pooling = self._pooling()
        self.normalize = self._normalizes()
        config = _read_json(self.path / "sentence_bert_config.json") or {}
        limit = int(getattr(self.model.config, "max_position_embeddings", 512))
        self.context = min(int(config.get("max_seq_length") or limit), limit)
        self.dimensions = int(self.model.config.hidden_size)
        self._byte_level = self.tokenizer.is_fast and is_byte_level(
            json.loads(self.tokenizer.backend_tokenizer.to_str()).get("decoder")
        )
        self._lock = threading.Lock()  # one forward pass at a time: torch uses every core
        self.load_s = elapsed()

    def _pooling(self) -> str:
        config = _read_json(self.path / "1_Pooling" / "config.json") or {}
        if config.get("pooling_mode_cls_token"):
            return "cls"
        if config.get("pooling_mode_max_tokens"):
            return "max"
        return "mean"

    def _normalizes(self) -> bool:
        modules = _read_json(self.path / "modules.json")
        if not isinstance(modules, list):
            return True
        return any(str(m.get("type", "")).endswith("Normalize") for m in modules)

    def tokenize(self, text: str, add_special: bool = False) -> list[Token]:
        ids = [int(i) for i in self.tokenizer(text, add_special_tokens=add_special)["input_ids"]]
        pieces = self.tokenizer.convert_ids_to_tokens(ids)
        return [Token(i, hf_piece(p, self._byte_level)) for i, p in zip(ids, pieces, strict=True)]

    def tokenizer_info(self) -> dict[str, Any]:
        t = self.tokenizer
        return {
            "tokenizer_class": type(t).__name__,
            "bos_token": t.bos_token,
            "eos_token": t.eos_token,
            "pad_token": t.pad_token,
            "chat_template": t.chat_template if isinstance(t.chat_template, str) else None,
            "model_max_length": self.context,
        }

    def detokenize(self, ids: list[int]) -> str:
        check_token_ids(ids, len(self.tokenizer))
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=False))

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """One vector per text, and the tokens read. Texts longer than the limit are cut."""
        vectors: list[list[float]] = []
        tokens = 0
        for start in range(0, len(texts), BATCH):
            batch, used = self._embed_batch(texts[start : start + BATCH])
            vectors.extend(batch)
            tokens += used
        return vectors, tokens

    def _embed_batch(self, texts: list[str]) -> tuple[list[list[float]], int]:
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.context, return_tensors="pt"
        )
        mask = encoded["attention_mask"]
        with self._lock, torch.inference_mode():
            hidden = self.model(**encoded).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "max":
            pooled = hidden.masked_fill(mask.unsqueeze(-1) == 0, float("-inf")).max(dim=1).values
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.tolist(), int(mask.sum())

    def close(self) -> None:
        self.model = None
