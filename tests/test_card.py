"""The spec sheet read from the real embedded GGUF and the real MiniLM folder."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from scheda.cli import app
from scheda.spec import ModelSpec

runner = CliRunner()


def test_smollm_numbers_from_the_gguf(smollm: ModelSpec) -> None:
    assert smollm.source == "gguf"
    assert smollm.architecture == "llama"
    assert smollm.parameters == 134_515_008
    assert smollm.layers == 30
    assert smollm.hidden == 576
    assert (smollm.heads, smollm.kv_heads) == (9, 3)
    assert smollm.attention == "GQA" and smollm.gqa_group == 3
    assert smollm.head_dim == 64
    assert smollm.ffn == 1536
    assert smollm.context == 8192
    assert smollm.rope_base == 100_000
    assert smollm.vocab_size == 49152
    assert smollm.tokenizer == "BPE"
    assert smollm.licence == "apache-2.0"
    assert smollm.chat_template is True
    assert smollm.tied_embeddings is True
    assert smollm.file_size == 98_362_432


def test_smollm_quantization_per_tensor_type(smollm: ModelSpec) -> None:
    assert smollm.file_type == "Q4_1"
    q = smollm.quantization
    assert set(q) == {"Q4_1", "Q8_0", "F32"}
    assert q["Q8_0"].tensors == 1 and q["Q8_0"].names == ["token_embd.weight"]
    assert q["Q4_1"].tensors == 210 and q["F32"].tensors == 61
    assert sum(g.tensors for g in q.values()) == 272
    assert sum(g.parameters for g in q.values()) == 134_515_008
    # Q4_1 is 20 bytes per 32 weights, Q8_0 34 per 32, F32 4 bytes a weight.
    assert q["Q4_1"].bytes == q["Q4_1"].parameters * 20 // 32
    assert q["Q8_0"].bytes == q["Q8_0"].parameters * 34 // 32
    file_bits, bits = smollm.file_bits_per_parameter, smollm.bits_per_weight
    assert file_bits is not None and bits is not None
    assert round(file_bits, 2) == 5.85
    assert 5.7 < bits < file_bits


def test_minilm_numbers_from_the_folder(minilm: ModelSpec) -> None:
    assert minilm.source == "hf"
    assert minilm.architecture == "BertModel"
    assert minilm.kind == "encoder"
    # 22,713,216 weights; the 512-entry position_ids buffer is not a parameter.
    assert minilm.parameters == 22_713_216
    assert minilm.layers == 6 and minilm.hidden == 384
    assert minilm.heads == 12 and minilm.attention == "MHA"
    assert minilm.tokenizer == "WordPiece"
    assert minilm.vocab_size == 30522
    assert minilm.context == 512
    assert minilm.licence == "apache-2.0"
    assert minilm.file_type == "F32"
    assert minilm.quantization["F32"].parameters == 22_713_216


def test_card_json_side_by_side_has_stable_keys(smollm_path: Path, minilm_path: Path) -> None:
    result = runner.invoke(app, ["card", "default", str(minilm_path), "llama-3-8b", "--json"])
    assert result.exit_code == 0, result.output
    models = json.loads(result.stdout)["models"]
    assert [m["source"] for m in models] == ["gguf", "hf", "catalog"]
    assert [m["parameters"] for m in models] == [134_515_008, 22_713_216, 8_030_261_248]
    keys = {
        "name",
        "source",
        "architecture",
        "parameters",
        "layers",
        "hidden",
        "heads",
        "kv_heads",
        "attention",
        "gqa_group",
        "head_dim",
        "ffn",
        "context",
        "rope_base",
        "vocab_size",
        "tokenizer",
        "quantization",
        "bits_per_weight",
        "file_size",
        "licence",
        "chat_template",
        "training_tokens",
        "knowledge_cutoff",
        "licence_terms",
        "benchmarks",
    }
    for m in models:
        assert keys <= set(m)
    assert models[2]["benchmarks"]["MMLU (5-shot)"] == 66.6
    assert models[2]["knowledge_cutoff"] == "March 2023"


def test_card_table_and_markdown_show_each_model_in_a_column(minilm_path: Path) -> None:
    table = runner.invoke(app, ["card", "default", str(minilm_path)], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "134,515,008" in table.stdout and "22,713,216" in table.stdout
    assert "GQA, 9 heads over 3 KV heads (group 3)" in table.stdout
    assert "WordPiece" in table.stdout
    md = runner.invoke(app, ["card", "default", "llama-2-70b", "--markdown"])
    assert md.exit_code == 0, md.output
    header = md.stdout.splitlines()[0]
    assert header.count("|") == 4 and "llama-2-70b" in header
    assert "| Licence terms |" in md.stdout and "700 million" in md.stdout
    assert "| MMLU (5-shot) | — | 69.7 |" in md.stdout


def test_card_refuses_json_and_markdown_together() -> None:
    result = runner.invoke(app, ["card", "default", "--json", "--markdown"])
    assert result.exit_code != 0
