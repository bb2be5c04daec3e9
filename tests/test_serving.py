"""Serving plans: vLLM's pool arithmetic against logged start-ups, per-rank weights and KV, engine rules,
throughput under load, multi-node steps, free-memory fitting, and one-line errors for impossible requests."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

import advisor.serve_cli  # noqa: F401  (registers serve-plan on the group)
from advisor import serve as S
from advisor.accelerators import lookup
from advisor.cli import cli
from advisor.costmodel import serving as SV
from advisor.sources import resolve
from advisor.sources.catalog import config_path
from advisor.spec import Device, Hardware

GiB = 1024**3
pytestmark = pytest.mark.usefixtures("seeded_hw")


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def h100(n: int = 8, nodes: int = 1) -> SV.Target:
    return SV.Target(gpu=S.gpu_from_accelerator(lookup("H100 SXM5")), gpus_per_node=n, nodes=nodes, fit="total")


# --- vLLM's pool, checked against start-up logs (benchmarks/data/vllm_kv_logs.csv) ---------------------------


def test_uniform_pool_matches_logged_qwen3_14b():
    # LMCache#1739, vLLM 0.10.2: "Available KV cache memory: 6.51 GiB", "GPU KV cache size: 42,656 tokens",
    # "Maximum concurrency for 32,768 tokens per request: 1.30x".
    spec = resolve("Qwen/Qwen3-14B")
    kvr = SV.kv_per_rank(spec, tp=1, kv_bytes=2)
    assert kvr.bytes_per_token == 163_840
    pool = SV.vllm_pool(kvr, int(6.51 * GiB), context=32768, block=16, max_num_batched_tokens=2048, version=(0, 10, 2))
    assert abs(pool.kv_cache_tokens - 42_656) <= 16
    assert round(pool.max_concurrency, 2) == 1.30


def test_hybrid_sliding_pool_matches_logged_gemma3():
    # ROCm log, vLLM 0.11.0rc2, gemma-3-27b-it at 4096 tokens: 109.86 GiB available, 205,696 tokens, 50.05x.
    # 62 layers: 10 full, 52 sliding -> 1 full group + 6 sliding groups of 10 layers.
    spec = resolve("google/gemma-3-27b-it")
    kvr = SV.kv_per_rank(spec, tp=1, kv_bytes=2)
    assert (kvr.full_layers, kvr.sliding_layers) == (10, 52)
    pool = SV.vllm_pool(
        kvr, int(109.86 * GiB), context=4096, block=16, max_num_batched_tokens=8192, version=(0, 11, 0),
        token_line="blocks_per_group",
    )  # fmt: skip
    assert pool.groups == 7
    assert abs(pool.kv_cache_tokens / 205_696 - 1) < 0.002
    assert abs(pool.max_concurrency - 50.05) < 0.05
    # From 0.20.2 the line is concurrency x max_model_len: at a long context (sliding layers hold only their
    # window) many more tokens for the same memory.
    old, new = (
        SV.vllm_pool(kvr, int(109.86 * GiB), context=32768, block=16, max_num_batched_tokens=8192,
                     version=(0, 20, 2), token_line=line)
        for line in ("blocks_per_group", "concurrency")
    )  # fmt: skip
    assert new.kv_cache_tokens > 2 * old.kv_cache_tokens


def test_gemma4_layers_keep_their_own_head_size_and_shared_layers_no_cache():
    # google/gemma-4-E2B-it: 35 layers, the last 20 reuse earlier layers' K/V; one KV head; sliding layers have
    # head_dim 256, full layers global_head_dim 512 (transformers' per_layer_config, vLLM gemma4.py alike).
    cfg = json.loads(config_path("google/gemma-4-E2B-it").read_text())
    text = cfg["text_config"]
    spec = resolve("google/gemma-4-E2B-it")
    cached = text["layer_types"][: text["num_hidden_layers"] - text["num_kv_shared_layers"]]
    full, sliding = cached.count("full_attention"), cached.count("sliding_attention")
    kvr = SV.kv_per_rank(spec, tp=1, kv_bytes=2)
    assert (kvr.full_layers, kvr.sliding_layers) == (full, sliding) == (3, 12)
    assert kvr.full_bytes == 2 * text["num_key_value_heads"] * text["global_head_dim"] * 2
    assert kvr.sliding_bytes == 2 * text["num_key_value_heads"] * text["head_dim"] * 2
    assert kvr.full_bytes == 2 * kvr.sliding_bytes


@pytest.mark.parametrize(
    ("version", "context", "blocks", "in_flight", "tokens", "concurrency"),
    [
        # zhtwnotes (vLLM 0.21.0, L4, max_model_len 8192): "GPU KV cache size: 1,062,157 tokens", 129.66x.
        ((0, 21, 0), 8192, 108_394, 1, 1_062_157, 129.66),
        # xbill9/gemma4-dev (vLLM 0.29.0, T4, QAT w4a16, max_model_len 16384): "519,681 tokens", 31.72x.
        ((0, 29, 0), 16384, 50_877, 2, 519_681, 31.72),
    ],
)
def test_gemma4_pool_reproduces_logged_token_lines(version, context, blocks, in_flight, tokens, concurrency):
    # Pages unify at the full layers' 16 x 2048 B: sliding layers get 32-token blocks; 5 groups of 3 layers
    # (4 sliding, 1 full) share the pool; from 0.26 a sliding group holds W - 1 + 2 x max_num_batched_tokens.
    spec = resolve("google/gemma-4-E2B-it")
    kvr = SV.kv_per_rank(spec, tp=1, kv_bytes=2)
    assert SV.vllm_in_flight_batches(version, v2_runner=True, pp=1) == in_flight
    page_bytes = 16 * kvr.full_bytes * 3  # one block across a group of three layers
    pool = SV.vllm_pool(
        kvr, blocks * page_bytes, context=context, block=16, max_num_batched_tokens=2048, version=version,
        in_flight_batches=in_flight,
    )  # fmt: skip
    assert (pool.num_blocks, pool.groups) == (blocks, 5)
    assert pool.kv_cache_tokens == tokens
    assert round(pool.max_concurrency, 2) == concurrency
    # Counted once (the rule before 0.26), the 0.29 log would have read 37.7x, not 31.72x.
    once = SV.vllm_pool(kvr, blocks * page_bytes, context=context, block=16, max_num_batched_tokens=2048,
                        version=version)  # fmt: skip
    assert once.max_concurrency > concurrency * 1.1 if in_flight == 2 else once == pool


def test_in_flight_batches_follow_the_runner_and_pipeline():
    assert SV.vllm_in_flight_batches((0, 25, 0), v2_runner=True, pp=4) == 1
    assert SV.vllm_in_flight_batches((0, 26, 0), v2_runner=True, pp=4) == 5
    assert SV.vllm_in_flight_batches((0, 26, 0), v2_runner=False, pp=1) == 2
    assert SV.vllm_in_flight_batches((0, 26, 0), v2_runner=False, pp=3) == 3


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("compressed-tensors w4a16 (group 32)", "gptq"),
        ("compressed-tensors w8a16 (channel)", "int8"),
        ("compressed-tensors w8a8 (fp8, tensor)", "fp8"),
        ("compressed-tensors w4a4 (fp4, tensor_group)", None),
        ("awq 4-bit (group 128)", "awq"),
        (None, None),
    ],
)
def test_a_compressed_tensors_checkpoint_is_served_as_itself(label, expected):
    spec = dataclasses.replace(resolve("Qwen/Qwen3-8B"), quantization=label)
    assert SV.checkpoint_precision(spec) == expected


def test_vllm_memory_predicts_logged_pool_for_qwen3_8b_on_a100():
    # tokenkaki, vLLM 0.9.2 `vllm serve Qwen/Qwen3-8B` on an A100-SXM4-40GB: "Model loading took 15.2683 GiB",
    # "GPU KV cache size: 136,080 tokens".
    spec = resolve("Qwen/Qwen3-8B")
    gpu = S.gpu_from_accelerator(lookup("A100 40GB SXM4"))
    opts = SV.ServeOptions(engine="vllm", precision="bf16", context=40960, version=(0, 9, 2))
    mem = SV.vllm_memory(spec, gpu, opts, precision="bf16", tp=1, pp=1, context=40960)
    assert abs(mem["weights_bytes"] / GiB - 15.2683) < 0.02
    assert abs(mem["kv_cache_tokens"] / 136_080 - 1) < 0.10
    assert mem["gpu_memory_utilization"] == 0.9 and mem["max_num_batched_tokens"] == 2048


def test_weights_per_gpu_matches_logged_loads():
    llama = resolve("meta-llama/Llama-3.1-8B-Instruct")
    # vllm#10517: "Loading model weights took 14.9888 GB" (GiB): parameters plus the rotary cache.
    assert abs(SV.weights_per_gpu(llama, "bf16", tp=1, pp=1) / GiB - 14.9888) < 0.01
    moe = resolve("Qwen/Qwen3-30B-A3B")
    # vllm#17469: Qwen3-30B-A3B at TP4 loads 14.2474 GiB a rank.
    assert abs(SV.weights_per_gpu(moe, "bf16", tp=4, pp=1) / GiB - 14.2474) < 0.05
    assert SV.weights_per_gpu(llama, "fp8", tp=1, pp=1) < 0.6 * SV.weights_per_gpu(llama, "bf16", tp=1, pp=1)
    assert SV.weights_per_gpu(llama, "awq", tp=1, pp=1) < SV.weights_per_gpu(llama, "fp8", tp=1, pp=1)


def test_kv_heads_replicate_past_tp_and_mla_latent_is_not_split():
    llama = resolve("meta-llama/Llama-3.1-8B-Instruct")  # 8 KV heads
    per = {tp: SV.kv_per_rank(llama, tp=tp, kv_bytes=2).bytes_per_token for tp in (1, 2, 8, 16)}
    assert per[2] == per[1] / 2 and per[16] == per[8]  # one head a rank, replicated past TP 8
    r1 = resolve("deepseek-ai/DeepSeek-R1")
    mla1 = SV.kv_per_rank(r1, tp=1, kv_bytes=2)
    mla8 = SV.kv_per_rank(r1, tp=8, kv_bytes=2)
    assert mla1.mla and mla1.bytes_per_token == mla8.bytes_per_token == 61 * 576 * 2
    assert SV.kv_per_rank(r1, tp=1, kv_bytes=1).bytes_per_token == mla1.bytes_per_token / 2


def test_hybrid_recurrent_layers_hold_state_not_kv():
    spec = resolve("Qwen/Qwen3.5-9B")  # 8 full-attention layers, 24 Gated DeltaNet layers
    kvr = SV.kv_per_rank(spec, tp=1, kv_bytes=2)
    assert (kvr.full_layers, kvr.state_layers) == (8, 24)
    assert kvr.state_bytes > 0
    pool = SV.vllm_pool(kvr, 20 * GiB, context=32768, block=16, max_num_batched_tokens=2048, version=(0, 11, 0))
    # the attention block grows until its page holds a recurrent state
    assert pool.block_size * kvr.full_bytes >= kvr.state_bytes


# --- Defaults by version and GPU ----------------------------------------------------------------------------


def test_vllm_defaults_follow_version_and_gpu():
    h = S.gpu_from_accelerator(lookup("H100 SXM5"))
    a100 = S.gpu_from_accelerator(lookup("A100 80GB SXM4"))
    assert SV.vllm_defaults((0, 19, 1), h, context=8192).gpu_memory_utilization == 0.9
    assert SV.vllm_defaults((0, 20, 0), h, context=8192).gpu_memory_utilization == 0.92
    assert SV.vllm_defaults((0, 11, 0), h, context=8192).max_num_batched_tokens == 8192
    assert SV.vllm_defaults((0, 11, 0), a100, context=8192).max_num_batched_tokens == 2048  # the A100 exception
    assert SV.vllm_defaults((0, 11, 0), a100, context=8192).max_num_seqs == 256
    assert SV.vllm_defaults((0, 6, 4), a100, context=20000).max_num_batched_tokens == 20000  # V0, no chunking


def test_gpu_totals_are_binary_units_less_the_driver():
    h = lookup("H100 SXM5 80GB")
    assert h.memory_bytes == 80 * GiB
    assert 78.5 * GiB < h.cuda_total_bytes < 79.5 * GiB  # CUDA reports ~79.1-79.2 GiB, not 80e9 bytes
    t4 = lookup("T4")
    assert t4.cuda_total_bytes < 15 * GiB  # ECC on by default gives 1/16 of 16 GiB away


# --- Plans -------------------------------------------------------------------------------------------------


def test_plan_picks_smallest_layout_and_concurrency_grows_with_fp8_kv():
    spec = resolve("meta-llama/Llama-3.1-70B-Instruct")
    # (vLLM 0.33 on two H100s leaves ~1.5 GiB of KV a GPU once its graphs and sampling state are counted)
    plans, _ = SV.plan_serving(spec, h100(), SV.ServeOptions(engine="vllm", precision="bf16", context=8192))
    (plan,) = plans
    assert plan.tensor_parallel == 2 and plan.fits  # 141 GB of weights: two 80 GB GPUs
    fp8kv, _ = SV.plan_serving(
        spec, h100(), SV.ServeOptions(engine="vllm", precision="bf16", context=8192, kv_cache_dtype="fp8")
    )
    assert fp8kv[0].kv_cache_tokens > 1.9 * plan.kv_cache_tokens
    assert "--kv-cache-dtype fp8" in fp8kv[0].command


def test_users_raise_the_layout_and_load_table_behaves():
    spec = resolve("meta-llama/Llama-3.1-8B-Instruct")
    one, _ = SV.plan_serving(spec, h100(), SV.ServeOptions(engine="vllm", precision="bf16", context=131072))
    many, _ = SV.plan_serving(spec, h100(), SV.ServeOptions(engine="vllm", precision="bf16", context=131072, users=32))
    assert many[0].gpus > one[0].gpus and many[0].max_concurrency >= 32
    load = many[0].load
    per_user = [r["decode_tok_s_per_user"] for r in load]
    total = [r["aggregate_tok_s"] for r in load]
    assert per_user == sorted(per_user, reverse=True) and total == sorted(total)


def test_weight_matmuls_turn_compute_bound_where_the_roofline_says():
    spec = resolve("meta-llama/Llama-3.1-8B-Instruct")
    plans, _ = SV.plan_serving(spec, h100(), SV.ServeOptions(engine="vllm", precision="bf16", context=1024))
    batch = plans[0].compute_bound_batch
    gpu = S.gpu_from_accelerator(lookup("H100 SXM5"))
    ridge = (
        gpu.tflops_16bit
        * 1e12
        * SV.SERVE_MM_EFFICIENCY["vllm"]
        / (gpu.bandwidth_gbps * 1e9 * SV.SERVE_BW_EFFICIENCY["vllm"])
    )
    assert batch is not None and 0.8 * ridge < batch < 1.3 * ridge  # bf16: 2 bytes read per 2 FLOPs a weight
    fp8, _ = SV.plan_serving(spec, h100(), SV.ServeOptions(engine="vllm", precision="fp8", context=1024))
    assert fp8[0].compute_bound_batch < batch  # half the bytes: compute-bound sooner


def test_multi_node_plan_gives_ray_steps():
    spec = resolve("meta-llama/Llama-3.1-405B-Instruct")
    plans, _ = SV.plan_serving(spec, h100(8, nodes=2), SV.ServeOptions(engine="vllm", precision="bf16", context=8192))
    (plan,) = plans
    assert (plan.nodes, plan.tensor_parallel, plan.pipeline_parallel) == (2, 8, 2)
    assert plan.steps[0].endswith("ray start --head --port=6379")
    assert "--pipeline-parallel-size 2" in plan.command and "--distributed-executor-backend ray" in plan.command
    assert any("InfiniBand" in n for n in plan.notes)


def test_free_memory_lowers_utilization_on_a_shared_gpu():
    gpu = Device(kind="cuda", name="NVIDIA H100 80GB HBM3", memory_bytes=int(79.1 * GiB), free_bytes=int(60 * GiB),
                 bandwidth_gbps=3000.0, details={"compute_capability": "9.0"})  # fmt: skip
    hw = Hardware(devices=(gpu,), source="probe")
    target, notes = S.target_from_args(None, nodes=1, memory_gb=None, fit="free", hw=hw)
    assert any("free memory" in n for n in notes)
    spec = resolve("meta-llama/Llama-3.1-8B-Instruct")
    plans, _ = SV.plan_serving(spec, target, SV.ServeOptions(engine="vllm", precision="bf16", context=8192))
    assert plans[0].gpu_memory_utilization <= 60 / 79.1
    assert "--gpu-memory-utilization" in plans[0].command
    total, _ = S.target_from_args(None, nodes=1, memory_gb=None, fit="total", hw=hw)
    plans_total, _ = SV.plan_serving(spec, total, SV.ServeOptions(engine="vllm", precision="bf16", context=8192))
    assert plans_total[0].kv_cache_tokens > plans[0].kv_cache_tokens


def test_llama_server_plan_shares_one_pool_between_slots():
    spec = resolve("meta-llama/Llama-3.1-8B-Instruct")
    target = SV.Target(gpu=S.gpu_from_accelerator(lookup("RTX 4090")), gpus_per_node=1)
    plans, _ = SV.plan_serving(
        spec, target, SV.ServeOptions(engine="llama.cpp", precision="q4_k_m", context=8192, users=4,
                                      kv_cache_dtype="q8_0"),
    )  # fmt: skip
    (plan,) = plans
    assert plan.kv_cache_tokens == 4 * 8192 and "-np 4" in plan.command and "-ctk q8_0" in plan.command
    assert plan.memory["kv_cache_bytes"] < 4 * 8192 * 131072 * 0.6  # q8_0 is ~half of f16


def test_sglang_pool_is_a_fraction_of_free_memory():
    spec = resolve("meta-llama/Llama-3.1-8B-Instruct")
    gpu = S.gpu_from_accelerator(lookup("H100 SXM5"))
    opts = SV.ServeOptions(engine="sglang", precision="bf16", context=8192, gpu_memory_utilization=0.88)
    mem = SV.sglang_memory(spec, gpu, opts, precision="bf16", tp=1, pp=1, context=8192)
    expected = ((gpu.total_bytes - SV.SGLANG_CUDA_CONTEXT) * 0.88 - mem["weights_bytes"]) // 131072
    assert mem["kv_cache_tokens"] == int(expected)


# --- The command line --------------------------------------------------------------------------------------


def test_serve_plan_json_shape():
    result = run("serve-plan", "meta-llama/Llama-3.1-8B-Instruct", "--device", "2x RTX 4090", "--context", "8192",
                 "--users", "16", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["model"]["id"] == "meta-llama/Llama-3.1-8B-Instruct"
    keys = {"engine", "precision", "kv_cache_dtype", "gpus", "nodes", "tensor_parallel", "pipeline_parallel",
            "gpu_memory_utilization", "context", "weights_bytes_per_gpu", "kv_cache_bytes_per_gpu", "kv_cache_tokens",
            "max_concurrency", "decode_tok_s_per_user", "aggregate_tok_s", "ttft_s", "command", "notes"}  # fmt: skip
    assert data["plans"] and all(keys <= set(p) for p in data["plans"])
    assert {p["engine"] for p in data["plans"]} == {"vllm", "sglang", "llama.cpp"}
    assert isinstance(data["warnings"], list)
    assert all(p["gpus"] <= 2 for p in data["plans"])


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--device", "8x H100 SXM5", "--tensor-parallel", "3"], "does not divide the 32 attention heads"),
        (["--device", "2x RTX 4090", "--tensor-parallel", "4"], "the target has 2"),
        (["--device", "A100 80GB SXM4", "--precision", "fp8", "--engine", "vllm"], "FP8 needs FP8 tensor cores"),
        (["--device", "RTX 4090", "--users", "0"], "at least 1 user"),
        (["--device", "RTX 4090", "--context", "999999"], "longer than"),
        (["--device", "RTX 4090", "--precision", "banana"], "not a serving precision"),
        (["--device", "RTX 4090", "--engine", "llama.cpp", "--precision", "fp8"], "llama.cpp serves GGUF types"),
        (["--device", "RTX 4090", "--engine", "vllm", "--kv-cache-dtype", "q4_0"], "is llama.cpp's"),
        (["--device", "RTX 4090", "--engine", "llama.cpp", "--kv-cache-dtype", "fp8"], "caches in f16, q8_0"),
        (["--device", "RTX 4090", "--context", "8192", "--prompt-tokens", "100000"], "a prompt must fit"),
    ],
)
def test_serve_plan_bad_input_is_one_line(args, needle):
    result = CliRunner().invoke(cli, ["serve-plan", "meta-llama/Llama-3.1-8B-Instruct", *args])
    assert result.exit_code != 0
    text = result.output + (str(result.exception) if result.exception else "")
    assert needle in text
    assert "Traceback" not in result.output


def test_which_vllm_model_runner_prices_the_start_up():
    qwen3, mixtral = resolve("Qwen/Qwen3-8B"), resolve("mistralai/Mixtral-8x7B-Instruct-v0.1")
    # V2 by default: Qwen3 dense from 0.22, quantized only from 0.24; MoE outside the list from 0.29
    assert not SV.vllm_v2_runner((0, 21), qwen3, quantized=False)
    assert SV.vllm_v2_runner((0, 22), qwen3, quantized=False)
    assert not SV.vllm_v2_runner((0, 22), qwen3, quantized=True)
    assert SV.vllm_v2_runner((0, 24), qwen3, quantized=True)
    assert not SV.vllm_v2_runner((0, 28), mixtral, quantized=False)
    assert SV.vllm_v2_runner((0, 29), mixtral, quantized=False)
    gpu = S.gpu_from_accelerator(lookup("L40S"))
    common = dict(tp=1, tokens=2048, seqs=256, v0=False, gpu=gpu, eager=False)
    v1 = SV.vllm_profile_bytes(mixtral, version=(0, 28), **common)
    v2 = SV.vllm_profile_bytes(qwen3, version=(0, 28), **common)
    v2_29 = SV.vllm_profile_bytes(qwen3, version=(0, 29), **common)
    # the V1 runner estimates its CUDA graphs; V2 only from 0.29
    assert v1["cudagraph"] > 0 and v2["cudagraph"] == 0 and v2_29["cudagraph"] > 0
    # from 0.27 the V2 runner's sampling state (seqs x vocab int32 and its masks) is charged to the budget
    older = SV.vllm_profile_bytes(qwen3, version=(0, 26), **common)
    extra = v2["non_torch"] - older["non_torch"]
    assert extra == pytest.approx(256 * qwen3.vocab_size * 4.25, rel=0.01)
    # V1 in 0.22-0.29 samples with FlashInfer's 14 B a logit, V2's profile pass skips top-k/top-p (4 B)
    assert SV.sampler_bytes_per_logit((0, 28), v0=False, seqs=256, v2=False) == 14.0
    assert SV.sampler_bytes_per_logit((0, 28), v0=False, seqs=256, v2=True) == 4.0


def test_first_compile_holds_a_random_copy_of_the_embedding_table():
    # kvcachelab, vLLM 0.26.0, Qwen2.5-7B-Instruct-AWQ on an RTX 4080 (2,048 batched tokens, 256 sequences):
    # the start-up summary logged "peak activation 1.04 GiB"; the forward and the sampler alone peak near 0.26.
    qwen = resolve("Qwen/Qwen2.5-7B-Instruct")
    gpu = S.gpu_from_accelerator(lookup("GeForce RTX 4080 (16GB)"))
    common = dict(tp=1, tokens=2048, seqs=256, v0=False, gpu=gpu, quantized=True, version=(0, 26))
    compiled = SV.vllm_profile_bytes(qwen, eager=False, **common)
    assert compiled["activation"] / GiB == pytest.approx(1.04, abs=0.01)
    assert SV.vllm_profile_bytes(qwen, eager=True, **common)["activation"] < 0.4 * GiB  # --enforce-eager: no compile
    benched = dict(tokens=2048, v0=False, eager=False)
    table = 152_064 * 3584 * 2
    assert SV.compile_benchmark_bytes(qwen, tp=1, version=(0, 26), **benched) == table + 2 * 2048 * 3584 * 2
    assert SV.compile_benchmark_bytes(qwen, tp=2, version=(0, 26), **benched) == table // 2 + 2 * 2048 * 3584 * 2
    # vLLM turns Inductor's combo-kernel benchmark on from 0.11.1 (torch 2.9); 0.11.0 did not
    assert SV.compile_benchmark_bytes(qwen, tp=1, version=(0, 11, 0), **benched) == 0
    assert SV.compile_benchmark_bytes(qwen, tp=1, version=(0, 11, 1), **benched) > 0
    # a multimodal wrapper embeds its tokens outside the compiled language model
    gemma = resolve("google/gemma-4-E2B-it")
    assert SV.compile_benchmark_bytes(gemma, tp=1, version=(0, 29), **benched) == 0
    # the plan says what a warm restart gives back, and --enforce-eager has nothing to give back
    for eager, told in ((False, True), (True, False)):
        opts = SV.ServeOptions(engine="vllm", precision="bf16", context=32768, version=(0, 28), enforce_eager=eager)
        target = SV.Target(gpu=S.gpu_from_accelerator(lookup("L40S")), gpus_per_node=1, nodes=1, fit="total")
        plans, _ = SV.plan_serving(resolve("Qwen/Qwen3-14B"), target, opts)
        assert any("first start" in n for n in plans[0].notes) is told


def test_cuda_graphs_cost_their_layers_not_their_width():
    # Logged "Graph capturing finished ... took": Qwen2.5-72B TP4 on 4x L40S, vLLM 0.19.0, 51 + 35 graphs: 2.62 GiB
    # (gnosia93/eks-agentic-ai); Qwen2-7B, vLLM 0.10.1.1, 67 PIECEWISE graphs: 0.50 GiB on one A100, 0.65 per rank
    # at TP2 (dennislee22/vLLM-benchmarking).
    common = dict(pp=1, seqs=256, tokens=2048)
    qwen72 = resolve("Qwen/Qwen2.5-72B-Instruct")
    qwen7 = resolve("Qwen/Qwen2-7B-Instruct")
    assert SV._cudagraph_bytes(qwen72, tp=4, version=(0, 19, 0), **common) / GiB == pytest.approx(2.62, rel=0.15)
    assert SV._cudagraph_bytes(qwen7, tp=1, version=(0, 10, 1), **common) / GiB == pytest.approx(0.50, rel=0.2)
    assert SV._cudagraph_bytes(qwen7, tp=2, version=(0, 10, 1), **common) / GiB == pytest.approx(0.65, rel=0.2)
    base = SV._cudagraph_bytes(qwen7, tp=1, version=(0, 28), **common)
    wider = dataclasses.replace(qwen7, hidden_size=2 * qwen7.hidden_size)
    deeper = dataclasses.replace(qwen7, num_layers=2 * qwen7.num_layers)
    assert SV._cudagraph_bytes(wider, tp=1, version=(0, 28), **common) < 1.1 * base
    assert SV._cudagraph_bytes(deeper, tp=1, version=(0, 28), **common) > 1.8 * base
    # Llama-3.1-70B in bf16 over two H100s holds an 8k request (it had been priced 4 GiB of graphs and refused)
    opts = SV.ServeOptions(engine="vllm", precision="bf16", context=8192)
    plans, _ = SV.plan_serving(resolve("meta-llama/Llama-3.1-70B-Instruct"), h100(2), opts)
    assert plans and plans[0].tensor_parallel == 2 and plans[0].kv_cache_tokens >= 8192


def test_a_catalog_fp8_repository_is_served_as_itself():
    # The catalog's Qwen3-32B-FP8 config carries quantization_config (fp8, block 128x128), as the Hub repo does:
    # vllm serve loads FP8, so no bf16 (61 GiB) or "<AWQ checkpoint of ...-FP8>" row.
    spec = resolve("Qwen/Qwen3-32B-FP8")
    assert spec.quantization and spec.quantization.startswith("fp8")
    assert SV.checkpoint_precision(spec) == "fp8"
    target = SV.Target(gpu=S.gpu_from_accelerator(lookup("H100 SXM5")), gpus_per_node=1, nodes=1, fit="total")
    plans, _ = SV.plan_serving(spec, target, SV.ServeOptions(engine="vllm", context=8192))
    assert {p.precision for p in plans} == {"fp8"}
    assert plans[0].weights_bytes_per_gpu < 40 * GiB
    assert not resolve("Qwen/Qwen3-32B").quantization  # its bf16 sibling stays any precision


def test_plans_answer_how_many_users_and_say_why_they_pick():
    spec = resolve("meta-llama/Llama-3.1-8B-Instruct")
    two = SV.Target(gpu=S.gpu_from_accelerator(lookup("RTX 4090")), gpus_per_node=2, nodes=1, fit="total")
    # 32 users at 8k: vLLM bf16 holds fewer; its row stays, not fitting, with how many it holds
    opts = SV.ServeOptions(engine="vllm", precision="bf16", context=8192, users=32)
    (plan,) = SV.plan_serving(spec, two, opts)[0]
    assert not plan.fits and 10 < plan.max_concurrency < 32
    assert any("fewer than --users 32" in n for n in plan.notes)
    # int8 in vLLM is a W8A8 checkpoint: the command names a placeholder, as for AWQ
    (int8,) = SV.plan_serving(spec, two, dataclasses.replace(opts, precision="int8", users=None))[0]
    assert "<INT8 (W8A8) checkpoint of" in int8.command and any("w8a8" in n for n in int8.notes)
    # llama.cpp's row is priced at the load the table states (1 user), not at its 4 slots
    (gguf,) = SV.plan_serving(spec, two, SV.ServeOptions(engine="llama.cpp", precision="q8_0", context=8192))[0]
    single = SV.plan_serving(spec, two, SV.ServeOptions(engine="vllm", precision="bf16", context=8192))[0][0]
    assert gguf.aggregate_tok_s == pytest.approx(gguf.decode_tok_s_per_user)
    # FP8 is within the pick's quality slack of bf16: on one GPU it wins on throughput, and says so
    plans, _ = S.serve_plans(spec, two, SV.ServeOptions(context=8192), ["vllm"])
    chosen = S.pick(plans)
    assert chosen.precision == "fp8" and single.precision == "bf16"
    assert "tokens/s of vllm bf16" in S.pick_reason(chosen, plans)


def test_a_plan_that_cannot_start_says_what_would_and_kernels_are_named():
    spec = resolve("meta-llama/Llama-3.1-70B-Instruct")
    two = SV.Target(gpu=S.gpu_from_accelerator(lookup("RTX 4090")), gpus_per_node=2, nodes=1, fit="total")
    opts = SV.ServeOptions(engine="vllm", precision="awq", context=4096, tensor_parallel=2)
    (graphs,) = SV.plan_serving(spec, two, opts)[0]
    assert not graphs.fits and any("--enforce-eager would free" in n for n in graphs.notes)
    (eager,) = SV.plan_serving(spec, two, dataclasses.replace(opts, enforce_eager=True))[0]
    assert eager.fits and eager.command.endswith("--enforce-eager")
    # an FP8 checkpoint on an A100 runs weight-only; AWQ on a T4 has no Marlin
    a100 = SV.Target(gpu=S.gpu_from_accelerator(lookup("A100 80GB SXM4")), gpus_per_node=1, nodes=1, fit="total")
    (fp8,) = SV.plan_serving(resolve("Qwen/Qwen3-32B-FP8"), a100, SV.ServeOptions(engine="vllm", context=8192))[0]
    assert any("weight-only through Marlin" in n for n in fp8.notes)
    t4 = SV.Target(gpu=S.gpu_from_accelerator(lookup("T4")), gpus_per_node=1, nodes=1, fit="total")
    small = SV.ServeOptions(engine="vllm", precision="awq", context=4096)
    (awq,) = SV.plan_serving(resolve("meta-llama/Llama-3.1-8B-Instruct"), t4, small)[0]
    assert any("Marlin needs compute capability 8.0" in n for n in awq.notes)


def test_llama_server_takes_fewer_slots_before_giving_up_and_a_cpu_plan_says_cpu():
    spec = resolve("meta-llama/Llama-3.1-70B-Instruct")
    two = SV.Target(gpu=S.gpu_from_accelerator(lookup("RTX 4090")), gpus_per_node=2, nodes=1, fit="total")
    (plan,) = SV.plan_serving(spec, two, SV.ServeOptions(engine="llama.cpp", precision="q4_k_m", context=8192))[0]
    assert plan.fits and "-np 1" in plan.command  # 4 slots of 8k do not fit 48 GB beside 42 GB of weights
    cpu = SV.ServeGpu(name="Some CPU", total_bytes=64 * GiB, free_bytes=60 * GiB, bandwidth_gbps=50, vendor="cpu")
    target = SV.Target(gpu=cpu, gpus_per_node=1, nodes=1, fit="free")
    small = resolve("meta-llama/Llama-3.2-1B-Instruct")
    (on_cpu,) = SV.plan_serving(small, target, SV.ServeOptions(engine="llama.cpp", precision="q8_0", context=4096))[0]
    assert "-ngl" not in on_cpu.command


def test_serve_plan_here_on_a_cpu_speaks_of_the_cpu_and_its_free_ram():
    result = run("serve-plan", "meta-llama/Llama-3.2-1B-Instruct", "--context", "4096")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "on this CPU" in text and "Pick: llama.cpp" in text and "on the CPU" in text
    assert "fitted against available RAM" in text and "GPU(s)" not in text.split("Pick:")[1].split(")")[0]


def test_language_model_only_leaves_the_towers_unloaded():
    # zhtwnotes, vLLM 0.21 `google/gemma-4-E2B --language-model-only --enforce-eager` on an L4 loaded 8.89 GiB,
    # against 9.63 GiB with the vision and audio towers.
    gemma = resolve("google/gemma-4-E2B-it")
    assert 0.4e9 < gemma.params.towers < 0.6e9
    assert resolve("meta-llama/Llama-3.1-8B-Instruct").params.towers == 0
    l4 = S.gpu_from_accelerator(lookup("L4"))
    opts = SV.ServeOptions(engine="vllm", precision="bf16", context=8192, version=(0, 21), enforce_eager=True)
    full = SV.vllm_memory(gemma, l4, opts, precision="bf16", tp=1, pp=1, context=8192)
    text = SV.vllm_memory(gemma, l4, dataclasses.replace(opts, language_model_only=True), precision="bf16", tp=1,
                          pp=1, context=8192)  # fmt: skip
    assert full["weights_bytes"] - text["weights_bytes"] == 2 * gemma.params.towers
    assert abs(text["weights_bytes"] / GiB - 8.89) < 0.25 < abs(full["weights_bytes"] / GiB - 8.89)
    result = run("serve-plan", "google/gemma-4-E2B-it", "--device", "L4", "--engine", "vllm", "--language-model-only")
    assert result.exit_code == 0 and "--language-model-only" in result.output
    old = CliRunner().invoke(cli, ["serve-plan", "google/gemma-4-E2B-it", "--device", "L4", "--engine", "vllm",
                                   "--language-model-only", "--engine-version", "0.16.0"])  # fmt: skip
    assert old.exit_code != 0 and "0.17 or newer" in old.output + str(old.exception)


def test_decode_reads_no_lookup_tables():
    # A token looks up one row of an untied input embedding or of Gemma 4's per-layer embeddings: those tables
    # are held on the GPU but not streamed each step; a tied table is the output projection and is read.
    from advisor.costmodel import memory as M

    e2b = resolve("google/gemma-4-E2B-it")
    held = SV.weights_per_gpu(e2b, "bf16", tp=1, pp=1)
    lookup = M._breakdown_or_guess(e2b).lookup
    assert lookup > 0.4 * e2b.total_params
    assert SV._weights_read(e2b, "bf16", tp=1, pp=1, batch=1, engine="vllm") == held - 2 * lookup
    llama = resolve("meta-llama/Llama-3.1-8B-Instruct")
    assert not llama.tied_embeddings
    p = M._breakdown_or_guess(llama)
    held = SV.weights_per_gpu(llama, "bf16", tp=2, pp=1)
    assert SV._weights_read(llama, "bf16", tp=2, pp=1, batch=1, engine="vllm") == held - 2 * p.embedding / 2
    qwen = resolve("Qwen/Qwen2.5-0.5B-Instruct")
    assert qwen.tied_embeddings
    assert SV._weights_read(qwen, "bf16", tp=1, pp=1, batch=1, engine="vllm") == SV.weights_per_gpu(
        qwen, "bf16", tp=1, pp=1
    )
