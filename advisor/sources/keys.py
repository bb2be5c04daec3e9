"""The names configs give the same quantity: one table, read by the meta-device build and the header fallback.

Architectures name their sizes differently (Llama `num_hidden_layers`, GPT-2 `n_layer`, Mixtral
`num_local_experts`, DeepSeek `n_routed_experts`, Qwen2-MoE `num_experts`); each tuple lists the names in the
order they are tried.
"""

from __future__ import annotations

LAYERS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
HIDDEN = ("hidden_size", "n_embd", "d_model", "dim")
INTERMEDIATE = ("intermediate_size", "n_inner", "ffn_hidden_size")
HEADS = ("num_attention_heads", "n_head", "num_heads", "n_heads")
KV_HEADS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "multi_query_group_num")
VOCAB = ("vocab_size", "padded_vocab_size")
EXPERTS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
TOP_K = ("num_experts_per_tok", "num_experts_per_token", "moe_top_k", "moe_topk", "top_k", "experts_per_token")
CONTEXT = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "max_seq_len", "n_ctx")
