"""`convert`: a GGUF to an HF folder, on the real embedded model and on a tiny GGUF made here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
import pytest
from typer.testing import CliRunner

from scheda.cli import app
from scheda.engines import open_model
from scheda.engines.base import Engine, Message
from scheda.errors import ModelFileError, UsageError
from scheda.files.convert import convert
from scheda.readers import read_spec
from scheda.sampling import Sampling
from scheda.spec import ModelSpec

pytestmark = pytest.mark.slow

runner = CliRunner()
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Water boils at"]
# Greedy tokens that must agree between llama.cpp on the GGUF and transformers on the folder.
SAME_TOKENS = 3


def write_tiny_gguf(path: Path, tokenizer_json: Path) -> Path:
    """A 2-layer Llama GGUF with Q8_0 matrices, F32 norms and a byte-level BPE vocabulary."""
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    vocab: dict[str, int] = data["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.__getitem__)
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    hidden, ffn, layers, heads, kv_heads = 64, 128, 2, 4, 2
    kv = kv_heads * hidden // heads
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("Tiny Llama")
    writer.add_license("mit")
    writer.add_block_count(layers)
    writer.add_context_length(128)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    special = {"<s>", "</s>"}
    writer.add_token_types(
        [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens]
    )
    writer.add_bos_token_id(vocab["<s>"])
    writer.add_eos_token_id(vocab["</s>"])

    def q8_0(name: str, rows: int, columns: int) -> None:
        weights = rng.normal(0, 0.5, (rows, columns)).astype(np.float32)
        blocks = gguf.quants.quantize(weights, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, blocks, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    q8_0("token_embd.weight", len(tokens), hidden)
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
        q8_0(f"blk.{i}.attn_q.weight", hidden, hidden)
        q8_0(f"blk.{i}.attn_k.weight", kv, hidden)
        q8_0(f"blk.{i}.attn_v.weight", kv, hidden)
        q8_0(f"blk.{i}.attn_output.weight", hidden, hidden)
        q8_0(f"blk.{i}.ffn_gate.weight", ffn, hidden)
        q8_0(f"blk.{i}.ffn_up.weight", ffn, hidden)
        q8_0(f"blk.{i}.ffn_down.weight", hidden, ffn)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-gguf")
    return write_tiny_gguf(folder / "tiny.gguf", tiny_llama / "tokenizer.json")


@pytest.fixture(scope="module")
def llama_cpp(smollm_path: Path) -> Iterator[Engine]:
    with open_model(smollm_path, "llama.cpp", context=512) as engine:
        yield engine


@pytest.fixture(scope="module")
def hf_engine(smollm_hf: Path) -> Iterator[Engine]:
    with open_model(smollm_hf, "transformers", context=512) as engine:
        yield engine


# -- the embedded model ----------------------------------------------------------------------


def test_conversion_writes_an_hf_folder(smollm_hf: Path) -> None:
    names = {p.name for p in smollm_hf.iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "README.md"} <= names
    assert {"tokenizer_config.json"} <= names
    assert list(smollm_hf.glob("*.safetensors"))
    config = json.loads((smollm_hf / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["dtype"] == "float16"
    assert "quantization_config" not in config  # the weights are plain floats now


def test_card_of_the_folder_matches_the_gguf(smollm_hf: Path, smollm: ModelSpec) -> None:
    folder = read_spec(smollm_hf)
    assert folder.parameters == smollm.parameters == 134_515_008
    shape = ("layers", "hidden", "heads", "kv_heads", "head_dim", "ffn", "context", "rope_base")
    for field in shape:
        assert getattr(folder, field) == getattr(smollm, field), field
    assert folder.vocab_size == smollm.vocab_size == 49152
    assert folder.tied_embeddings is smollm.tied_embeddings is True
    assert folder.licence == smollm.licence == "apache-2.0"
    assert folder.chat_template is True
    assert folder.file_type == "F16" and folder.bits_per_weight == 16.0

    result = runner.invoke(app, ["card", str(smollm_hf), "--json"])
    assert result.exit_code == 0, result.output
    assert "134515008" in result.stdout.replace(" ", "").replace(",", "")


def test_same_tokenizer_and_chat_template_as_llama_cpp(
    hf_engine: Engine, llama_cpp: Engine
) -> None:
    for text in ["ChatGPT è incredibile!", "def f(x):\n\treturn x ** 2  # 🙂", "  spaces  "]:
        assert hf_engine.tokenize(text) == llama_cpp.tokenize(text), text
    conversation = [Message("system", "Be brief."), Message("user", "Ciao!")]
    assert hf_engine.chat_prompt(conversation) == llama_cpp.chat_prompt(conversation)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_text_matches_llama_cpp(hf_engine: Engine, llama_cpp: Engine, prompt: str) -> None:
    """The same weights, two engines: the first greedy tokens agree.

    llama.cpp multiplies Q4_1 blocks by activations quantized to 8 bits, transformers the
    dequantized float weights by float32 activations, so after a few tokens the two may
    take different near-tied branches; the first ones must not differ.
    """
    greedy = Sampling(temperature=0, max_tokens=8)
    ours = hf_engine.generate(prompt, greedy)
    theirs = llama_cpp.generate(prompt, greedy)
    assert ours.prompt_tokens == theirs.prompt_tokens
    ours_ids = [t.id for t in llama_cpp.tokenize(ours.text)][:SAME_TOKENS]
    theirs_ids = [t.id for t in llama_cpp.tokenize(theirs.text)][:SAME_TOKENS]
    assert ours_ids == theirs_ids, (ours.text, theirs.text)
    assert len(ours_ids) == SAME_TOKENS


# -- errors ----------------------------------------------------------------------------------


def test_refuses_a_non_empty_output_folder(smollm_path: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        convert(smollm_path, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    file = tmp_path / "notes.txt"
    with pytest.raises(UsageError, match="is a file"):
        convert(smollm_path, file)


def test_refuses_what_is_not_a_gguf(minilm_path: Path, tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf at all")
    with pytest.raises(ModelFileError, match="not a GGUF"):
        convert(fake, tmp_path / "out")
    with pytest.raises(UsageError, match="is a folder"):
        convert(minilm_path, tmp_path / "out")
    with pytest.raises(ModelFileError, match="no such file"):
        convert(tmp_path / "missing.gguf", tmp_path / "out")
    with pytest.raises(UsageError, match="unknown dtype"):
        convert(fake, tmp_path / "out", dtype="int3")
    assert not (tmp_path / "out").exists()


def test_an_architecture_transformers_cannot_read(tmp_path: Path) -> None:
    path = tmp_path / "rwkv.gguf"
    writer = gguf.GGUFWriter(str(path), "rwkv7")
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelFileError, match="cannot read the rwkv7 architecture") as caught:
        convert(path, tmp_path / "out")
    assert "\n" not in str(caught.value) and "llama, mistral" in str(caught.value)
    assert not (tmp_path / "out").exists()


# -- a tiny GGUF: exact values, overwriting ---------------------------------------------------


def test_float32_keeps_the_dequantized_values_exactly(tiny_gguf: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    out = convert(tiny_gguf, tmp_path / "f32", dtype="float32")
    saved = load_file(str(out / "model.safetensors"))
    reader = gguf.GGUFReader(str(tiny_gguf))
    tensors = {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in reader.tensors}
    # Tensors transformers does not permute (q and k are reordered for its RoPE layout).
    pairs = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.layers.1.mlp.down_proj.weight": "blk.1.ffn_down.weight",
        "model.layers.0.self_attn.v_proj.weight": "blk.0.attn_v.weight",
        "model.norm.weight": "output_norm.weight",
    }
    for hf_name, gguf_name in pairs.items():
        assert saved[hf_name].dtype == np.float32
        assert np.array_equal(saved[hf_name], tensors[gguf_name]), hf_name
    assert read_spec(out).parameters == read_spec(tiny_gguf).parameters

    half = load_file(str(convert(tiny_gguf, tmp_path / "f16") / "model.safetensors"))
    embed = half["model.embed_tokens.weight"]
    assert embed.dtype == np.float16
    assert np.allclose(embed, tensors["token_embd.weight"], rtol=2**-11, atol=2**-24)


def test_overwrite_replaces_the_weights_and_keeps_other_files(
    tiny_gguf: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "model-00001-of-00002.safetensors").write_bytes(b"stale shard")
    with pytest.raises(UsageError, match="not empty"):
        convert(tiny_gguf, out)
    convert(tiny_gguf, out, overwrite=True)
    names = sorted(p.name for p in out.iterdir())
    assert "notes.txt" in names and "model.safetensors" in names
    assert "model-00001-of-00002.safetensors" not in names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # staging gone
    spec = read_spec(out)
    assert spec.parameters == read_spec(tiny_gguf).parameters
    assert spec.licence == "mit"
