"""Exact specs from configs: every catalog config built on the meta device matches its published count."""

from __future__ import annotations

import json

import pytest

from advisor.errors import ConfigError, UnsupportedArchitectureError
from advisor.sources import catalog
from advisor.sources.config import load_config_file, spec_from_config

KNOWN = catalog.known_counts()


@pytest.mark.parametrize("model_id", sorted(KNOWN))
def test_config_count_matches_published(model_id):
    # The trap: tied embeddings counted twice, the LM head left out, or experts counted in full.
    spec = spec_from_config(load_config_file(catalog.config_path(model_id)), model_id=model_id)
    total, active = KNOWN[model_id]
    assert spec.total_params == total
    assert spec.active_params == (active or total)
    assert spec.exact
    assert spec.params.total == spec.total_params


def test_catalog_json_is_fresh():
    # data/catalog.json must be what the configs build today, or offline answers drift from exact ones.
    built = catalog.build()
    stored = json.loads((catalog.data_dir() / catalog.CATALOG_FILE).read_text())
    assert sorted(built) == sorted(stored)
    for model_id, spec in built.items():
        assert json.loads(json.dumps(spec)) == stored[model_id], model_id


def test_tied_embeddings_counted_once():
    spec = catalog.spec_from_catalog("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert spec.tied_embeddings and spec.params.lm_head == 0
    assert spec.params.embedding == 49152 * 576


def test_untied_head_counted():
    spec = catalog.spec_from_catalog("meta-llama/Meta-Llama-3-8B-Instruct")
    assert not spec.tied_embeddings
    assert spec.params.lm_head == spec.params.embedding == 128256 * 4096


def test_spec_fields_for_llama3():
    s = catalog.spec_from_catalog("meta-llama/Meta-Llama-3-8B-Instruct")
    assert (s.num_layers, s.hidden_size, s.num_attention_heads, s.num_kv_heads, s.head_dim) == (32, 4096, 32, 8, 128)
    assert (s.vocab_size, s.max_context, s.native_dtype) == (128256, 8192, "bfloat16")
    # GQA: 2 (K and V) x 32 layers x 8 KV heads x 128.
    assert s.kv.full_elements == 2 * 32 * 8 * 128 and s.kv.sliding_elements == 0


def test_moe_fields():
    s = catalog.spec_from_catalog("mistralai/Mixtral-8x7B-Instruct-v0.1")
    assert (s.num_experts, s.experts_per_token) == (8, 2)
    # Routed experts: 32 layers x 8 experts x 3 matrices of 4096 x 14336.
    assert s.params.routed_experts == 32 * 8 * 3 * 4096 * 14336
    assert s.total_params - s.active_params == s.params.routed_experts * 6 // 8


def test_sliding_window_layers_from_transformers():
    gemma = catalog.spec_from_catalog("google/gemma-2-2b-it")
    # Gemma-2 alternates sliding (4096) and global layers: 13 of each in its 26 layers.
    assert gemma.kv.sliding_window == 4096 and gemma.kv.sliding_layers == 13 and gemma.kv.full_layers == 13
    oss = catalog.spec_from_catalog("openai/gpt-oss-20b")
    assert oss.kv.sliding_window == 128 and oss.kv.sliding_layers == 12


def test_layers_of_different_shapes_are_counted_each_with_its_own():
    # Gemma-4 26B-A4B: sliding layers hold 8 KV heads of 256, full layers 2 "global" KV heads of 512 (K and V
    # both cached even where attention_k_eq_v shares one projection: transformers' cache.update takes both).
    cfg = load_config_file(catalog.config_path("google/gemma-4-26B-A4B"))
    text = cfg["text_config"]
    spec = spec_from_config(cfg, model_id="google/gemma-4-26B-A4B", cache=False)
    full = text["layer_types"].count("full_attention")
    sliding = text["layer_types"].count("sliding_attention")
    assert (spec.kv.full_layers, spec.kv.sliding_layers) == (full, sliding)
    assert spec.kv.full_elements == full * 2 * text["num_global_key_value_heads"] * text["global_head_dim"]
    assert spec.kv.sliding_elements == sliding * 2 * text["num_key_value_heads"] * text["head_dim"]


def test_mla_latent_recorded():
    s = catalog.spec_from_catalog("deepseek-ai/DeepSeek-V2-Chat")
    assert s.kv_lora_rank == 512 and s.qk_rope_head_dim == 64
    # transformers caches decompressed K (128 heads x 192) and V (128 x 128) per layer; the latent is 576.
    assert s.kv.full_elements == 60 * (128 * 192 + 128 * 128)
    assert s.kv.latent_elements == 60 * 576


def test_bnb_keeps_fused_experts_out_of_linear():
    # transformers 5 fuses experts into 3-D tensors, which bitsandbytes (nn.Linear only) leaves alone.
    s = catalog.spec_from_catalog("mistralai/Mixtral-8x7B-Instruct-v0.1")
    assert s.params.routed_experts_linear == 0
    assert s.params.other >= s.params.routed_experts


def test_unknown_architecture_raises():
    with pytest.raises(UnsupportedArchitectureError, match="does not know the architecture 'nosucharch'"):
        spec_from_config({"model_type": "nosucharch", "hidden_size": 8}, model_id="x/y")


def test_remote_code_refused_without_flag():
    cfg = {"model_type": "mycustom", "auto_map": {"AutoConfig": "configuration_my.MyConfig"}}
    with pytest.raises(UnsupportedArchitectureError, match="--trust-remote-code"):
        spec_from_config(cfg, model_id="x/custom")


@pytest.mark.parametrize(
    "cfg",
    [
        {},  # no model_type at all
        {"model_type": ""},  # empty model_type
        {"model_type": "llama", "hidden_size": "wide"},  # wrong type for a size field
        {"model_type": "llama", "num_attention_heads": 7, "hidden_size": 64},  # heads do not divide hidden
    ],
    ids=["no-type", "empty-type", "string-size", "heads-mismatch"],
)
def test_malformed_config_raises_config_error(cfg):
    with pytest.raises((ConfigError, UnsupportedArchitectureError)):
        spec_from_config(cfg, model_id="bad/config")


def test_load_config_file_errors(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config_file(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="not a JSON object"):
        load_config_file(bad)
    with pytest.raises(ConfigError, match="Cannot read"):
        load_config_file(tmp_path / "missing.json")


def test_moe_counts_nested_in_a_sub_config_are_found():
    """DBRX keeps its router settings in `ffn_config` (moe_num_experts, moe_top_k): active < total, exactly
    total - routed x (1 - k / E)."""
    from advisor.sources.config import spec_from_config

    cfg = {
        "model_type": "dbrx", "d_model": 256, "n_heads": 4, "n_layers": 2, "vocab_size": 1000, "max_seq_len": 2048,
        "ffn_config": {"moe_num_experts": 16, "moe_top_k": 4, "ffn_hidden_size": 512},
        "attn_config": {"kv_n_heads": 2, "rope_theta": 500000, "clip_qkv": 8},
    }  # fmt: skip
    spec = spec_from_config(cfg, model_id="tiny/dbrx", cache=False)
    assert (spec.num_experts, spec.experts_per_token) == (16, 4)
    routed = spec.params.routed_experts
    assert routed > 0 and spec.active_params == spec.total_params - routed * 12 // 16
