"""Read a Hugging Face model folder's spec: config.json, safetensors headers,
tokenizer files and the model card's YAML front matter. No tensor is loaded.

Exact parameter counts come from the safetensors headers (tensor shapes);
buffers saved beside the weights, such as BERT's `position_ids`, are not
parameters and are left out.

The folder is a `Folder`: one on disk, or a Hub repository whose files are
read by HTTP range requests (`readers/hub.py`). The same code reads both, and
reads little: each safetensors file's header (two reads), config.json and
tokenizer_config.json whole, and of tokenizer.json and README.md only the
beginning that holds what a card shows (a tokenizer's vocabulary and a model
card's prose are never read).
"""

from __future__ import annotations

import codecs
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from scheda.errors import ModelFileError
from scheda.readers.safetensors_header import DTYPE_BITS, read_safetensors
from scheda.readers.source import ByteSource, FileSource
from scheda.readers.text import clean
from scheda.spec import ModelSpec, TensorGroup

T = TypeVar("T")
PREFIX = 16 * 1024  # the first read of a file only its beginning matters of; doubled as needed

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


class Folder(ABC):
    """The files of an HF model, wherever they lie: names relative to the folder's root."""

    name: str  # what a spec calls the model
    path: str  # what the spec's `path` holds: the folder, or the repository reference

    @abstractmethod
    def where(self, file: str) -> str:
        """A file as an error message names it."""

    @abstractmethod
    def exists(self, file: str) -> bool: ...

    @abstractmethod
    def weight_files(self) -> list[str]:
        """The `*.safetensors` files at the root, sorted."""

    @abstractmethod
    def size(self, file: str) -> int: ...

    @abstractmethod
    def open(self, file: str) -> ByteSource:
        """The file's bytes; ModelFileError if it cannot be opened."""


class LocalFolder(Folder):
    """A folder on disk."""

    def __init__(self, folder: Path) -> None:
        self.root = folder
        self.name = folder.name if folder.name != "model" else folder.parent.name
        self.path = str(folder)

    def where(self, file: str) -> str:
        return str(self.root / file)

    def exists(self, file: str) -> bool:
        return (self.root / file).is_file()

    def weight_files(self) -> list[str]:
        return sorted(p.name for p in self.root.glob("*.safetensors"))

    def size(self, file: str) -> int:
        return (self.root / file).stat().st_size

    def open(self, file: str) -> ByteSource:
        try:
            return FileSource(self.root / file)
        except OSError as exc:
            raise ModelFileError(
                f"{self.where(file)}: cannot be read ({exc.strerror or exc})"
            ) from exc


def read_hf_folder(folder: Path | Folder) -> ModelSpec:
    """The spec of one HF model folder; raises ModelFileError for anything unreadable."""
    files = folder if isinstance(folder, Folder) else LocalFolder(folder)
    config = _read_config(files)
    nested = config.get("text_config")
    text: dict[str, Any] = nested if isinstance(nested, dict) else {}
    merged = {**config, **text}
    # transformers 5 keeps RoPE's settings in one object: rope_parameters.rope_theta.
    rope = merged.get("rope_parameters")
    if "rope_theta" not in merged and isinstance(rope, dict) and "rope_theta" in rope:
        merged["rope_theta"] = rope["rope_theta"]
    numbers = {key: _config_int(files, merged, names) for key, names in CONFIG_KEYS.items()}
    groups, parameters, vectors, tensor_bytes, weight_bytes = _weights(files)
    heads = numbers["heads"]
    if numbers["head_dim"] is None and heads and numbers["hidden"]:
        numbers["head_dim"] = numbers["hidden"] // heads
    model_type = str(config.get("model_type") or text.get("model_type") or "")
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list):
        raise ModelFileError(
            f"{files.where('config.json')}: architectures should be a list, "
            f"found {clean(architectures, 40)!r}"
        )
    tokenizer, detail = _tokenizer_kind(files)
    card = _card_front_matter(files)
    spec = ModelSpec(
        name=files.name,
        source="hf",
        path=files.path,
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
        licence=_licence(card),
        base_model=_names(card.get("base_model"), 3),
        datasets=_names(card.get("datasets"), 50),
        chat_template=_has_chat_template(files),
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


def _whole(files: Folder, file: str) -> bytes:
    """A small file's bytes, in one read."""
    with files.open(file) as source:
        return source.read(0, source.size)


def _grow(source: ByteSource, enough: Callable[[bytes, bool], T | None]) -> T | None:
    """Read a file from its start, doubling what is read, until `enough(data, whole)`
    answers (or the file ends): a value near the start costs one small read."""
    data, want = b"", PREFIX
    while True:
        data += source.read(len(data), want - len(data))
        whole = len(data) >= source.size
        found = enough(data, whole)
        if found is not None or whole:
            return found
        want *= 2


def _read_config(files: Folder) -> dict[str, Any]:
    if not files.exists("config.json"):
        raise ModelFileError(
            f"{files.path}: no config.json: not a Hugging Face model folder "
            "(give a folder with config.json, or a .gguf file)"
        )
    where = files.where("config.json")
    try:
        config = json.loads(_whole(files, "config.json").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{where}: not valid JSON ({clean(exc, 80)})") from exc
    if not isinstance(config, dict):
        raise ModelFileError(f"{where}: expected a JSON object, found {type(config).__name__}")
    return config


def _config_int(files: Folder, config: dict[str, Any], names: tuple[str, ...]) -> Any:
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
                f"{files.where('config.json')}: {name} should be a number, "
                f"found {clean(value, 40)!r}"
            )
        return value if isinstance(value, float) and name == "rope_theta" else int(value)
    return None


INDEX = "model.safetensors.index.json"


def _weight_files(files: Folder) -> list[str]:
    if files.exists(INDEX):
        try:
            weight_map = json.loads(_whole(files, INDEX).decode("utf-8"))["weight_map"]
            return sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelFileError(
                f"{files.where(INDEX)}: not a valid safetensors index ({clean(exc, 60)})"
            ) from exc
    return files.weight_files()


def weight_paths(folder: Path) -> list[Path]:
    """The safetensors files of a folder on disk, as its index lists them (or all at its root)."""
    return [folder / name for name in _weight_files(LocalFolder(folder))]


def licence_of(folder: Path) -> str | None:
    """The licence a folder on disk's model card names, or None."""
    return _licence(_card_front_matter(LocalFolder(folder)))


def read_safetensors_header(path: Path) -> dict[str, tuple[str, list[int]]]:
    """Tensor name -> (dtype, shape) from one safetensors file on disk, checked as the
    `safetensors` library checks it."""
    return _safetensors_header(LocalFolder(path.parent), path.name)


def _safetensors_header(files: Folder, file: str) -> dict[str, tuple[str, list[int]]]:
    if not files.exists(file):
        raise ModelFileError(f"{files.where(file)}: listed in the index but missing")
    with files.open(file) as source:
        return read_safetensors(source)


def _weights(
    files: Folder,
) -> tuple[dict[str, TensorGroup], int | None, int | None, int | None, int | None]:
    names = _weight_files(files)
    if not names:
        return {}, None, None, None, None
    groups: dict[str, TensorGroup] = {}
    vectors = 0
    for file in names:
        for name, (dtype, shape) in _safetensors_header(files, file).items():
            if name.endswith(BUFFER_SUFFIXES) or dtype == "BOOL":
                continue
            count = math.prod(shape)
            group = groups.setdefault(dtype, TensorGroup())
            group.tensors += 1
            group.parameters += count
            group.bytes += count * DTYPE_BITS[dtype] // 8
            if len([d for d in shape if d > 1]) <= 1:
                vectors += count
    parameters = sum(g.parameters for g in groups.values())
    tensor_bytes = sum(g.bytes for g in groups.values())
    weight_bytes = sum(files.size(file) for file in names)
    return groups, parameters, vectors, tensor_bytes, weight_bytes


def _tokenizer_kind(files: Folder) -> tuple[str | None, str | None]:
    if files.exists("tokenizer.json"):
        data = _tokenizer_json(files)
        model = data.get("model") or {}
        kind = str(model.get("type") or "")
        text = json.dumps({k: data.get(k) for k in ("pre_tokenizer", "decoder")})
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
    if files.exists("tokenizer.model"):
        return "SentencePiece", "tokenizer.model"
    if files.exists("vocab.txt"):
        return "WordPiece", "vocab.txt"
    if files.exists("merges.txt"):
        return "BPE", "vocab.json + merges.txt"
    return None, None


def _tokenizer_json(files: Folder) -> dict[str, Any]:
    """What the tokenizer kind is told by: `model` (its type and byte fallback),
    `pre_tokenizer` and `decoder`. These come before the vocabulary in the file (the
    `tokenizers` library writes `model` last, and its `vocab` and `merges` last in it),
    so a walk over the file's start finds them; the whole file is parsed only when
    the walk cannot finish, which is also where a damaged file is reported."""
    where = files.where("tokenizer.json")
    with files.open("tokenizer.json") as source:

        def enough(data: bytes, whole: bool) -> dict[str, Any] | None:
            if whole:
                return _parse_whole(data, where)
            text = codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
            return _walk_tokenizer(text)

        found = _grow(source, enough)
    assert found is not None  # the whole file always answers
    return found


def _parse_whole(data: bytes, where: str) -> dict[str, Any]:
    try:
        parsed: dict[str, Any] = json.loads(data.decode("utf-8"))
        parsed.get("model")
    except (ValueError, AttributeError) as exc:  # UnicodeDecodeError is a ValueError
        raise ModelFileError(f"{where}: not valid JSON ({clean(exc, 60)})") from exc
    if not isinstance(parsed.get("model") or {}, dict):
        raise ModelFileError(f"{where}: not valid JSON (model should be an object)")
    return parsed


_JSON = json.JSONDecoder()
_SPACE = " \t\n\r"


class _More(Exception):
    """The walk needs more of the file (or the whole of it, to be judged)."""


def _walk_tokenizer(text: str) -> dict[str, Any] | None:
    """The top-level values before `model`, and `model`'s up to its vocabulary; None
    unless `pre_tokenizer` and `decoder` came first and `model` is an object."""
    try:
        return _walk_object(text)
    except (_More, ValueError, IndexError):  # JSONDecodeError is a ValueError
        return None


def _member(text: str, pos: int) -> tuple[str, int]:
    """The key of an object member at `pos` (after a comma, if any); the position of its value."""
    pos = _skip(text, pos)
    if text[pos] == ",":
        pos = _skip(text, pos + 1)
    if text[pos] != '"':
        raise _More
    key, pos = _JSON.raw_decode(text, pos)
    pos = _skip(text, pos)
    if text[pos] != ":":
        raise _More
    return key, _skip(text, pos + 1)


def _skip(text: str, pos: int) -> int:
    while text[pos] in _SPACE:
        pos += 1
    return pos


def _walk_object(text: str) -> dict[str, Any]:
    pos = _skip(text, 0)
    if text[pos] != "{":
        raise _More
    found: dict[str, Any] = {}
    pos += 1
    while True:
        key, pos = _member(text, pos)
        if key == "model":
            if text[pos] != "{" or not {"pre_tokenizer", "decoder"} <= found.keys():
                raise _More
            found["model"] = _walk_model(text, pos + 1)
            return found
        found[key], pos = _JSON.raw_decode(text, pos)


def _walk_model(text: str, pos: int) -> dict[str, Any]:
    model: dict[str, Any] = {}
    while True:
        key, pos = _member(text, pos)
        if key in ("vocab", "merges"):
            # What is not here yet would come after the vocabulary: parse it all.
            if "type" not in model or (model["type"] == "BPE" and "byte_fallback" not in model):
                raise _More
            return model
        model[key], pos = _JSON.raw_decode(text, pos)


def _has_chat_template(files: Folder) -> bool:
    if files.exists("chat_template.jinja") or files.exists("chat_template.json"):
        return True
    if not files.exists("tokenizer_config.json"):
        return False
    try:
        config = json.loads(_whole(files, "tokenizer_config.json").decode("utf-8"))
        return bool(config.get("chat_template"))
    except (ValueError, AttributeError):
        return False


def _card_front_matter(files: Folder) -> dict[str, Any]:
    """The model card's YAML front matter (README.md between `---` lines), or {}."""
    if not files.exists("README.md"):
        return {}

    def enough(data: bytes, whole: bool) -> str | None:
        text = data.decode("utf-8", errors="replace")
        if not text.startswith("---"):
            return "" if len(text) >= 3 or whole else None
        end = text.find("\n---", 3)
        return text[3:end] if end >= 0 else ("" if whole else None)

    with files.open("README.md") as source:
        front = _grow(source, enough)
    if not front:
        return {}
    import yaml  # only a model card needs it: `card` on a GGUF file never loads it

    try:
        data = yaml.safe_load(front)
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _licence(front: dict[str, Any]) -> str | None:
    """`license:` from the model card's front matter (`license_name:` for "other")."""
    if not front.get("license"):
        return None
    licence = front["license"]
    if licence == "other" and front.get("license_name"):
        licence = front["license_name"]
    return clean(licence if isinstance(licence, str) else ", ".join(map(str, licence)), 60)


def _names(value: Any, most: int) -> list[str]:
    """`base_model:` or `datasets:` (a name or a list of names), cleaned, at most `most`."""
    items = value if isinstance(value, list) else [value] if value else []
    return [clean(v, 80) for v in items if isinstance(v, str) and v][:most]
