"""The catalog keeps itself honest: every row's count recomputed from its numbers."""

from __future__ import annotations

import pytest

from scheda import catalog
from scheda.resolve import resolve
from scheda.spec import ModelSpec

ARTICLE_FAMILIES = {
    "Llama 2",
    "Llama 3",
    "Code Llama",
    "Gemma",
    "Mistral",
    "Qwen1.5",
    "Phi-3",
    "DeepSeek-Coder",
}


@pytest.mark.parametrize("model", catalog.MODELS, ids=lambda m: m.name)
def test_parameter_count_recomputed_from_architecture(model: catalog.CatalogModel) -> None:
    computed = catalog.decoder_parameters(model)
    if model.exact:
        assert computed == model.published_parameters
    else:  # published as "about 33.3B": agree to the rounding of the published figure
        assert abs(computed - model.published_parameters) / model.published_parameters < 0.002


def test_every_family_the_articles_name_is_there() -> None:
    assert {m.family.name for m in catalog.MODELS} == ARTICLE_FAMILIES


def test_gqa_and_mqa_rows() -> None:
    spec = resolve("gemma-2b")
    assert spec.attention == "MQA" and spec.kv_heads == 1
    spec = resolve("llama-3-70b")
    assert spec.attention == "GQA" and spec.gqa_group == 8
    assert resolve("llama-2-7b").attention == "MHA"
    assert resolve("mistral-7b").sliding_window == 4096


def test_published_facts_reach_the_spec() -> None:
    spec = resolve("llama-3-8b")
    assert spec.training_tokens and spec.training_tokens.startswith("15T")
    assert spec.knowledge_cutoff == "March 2023"
    assert "700 million" in (spec.licence_terms or "")
    assert spec.benchmarks["MMLU (5-shot)"] == 66.6
    chat = resolve("llama-2-70b-chat")
    assert chat.benchmarks["GSM-8K (8-shot, CoT)"] == 57.5
    assert resolve("llama-3-70b-instruct").benchmarks["HumanEval (0-shot)"] == 81.7


def test_lookup_forgives_spelling_and_suggests() -> None:
    assert catalog.lookup("Meta-Llama-3-8B") is not None
    assert catalog.lookup("LLAMA3-8B") is not None
    assert catalog.lookup("nothing-like-it") is None
    assert "llama-3-8b" in catalog.suggest("llama-3-8")


def test_a_file_with_catalog_numbers_gets_the_published_facts(smollm: ModelSpec) -> None:
    # The embedded model is no catalog family: no facts are invented for it.
    assert smollm.family is None and smollm.benchmarks == {}
    found = catalog.lookup("qwen1.5-0.5b")
    assert found is not None
    m = found[0]
    spec = catalog.catalog_spec(m)
    spec.source, spec.benchmarks, spec.family = "gguf", {}, None
    assert catalog.match(spec) is m
