"""An HF folder written as a GGUF file, at its own precision, for llama.cpp's quantizer.

`scheda quantize` takes an HF folder as llama.cpp's users do: the folder is
first written as a 16-bit GGUF (llama.cpp's `convert_hf_to_gguf.py` does the
same), then quantized. The writer is `gguf`'s own `GGUFWriter`; scheda adds
what llama.cpp's converter decides for the Llama family, which this writer
covers (`LlamaForCausalLM`, `MistralForCausalLM`: SmolLM, Llama 2 and 3,
Mistral):

- tensor names through `gguf`'s `TensorNameMap`; the query and key
  projections permuted back to llama.cpp's rotary layout (`permute` below,
  `LlamaModel.permute` in llama.cpp's converter); matrices stay at the
  folder's precision (float16, bfloat16; float32 becomes float16, as
  llama.cpp's converter does by default), norms are float32;
- a byte-level BPE tokenizer from `tokenizer.json` (`tokenizer.ggml.model`
  gpt2) with its merges and special tokens (`gguf.SpecialVocab`), and the
  name of its pre-tokenizer (`tokenizer.ggml.pre`), which llama.cpp finds by
  hashing the tokens of one test string (`PRE_TOKENIZERS`, copied from
  llama.cpp's converter, MIT licence).

Anything else (another architecture, a SentencePiece tokenizer, rope
scaling) is refused with one line that points to llama.cpp's converter,
rather than written wrong. The file is written beside the target and renamed
when whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scheda.errors import ModelFileError, UsageError

ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")
CONVERTER = "convert the folder with llama.cpp's convert_hf_to_gguf.py, then quantize that GGUF"
# llama.cpp's converter (get_vocab_base_pre) tokenizes this text and hashes the token ids
# to name the pre-tokenizer its tokenizer must use.
CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\U0001f680 (normal) "
    "\U0001f636\u200d\U0001f32b\ufe0f (multiple emojis concatenated) \u2705 \U0001f999\U0001f999"
    " 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "\u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2\u17b6\u1785"
    "\U0001f601 ?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e ------======= "
    "\u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438"
    " ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? "
    "'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
# sha256 of str(token ids of CHECK_TEXT) -> tokenizer.ggml.pre (llama.cpp's converter; the
# byte-level BPE tokenizers of Llama-architecture models, where one writes several names
# for a hash, the last one it writes).
PRE_TOKENIZERS = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4": "gpt-2",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
    "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754": "deepseek-llm",
    "347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821": "deepseek-coder",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",
    "0e9433cbbb161f89e264eb32e8e64bfe69e834973ffca5d41d3948a604a3e2a3": "pixtral",
    "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e": "falcon3",
    "1431a23e583c97432bc230bff598d103ddb5a1f89960c8f1d1051aaa944d0b35": "minerva-7b",
    "7fc505bd3104ca1083b150b17d088b59534ede9bde81f0dd2090967d7fe52cee": "viking",
    "c7ea5862a53e4272c035c8238367063e2b270d51faa48c0f09e9d5b54746c360": "poro-chat",
    "4e2b24cc4770243d65a2c9ec19770a72f08cffc161adbb73fcbb6b7dd45a0aae": "exaone",
    "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",
    "6221ad2852e85ce96f791f476e0b390cf9b474c9e3d1362f53a24a06dc8220ff": "refact",
    "b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166": "olmo",
    "32d85c31273f8019248f2559fed492d929ea28b17e51d81d3bb36fff23ca72b3": "stablelm2",
    "fcace8b9cac38ce847670c970cd5892031a753a1ef381abd1d9af00f713da085": "phi-2",
    "ccc2ef013c104be7bae2965776d611e1d7a8a2a9c547dd93a682c9a9fc80352e": "gpt-4o",
}
# safetensors dtype -> (numpy dtype of its raw bytes, the GGUF type a matrix keeps)
DTYPES = {"F16": ("<f2", "F16"), "BF16": ("<u2", "BF16"), "F32": ("<f4", "F16")}


def write_gguf(folder: Path, target: Path) -> Path:
    """Write the HF folder `folder` as the GGUF file `target`; return `target`."""
    import gguf

    folder, target = Path(folder), Path(target)
    config = _config(folder)
    tokenizer = _tokenizer(folder)
    matrix_type = _matrix_type(folder)
    partial = target.parent / f".{target.name}.{secrets.token_hex(4)}.part"
    writer = gguf.GGUFWriter(str(partial), "llama")
    try:
        _metadata(writer, gguf, folder, config, matrix_type)
        _vocabulary(writer, gguf, folder, tokenizer, config)
        for name, array, raw_type in _tensors(folder, config, gguf, matrix_type):
            writer.add_tensor(name, array, raw_dtype=raw_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, target)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return target


def _config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{folder}: no readable config.json: not an HF model folder") from exc
    architecture = (config.get("architectures") or ["unknown"])[0]
    if architecture not in ARCHITECTURES:
        raise UsageError(
            f"{folder}: scheda's GGUF writer covers {', '.join(ARCHITECTURES)}, not "
            f"{architecture}: {CONVERTER}"
        )
    scaling = config.get("rope_scaling") or {}
    rope_type = (config.get("rope_parameters") or {}).get("rope_type", "default")
    if scaling or rope_type not in ("default", None):
        raise UsageError(f"{folder}: rope scaling is beyond scheda's GGUF writer: {CONVERTER}")
    return config


def _tokenizer(folder: Path) -> dict[str, Any]:
    path = folder / "tokenizer.json"
    try:
        tokenizer: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{folder}: no readable tokenizer.json") from exc
    model = tokenizer.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise UsageError(
            f"{folder}: scheda's GGUF writer reads byte-level BPE tokenizers (GPT-2's kind), "
            f"not this one: {CONVERTER}"
        )
    return tokenizer


def _matrix_type(folder: Path) -> str:
    from scheda.readers.hf_folder import read_safetensors_header, weight_paths

    files = weight_paths(folder)
    if not files:
        raise ModelFileError(f"{folder}: no safetensors weights to write")
    dtypes = {d for f in files for d, _ in read_safetensors_header(f).values()}
    unknown = dtypes - set(DTYPES)
    if unknown:
        raise UsageError(f"{folder}: weights in {', '.join(sorted(unknown))}: {CONVERTER}")
    return "BF16" if "BF16" in dtypes else "F16"


def _metadata(writer: Any, gguf: Any, folder: Path, config: dict[str, Any], matrix: str) -> None:
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    theta = config.get("rope_theta") or (config.get("rope_parameters") or {}).get("rope_theta")
    writer.add_name(str(config.get("_model_name_or_path") or folder.name))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    if theta:
        writer.add_rope_freq_base(float(theta))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
    writer.add_vocab_size(int(config["vocab_size"]))
    writer.add_rope_dimension_count(int(config.get("head_dim") or hidden // heads))
    file_type = {"F16": gguf.LlamaFileType.MOSTLY_F16, "BF16": gguf.LlamaFileType.MOSTLY_BF16}
    writer.add_file_type(file_type[matrix])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    licence = _licence(folder)
    if licence:
        writer.add_license(licence)


def _licence(folder: Path) -> str | None:
    from scheda.readers.hf_folder import licence_of

    return licence_of(folder)


def _vocabulary(
    writer: Any, gguf: Any, folder: Path, tokenizer: dict[str, Any], config: dict[str, Any]
) -> None:
    from tokenizers import Tokenizer

    vocab: dict[str, int] = dict(tokenizer["model"]["vocab"])
    added = {t["content"]: t for t in tokenizer.get("added_tokens", [])}
    for content, token in added.items():
        vocab[content] = int(token["id"])
    size = max(int(config["vocab_size"]), max(vocab.values()) + 1)
    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(size):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif text in added:
            tokens.append(text)
            special = added[text].get("special") or (text.startswith("<|") and text.endswith("|>"))
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(text)
            types.append(gguf.TokenType.NORMAL)
    ids = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(CHECK_TEXT).ids
    digest = hashlib.sha256(str(ids).encode()).hexdigest()
    pre = PRE_TOKENIZERS.get(digest)
    if pre is None:
        raise UsageError(
            f"{folder}: its pre-tokenizer is not one scheda's GGUF writer knows (llama.cpp "
            f"names it by the hash {digest[:12]}...): {CONVERTER}"
        )
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=len(tokens))
    special.add_to_gguf(writer)
    template = folder / "chat_template.jinja"
    if not special.chat_template and template.is_file():
        writer.add_chat_template(template.read_text(encoding="utf-8"))


def permute(weights: Any, heads: int) -> Any:
    """llama.cpp's rotary layout from HF's: each head's halves interleaved (LlamaModel.permute)."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _tensors(
    folder: Path, config: dict[str, Any], gguf: Any, matrix: str
) -> Iterator[tuple[str, Any, Any]]:
    """(GGUF name, array, GGUF type) per tensor, read from the safetensors files."""
    import numpy as np

    from scheda.readers.hf_folder import weight_paths

    layers = int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    tied = bool(config.get("tie_word_embeddings"))
    for path in weight_paths(folder):
        for hf_name, dtype, array in _read_safetensors(path):
            if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
                continue
            name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if name is None:
                raise UsageError(f"{folder}: no GGUF name for the tensor {hf_name}: {CONVERTER}")
            if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
                array = permute(array, heads)
            elif hf_name.endswith(("k_proj.weight", "k_proj.bias")):
                array = permute(array, kv_heads)
            if array.ndim == 1:  # norms: float32, as llama.cpp keeps them
                yield name, _as_float32(array, dtype, np), gguf.GGMLQuantizationType.F32
            elif dtype == "BF16":
                yield name, np.ascontiguousarray(array), gguf.GGMLQuantizationType.BF16
            else:
                yield name, array.astype(np.float16), gguf.GGMLQuantizationType.F16


def _as_float32(array: Any, dtype: str, np: Any) -> Any:
    if dtype == "BF16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(np.float32)


def _read_safetensors(path: Path) -> Iterator[tuple[str, str, Any]]:
    """(name, dtype, array) for each tensor, memory-mapped; bfloat16 as its raw 16 bits."""
    import numpy as np

    with path.open("rb") as f:
        length = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(length))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + length)
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = entry["dtype"]
        begin, end = entry["data_offsets"]
        raw, _ = DTYPES[dtype]
        yield name, dtype, data[begin:end].view(raw).reshape(entry["shape"])
