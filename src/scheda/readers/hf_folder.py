"""Read a Hugging Face model folder's spec: config.json, safetensors headers,
tokenizer files and the model card's YAML front matter. No tensor is loaded.

Exact parameter counts come from the safetensors headers (tensor shapes);
buffers saved beside the weights, such as BERT's `position_ids`, are not
parameters and are left out.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from scheda.errors import ModelFileError
from scheda.readers.text import clean
from scheda.spec import ModelSpec, TensorGroup

DTYPE_BYTES = {
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "F16": 2,
    "BF16": 2,
    "I16": 2,
    "U16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
# Saved tensors that are buffers, not learned weights.
BUFFER_SUFFIXES = ("position_ids", "inv_freq", ".attn.masked_bias", ".attn.bias")
ENCODER_TYPES = {
    "bert",
    "roberta",
    "xlm-roberta",
    "distilbert",
    "electra",
    "deberta",
    "deberta-v2",
    "mpnet",
    "albert",
    "camembert",
    "modernbert",
    "nomic_bert",
}
# config.json spells the same number several ways across architectures.
CONFIG_KEYS = {
    "layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "hidden": ("hidden_size", "n_embd", "d_model", "dim"),
    "heads": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
    "kv_heads": ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "multi_query_group_num"),
    "head_dim": ("head_dim",),
    "ffn": ("intermediate_size", "n_inner", "ffn_dim", "hidden_dim"),
    "context": ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"),
    "vocab_size": ("vocab_size", "padded_vocab_size"),
    "rope_base": ("rope_theta",),
    "sliding_window": ("sliding_window",),
}


def read_hf_folder(folder: Path) -> ModelSpec:
    """The spec of one HF model folder; raises ModelFileError for anything unreadable."""
    config = _read_config(folder)
    nested = config.get("text_config")
    text: dict[str, Any] = nested if isinstance(nested, dict) else {}
    merged = {**config, **text}
    # transformers 5 keeps RoPE's settings in one object: rope_parameters.rope_theta.
    rope = merged.get("rope_parameters")
    if "rope_theta" not in merged and isinstance(rope, dict) and "rope_theta" in rope:
        merged["rope_theta"] = rope["rope_theta"]
    numbers = {key: _config_int(folder, merged, names) for key, names in CONFIG_KEYS.items()}
    groups, parameters, vectors, tensor_bytes, weight_bytes = _weights(folder)
    heads = numbers["heads"]
    if numbers["head_dim"] is None and heads and numbers["hidden"]:
        numbers["head_dim"] = numbers["hidden"] // heads
    model_type = str(config.get("model_type") or text.get("model_type") or "")
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list):
        raise ModelFileError(
            f"{folder / 'config.json'}: architectures should be a list, "
            f"found {clean(architectures, 40)!r}"
        )
    tokenizer, detail = _tokenizer_kind(folder)
    spec = ModelSpec(
        name=folder.name if folder.name != "model" else folder.parent.name,
        source="hf",
        path=str(folder),
        architecture=clean(architectures[0] if architectures else model_type or "unknown"),
        kind="encoder" if model_type in ENCODER_TYPES else "decoder",
        parameters=parameters,
        vector_parameters=vectors,
        layers=numbers["layers"],
        hidden=numbers["hidden"],
        heads=heads,
        kv_heads=numbers["kv_heads"] or heads,
        head_dim=numbers["head_dim"],
        ffn=numbers["ffn"],
        context=numbers["context"],
        rope_base=numbers["rope_base"],
        sliding_window=numbers["sliding_window"],
        vocab_size=numbers["vocab_size"],
        tokenizer=tokenizer,
        tokenizer_detail=detail,
        tied_embeddings=config.get(
            "tie_word_embeddings", True if model_type in ENCODER_TYPES else None
        ),
        file_type=max(groups.items(), key=lambda kv: kv[1].parameters)[0] if groups else None,
        quantization=groups,
        tensor_bytes=tensor_bytes,
        file_size=weight_bytes,
        licence=_licence(folder),
        chat_template=_has_chat_template(folder),
    )
    quant = config.get("quantization_config")
    if isinstance(quant, dict):
        method, bits = quant.get("quant_method", "unknown"), quant.get("bits")
        spec.notes.append(
            f"quantized with {clean(method, 30)}" + (f" ({bits}-bit)" if bits else "")
        )
    if parameters is None:
        spec.notes.append("no safetensors weights in the folder: parameter count unknown")
    return spec


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelFileError(
            f"{folder}: no config.json: not a Hugging Face model folder "
            "(give a folder with config.json, or a .gguf file)"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: not valid JSON ({clean(exc, 80)})") from exc
    if not isinstance(config, dict):
        raise ModelFileError(f"{path}: expected a JSON object, found {type(config).__name__}")
    return config


def _config_int(folder: Path, config: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        value = config.get(name)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ModelFileError(
                f"{folder / 'config.json'}: {name} should be a number, found {clean(value, 40)!r}"
            )
        return value if isinstance(value, float) and name == "rope_theta" else int(value)
    return None


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            return [folder / name for name in sorted(set(weight_map.values()))]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelFileError(
                f"{index}: not a valid safetensors index ({clean(exc, 60)})"
            ) from exc
    return sorted(folder.glob("*.safetensors"))


def read_safetensors_header(path: Path) -> dict[str, tuple[str, list[int]]]:
    """Tensor name -> (dtype, shape) from one safetensors file, validated by `safetensors`."""
    from safetensors import safe_open

    if not path.is_file():
        raise ModelFileError(f"{path}: listed in the index but missing")
    try:
        with safe_open(str(path), framework="numpy") as f:
            out = {}
            for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                sl = f.get_slice(name)
                out[name] = (str(sl.get_dtype()), [int(d) for d in sl.get_shape()])
            return out
    except Exception as exc:  # the Rust parser's errors carry their own names
        raise ModelFileError(f"{path}: corrupt safetensors header ({clean(exc, 100)})") from exc


def _weights(
    folder: Path,
) -> tuple[dict[str, TensorGroup], int | None, int | None, int | None, int | None]:
    files = _weight_files(folder)
    if not files:
        return {}, None, None, None, None
    groups: dict[str, TensorGroup] = {}
    vectors = 0
    for path in files:
        for name, (dtype, shape) in read_safetensors_header(path).items():
            if name.endswith(BUFFER_SUFFIXES) or dtype == "BOOL":
                continue
            count = math.prod(shape)
            group = groups.setdefault(dtype, TensorGroup())
            group.tensors += 1
            group.parameters += count
            group.bytes += count * DTYPE_BYTES.get(dtype, 4)
            if len([d for d in shape if d > 1]) <= 1:
                vectors += count
    parameters = sum(g.parameters for g in groups.values())
    tensor_bytes = sum(g.bytes for g in groups.values())
    weight_bytes = sum(p.stat().st_size for p in files)
    return groups, parameters, vectors, tensor_bytes, weight_bytes


def _tokenizer_kind(folder: Path) -> tuple[str | None, str | None]:
    path = folder / "tokenizer.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            model = data.get("model") or {}
            kind = str(model.get("type") or "")
            text = json.dumps({k: data.get(k) for k in ("pre_tokenizer", "decoder")})
        except (ValueError, AttributeError) as exc:
            raise ModelFileError(f"{path}: not valid JSON ({clean(exc, 60)})") from exc
        if (
            kind == "BPE"
            and "ByteLevel" not in text
            and ("Metaspace" in text or model.get("byte_fallback"))
        ):
            return "SentencePiece", "tokenizer.json (BPE with byte fallback)"
        if kind == "Unigram":
            return "SentencePiece (Unigram)", "tokenizer.json"
        if kind:
            return kind, "tokenizer.json" + (" (byte-level)" if "ByteLevel" in text else "")
    if (folder / "tokenizer.model").is_file():
        return "SentencePiece", "tokenizer.model"
    if (folder / "vocab.txt").is_file():
        return "WordPiece", "vocab.txt"
    if (folder / "merges.txt").is_file():
        return "BPE", "vocab.json + merges.txt"
    return None, None


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return False
    try:
        return bool(json.loads(path.read_text(encoding="utf-8")).get("chat_template"))
    except (ValueError, AttributeError):
        return False


def _licence(folder: Path) -> str | None:
    """`license:` from the model card's YAML front matter (README.md)."""
    path = folder / "README.md"
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    end = text.find("\n---", 3)
    if end < 0:
        return None
    try:
        front = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return None
    if not isinstance(front, dict) or not front.get("license"):
        return None
    licence = front["license"]
    if licence == "other" and front.get("license_name"):
        licence = front["license_name"]
    return clean(licence if isinstance(licence, str) else ", ".join(map(str, licence)), 60)
