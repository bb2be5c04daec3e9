"""The memory and speed models, term by term, against values computed by hand for a tiny config."""

from __future__ import annotations

import dataclasses

import pytest

from advisor.costmodel import memory as M
from advisor.costmodel import speed as S
from advisor.sources import catalog
from advisor.sources.config import spec_from_config
from advisor.spec import Device, Hardware

TINY = {
    "model_type": "llama", "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "max_position_embeddings": 2048, "tie_word_embeddings": False,
}  # fmt: skip

# By hand: embedding 1000x64, head 1000x64; per layer q 64x64, k 32x64, v 32x64, o 64x64,
# gate/up 128x64, down 64x128 = 36864 linear weights and 2 norms of 64; a final norm of 64.
EMB = 64_000
LINEAR = 2 * 36_864
ROWS = 2 * (64 + 32 + 32 + 64 + 128 + 128 + 64)
TOTAL = 2 * EMB + LINEAR + 2 * 128 + 64


@pytest.fixture(scope="module")
def tiny():
    return spec_from_config(dict(TINY), model_id="tiny")


def test_tiny_breakdown(tiny):
    p = tiny.params
    assert tiny.total_params == TOTAL == 202_048
    assert (p.embedding, p.lm_head, p.linear, p.linear_rows) == (EMB, EMB, LINEAR, ROWS)
    assert tiny.kv.full_elements == 2 * 2 * 2 * 16  # layers x (K, V) x kv heads x head_dim


@pytest.mark.parametrize(
    ("precision", "expected"),
    [
        ("fp32", TOTAL * 4),
        ("bf16", TOTAL * 2),
        ("fp16", TOTAL * 2),
        # int8 weights + one fp32 scale per output row; everything else bf16.
        ("int8", LINEAR + ROWS * 4 + (TOTAL - LINEAR) * 2),
        # nf4: half a byte per weight + one fp32 absmax per 64 weights; the rest bf16.
        ("int4", LINEAR // 2 + LINEAR // 64 * 4 + (TOTAL - LINEAR) * 2),
        # double quantization: one uint8 per block + one fp32 per 256 blocks (1152 blocks -> 5).
        ("int4-dq", LINEAR // 2 + LINEAR // 64 + 5 * 4 + (TOTAL - LINEAR) * 2),
    ],
)
def test_weight_bytes(tiny, precision, expected):
    assert M.weight_bytes(tiny, precision).total == expected


def test_gguf_q8_0_and_q4_0(tiny):
    # Q8_0: 34 bytes per 32 weights everywhere quantized; norms F32. Q4_0 body, output Q6_K
    # falls back to Q8_0 because 64 is not a multiple of 256.
    norms = 2 * 128 + 64
    q8 = M.weight_bytes(tiny, "q8_0").total
    assert q8 == (LINEAR + 2 * EMB) // 32 * 34 + norms * 4
    q4 = M.weight_bytes(tiny, "q4_0").total
    assert q4 == LINEAR // 32 * 18 + EMB // 32 * 18 + EMB // 32 * 34 + norms * 4


def test_llama_cpp_more_bits_layers():
    # use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2  (llama-quant.cpp)
    assert M._layers_where("more_bits", 32, 1) == 16
    assert M._layers_where("more_bits", 8, 1) == 1 + 1 + 2


def test_kv_cache_bytes(tiny):
    assert M.kv_cache_bytes(tiny, 100, dtype_bytes=2) == 128 * 100 * 2
    assert M.kv_cache_bytes(tiny, 100, batch=3, dtype_bytes=4) == 128 * 100 * 3 * 4


def test_sliding_layers_stop_at_window():
    gemma = catalog.spec_from_catalog("google/gemma-2-2b-it")
    w = gemma.kv.sliding_window
    short = M.kv_cache_bytes(gemma, w)
    long = M.kv_cache_bytes(gemma, 2 * w)
    # Beyond the window only the full-attention layers grow.
    assert long - short == gemma.kv.full_elements * w * 2


def test_mla_latent_for_llama_cpp():
    ds = catalog.spec_from_catalog("deepseek-ai/DeepSeek-V2-Chat")
    assert M.kv_cache_bytes(ds, 1000, runtime="llama.cpp") == 60 * 576 * 1000 * 2
    assert M.kv_cache_bytes(ds, 1000) == ds.kv.full_elements * 1000 * 2


def test_max_context_is_largest_that_fits(tiny):
    budget = M.estimate(tiny, "bf16", context=1500).total_bytes
    ctx = M.max_context(tiny, "bf16", budget)
    assert M.estimate(tiny, "bf16", context=ctx).total_bytes <= budget
    assert M.estimate(tiny, "bf16", context=ctx + 1).total_bytes > budget
    assert M.max_context(tiny, "bf16", 10) == 0
    assert M.max_context(tiny, "bf16", 10**12) == 2048  # capped at the model's own limit


def cpu_hw(bw=10.0, mem_gb=16, tflops=1.0):
    dev = Device(
        kind="cpu",
        name="test cpu",
        memory_bytes=int(mem_gb * 1e9),
        bandwidth_gbps=bw,
        bandwidth_source="user",
        matmul_tflops=tflops,
    )
    return Hardware(devices=(dev,), source="flags")


def test_bytes_per_token_dense_untied(tiny):
    parts = S.bytes_per_token(tiny, "bf16", depth=100)
    assert parts["layers"] == (TOTAL - 2 * EMB) * 2
    assert parts["head"] == EMB * 2
    assert parts["embedding_rows"] == 64 * 2  # one row of the input embedding
    assert parts["kv_cache"] == 128 * 100 * 2


def test_bytes_per_token_tied_reads_table_once():
    smol = catalog.spec_from_catalog("HuggingFaceTB/SmolLM2-135M-Instruct")
    parts = S.bytes_per_token(smol, "bf16", depth=0)
    assert parts["head"] == smol.params.embedding * 2 and parts["embedding_rows"] == 0
    assert parts["layers"] + parts["head"] == smol.total_params * 2


def test_decode_seconds_formula(tiny):
    hw = cpu_hw(bw=10.0)
    place = S.plan(tiny, "bf16", hw, context=100)
    t, basis = S.decode_seconds(tiny, "bf16", hw, place, depth=100)
    parts = S.bytes_per_token(tiny, "bf16", depth=100)
    eff = S.EFFICIENCY[("transformers", "float", "cpu")]
    fixed = S.FIXED_PER_LAYER[("transformers", "cpu")]
    # Attention over the cache costs per cached element (128 per token of context here) by cache dtype.
    context = S.CONTEXT_COST[("transformers", "bf16", "cpu")] * 128 * 100
    assert t == pytest.approx(sum(parts.values()) / (10e9 * eff) + 2 * fixed + context)
    assert basis["calibrated"] is False


def test_moe_reads_only_active_experts():
    mix = catalog.spec_from_catalog("mistralai/Mixtral-8x7B-Instruct-v0.1")
    parts = S.bytes_per_token(mix, "bf16", depth=0)
    w = M.weight_bytes(mix, "bf16")
    assert parts["layers"] == w.layers - w.routed_experts * 6 // 8
    assert S.experts_read_fraction(mix, 1) == pytest.approx(0.25)
    # Verifying 6 tokens at once reads 1 - 0.75^6 of the experts.
    assert S.experts_read_fraction(mix, 6) == pytest.approx(1 - 0.75**6)


def test_offload_plan_and_pcie_cost():
    llama = catalog.spec_from_catalog("meta-llama/Meta-Llama-3-8B-Instruct")
    gpu = Device(kind="cuda", name="small gpu", memory_bytes=int(8e9), bandwidth_gbps=500, matmul_tflops=50)
    cpu = Device(kind="cpu", name="host", memory_bytes=int(64e9), bandwidth_gbps=50, matmul_tflops=1)
    hw = Hardware(devices=(gpu, cpu), source="flags")
    place = S.plan(llama, "bf16", hw, context=4096)
    assert place.offloaded_layers > 0 and place.fits
    assert "cpu" in place.label and place.layers["cuda:0"] + place.layers["cpu"] == 32
    t_off, basis = S.decode_seconds(llama, "bf16", hw, place, depth=512)
    # transformers streams offloaded weights over PCIe: slower than reading them from host RAM.
    assert basis["devices"]["cpu"]["via"] == "PCIe to GPU"
    big = Hardware(devices=(dataclasses.replace(gpu, memory_bytes=int(80e9)), cpu), source="flags")
    t_all, _ = S.decode_seconds(llama, "bf16", big, S.plan(llama, "bf16", big, context=4096), depth=512)
    assert t_off > 3 * t_all


def test_prefill_grows_with_prompt(tiny):
    hw = cpu_hw(tflops=0.5)
    place = S.plan(tiny, "fp32", hw, context=4096)
    short, _ = S.prefill_seconds(tiny, "fp32", hw, place, prompt_tokens=128)
    long, basis = S.prefill_seconds(tiny, "fp32", hw, place, prompt_tokens=1024)
    assert long > short
    # 2 x params per token plus causal attention: 2 x layers x d_attn x P^2.
    assert basis["flops"] == 2 * TOTAL * 1024 + 2 * 2 * 64 * 1024 * 1024


def test_assisted_generation_helps_dense_hurts_wide_moe():
    llama = catalog.spec_from_catalog("meta-llama/Meta-Llama-3-8B-Instruct")
    draft = catalog.spec_from_catalog("HuggingFaceTB/SmolLM2-135M-Instruct")
    hw = cpu_hw(bw=50, mem_gb=64)
    res = S.assisted_speedup(
        llama,
        "bf16",
        hw,
        S.plan(llama, "bf16", hw, context=4096),
        draft,
        "bf16",
        S.plan(draft, "bf16", hw, context=4096),
        depth=512,
        acceptance=0.8,
        lookahead=4,
    )
    assert res["tokens_per_target_pass"] == pytest.approx((1 - 0.8**5) / 0.2)
    assert res["speedup"] > 1.5
    ds = catalog.spec_from_catalog("deepseek-ai/DeepSeek-V2-Chat")
    big = cpu_hw(bw=50, mem_gb=1000)
    res_moe = S.assisted_speedup(
        ds,
        "q4_k_m",
        big,
        S.plan(ds, "q4_k_m", big, context=4096),
        draft,
        "bf16",
        S.plan(draft, "bf16", big, context=4096),
        depth=512,
        acceptance=0.8,
        lookahead=4,
    )
    # Verifying 5 tokens reads far more of a 160-expert model than one token does.
    assert res_moe["verify_step_s"] > 2 * res_moe["target_step_s"]
    assert res_moe["speedup"] < res["speedup"]


def test_prefill_overhead_by_hand_int8_on_cpu(tiny):
    # 100 prompt tokens, one chunk. Live: 6 hidden- and 3 intermediate-wide bf16 tensors a token, the
    # 100 x 100 boolean mask, one row of fp32 logits; LLM.int8's CPU matmul adds 14 bytes per output of
    # the widest layer and 8 per hidden input element. glibc's slack doubles the live bytes; it keeps
    # a tenth of every layer's matmul temporaries (18 bytes per output row, 10 per input column).
    live = 100 * (6 * 64 + 3 * 128) * 2 + 100 * 100 + 1000 * 4 + 100 * (128 * 14 + 64 * 8)
    outs, ins = ROWS // 2, 6 * 64 + 128
    retained = int(0.10 * 2 * 100 * (18 * outs + 10 * ins))
    got = M.overhead_bytes(tiny, "int8", device_kind="cpu", prompt_tokens=100)
    base = M.CPU_RUNTIME_BASE + M.BNB_CPU_EXTRA  # the bitsandbytes library is loaded too
    assert got == base + int(live * M.CPU_ALLOCATOR_SLACK) + retained


def test_cpu_prefill_is_chunked_gpu_is_not(tiny):
    chunk = M.CPU_PREFILL_CHUNK
    assert M.prefill_chunk(10 * chunk, device_kind="cpu") == chunk
    assert M.prefill_chunk(100, device_kind="cpu") == 100
    assert M.prefill_chunk(10 * chunk, device_kind="cuda") == 10 * chunk

    def acts(kind, prompt):
        base = M.CPU_RUNTIME_BASE if kind == "cpu" else M.CUDA_CONTEXT
        return M.overhead_bytes(tiny, "bf16", device_kind=kind, prompt_tokens=prompt) - base

    # On the CPU a 10x longer prompt only widens the chunk's mask (chunk x prompt booleans).
    cpu_growth = acts("cpu", 10 * chunk) - acts("cpu", chunk)
    assert cpu_growth == int(chunk * 9 * chunk * M.CPU_ALLOCATOR_SLACK)
    # On a GPU the whole prompt goes through at once: activations scale with it.
    assert acts("cuda", 10 * chunk) > 9 * acts("cuda", chunk)


def test_int8_temporaries_cost_more_on_cpu_than_on_gpu(tiny):
    def extra(kind):
        return M.overhead_bytes(tiny, "int8", device_kind=kind, prompt_tokens=256) - M.overhead_bytes(
            tiny, "bf16", device_kind=kind, prompt_tokens=256
        )

    assert extra("cuda") == 256 * 128 * 6  # int32 product + 16-bit output of the widest matmul
    assert extra("cpu") > 5 * extra("cuda")


def test_int8_prices_only_the_experts_a_token_passes(tiny):
    # The tiny model's MLPs as 8 experts in nn.Linear layers, 2 a token: half its linear weights.
    p = dataclasses.replace(tiny.params, routed_experts_linear=tiny.params.linear // 2)
    moe = dataclasses.replace(tiny, params=p, num_experts=8, experts_per_token=2, active_params=tiny.total_params - 1)
    outs, ins = M._bnb8_sums(moe, 64, 128)
    assert outs == int(ROWS // 2 * 0.5 + ROWS // 2 * 0.5 * 2 / 8)
    assert ins == 4 * 64 + 2 * (2 * 64 + 128)
    fused = dataclasses.replace(moe, params=dataclasses.replace(p, routed_experts_linear=0))
    assert M._bnb8_sums(fused, 64, 128)[1] == 4 * 64  # 16-bit experts: attention only
