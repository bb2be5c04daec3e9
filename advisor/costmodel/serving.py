"""Serving plans: how an inference server (vLLM, SGLang, llama-server) sizes its KV cache pool on a GPU,
how many requests of a given length that pool holds, and what throughput the batch reaches.

Pure functions over a `ModelSpec` and a described GPU: no I/O, no torch. Each engine's accounting is
reproduced from its own source (the NOTEs cite version:file:line); `benchmarks/vllm_kv.py` checks the
vLLM pool against start-up logs users posted (`benchmarks/data/vllm_kv_logs.csv`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from advisor import precision as P
from advisor.costmodel import memory as M
from advisor.spec import ModelSpec

GiB = 1024**3
MiB = 1024**2

ENGINES = ("vllm", "sglang", "llama.cpp")
# NOTE: the newest releases read for these rules (vLLM 0.33.0, SGLang 0.5.23, llama.cpp 0c1e57098 as
# bundled in llama-cpp-python 0.3.36); `--engine-version` prices an older vLLM or SGLang.
LATEST = {"vllm": (0, 33, 0), "sglang": (0, 5, 23), "llama.cpp": (0, 0, 0)}

# Precisions a GPU server runs, with the bytes a matrix weight takes once loaded.
# NOTE: fp8 W8A8: one byte a weight plus one fp32 scale per tensor or per 128x128 block
# (vLLM fp8.py `Fp8LinearMethod`; block scales are 4 B / 16384 weights). AWQ and GPTQ 4-bit, group 128:
# packed int4 (0.5 B) + an fp16 scale and a packed 4-bit zero per group and output column
# (vLLM awq.py / gptq.py `create_weights`: qweight int32 [in/8, out], scales fp16 [in/128, out],
# qzeros int32 [in/128, out/8]) = 0.5 + 2/128 + 0.5/128 B. int8 W8A8 (compressed-tensors): 1 B plus a
# per-channel fp32 scale. Embeddings, norms and the LM head stay 16-bit in all of them.
SERVE_MATRIX_BYTES = {
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0 + 4 / 16384,
    "int8": 1.0,
    "awq": 0.5 + 2.5 / 128,
    "gptq": 0.5 + 2.5 / 128,
    # NOTE: MXFP4 (gpt-oss): only the routed experts, 4-bit E2M1 values with one E8M0 scale per 32 = 4.25 bits
    # (OCP MX spec); attention and the vocabulary stay bf16. vLLM loads gpt-oss-120b as 64.4-66.0 GiB
    # (vllm#33155, vllm#23278) against 61.3 GiB from this rule: Marlin's repacking pads the expert tensors.
    "mxfp4": 4.25 / 8,
}
EXPERT_ONLY = frozenset({"mxfp4"})
SERVE_PRECISIONS = tuple(SERVE_MATRIX_BYTES)

# NOTE: quality order for the precisions above, the same scale as advisor.precision (bf16 = 100). FP8 W8A8
# keeps ~99-100% of bf16 accuracy on the Open LLM benchmarks (Neural Magic's FP8 model cards; vLLM docs
# "FP8 W8A8"); int8 W8A8 ~99%; AWQ/GPTQ int4 group 128 lose ~1-3 points (AWQ paper, Table 4; Qwen's
# published AWQ/GPTQ evaluations), close to GGUF Q4_K_M.
SERVE_QUALITY = {"bf16": 100, "fp16": 99, "fp8": 97, "int8": 95, "awq": 70, "gptq": 68, "mxfp4": 100}

# KV cache element sizes by engine flag value.
KV_DTYPE_BYTES = {"auto": None, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "fp8_e4m3": 1.0, "fp8_e5m2": 1.0}


class ServePlanError(ValueError):
    """An impossible serving request: the message names the input and what to do instead."""


@dataclass(frozen=True)
class ServeGpu:
    """One GPU as a serving engine sees it."""

    name: str
    total_bytes: int  # what CUDA reports as total (cudaMemGetInfo): below the marketed size
    free_bytes: int | None = None  # measured on this machine; None for hypothetical hardware
    bandwidth_gbps: float | None = None  # datasheet or measured, GB/s (1e9 bytes)
    tflops_16bit: float | None = None  # dense bf16/fp16 tensor throughput
    compute_capability: float | None = None  # NVIDIA sm version; None elsewhere
    vendor: str = "NVIDIA"
    fp8: bool | None = None  # FP8 tensor cores (Ada, Hopper, Blackwell, MI300)
    bf16: bool | None = None
    source: str = "table"


@dataclass(frozen=True)
class Target:
    """Where the model is served: `gpus_per_node` GPUs of one kind in each of `nodes` nodes."""

    gpu: ServeGpu
    gpus_per_node: int
    nodes: int = 1
    fit: str = "free"  # free | total: what a plan may use on this machine

    @property
    def gpus(self) -> int:
        return self.gpus_per_node * self.nodes


@dataclass(frozen=True)
class ServeOptions:
    engine: str = "vllm"
    precision: str | None = None  # None: the checkpoint's own (bf16/fp16 for float checkpoints)
    kv_cache_dtype: str = "auto"
    tensor_parallel: int | None = None
    pipeline_parallel: int | None = None
    gpu_memory_utilization: float | None = None  # vLLM's, or SGLang's --mem-fraction-static
    context: int | None = None  # tokens per request (--max-model-len); None: the model's own
    users: int | None = None
    prompt_tokens: int = 1024
    version: tuple[int, ...] | None = None
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    enforce_eager: bool = False
    serve: bool = True  # `vllm serve` (OpenAI server) defaults rather than the offline LLM class
    flashinfer: bool | None = None  # vLLM 0.8-0.14: FlashInfer installed (the Docker images ship it)
    language_model_only: bool = False  # vLLM 0.17+: a multimodal model without its towers (text in, text out)


@dataclass(frozen=True)
class ServePlan:
    engine: str
    precision: str
    kv_cache_dtype: str
    gpus: int
    nodes: int
    tensor_parallel: int
    pipeline_parallel: int
    gpu_memory_utilization: float | None
    context: int
    weights_bytes_per_gpu: int
    kv_cache_bytes_per_gpu: int
    other_bytes_per_gpu: int  # activations, CUDA graphs, non-torch, reserve the engine keeps out of the pool
    gpu_bytes: int  # per GPU, as CUDA reports it
    kv_cache_tokens: int
    max_concurrency: float
    decode_tok_s_per_user: float | None
    aggregate_tok_s: float | None
    ttft_s: float | None
    command: str
    notes: tuple[str, ...] = ()
    load: tuple[dict[str, Any], ...] = ()  # throughput at 1, 8, 32, --users and the largest batch
    compute_bound_batch: int | None = None
    fits: bool = True
    memory: dict[str, Any] = field(default_factory=dict)  # the engine's own accounting, term by term
    steps: tuple[str, ...] = ()  # multi-node: the commands to run, in order
    quality_rank: int = 100

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["notes"] = list(self.notes)
        out["load"] = list(self.load)
        out["steps"] = list(self.steps)
        return out


def parse_version(text: str | None, engine: str) -> tuple[int, ...]:
    """'0.11.0', 'v0.9.2', '0.15.2rc1.dev93+g11a4c9d30' -> (0, 11, 0); None -> the newest read."""
    if not text:
        return LATEST.get(engine, (0, 0, 0))
    import re

    match = re.match(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?", str(text))
    if not match:
        raise ServePlanError(f"Engine version '{text}' is not a version number: give e.g. --engine-version 0.11.0.")
    return tuple(int(g) for g in match.groups("0"))


# ---------------------------------------------------------------------------------------------------------
# Weights per GPU
# ---------------------------------------------------------------------------------------------------------


def _matrix_split(spec: ModelSpec) -> tuple[int, int, int, int]:
    """(matrices, embedding, lm_head, rest): the parameters a quantization method replaces, the vocabulary
    tables and everything else (norms, biases, routers) that stays 16-bit."""
    p = M._breakdown_or_guess(spec)
    matrices = p.matrices
    rest = max(spec.total_params - matrices - p.embedding - p.lm_head, 0)
    return matrices, p.embedding, p.lm_head, rest


def _rotary_cache_bytes(spec: ModelSpec, context: int | None) -> int:
    """vLLM's rotary cos/sin cache on every rank: max positions x rotary dim in the model dtype.

    NOTE: Llama-3.1-8B loads as 14.9888 GiB (vllm#10517) against 8,030,261,248 x 2 B = 14.958 GiB: the
    0.031 GiB is 131072 positions x 128 x 2 B (vLLM rotary_embedding.py `_compute_cos_sin_cache`, cast to
    the model dtype). vLLM builds it for the config's max_position_embeddings, not --max-model-len.
    """
    dim = spec.qk_rope_head_dim or spec.head_dim or 0
    positions = spec.max_context or context or 0
    return int(positions * dim * 2)


def is_quantized(precision: str) -> bool:
    """Whether a serving precision is a quantized one (vLLM's V2 runner and sampler rules tell them apart)."""
    return precision not in ("bf16", "fp16", "auto")


def checkpoint_precision(spec: ModelSpec) -> str | None:
    """The serving precision a pre-quantized checkpoint already is ('fp8', 'awq', 'gptq', 'int8'), if any.

    NOTE: a compressed-tensors W4A16 checkpoint (Gemma 4's QAT releases, llm-compressor's GPTQ output) runs on
    the same 4-bit Marlin kernels as GPTQ (vLLM compressed_tensors_wNa16.py `CompressedTensorsWNA16`, which
    chooses MarlinLinearKernel: "MarlinLinearKernel for CompressedTensorsWNA16" in the T4 log of
    benchmarks/data/vllm_kv_logs.md); W8A16 and W8A8 integer weights are one byte, as int8. Its bytes come from
    the checkpoint (`weights_per_gpu`), so its own group size and unquantized layers are counted as they are.
    """
    q = (spec.quantization or "").lower()
    for name in ("awq", "gptq", "mxfp4", "fp8", "int8", "w8a8", "w8a16", "w4a16"):
        if name in q:
            return {"w8a8": "int8", "w8a16": "int8", "w4a16": "gptq"}.get(name, name)
    return None


def weights_per_gpu(spec: ModelSpec, precision: str, *, tp: int, pp: int, context: int | None = None) -> int:
    """Bytes of weights the busiest GPU holds: tensor-parallel shards of the matrices and of the vocabulary
    tables, plus what every rank keeps whole (norms, rotary cache), on the pipeline stage with most layers.

    NOTE: vLLM shards the vocabulary tables too (VocabParallelEmbedding / ParallelLMHead, padded to a multiple
    of 64 per rank) and replicates norms and routers; Qwen3-30B-A3B at TP4 loads 14.2474 GiB a rank against
    30.53e9 x 2 B / 4 = 14.22 GiB (vllm#17469). A pre-quantized checkpoint is priced from its real bytes where
    its header was read.
    """
    matrices, emb, head, rest = _matrix_split(spec)
    layers = max(spec.num_layers or 1, 1)
    per = SERVE_MATRIX_BYTES.get(precision, 2.0)
    own = checkpoint_precision(spec)
    if own == precision and spec.checkpoint_bytes:
        # Real bytes of the checkpoint: take the 16-bit vocabulary tables and norms out, the rest is matrices.
        matrix_bytes = max(spec.checkpoint_bytes - 2 * (emb + head + rest), 0)
    elif precision in EXPERT_ONLY:
        routed = M._breakdown_or_guess(spec).routed_experts
        matrix_bytes = routed * per + (matrices - routed) * 2
    else:
        matrix_bytes = matrices * per
    busiest = _pp_stage_layers(layers, pp)[0]
    per_rank = matrix_bytes * busiest / layers / tp + rest * 2 * busiest / layers
    vocab_share = 2 * (emb + head) / tp
    if pp > 1:
        vocab_share = 2 * max(emb, head or emb) / tp  # first stage holds the embedding, last the head
    return int(per_rank + vocab_share + _rotary_cache_bytes(spec, context))


def _pp_stage_layers(layers: int, pp: int) -> list[int]:
    """Layers per pipeline stage, busiest first.

    NOTE: vLLM get_pp_indices (0.20.2 vllm/distributed/utils.py:95-140): layers // pp each, the remainder
    spread one each over the stages before the last.
    """
    base, extra = divmod(layers, pp)
    stages = [base + (1 if i < extra else 0) for i in range(pp)]
    return sorted(stages, reverse=True)


# ---------------------------------------------------------------------------------------------------------
# KV cache layout per GPU
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KVPerRank:
    """Per token and per layer, on one tensor-parallel rank, in bytes; and the layer counts by kind."""

    full_bytes: float  # per token per full-attention layer
    sliding_bytes: float  # per token per sliding-window layer
    full_layers: int
    sliding_layers: int
    window: int | None
    state_bytes: float  # per sequence per recurrent layer
    state_layers: int
    mla: bool

    @property
    def bytes_per_token(self) -> float:
        """All layers of the model on this rank (before pipeline split)."""
        return self.full_bytes * self.full_layers + self.sliding_bytes * self.sliding_layers


def kv_per_rank(spec: ModelSpec, *, tp: int, kv_bytes: float, latent: bool = True) -> KVPerRank:
    """KV bytes per token per layer on one rank.

    NOTE: vLLM caches max(1, kv_heads // tp) heads a rank (0.20.2 vllm/config/model.py:1219-1230): past
    tp = kv_heads the heads are replicated. MLA (DeepSeek, Kimi) caches one latent of kv_lora_rank +
    qk_rope_head_dim per layer with no separate V, the same on every rank (kv_cache_interface.py:330-342
    `MLAAttentionSpec`; SGLang pool_configurator.py:379-386 likewise).
    """
    kv = spec.kv
    if kv is None or not (kv.full_layers or kv.sliding_layers):
        heads = spec.num_kv_heads or spec.num_attention_heads or 1
        per_layer = 2 * heads * (spec.head_dim or 128)
        full_layers, sliding_layers, full_el, slide_el, window = spec.num_layers or 1, 0, per_layer, 0, None
        state_el, state_layers = 0, 0
    else:
        full_layers, sliding_layers, window = kv.full_layers, kv.sliding_layers, kv.sliding_window
        full_el = kv.full_elements / full_layers if full_layers else 0
        slide_el = kv.sliding_elements / sliding_layers if sliding_layers else 0
        state_el = kv.state_elements / kv.state_layers if kv.state_layers else 0
        state_layers = kv.state_layers
    mla = bool(latent and spec.kv_lora_rank and kv is not None and kv.latent_elements)
    if mla:
        latent_per_layer = kv.latent_elements / max(full_layers + sliding_layers, 1)  # type: ignore[union-attr]
        return KVPerRank(
            full_bytes=latent_per_layer * kv_bytes,
            sliding_bytes=0,
            full_layers=full_layers + sliding_layers,
            sliding_layers=0,
            window=None,
            state_bytes=0,
            state_layers=0,
            mla=True,
        )
    total_kv = spec.num_kv_heads or spec.num_attention_heads or 1
    share = max(1, total_kv // tp) / total_kv
    return KVPerRank(
        full_bytes=full_el * share * kv_bytes,
        sliding_bytes=slide_el * share * kv_bytes,
        full_layers=full_layers,
        sliding_layers=sliding_layers,
        window=window,
        # NOTE: recurrent state is sharded over heads like the attention (vLLM mamba_utils shapes divide
        # the heads by tp); kept in the model dtype (mamba_ssm_cache_dtype "auto").
        state_bytes=state_el / tp * 2,
        state_layers=state_layers,
        mla=False,
    )


def kv_dtype_bytes(kv_cache_dtype: str, precision: str) -> float:
    """Bytes of one cached K or V element."""
    if kv_cache_dtype in ("auto", None):
        return 2.0  # the model dtype: bf16/fp16, also for fp8/awq/gptq weights
    if KV_DTYPE_BYTES.get(kv_cache_dtype):
        return float(KV_DTYPE_BYTES[kv_cache_dtype])
    if kv_cache_dtype in M.KV_TYPE_BYTES:
        return float(M.KV_TYPE_BYTES[kv_cache_dtype])
    raise ServePlanError(f"KV cache dtype '{kv_cache_dtype}' is unknown: use auto, fp8, q8_0 or q4_0.")


# ---------------------------------------------------------------------------------------------------------
# vLLM
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VllmDefaults:
    gpu_memory_utilization: float
    max_num_batched_tokens: int
    max_num_seqs: int
    block_size: int
    cudagraph_in_budget: bool  # >= 0.20: the CUDA graph estimate comes out of the KV budget
    token_line: str  # how "GPU KV cache size: N tokens" is computed: blocks | blocks_per_group | concurrency
    v0: bool  # the V0 engine (<= 0.7 by default; profiles max(max_model_len, 2048) tokens without chunking)


def vllm_defaults(
    version: tuple[int, ...], gpu: ServeGpu, *, context: int, serve: bool = True, mla: bool = False
) -> VllmDefaults:
    """vLLM's defaults for this GPU and version.

    NOTE: gpu_memory_utilization 0.9, 0.92 from 0.20.0 (0.19.1 vllm/config/cache.py:41; 0.20.0
    config/cache.py:66). Batch defaults (0.20.2 vllm/engine/arg_utils.py:2178-2260): `vllm serve` on a GPU of
    >= 70 GiB whose name lacks "a100" gets 8192 batched tokens and 1024 sequences, others 2048 and 256 (the
    offline LLM class 16384/1024 and 8192/256); >= 160 GiB gets 16384 for serve from ~0.30
    (0.30.0 arg_utils.py:2725-2740). 0.8.x used 1024 sequences everywhere (0.8.0 arg_utils.py:1686-1720).
    The V1 engine is the default from 0.8.0; V0 profiled max(max_model_len, 2048) tokens unless chunked
    prefill was on (auto-on past 32768 tokens, 2048 a chunk; 0.6.6.post1 config.py:1426-1442).
    CUDA graph memory comes out of the budget from 0.20.0 (envs.py:1725 VLLM_MEMORY_PROFILER_ESTIMATE_
    CUDAGRAPHS=1). The token line is blocks x block size, for hybrid models blocks // groups x block size
    up to 0.20.1, then int(concurrency x max_model_len) (0.20.2 kv_cache_utils.py:1684-1713).
    """
    util = 0.92 if version >= (0, 20) else 0.9
    v0 = version < (0, 8)
    big = gpu.total_bytes >= 70 * GiB and "a100" not in gpu.name.lower()
    if v0:
        seqs = 256
        tokens = 2048 if context > 32768 else max(context, 2048)
    elif version < (0, 9):
        # 0.8.0-0.8.4: 1024 sequences on every GPU; 0.8.5 gives 256 below 70 GiB (0.8.5.post1
        # engine/arg_utils.py:1596-1609, no A100 exception yet).
        big = gpu.total_bytes >= 70 * GiB
        seqs = 1024 if big or version < (0, 8, 5) else 256
        tokens = (8192 if serve else 16384) if big else (2048 if serve else 8192)
        tokens = min(tokens, seqs * context)
        seqs = min(seqs, tokens)
    else:
        if gpu.total_bytes >= 160 * GiB and version >= (0, 30):
            tokens, seqs = 16384, 1024
        elif big:
            tokens, seqs = (8192 if serve else 16384), 1024
        else:
            tokens, seqs = (2048 if serve else 8192), 256
        tokens = min(tokens, seqs * context)
        seqs = min(seqs, tokens)
    # NOTE: 16-token blocks; FlashMLA uses 64 on Hopper and later (vLLM attention backends' preferred
    # block size from 0.18); the page only rounds the pool, so the figure barely moves.
    block = 64 if mla and (gpu.compute_capability or 0) >= 9.0 else 16
    line = "blocks_per_group" if version < (0, 20, 2) else "concurrency"
    return VllmDefaults(util, tokens, seqs, block, version >= (0, 20), line, v0)


def _hidden_intermediate(spec: ModelSpec) -> tuple[int, int, int, int]:
    """(hidden, dense intermediate, expert intermediate, experts per token) with fallbacks for label specs."""
    hidden = spec.hidden_size or int(math.sqrt(max(spec.active_params, 1) / 12 / max(spec.num_layers or 32, 1)))
    inter = spec.intermediate_size or 4 * hidden
    if spec.is_moe and spec.num_experts and spec.experts_per_token:
        p = M._breakdown_or_guess(spec)
        layers = max(spec.num_layers or 1, 1)
        # routed expert params per layer = experts x 3 x hidden x expert_intermediate
        moe_inter = int(p.routed_experts / layers / spec.num_experts / 3 / max(hidden, 1)) or inter
        return hidden, inter, moe_inter, spec.experts_per_token
    return hidden, inter, 0, 0


# NOTE: architectures vLLM runs on its V2 model runner by default, by version (VLLM_USE_V2_MODEL_RUNNER unset):
# 0.22 vllm/config/vllm.py:69,518-532 (Qwen3, dense, unquantized); 0.23 :544-558 (+ Llama, Mistral); 0.24 :68-75,
# 550-561 (+ DeepseekV2, Qwen2Moe, GraniteMoe, quantized too); 0.25-0.28 any model that is neither hybrid nor
# attention-free, MoE only if listed (0.26 :605-622, 0.28 :691-710); 0.29 every model (:644-677).
_V2_DENSE_022 = {"Qwen3ForCausalLM"}
_V2_DENSE_023 = {"Qwen3ForCausalLM", "LlamaForCausalLM", "MistralForCausalLM"}
_V2_LISTED_024 = _V2_DENSE_023 | {"DeepseekV2ForCausalLM", "Qwen2MoeForCausalLM", "GraniteMoeForCausalLM"}


def vllm_v2_runner(version: tuple[int, ...], spec: ModelSpec, *, quantized: bool) -> bool:
    """Whether vLLM `version` runs this model on its V2 model runner by default (see the NOTE above)."""
    arch = spec.architecture or ""
    hybrid = bool(spec.kv and spec.kv.state_layers)
    if version < (0, 22):
        return False
    if version < (0, 23):
        return arch in _V2_DENSE_022 and not spec.is_moe and not quantized
    if version < (0, 24):
        return arch in _V2_DENSE_023 and not spec.is_moe and not quantized
    if version < (0, 25):
        return arch in _V2_LISTED_024
    if version < (0, 29):
        return not hybrid and (not spec.is_moe or arch in _V2_LISTED_024)
    return True


def sampler_bytes_per_logit(
    version: tuple[int, ...], *, v0: bool, seqs: int, flashinfer: bool | None = None, v2: bool = True
) -> float:
    """Bytes a dummy sampling run holds per element of its [seqs, vocab] logits, by the sampler vLLM uses.

    NOTE: read from vLLM's samplers (research notes in NOTES.md "vLLM activation peak"): PyTorch's sort-based
    top-k/top-p holds the model-dtype logits (2), an fp32 copy (4), sorted values and int64 indices (12) and the
    sort's scratch (reverse indices 8, CUB alternate buffers 12): 38 B (50 below 128 rows, where PyTorch sorts
    the whole tensor) (v1/sample/ops/topk_topp_sampler.py; aten SortStable.cu). FlashInfer's fused kernel and
    the Triton sampler hold logits, fp32 copy, masked logits and probabilities: 14 B. Paths by version: V0 and
    V1 up to 0.14 sort natively unless FlashInfer is installed (0.8-0.11: it is used when importable, and the
    pip wheel does not ship it; the Docker image does); ~0.15-0.20 use Triton (plus a persistent
    min(pow2(seqs), SMs) x vocab x 4 B buffer, counted by the caller); 0.21+ FlashInfer by default; the V2
    model runner's profile pass of 0.22-0.29 skips top-k/top-p (~4 B; models still on the V1 runner there keep
    FlashInfer's 14 B); 0.30+ warms the sampler up with penalties and logprobs (~12 B). Checked on 24 of the first 32
    logged profiles (batches 1-2 of benchmarks/data/vllm_kv_logs.csv) within 0.1 GiB.
    """
    native = 50.0 if seqs < 128 else 38.0
    if v0 or version < (0, 15):
        if flashinfer and version >= (0, 8) and not v0:
            return 14.0
        return native
    if version < (0, 21):
        return 14.0 if seqs >= 8 else native
    if (0, 22) <= version < (0, 30):
        return 4.0 if v2 else 14.0
    return 12.0 if version >= (0, 30) else 14.0


def _sm_count(gpu: ServeGpu) -> int:
    """Streaming multiprocessors (the Triton sampler's buffer has one row per SM): from the name where known."""
    name = gpu.name.lower()
    for key, sms in (
        ("h100", 132),
        ("h200", 132),
        ("h20", 78),
        ("b200", 148),
        ("a100", 108),
        ("l40", 142),
        ("4090", 128),
        ("5090", 170),
        ("3090", 82),
        ("a10", 72),
        ("l4", 58),
        ("t4", 40),
        ("a6000", 84),
    ):
        if key in name:
            return sms
    return 128  # fmt: skip


def _capture_sizes(largest: int) -> list[int]:
    """vLLM's CUDA graph capture sizes (0.20.2 vllm/config/vllm.py:1425-1490): [1, 2, 4], 8..248 by 8, then by 16."""
    sizes = [1, 2, 4, *range(8, 256, 8), *range(256, largest + 1, 16)]
    return [x for x in sizes if x <= largest]


# NOTE: vision-language and omni models' wrappers. vLLM embeds a multimodal model's tokens outside the compiled
# language model (the runner builds `inputs_embeds` with `embed_input_ids`, 0.28.0 v1/worker/gpu_model_runner.py
# `_preprocess`), so its embedding table is not an argument of a compiled kernel.
_MULTIMODAL_MARKERS = ("ForConditionalGeneration", "VL", "Vision", "Llava", "Omni", "MiniCPMV", "InternVL", "Mllama")


def multimodal_architecture(spec: ModelSpec) -> bool:
    arch = spec.architecture or ""
    return any(m in arch for m in _MULTIMODAL_MARKERS)


def compile_benchmark_bytes(
    spec: ModelSpec, *, tp: int, tokens: int, version: tuple[int, ...], v0: bool, eager: bool, text_only: bool = False
) -> int:
    """The transient peak of torch.compile's first run, which vLLM's profiling window counts: one random copy of
    the embedding table (this rank's vocabulary shard) and the lookup's [tokens, hidden] input and output.

    NOTE: from vLLM 0.11.1 (torch 2.9) vLLM turns on Inductor's combo kernels and their benchmarking wherever it
    compiles on a GPU (0.11.1 vllm/config/compilation.py:660-667; 0.28.0 :977-987). The first call into the
    compiled model is the profile run's dummy forward, after the peak counter's reset (0.28.0
    vllm/utils/mem_utils.py:291, v1/worker/gpu_worker.py:515-519), so the compile happens inside the window.
    Inductor times each candidate kernel on `rand_strided` copies of all its arguments, graph inputs included
    (torch 2.11 _inductor/scheduler.py:6892-6945, codegen/triton.py:5106-5125, _dynamo/testing.py:439-464); the
    embedding lookup lowers to a gather kernel whose argument is the whole [vocab/tp, hidden] table
    (_inductor/lowering.py:3763-3794). It is freed before the forward runs: the peak is the larger of this and
    the forward, not their sum. Read in the sources, not observed on a GPU: it reproduces the logged "peak
    activation 1.04 GiB" of Qwen2.5-7B-AWQ at 2,048 tokens (vLLM 0.26.0; table 1.015 GiB + 0.027), and the
    start-ups of 0.26-0.29 that advisor had priced 0.5-1.5 GiB too large (benchmarks/vllm_kv.py). A start with
    a warm compile cache skips Inductor and this copy. --enforce-eager turns compilation off (0.11.1
    config/vllm.py:440-444, 0.14.1 :660-666 via -O0, 0.28.0 :1284-1290).
    """
    if v0 or eager or version < (0, 11, 1) or (multimodal_architecture(spec) and not text_only):
        return 0
    hidden = spec.hidden_size or _hidden_intermediate(spec)[0]
    vocab = -(-(spec.vocab_size or 32000) // 64) * 64  # VocabParallelEmbedding pads to 64 (DEFAULT_VOCAB_PADDING_SIZE)
    return int(vocab / tp * hidden * 2 + 2 * tokens * hidden * 2)


def vllm_profile_bytes(
    spec: ModelSpec,
    *,
    tp: int,
    tokens: int,
    seqs: int,
    version: tuple[int, ...],
    v0: bool,
    gpu: ServeGpu,
    eager: bool,
    pp: int = 1,
    flashinfer: bool | None = None,
    quantized: bool = False,
    text_only: bool = False,
) -> dict[str, int]:
    """What vLLM's profiling run and start-up take besides the weights, per GPU: the activation peak of a dummy
    forward of `tokens` tokens or of the dummy sampling of `seqs` rows that follows it, the non-torch memory
    that appeared since the start-up snapshot, and the CUDA graph estimate (0.20+).

    NOTE: vLLM 0.20.2 v1/worker/gpu_model_runner.py:5788-5861 `profile_run`: the forward (`_dummy_run`) and the
    sampler (`_dummy_sampler_run`) run one after the other, so the peak is the larger of the two; the forward's
    [tokens, hidden] output stays alive through sampling (from 0.9.1). Forward peak, one MLP: eager (V0,
    --enforce-eager) residual + normed input + gate_up + activation + down output = tokens x (3h + 3i) x 2 B;
    torch.compile frees gate_up after the activation: tokens x (q + 2h + 3i) x 2 B (q = heads x head_dim / tp,
    i = intermediate / tp). Fused MoE adds its workspaces, min(tokens, 32768) x top_k x (max(2I, h) + I) x 2 B
    (fused_moe.py:1554-1603, I = expert intermediate / tp). The sampler is not split by tensor parallelism:
    every rank gathers the full vocabulary (logits_processor.py:75-86). Checked: Llama-3.1-8B profiled at
    20000 and 29000 tokens (V0, vllm#10517) peaks 2.07 and 2.99 GiB; this gives 2.06 and 2.99.
    """
    hidden, inter, moe_inter, top_k = _hidden_intermediate(spec)
    vocab = spec.vocab_size or 32000
    heads = spec.num_attention_heads or max(hidden // 128, 1)
    q = heads * (spec.head_dim or hidden // heads) / tp
    rows = min(seqs, tokens)
    i = inter / tp
    forward = tokens * ((3 * hidden if v0 or eager else q + 2 * hidden) + 3 * i) * 2
    if top_k:
        moe_i = moe_inter / tp
        forward = tokens * 3 * hidden * 2 + min(tokens, 32768) * top_k * (max(2 * moe_i, hidden) + moe_i) * 2
    v2 = not v0 and vllm_v2_runner(version, spec, quantized=quantized)
    c = sampler_bytes_per_logit(version, v0=v0, seqs=rows, flashinfer=flashinfer, v2=v2)
    sampler = rows * vocab * c + tokens * hidden * 2 + 2 * rows * hidden * 2
    if not v0 and (0, 15) <= version < (0, 21) and rows >= 8:
        sampler += min(2 ** math.ceil(math.log2(rows)), _sm_count(gpu)) * vocab * 4  # Triton sampler buffer
    compile_peak = compile_benchmark_bytes(
        spec, tp=tp, tokens=tokens, version=version, v0=v0, eager=eager, text_only=text_only
    )
    activation = max(forward, sampler, compile_peak)
    # NOTE: non-torch memory is what appeared outside torch since vLLM's start-up snapshot: V0 0.6.4 logged it
    # whole (CUDA context and cuBLAS, 0.35-0.45 GiB); later V0 and V1 up to 0.10 take the snapshot before
    # NCCL and custom all-reduce start (0.05 GiB on one GPU, 0.15-0.3 with tensor parallelism); from 0.11 the
    # snapshot comes after them (0.11.0 v1/worker/gpu_worker.py:169 vs 182): ~0.05 GiB for any layout.
    multi = tp > 1 or pp > 1
    if v0 and version < (0, 6, 5):
        non_torch = 0.40 * GiB
    elif v0:
        non_torch = (0.30 if multi else 0.07) * GiB
    elif version < (0, 11):
        non_torch = (0.15 if multi else 0.05) * GiB
    else:
        non_torch = 0.05 * GiB
    if v2 and version >= (0, 27):
        # NOTE: from 0.27 the budget charges everything allocated since the start-up snapshot (0.27.0
        # vllm/utils/mem_utils.py:314-326), and the V2 runner allocates its sampling state after it: penalty bin
        # counts (seqs x vocab int32) and prompt masks and grammar bitmasks (vocab / 32 int32 a row each)
        # (0.28.0 v1/worker/gpu/model_runner.py:397-429, penalties.py:32-42, structured_outputs.py:51).
        non_torch += seqs * vocab * 4.25
    cudagraph = 0.0
    if not eager and not v0 and not (v2 and version < (0, 29)):
        cudagraph = _cudagraph_bytes(spec, tp=tp, pp=pp, seqs=rows, tokens=tokens, version=version)
    return {
        "activation": int(activation),
        "warm_activation": int(max(forward, sampler)),  # a restart that finds its compiled kernels cached
        "non_torch": int(non_torch),
        "cudagraph": int(cudagraph),
    }


# NOTE: a captured CUDA graph keeps driver memory for its kernel nodes (the instantiated executable), and a rank's
# graph at any size holds every layer it runs: the cost grows with graphs x layers per rank, not with the width
# (NVIDIA's forum: ~64 KB a kernel node; SGLang's GLM-5.3 decode graph ~0.5 MiB a layer, sglang#37411). The
# activations all graphs share sit in one pool, captured largest first, that no graph keeps (0.20.0
# compilation/cuda_graph.py:200,331; gpu_model_runner.py:6090). Per layer and graph, from 16 V1 and 5 V0 logged
# captures (16 in benchmarks/data/vllm_cudagraph_logs.csv, checked by benchmarks/vllm_cudagraphs.py): dense
# models 0.20-0.39 MiB at one GPU, more with tensor parallelism (two all-reduce nodes a layer); MoE layers ~1.6x
# (Qwen3-235B TP8 0.56, GLM-5.2 TP4 0.53). The same model and graph set logged 0.52 and 2.35 GiB on two
# machines: +-50%. vLLM 0.20+ subtracts its own estimate, which read 0.96-1.21x what it then captured (median 1.16).
CUDAGRAPH_MIB_PER_LAYER = 0.30
CUDAGRAPH_MIB_PER_LAYER_TP = 0.36
CUDAGRAPH_MOE_FACTOR = 1.6
CUDAGRAPH_ESTIMATE_FACTOR = 1.15


def _cudagraph_bytes(spec: ModelSpec, *, tp: int, pp: int, seqs: int, tokens: int, version: tuple[int, ...]) -> int:
    """The CUDA graph memory vLLM estimates (0.20+: it comes out of the KV budget) or captures.

    NOTE: 0.20.2 gpu_model_runner.py:5949-6045 `profile_cudagraph_memory`: the first capture of each mode plus
    (graphs - 1) x the second capture's size; PIECEWISE graphs at every capture size up to min(2 x seqs, 512,
    batched tokens), FULL graphs at the decode sizes up to seqs (51 + 35 at 256 sequences). The shared pool is one
    layer's activations at the largest size; each graph adds its kernel nodes (the NOTE above). The V2 model
    runner estimates 0 up to 0.28 (0.28.0 v1/worker/gpu/model_runner.py:843-845; the caller skips it) and
    measures its graphs from 0.29 (model_runner.py:896-898, cudagraph_utils.py:718-810); the V1 runner, still used
    for many models up to 0.28, always estimated them (0.24 gpu_model_runner.py:6447).
    """
    hidden = spec.hidden_size or 4096
    layers = math.ceil((spec.num_layers or 32) / pp)
    largest = min(2 * seqs, 512, tokens)
    if version < (0, 11):  # 0.10: PIECEWISE only, every 8 tokens (the dennislee logs list 67 sizes up to 512)
        graphs = len([x for x in (1, 2, 4, *range(8, 513, 8)) if x <= largest])
    else:  # 0.11+: FULL_AND_PIECEWISE by default (0.11.1 config/compilation.py:371, vllm.py:810-811)
        graphs = len(_capture_sizes(largest)) + len(_capture_sizes(min(seqs, largest)))
    captured = cudagraph_captured_bytes(
        graphs=graphs, layers=layers, hidden=hidden, largest=largest, tp=tp, moe=spec.is_moe
    )
    return int(captured * (CUDAGRAPH_ESTIMATE_FACTOR if version >= (0, 20) else 1.0))


def cudagraph_captured_bytes(*, graphs: int, layers: int, hidden: int, largest: int, tp: int, moe: bool) -> float:
    """What capturing `graphs` CUDA graphs of `layers` decoder layers takes on one rank: the shared pool (one layer's
    activations at the `largest` size) and each graph's kernel nodes (the NOTE above)."""
    per_layer = (CUDAGRAPH_MIB_PER_LAYER_TP if tp > 1 else CUDAGRAPH_MIB_PER_LAYER) * MiB
    per_layer *= CUDAGRAPH_MOE_FACTOR if moe else 1.0
    return largest * hidden * 2 * 6 + graphs * layers * per_layer


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Pool:
    """A KV cache pool: the blocks, the tokens the engine reports, and requests of `context` tokens it holds."""

    num_blocks: int
    block_size: int
    kv_cache_tokens: int
    max_concurrency: float
    blocks_per_request: int
    groups: int
    bytes: int  # the pool's bytes on one GPU


def vllm_pool(
    kvr: KVPerRank,
    available: int,
    *,
    context: int,
    block: int,
    max_num_batched_tokens: int,
    version: tuple[int, ...],
    layer_share: float = 1.0,
    token_line: str = "concurrency",
    in_flight_batches: int = 1,
) -> Pool:
    """Blocks, reported tokens and concurrency of vLLM's pool for `available` bytes on one worker.

    NOTE: 0.20.2 vllm/v1/core/kv_cache_utils.py: one group when every layer has the same spec, num_blocks =
    available // (page x layers) (:930-947); hybrid models (sliding + full, attention + Mamba) are split into
    groups of `group_size` layers, group_size = the fewest layers of one kind (or the most, when most < 1.5 x
    fewest, from 0.19) (:1052-1171), every group shares one pool of pages, so num_blocks = available //
    (page x group_size). A request of L tokens needs cdiv(L, block) blocks in a full group, cdiv(min(W - 1 +
    max_num_batched_tokens, L), block) + 1 in a sliding one and 1 in a Mamba one (kv_cache_interface.py:186-195,
    :421-452, :540-548); concurrency = num_blocks / the sum over groups (:872-890). Pages of different sizes
    are unified by enlarging blocks (Mamba: the attention block grows until its page holds the state,
    vllm/model_executor/models/config.py HybridAttentionMambaModelConfig). From 0.26 a sliding group holds
    W - 1 + max_in_flight_tokens, max_in_flight_tokens = max_concurrent_batches x max_num_batched_tokens
    (`in_flight_batches`: see `vllm_in_flight_batches`; 0.26.0 kv_cache_interface.py:584, config/vllm.py
    `max_in_flight_tokens`; 0.25.0 still adds max_num_batched_tokens once, kv_cache_interface.py:561).
    V0 and V1 before 0.9 cached every layer for the full context: tokens = blocks x block, concurrency =
    tokens / L (0.8.5.post1 kv_cache_utils.py:632-638).
    """
    full_n = math.ceil(kvr.full_layers * layer_share)
    slide_n = math.ceil(kvr.sliding_layers * layer_share)
    state_n = math.ceil(kvr.state_layers * layer_share)
    hybrid_ok = version >= (0, 9)
    if not hybrid_ok or (kvr.sliding_bytes and not kvr.window):
        full_n, slide_n = full_n + slide_n, 0
    kinds: list[tuple[str, int, float]] = []  # (kind, layers, bytes per token per layer or per state)
    if full_n:
        kinds.append(("full", full_n, kvr.full_bytes if kvr.full_layers else kvr.sliding_bytes))
    if slide_n:
        kinds.append(("sliding", slide_n, kvr.sliding_bytes))
    if state_n and kvr.state_bytes and hybrid_ok:
        kinds.append(("state", state_n, kvr.state_bytes))
    if not kinds:
        return Pool(0, block, 0, 0.0, 1, 0, 0)
    if len(kinds) == 1:
        _kind, n, per = kinds[0]
        page = block * per
        num_blocks = max(int(available // (page * n)), 0)
        need = _cdiv(context, block)
        tokens = num_blocks * block
        conc = num_blocks / need if hybrid_ok else tokens / context
        return Pool(num_blocks, block, tokens, conc, need, 1, int(num_blocks * page * n))
    # Page sizes unified: the largest page sets it, smaller pages get bigger blocks.
    token_kinds = [(k, n, per) for k, n, per in kinds if k != "state"]
    state = [(k, n, per) for k, n, per in kinds if k == "state"]
    page = max(block * per for _, _, per in token_kinds) if token_kinds else 0
    if state:
        state_page = state[0][2]
        if token_kinds and page < state_page:
            smallest = min(per for _, _, per in token_kinds)
            page = _cdiv(int(state_page), int(block * smallest)) * block * smallest
        page = max(page, state_page)
    blocks_of = {k: max(int(page // per), 1) if k != "state" else 0 for k, _, per in kinds}
    counts = [n for _, n, _ in kinds]
    group_size = min(counts)
    if version >= (0, 19) and max(counts) < 1.5 * min(counts):
        group_size = max(counts)
    groups = {k: _cdiv(n, group_size) for k, n, _ in kinds}
    num_blocks = max(int(available // (page * group_size)), 0)
    need = 0
    for k, _, _ in kinds:
        if k == "full":
            need += groups[k] * _cdiv(context, blocks_of[k])
        elif k == "sliding":
            window = min((kvr.window or context) - 1 + in_flight_batches * max_num_batched_tokens, context)
            need += groups[k] * (_cdiv(window, blocks_of[k]) + 1)
        else:
            need += groups[k]
    conc = num_blocks / need if need else 0.0
    n_groups = sum(groups.values())
    min_block = min(b for k, b in blocks_of.items() if k != "state") if token_kinds else block
    tokens = num_blocks // n_groups * min_block if token_line == "blocks_per_group" else int(conc * context)
    return Pool(num_blocks, min_block, tokens, conc, need, n_groups, int(num_blocks * page * group_size))


def vllm_in_flight_batches(version: tuple[int, ...], *, v2_runner: bool, pp: int) -> int:
    """How many scheduled batches a sliding-window group must hold blocks for (vLLM's max_concurrent_batches).

    NOTE: 0.26.0 vllm/config/vllm.py `max_concurrent_batches`: with async scheduling the V2 model runner keeps
    pp + 1 batches in flight, the V1 runner 2 when pp = 1 (it does not overlap with PP) and pp otherwise; without
    async scheduling, pp. Async scheduling is on by default unless speculative decoding, a pooling model or an
    executor without it turns it off (`__post_init__`, :1059-1107); plans use none of those. Before 0.26 the
    sliding term counted one batch. The T4 Gemma-4 log (0.29.0) reproduces to the token only with 2 x 2048
    (benchmarks/data/vllm_kv_logs.md, xbill_gemma4_e2b_qat_t4_0290).
    """
    if version < (0, 26):
        return 1
    if v2_runner:
        return pp + 1
    return 2 if pp <= 1 else pp


def vllm_memory(
    spec: ModelSpec,
    gpu: ServeGpu,
    opts: ServeOptions,
    *,
    precision: str,
    tp: int,
    pp: int,
    context: int,
) -> dict[str, Any]:
    """vLLM's start-up accounting on the busiest GPU, term by term, and the KV pool it leaves.

    NOTE: available KV = requested - weights - activation peak - non-torch - CUDA graphs (from 0.20), with
    requested = ceil(total x gpu_memory_utilization) (0.20.2 vllm/v1/worker/gpu_worker.py:332-485,
    vllm/v1/worker/utils.py:403-423; V0 0.6.4 worker.py `total*util - peak_torch - non_torch`). The pool is
    the minimum over workers (kv_cache_utils.py:2033-2046): the busiest pipeline stage sets it.
    """
    version = opts.version or LATEST["vllm"]
    kvr = kv_per_rank(spec, tp=tp, kv_bytes=kv_dtype_bytes(opts.kv_cache_dtype, precision), latent=version >= (0, 6, 5))
    d = vllm_defaults(version, gpu, context=context, serve=opts.serve, mla=kvr.mla)
    util = opts.gpu_memory_utilization or d.gpu_memory_utilization
    tokens = opts.max_num_batched_tokens or d.max_num_batched_tokens
    seqs = opts.max_num_seqs or d.max_num_seqs
    requested = math.ceil(gpu.total_bytes * util)
    weights = weights_per_gpu(spec, precision, tp=tp, pp=pp, context=context)
    # NOTE: --language-model-only (0.17+: 0.17.0 engine/arg_utils.py; absent from 0.16.0) sets every modality's
    # limit to 0, and the towers are then never built or loaded (0.26.0 config/multimodal.py:77-79,325;
    # model_executor/models/interfaces.py:279-296 `_mark_tower_model`), so the model runs as a text model.
    text_only = opts.language_model_only and version >= (0, 17)
    if text_only:
        weights -= int(2 * M._breakdown_or_guess(spec).towers / tp)
    quantized = is_quantized(precision)
    prof = vllm_profile_bytes(
        spec, tp=tp, tokens=tokens, seqs=seqs, version=version, v0=d.v0, gpu=gpu, eager=opts.enforce_eager, pp=pp,
        flashinfer=opts.flashinfer, quantized=quantized, text_only=text_only,
    )  # fmt: skip
    in_budget = prof["cudagraph"] if d.cudagraph_in_budget else 0
    available = requested - weights - prof["activation"] - prof["non_torch"] - in_budget
    layers = max(spec.num_layers or 1, 1)
    share = _pp_stage_layers(layers, pp)[0] / layers
    pool = vllm_pool(
        kvr,
        max(available, 0),
        context=context,
        block=d.block_size,
        max_num_batched_tokens=tokens,
        version=version,
        layer_share=share,
        token_line=d.token_line,
        in_flight_batches=vllm_in_flight_batches(
            version, v2_runner=vllm_v2_runner(version, spec, quantized=quantized), pp=pp
        ),
    )
    outside = 0 if d.cudagraph_in_budget else prof["cudagraph"]
    return {
        "engine_version": ".".join(map(str, version)),
        "total_bytes": gpu.total_bytes,
        "gpu_memory_utilization": util,
        "requested_bytes": requested,
        "weights_bytes": weights,
        "activation_bytes": prof["activation"],
        "warm_start_bytes": prof["activation"] - prof["warm_activation"],
        "non_torch_bytes": prof["non_torch"],
        "cudagraph_bytes": prof["cudagraph"],
        "cudagraph_in_budget": d.cudagraph_in_budget,
        "cudagraph_outside_budget_bytes": outside,
        "available_kv_bytes": available,
        "kv_cache_bytes": pool.bytes,
        "kv_cache_tokens": pool.kv_cache_tokens,
        "num_blocks": pool.num_blocks,
        "block_size": pool.block_size,
        "blocks_per_request": pool.blocks_per_request,
        "kv_groups": pool.groups,
        "max_concurrency": pool.max_concurrency,
        "max_num_batched_tokens": tokens,
        "max_num_seqs": seqs,
        "kv_bytes_per_token": kvr.bytes_per_token * share,
        "mla": kvr.mla,
        "headroom_bytes": gpu.total_bytes - requested,  # what vLLM leaves to others (and, before 0.20, graphs)
    }


# ---------------------------------------------------------------------------------------------------------
# SGLang
# ---------------------------------------------------------------------------------------------------------

# NOTE: SGLang 0.5.23 sizes its pool from the memory free at start-up, after the CUDA context: ~0.5-1 GiB
# below the total on a fresh GPU (srt/distributed/bootstrap.py:193-223; logs in sglang_logs.csv: 23.18 GiB
# free of a 24 GiB card before loading).
SGLANG_CUDA_CONTEXT = int(0.6 * GiB)


SGLANG_HYBRID_SWA_PREFIXES = (
    "Llama4", "DeepseekV4", "GptOss", "GraniteSWA", "GraniteMoeSWA", "MiMoV2", "Step3p5", "Step3p7", "Gemma4",
    "Laguna", "Mellum", "MuseGlimmer", "Inkling", "Beam",
)  # fmt: skip
DSA_MODEL_TYPES = frozenset({"deepseek_v32", "glm_moe_dsa"})


def sglang_defaults(gpu: ServeGpu, *, tp: int, pp: int, version: tuple[int, ...], mla: bool) -> dict[str, Any]:
    """SGLang's default --mem-fraction-static, chunk and graph batch for this GPU (0.5.23
    srt/arg_groups/memory_hook.py:47-399; 0.4.0 by TP size only, srt/server_args.py:158-168)."""
    gpu_mib = gpu.total_bytes / MiB
    if version < (0, 4, 10):
        table = {1: 0.88, 2: 0.87, 4: 0.85, 8: 0.81, 16: 0.79}
        frac = table.get(tp * pp, 0.79)
        chunk = 2048 if gpu_mib < 25000 else 8192
        return {"mem_fraction_static": frac, "chunked_prefill_size": chunk, "cuda_graph_max_bs": 160}
    if version < (0, 5, 3):
        # 0.4.10-0.5.2: a reserve by GPU size (0.4.10.post2 srt/server_args.py:307-351).
        n = tp * pp
        if gpu_mib < 35 * 1024:
            reserved = (2.8 + n / 10) * 1024
        elif gpu_mib < 90 * 1024:
            reserved = (9.5 + n / 2) * 1024
        elif gpu_mib < 160 * 1024:
            reserved = (12 + n / 2) * 1024
        else:
            reserved = 32 * 1024
        chunk = 2048 if gpu_mib < 35 * 1024 else 8192 if gpu_mib < 160 * 1024 else 16384
        frac = round((gpu_mib - reserved) / gpu_mib, 3)
        return {"mem_fraction_static": frac, "chunked_prefill_size": chunk, "cuda_graph_max_bs": 160}
    if gpu_mib < 20480:
        chunk, bs = 2048, 8
    elif gpu_mib < 35840:
        chunk, bs = 4096, (160 if tp >= 4 else 48)
    elif gpu_mib < 61440:
        chunk, bs = 4096, (160 if tp >= 4 else 32)
    elif gpu_mib < 163840:
        chunk, bs = 8192, (512 if tp >= 4 else 256)
    else:
        chunk, bs = 16384, 512
    reserved = 512 + 1.5 * max(chunk, 2048) + tp * pp / 8 * 1024 + 2 * bs
    if version >= (0, 5, 10):  # prefill CUDA graphs on by default: 8 MiB a captured size (MLA: 1.5 GiB)
        reserved += 1536 if mla else 8 * _sglang_prefill_sizes(chunk)
    if gpu_mib > 61440:
        reserved = max(reserved, 10240)
    frac = round((gpu_mib - reserved) / gpu_mib, 3)
    return {"mem_fraction_static": frac, "chunked_prefill_size": chunk, "cuda_graph_max_bs": bs}


def _sglang_prefill_sizes(chunk: int) -> int:
    """Captured prefill sizes (srt/arg_groups/cuda_graph_hook.py:480-497): 42 at 2048, 50 at 4096, 58 at 8192."""
    sizes = list(range(4, 33, 4)) + list(range(48, 257, 16)) + list(range(288, 513, 32))
    sizes += list(range(576, 1025, 64)) + list(range(1280, 4097, 256)) + list(range(4608, 65537, 512))
    return sum(1 for s in sizes if s <= chunk)


def sglang_memory(
    spec: ModelSpec, gpu: ServeGpu, opts: ServeOptions, *, precision: str, tp: int, pp: int, context: int
) -> dict[str, Any]:
    """SGLang's KV pool: max_total_num_tokens = (free at start x fraction - weights) / cell.

    NOTE: 0.5.23 srt/mem_cache/kv_cache_configurator.py:2990-3060 (`rest = available - pre x (1 - f)`),
    cell from pool_configurator.py:340-535 (MHA max(1, kv_heads // tp) x (k + v) x layers x bytes; MLA the
    latent, not divided by TP; hybrid sliding models: full cell + 0.8 x sliding cell); request slots
    min(clamp(tokens / context x 512, 2048, 4096), tokens // 2) (:3119-3172).
    """
    version = opts.version or LATEST["sglang"]
    kvr = kv_per_rank(spec, tp=tp, kv_bytes=kv_dtype_bytes(opts.kv_cache_dtype, precision))
    d = sglang_defaults(gpu, tp=tp, pp=pp, version=version, mla=kvr.mla)
    frac = opts.gpu_memory_utilization or d["mem_fraction_static"]
    free = gpu.free_bytes if gpu.free_bytes is not None else gpu.total_bytes
    pre = free - SGLANG_CUDA_CONTEXT
    weights = weights_per_gpu(spec, precision, tp=tp, pp=pp, context=context)
    layers = max(spec.num_layers or 1, 1)
    share = _pp_stage_layers(layers, pp)[0] / layers
    # Only SGLang's hybrid-SWA architectures get a smaller sliding pool; others (Mistral, Gemma 2/3) keep a
    # full pool in every layer (0.5.23 srt/configs/model_config.py:2651-2690 `is_hybrid_swa_model`).
    arch = spec.architecture or ""
    swa = bool(kvr.sliding_layers) and any(arch.startswith(a) for a in SGLANG_HYBRID_SWA_PREFIXES)
    cell = kvr.full_bytes * kvr.full_layers * share
    if kvr.mla and (spec.model_type or "") in DSA_MODEL_TYPES:
        # NOTE: sparse-attention models add the indexer's key cache, 128 fp8 values + a 4 B scale a layer
        # (0.5.23 srt/model_executor/pool_configurator.py:399-409, :560-635).
        cell += 132 * kvr.full_layers * share
    if swa:
        cell += 0.8 * kvr.sliding_bytes * kvr.sliding_layers * share
    else:
        cell += kvr.sliding_bytes * kvr.sliding_layers * share
    budget = pre * frac - weights
    slots_guess = 2048
    state = kvr.state_bytes * kvr.state_layers * share * slots_guess / 3 if kvr.state_layers else 0
    budget -= state
    page = 64 if kvr.mla and (gpu.compute_capability or 0) >= 9.0 else 1
    tokens = max(int(budget // cell // page * page), 0) if cell else 0
    slots = min(max(min(int(tokens / max(context, 1) * 512), 4096), 2048), tokens // 2) if tokens else 0
    return {
        "engine_version": ".".join(map(str, version)),
        "total_bytes": gpu.total_bytes,
        "mem_fraction_static": frac,
        "pre_load_free_bytes": pre,
        "weights_bytes": weights,
        "mamba_state_bytes": int(state),
        "kv_cache_bytes": int(tokens * cell),
        "kv_cache_tokens": tokens,
        "max_running_requests": slots,
        "max_concurrency": min(tokens / context, slots) if context else 0.0,
        "chunked_prefill_size": d["chunked_prefill_size"],
        "cuda_graph_max_bs": d["cuda_graph_max_bs"],
        "kv_bytes_per_token": cell,
        "req_to_token_bytes": (slots + 1) * (context + 4) * 4,
        "headroom_bytes": int(gpu.total_bytes - pre * frac),
    }


# ---------------------------------------------------------------------------------------------------------
# llama-server
# ---------------------------------------------------------------------------------------------------------

# NOTE: llama-server's defaults (tools/server, llama.cpp 0c1e57098 in llama-cpp-python 0.3.36): 4 slots
# (`-np` auto) sharing one unified KV pool of `-c` cells, `-fa auto` (on where the device supports it;
# quantized V forces it on), micro-batch 512, one logits row per slot; `--fit` keeps 1024 MiB free a device.
LLAMA_SERVER_SLOTS = 4
LLAMA_SERVER_FIT_TARGET = 1024 * MiB
LLAMA_KV_TYPES = ("f16", "q8_0", "q4_0")


def llama_server_memory(
    spec: ModelSpec, gpu: ServeGpu, opts: ServeOptions, *, precision: str, gpus: int, context: int, slots: int
) -> dict[str, Any]:
    """llama-server with every layer on `gpus` GPUs (`-sm layer`): weights split by layers, one unified KV pool
    of context x slots cells, a compute buffer on each GPU, the output layer on the last.

    NOTE: -sm layer hands layer i to the first device whose cumulative share of free memory passes
    i / (n_layer + 1) (llama-model.cpp `llm_load_tensors`); KV follows the layers; each device reserves its own
    compute buffer (llama-context.cpp `sched_reserve`). `-c` is the whole pool, shared by every slot
    (`kv_unified`), rounded up to 256 cells.
    """
    kv_type = opts.kv_cache_dtype if opts.kv_cache_dtype not in ("auto", None) else "f16"
    if kv_type in ("fp8", "fp8_e4m3", "fp8_e5m2"):
        raise ServePlanError("llama.cpp has no fp8 KV cache: use --kv-cache-dtype q8_0 or q4_0 with llama.cpp.")
    if kv_type not in M.KV_TYPE_BYTES:
        raise ServePlanError(f"KV cache dtype '{kv_type}' is not a llama.cpp cache type: use f16, q8_0 or q4_0.")
    flash = True  # -fa auto turns it on for CUDA/Metal; a quantized V cache requires it
    settings = M.LlamaCppSettings(
        kv_cache_type=kv_type, flash_attn=flash, n_outputs=1, n_parallel=slots, swa_full=False
    )
    n_ctx = M.llama_context(context * slots)
    weights = M.weight_bytes(spec, precision).total
    kv = M.kv_cache_bytes(spec, n_ctx, dtype_bytes=M.KV_TYPE_BYTES[kv_type], runtime="llama.cpp", llama=settings)
    # Recurrent layers keep one state per slot, not per cell.
    if spec.kv is not None and spec.kv.state_elements:
        kv += spec.kv.state_elements * 4 * (slots - 1)
    compute = M.llama_compute_buffer(spec, n_ctx, batch=slots, llama=settings)
    per_gpu_weights = int(weights / gpus)
    per_gpu_kv = int(kv / gpus)
    used = per_gpu_weights + per_gpu_kv + compute + int(M.CUDA_CONTEXT)
    free = gpu.free_bytes if gpu.free_bytes is not None else gpu.total_bytes
    return {
        "engine_version": "llama.cpp 0c1e57098",
        "total_bytes": gpu.total_bytes,
        "weights_bytes": per_gpu_weights,
        "kv_cache_bytes": per_gpu_kv,
        "compute_buffer_bytes": compute,
        "cuda_context_bytes": int(M.CUDA_CONTEXT),
        "used_bytes": used,
        "fit_target_bytes": LLAMA_SERVER_FIT_TARGET,
        "fits": used + LLAMA_SERVER_FIT_TARGET <= free,
        "n_ctx": n_ctx,
        "slots": slots,
        "kv_cache_tokens": n_ctx,
        "max_concurrency": n_ctx / context if context else 0.0,
        "kv_cache_type": kv_type,
        "kv_bytes_per_token": kv / max(n_ctx, 1),
        "headroom_bytes": max(free - used, 0),
    }


# ---------------------------------------------------------------------------------------------------------
# Throughput under load
# ---------------------------------------------------------------------------------------------------------

# NOTE: fraction of datasheet bandwidth a server's decode step reaches. vLLM and SGLang replay CUDA graphs,
# so a step is the weight stream plus paged attention: gpt-fast reaches ~0.85 of bandwidth at batch 1 with
# graphs; vLLM's Llama-3.1-8B bf16 on an H100 SXM decodes ~145 tok/s alone (~0.7 of 3.35 TB/s once the
# step's fixed cost is out). llama.cpp's CUDA GEMV 0.75 (advisor.costmodel.speed EFFICIENCY).
SERVE_BW_EFFICIENCY = {"vllm": 0.75, "sglang": 0.75, "llama.cpp": 0.70}
# NOTE: dense tensor-core throughput a batched decode or prefill step reaches: ~0.6 for cuBLAS GEMMs with
# the attention and small ops around them (the same figure advisor.costmodel.speed uses for prefill);
# llama.cpp's quantized MMQ kernels run about half of that on batched tokens.
SERVE_MM_EFFICIENCY = {"vllm": 0.6, "sglang": 0.6, "llama.cpp": 0.3}
# NOTE: a step's fixed cost: scheduling, sampling and the graph launch, ~0.5 ms in vLLM V1 and SGLang
# (V1's async scheduling overlaps most of it); llama-server's slot loop and sampling ~1 ms.
SERVE_STEP_OVERHEAD_S = {"vllm": 0.5e-3, "sglang": 0.5e-3, "llama.cpp": 1.0e-3}
# NOTE: tensor parallelism adds two all-reduces of the hidden state a layer. NVLink with vLLM's custom
# all-reduce: ~8 us each for decode-sized messages; over PCIe (NCCL ring) ~25 us and ~10 GB/s effective;
# across nodes (InfiniBand / RoCE, pipeline parallel sends one activation a stage) ~30 us and 20 GB/s.
INTERCONNECT = {
    "nvlink": {"latency_s": 8e-6, "gbps": 150.0},
    "pcie": {"latency_s": 25e-6, "gbps": 10.0},
    "network": {"latency_s": 30e-6, "gbps": 20.0},
}
NVLINK_NAMES = ("sxm", "h200", "b200", "b300", "gb200", "gh200", "mi300", "mi325", "mi355", "mi250")


def interconnect(gpu: ServeGpu) -> str:
    """The link between GPUs of one node that tensor parallelism uses: NVLink/Infinity Fabric on SXM/OAM
    boards, PCIe otherwise (an assumption: some PCIe boards carry NVLink bridges)."""
    name = gpu.name.lower()
    return "nvlink" if any(k in name for k in NVLINK_NAMES) else "pcie"


@dataclass(frozen=True)
class Run:
    """How a plan runs: the engine, tensor- and pipeline-parallel sizes and the link between its GPUs."""

    engine: str
    tp: int = 1
    pp: int = 1
    link: str = "pcie"


def _weights_read(spec: ModelSpec, precision: str, *, tp: int, pp: int, batch: int, engine: str) -> float:
    """Weight bytes one GPU streams per decode step for `batch` tokens: the routed experts no token picked
    are not read, nor the tables a token only looks a row up in (an untied input embedding, Gemma 3n/4's
    per-layer embeddings: 4.4 of E2B's 9.6 GiB), as in the single-stream model (`speed.bytes_per_token`)."""
    from advisor.costmodel.speed import bytes_per_token, experts_read_fraction

    if engine == "llama.cpp":
        read = bytes_per_token(spec, precision, depth=0, batch=batch)
        return (read["layers"] + read["head"] + read["embedding_rows"]) / max(tp * pp, 1)
    total = weights_per_gpu(spec, precision, tp=tp, pp=pp)
    p = M._breakdown_or_guess(spec)
    routed = p.routed_experts * SERVE_MATRIX_BYTES.get(precision, 2.0) / (tp * pp)
    # 16-bit lookup tables, sharded over tensor-parallel ranks like the vocabulary (VocabParallelEmbedding).
    untied_input = p.embedding if p.lm_head and not spec.tied_embeddings else 0
    looked_up = 2 * (p.lookup + untied_input) / (tp * pp)
    return max(total - routed * (1 - experts_read_fraction(spec, batch)) - looked_up, 0.0)


def decode_step(
    spec: ModelSpec, precision: str, gpu: ServeGpu, kvr: KVPerRank, run: Run, *, batch: int, depth: int
) -> dict[str, float]:
    """One decode step of `batch` sequences at `depth` cached tokens each: seconds, and which bound set it.

    A roofline: each GPU streams its weights and its share of the batch's KV cache at the bandwidth, and
    multiplies 2 x active parameters per token at the tensor throughput; the slower sets the step. Pipeline
    stages run one after the other for a token (the batch split into one micro-batch a stage keeps every
    stage busy, so aggregate throughput scales but per-token latency does not).
    """
    engine, tp, pp, link = run.engine, run.tp, run.pp, run.link
    micro = max(math.ceil(batch / pp), 1)
    bw = (gpu.bandwidth_gbps or 0) * 1e9 * SERVE_BW_EFFICIENCY[engine]
    flops_rate = (gpu.tflops_16bit or 0) * 1e12 * SERVE_MM_EFFICIENCY[engine]
    weights = _weights_read(spec, precision, tp=tp, pp=pp, batch=micro, engine=engine)
    window = kvr.window or depth
    kv = micro * (
        kvr.full_bytes * kvr.full_layers * depth + kvr.sliding_bytes * kvr.sliding_layers * min(depth, window)
    )
    kv += micro * kvr.state_bytes * kvr.state_layers * 2  # a recurrent state is read and written each step
    kv /= pp
    memory_s = (weights + kv) / bw if bw else math.inf
    flops = 2 * spec.active_params * micro / (tp * pp)
    heads = spec.num_attention_heads or 1
    attn_flops = 4 * micro * depth * heads * (spec.head_dim or 128) * (kvr.full_layers + kvr.sliding_layers) / (tp * pp)
    compute_s = (flops + attn_flops) / flops_rate if flops_rate else 0.0
    comm = 0.0
    if tp > 1:
        layers = (spec.num_layers or 1) / pp
        c = INTERCONNECT[link]
        comm = 2 * layers * (c["latency_s"] + micro * (spec.hidden_size or 4096) * 2 / (c["gbps"] * 1e9))
    if pp > 1:
        c = INTERCONNECT["network" if link == "network" else link]
        comm += (pp - 1) / pp * (c["latency_s"] + micro * (spec.hidden_size or 4096) * 2 / (c["gbps"] * 1e9))
    stage = max(memory_s, compute_s) + comm
    per_token = stage * pp + SERVE_STEP_OVERHEAD_S[engine]
    return {
        "seconds": per_token,
        "memory_s": memory_s,
        "compute_s": compute_s,
        "comm_s": comm,
        "bound": "compute" if compute_s > memory_s else "memory",
    }


def prefill_seconds(
    spec: ModelSpec, precision: str, gpu: ServeGpu, kvr: KVPerRank, run: Run, *, prompt: int, running: int,
    depth: int, chunk: int,
) -> float:  # fmt: skip
    """Time to first token for a `prompt`-token prompt arriving while `running` sequences decode.

    With chunked prefill (vLLM V1, SGLang, llama-server's batch) each step carries the running sequences'
    decode tokens and up to chunk - running prompt tokens: the prompt takes cdiv(prompt, chunk - running)
    steps, each a `chunk`-token forward (compute-bound) that also streams the weights and the cache.
    """
    engine, tp, pp = run.engine, run.tp, run.pp
    share = max(chunk - running, 64)
    steps = _cdiv(prompt, share)
    tokens = min(prompt, share) + running
    flops_rate = (gpu.tflops_16bit or 0) * 1e12 * SERVE_MM_EFFICIENCY[engine]
    heads = spec.num_attention_heads or 1
    layers = kvr.full_layers + kvr.sliding_layers
    linear = 2 * spec.active_params * tokens / (tp * pp)
    # attention of the prompt against itself (causal: half the square), spread over the chunks
    attn = 2 * prompt * prompt * heads * (spec.head_dim or 128) * layers / (tp * pp) / steps
    compute = (linear + attn) / flops_rate if flops_rate else math.inf
    memory = decode_step(spec, precision, gpu, kvr, run, batch=max(running, 1), depth=depth)
    step = max(compute * pp, memory["seconds"]) + SERVE_STEP_OVERHEAD_S[engine]
    return steps * step


def load_table(
    spec: ModelSpec, precision: str, gpu: ServeGpu, kvr: KVPerRank, run: Run, *, context: int, prompt: int,
    chunk: int, batches: list[int],
) -> list[dict[str, Any]]:  # fmt: skip
    """Per-user and aggregate decode tokens/s and TTFT at each batch, at half the context deep on average."""
    depth = max(context // 2, 1)
    rows = []
    for b in batches:
        step = decode_step(spec, precision, gpu, kvr, run, batch=b, depth=depth)
        ttft = prefill_seconds(
            spec, precision, gpu, kvr, run, prompt=prompt, running=max(b - 1, 0), depth=depth, chunk=chunk
        )
        per_user = 1 / step["seconds"] if step["seconds"] > 0 else None
        rows.append(
            {
                "users": b,
                "decode_tok_s_per_user": per_user,
                "aggregate_tok_s": per_user * b if per_user else None,
                "ttft_s": ttft,
                "bound": step["bound"],
            }
        )
    return rows


def compute_bound_batch(
    spec: ModelSpec, precision: str, gpu: ServeGpu, *, engine: str, tp: int, pp: int, limit: int = 65536
) -> int | None:
    """The smallest batch at which the weight matrices' arithmetic takes longer than streaming them: where the
    linear layers turn compute-bound (B* ~ tensor FLOPs / bandwidth x bytes per weight / 2). Attention over
    the KV cache stays memory-bound at any batch (each sequence reads its own cache), so at long contexts the
    whole step may stay memory-bound past B*. None when the GPU's tensor throughput is unknown."""
    bw = (gpu.bandwidth_gbps or 0) * 1e9 * SERVE_BW_EFFICIENCY[engine]
    rate = (gpu.tflops_16bit or 0) * 1e12 * SERVE_MM_EFFICIENCY[engine]
    if not bw or not rate:
        return None
    b = 1
    while b <= limit:
        weights = _weights_read(spec, precision, tp=tp, pp=pp, batch=b, engine=engine)
        if 2 * spec.active_params * b / (tp * pp) / rate >= weights / bw:
            return b
        b = b + max(b // 8, 1)
    return None


# ---------------------------------------------------------------------------------------------------------
# Planning: layouts, precisions, commands
# ---------------------------------------------------------------------------------------------------------


def tp_problem(spec: ModelSpec, tp: int) -> str | None:
    """Why `tp` cannot split this model's attention (vLLM and SGLang assert it), or None.

    NOTE: vLLM's attention layers require num_heads % tp == 0 and either kv_heads % tp == 0 or
    tp % kv_heads == 0 (vllm/model_executor/models/llama.py:142-155, ModelConfig.verify_with_parallel_config).
    """
    heads = spec.num_attention_heads
    kv = spec.num_kv_heads or heads
    if heads and heads % tp:
        ok = [t for t in (1, 2, 4, 8, 16) if heads % t == 0 and (not kv or kv % t == 0 or t % kv == 0)]
        return (
            f"Tensor parallel {tp} does not divide the {heads} attention heads of {spec.id}: use "
            f"--tensor-parallel {' or '.join(map(str, ok))} (and --pipeline-parallel for more GPUs)."
        )
    if kv and kv % tp and tp % kv:
        return f"Tensor parallel {tp} does not divide the {kv} KV heads of {spec.id}, nor they it: use a power of two."
    return None


def precision_problem(precision: str, gpu: ServeGpu, engine: str) -> str | None:
    """Why `precision` does not run on this GPU with this engine, or None.

    NOTE: FP8 W8A8 needs FP8 tensor cores: Ada (sm_89), Hopper (sm_90), Blackwell and MI300 (vLLM docs
    "FP8 W8A8": "FP8 computation is supported on NVIDIA GPUs with compute capability > 8.9"); on Ampere
    vLLM falls back to weight-only FP8 through Marlin, with no compute speed-up. AWQ/GPTQ Marlin kernels need
    sm_80+ (vLLM awq_marlin.py / gptq_marlin.py `get_min_capability` 80); the plain AWQ kernel runs from sm_75
    and GPTQ's exllama kernel from sm_60. bf16 needs sm_80+ (Turing and Volta serve fp16).
    """
    if engine == "llama.cpp":
        return None
    cc = gpu.compute_capability
    if precision == "fp8" and gpu.fp8 is False:
        arch = f" (compute capability {cc:g})" if cc else ""
        return (
            f"FP8 needs FP8 tensor cores (Ada, Hopper, Blackwell, MI300): {gpu.name}{arch} has none, so "
            f"{'vLLM' if engine == 'vllm' else 'SGLang'} would only store weights in FP8 and compute in 16-bit. "
            "Use --precision awq or gptq (4-bit) or bf16."
        )
    if precision == "awq" and cc is not None and cc < 7.5:
        return f"AWQ kernels need compute capability 7.5 or newer; {gpu.name} is {cc:g}: use --precision gptq or fp16."
    if precision == "int8" and cc is not None and cc < 7.5:
        return f"int8 W8A8 kernels need compute capability 7.5 or newer; {gpu.name} is {cc:g}: use fp16."
    if precision == "bf16" and gpu.bf16 is False:
        return f"{gpu.name} has no bf16 arithmetic: use --precision fp16."
    return None


def precision_notes(spec: ModelSpec, precision: str, gpu: ServeGpu, engine: str) -> list[str]:
    """What a precision that runs here costs on this GPU (the NOTE of `precision_problem`): a checkpoint's own FP8
    on a GPU without FP8 tensor cores, and 4-bit Marlin kernels below sm_80."""
    cc = gpu.compute_capability
    if engine == "llama.cpp":
        return []
    if precision == "fp8" and gpu.fp8 is False and checkpoint_precision(spec) == "fp8":
        return [
            f"{gpu.name} has no FP8 tensor cores: vLLM serves this FP8 checkpoint weight-only through Marlin "
            "(FP8 memory, 16-bit arithmetic, no FP8 speed-up)"
        ]
    if precision in ("awq", "gptq") and cc is not None and cc < 8.0:
        kernel = "the plain AWQ kernel" if precision == "awq" else "the ExLlama kernel"
        return [f"Marlin needs compute capability 8.0; {gpu.name} is {cc:g}, so vLLM uses {kernel} (slower prompts)"]
    return []


def default_precisions(spec: ModelSpec, gpu: ServeGpu, engine: str) -> list[str]:
    """What to try when --precision is not given: the checkpoint's own format, or 16-bit, FP8 where the GPU has
    it, and 4-bit AWQ."""
    if engine == "llama.cpp":
        own = P.gguf_type_in_name(spec.id) if spec.source == "gguf" else None
        return [P.CHECKPOINT] if own or spec.source == "gguf" else ["q4_k_m", "q8_0"]
    own = checkpoint_precision(spec)
    if own:
        return [own]
    half = "fp16" if gpu.bf16 is False else "bf16"
    out = [half]
    if gpu.fp8:
        out.append("fp8")
    out.append("awq")
    return out


def layouts(spec: ModelSpec, target: Target, opts: ServeOptions) -> list[tuple[int, int]]:
    """(tp, pp) pairs to try, fewest GPUs first, tensor parallel within a node before pipeline stages."""
    total = target.gpus
    if opts.tensor_parallel or opts.pipeline_parallel:
        tp = opts.tensor_parallel or 1
        pp = opts.pipeline_parallel or 1
        if tp * pp > total:
            raise ServePlanError(
                f"Tensor parallel {tp} x pipeline parallel {pp} = {tp * pp} GPUs, but the target has {total} "
                f"({target.nodes} node(s) of {target.gpus_per_node} {target.gpu.name}): lower them or add GPUs "
                "(--device 'Nx GPU', --nodes)."
            )
        if tp > target.gpus_per_node:
            raise ServePlanError(
                f"Tensor parallel {tp} is more than the {target.gpus_per_node} GPUs of one node: keep tensor "
                "parallel within a node and use --pipeline-parallel across nodes."
            )
        problem = tp_problem(spec, tp)
        if problem:
            raise ServePlanError(problem)
        if spec.num_layers and pp > spec.num_layers:
            raise ServePlanError(f"Pipeline parallel {pp} is more than the model's {spec.num_layers} layers.")
        return [(tp, pp)]
    out = []
    for n in sorted({2**k for k in range(0, 11)} | {total}):
        if n > total:
            continue
        for tp in sorted({t for t in (1, 2, 4, 8, 16) if t <= min(n, target.gpus_per_node)}, reverse=True):
            if n % tp or tp_problem(spec, tp):
                continue
            pp = n // tp
            if spec.num_layers and pp > spec.num_layers:
                continue
            out.append((tp, pp))
            break
    return out


def _model_arg(spec: ModelSpec, precision: str) -> tuple[str, str | None]:
    """The model to pass the engine, and a note when the precision needs a checkpoint advisor cannot name."""
    own = checkpoint_precision(spec)
    if precision in ("awq", "gptq", "int8") and own != precision:
        # int8 is W8A8 (compressed-tensors), which vLLM and SGLang also load only from a checkpoint made so
        name = "INT8 (W8A8)" if precision == "int8" else precision.upper()
        example = f"{spec.id.split('/')[-1]}-" + ("quantized.w8a8" if precision == "int8" else precision.upper())
        return (
            f"<{name} checkpoint of {spec.id}>",
            f"{name} needs a pre-quantized checkpoint (vLLM and SGLang cannot quantize to it at load): "
            f"pick one on the Hub, e.g. a '{example}' repository",
        )
    if spec.source == "label":
        return spec.id, f"'{spec.id}' is a size label, not a model: put its repository id in the command"
    return spec.id, None


# How each GPU server spells the same settings (vllm serve --help; SGLang srt/arg_groups/fields/*.py).
SERVER_FLAGS = {
    "vllm": {
        "prog": "vllm serve {model}", "tp": "--tensor-parallel-size", "pp": "--pipeline-parallel-size",
        "context": "--max-model-len", "memory": "--gpu-memory-utilization {:.2f}",
        "kv": {"fp8": "fp8", "fp8_e4m3": "fp8_e4m3", "fp8_e5m2": "fp8_e5m2"}, "tail": "",
    },
    "sglang": {
        "prog": "python -m sglang.launch_server --model-path {model}", "tp": "--tp", "pp": "--pp-size",
        "context": "--context-length", "memory": "--mem-fraction-static {:.3f}",
        "kv": {"fp8": "fp8_e4m3", "fp8_e4m3": "fp8_e4m3", "fp8_e5m2": "fp8_e5m2"},
        "tail": "--host 0.0.0.0 --port 30000",
    },
}  # fmt: skip


def server_command(
    engine: str, spec: ModelSpec, precision: str, opts: ServeOptions, *, tp: int, pp: int, context: int,
    memory: float, default_memory: float, nodes: int,
) -> tuple[str, tuple[str, ...], list[str]]:  # fmt: skip
    """The command that starts `engine` with this plan, the multi-node steps, and notes."""
    flags = SERVER_FLAGS[engine]
    model, note = _model_arg(spec, precision)
    parts = [flags["prog"].format(model=model)]
    if tp > 1:
        parts.append(f"{flags['tp']} {tp}")
    if pp > 1:
        parts.append(f"{flags['pp']} {pp}")
    parts.append(f"{flags['context']} {context}")
    if abs(memory - default_memory) > 1e-9:
        parts.append(flags["memory"].format(memory))
    if precision == "fp8" and checkpoint_precision(spec) != "fp8":
        parts.append("--quantization fp8")
    if precision == "fp16" and (spec.native_dtype or "bfloat16") != "float16":
        parts.append("--dtype float16")
    if opts.kv_cache_dtype in flags["kv"]:
        parts.append(f"--kv-cache-dtype {flags['kv'][opts.kv_cache_dtype]}")
    if engine == "vllm" and opts.max_num_seqs:
        parts.append(f"--max-num-seqs {opts.max_num_seqs}")
    if opts.enforce_eager:
        parts.append("--enforce-eager" if engine == "vllm" else "--disable-cuda-graph")
    if opts.language_model_only and engine == "vllm":
        parts.append("--language-model-only")
    if engine == "vllm" and nodes > 1:
        parts.append("--distributed-executor-backend ray")
    if flags["tail"]:
        parts.append(flags["tail"])
    command = " ".join(parts)
    steps: tuple[str, ...] = ()
    notes = [note] if note else []
    if nodes > 1 and engine == "vllm":
        # NOTE: vLLM docs "Distributed inference and serving" / "Multi-node": start a Ray cluster (ray start
        # --head on one node, ray start --address on the others, same vLLM and model path everywhere), then
        # run vllm serve on the head with tensor parallel = GPUs per node and pipeline parallel = nodes.
        steps = (
            "on the head node: ray start --head --port=6379",
            f"on {'the other node' if nodes == 2 else f'each of the other {nodes - 1} nodes'}: "
            "ray start --address=<head-node-ip>:6379",
            "check: ray status (shows every node's GPUs)",
            f"on the head node: {command}",
        )
    elif nodes > 1:
        # NOTE: SGLang multi-node (srt/arg_groups/fields/parallel.py:32-44): the same command on every node
        # with --nnodes, --node-rank and the first node's address.
        steps = tuple(
            f"on node {i}: {command} --nnodes {nodes} --node-rank {i} --dist-init-addr <node-0-ip>:20000"
            for i in range(nodes)
        )
    if nodes > 1:
        notes.append(
            "assumes NVLink (or PCIe) inside each node and at least 100 Gb/s InfiniBand or RoCE between nodes; "
            "pipeline stages send one activation per token across nodes, tensor parallel stays inside a node"
        )
    return command, steps, notes


def llama_server_command(
    spec: ModelSpec, precision: str, *, context: int, slots: int, kv_type: str, gpus: int, cpu: bool = False
) -> str:
    if spec.source == "gguf" and spec.files:
        model = f"-m {next(iter(spec.files))}"
    else:
        gguf_type = P.get(precision).name.upper() if precision != P.CHECKPOINT else ""
        model = f"-hf <GGUF repository of {spec.id}>:{gguf_type}"
    parts = [f"llama-server {model}", f"-c {M.llama_context(context * slots)}", f"-np {slots}"]
    parts += ["-fa on"] if cpu else ["-ngl all", "-fa on"]  # on a CPU every layer runs there: no -ngl
    if kv_type != "f16":
        parts.append(f"-ctk {kv_type} -ctv {kv_type}")
    if gpus > 1:
        parts.append("-sm layer")
    parts.append("--host 0.0.0.0 --port 8080")
    return " ".join(parts)


DEFAULT_CONTEXT_CAP = 32768


def default_context(spec: ModelSpec) -> int:
    """Tokens per request when --context is not given: the model's own limit, capped at 32k (a chat server's
    usual --max-model-len; vLLM's own default is the full limit, which rarely leaves room for many users)."""
    return min(spec.max_context or 8192, DEFAULT_CONTEXT_CAP)


def plan_serving(spec: ModelSpec, target: Target, opts: ServeOptions) -> tuple[list[ServePlan], list[str]]:
    """Plans for every engine and precision asked for: the smallest layout that holds `users` requests of
    `context` tokens (one request when users is not given), its memory, KV pool, throughput and command."""
    if opts.users is not None and opts.users < 1:
        raise ServePlanError(f"--users {opts.users}: a server needs at least 1 user; give --users 1 or more.")
    if opts.context is not None and opts.context < 1:
        raise ServePlanError(f"--context {opts.context}: give the tokens a request may hold, e.g. --context 8192.")
    if opts.gpu_memory_utilization is not None and not 0.05 <= opts.gpu_memory_utilization <= 1.0:
        raise ServePlanError(
            f"--gpu-memory-utilization {opts.gpu_memory_utilization}: give a fraction between 0.05 and 1, e.g. 0.9."
        )
    context = opts.context or default_context(spec)
    warnings: list[str] = []
    if spec.max_context and context > spec.max_context:
        raise ServePlanError(
            f"--context {context} is longer than {spec.id}'s {spec.max_context} positions: vLLM refuses it (unless "
            f"VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 and rope scaling); give --context {spec.max_context} or less."
        )
    if opts.precision:
        problem = precision_problem(opts.precision, target.gpu, opts.engine)
        if problem:
            raise ServePlanError(problem)
    pairs = layouts(spec, target, opts)
    if not pairs:
        raise ServePlanError(
            f"No tensor-parallel size divides {spec.id}'s heads on {target.gpus} GPUs: give --tensor-parallel."
        )
    precisions = [opts.precision] if opts.precision else default_precisions(spec, target.gpu, opts.engine)
    plans: list[ServePlan] = []
    for precision in precisions:
        if opts.engine == "llama.cpp":
            plan = _llama_server_plan(spec, target, opts, precision=precision, context=context)
        else:
            plan = _gpu_server_plan(spec, target, opts, precision=precision, context=context, pairs=pairs)
        if plan is None:
            warnings.append(
                f"{opts.engine} {precision}: {spec.id} does not fit {target.gpus}x {target.gpu.name} with "
                f"{opts.users or 1} request(s) of {context} tokens."
            )
            continue
        plans.append(plan)
    return plans, warnings


def _gpu_server_plan(
    spec: ModelSpec, target: Target, opts: ServeOptions, *, precision: str, context: int, pairs: list[tuple[int, int]]
) -> ServePlan | None:
    gpu = target.gpu
    need = opts.users or 1
    engine = opts.engine
    version = opts.version or LATEST[engine]
    default_util = vllm_defaults(version, gpu, context=context).gpu_memory_utilization if engine == "vllm" else None
    util_notes: list[str] = []
    local = gpu.free_bytes is not None and target.fit == "free"
    if engine == "vllm" and opts.gpu_memory_utilization is None and local:
        # vLLM refuses to start when free memory is below total x utilization (gpu_worker.py, "Free memory on
        # device ... is less than desired GPU memory utilization"): on a shared GPU, ask for what is free.
        free_frac = math.floor((gpu.free_bytes / gpu.total_bytes - 0.01) * 100) / 100  # type: ignore[operator]
        if default_util and free_frac < default_util:
            opts = dataclasses.replace(opts, gpu_memory_utilization=max(free_frac, 0.05))
            held = (gpu.total_bytes - gpu.free_bytes) / GiB  # type: ignore[operator]
            util_notes.append(
                f"other processes hold {held:.1f} GiB of each GPU: --gpu-memory-utilization lowered to "
                f"{free_frac:.2f} so vLLM starts (it needs total x utilization free)"
            )
    best = None
    for tp, pp in pairs:
        if engine == "vllm":
            mem = vllm_memory(spec, gpu, opts, precision=precision, tp=tp, pp=pp, context=context)
            conc = min(mem["max_concurrency"], mem["max_num_seqs"] if not opts.max_num_seqs else opts.max_num_seqs)
            if opts.users and opts.users > mem["max_num_seqs"] and not opts.max_num_seqs:
                conc = mem["max_concurrency"]  # the command raises --max-num-seqs below
            chunk = mem["max_num_batched_tokens"]
        else:
            mem = sglang_memory(spec, gpu, opts, precision=precision, tp=tp, pp=pp, context=context)
            conc = mem["max_concurrency"]
            chunk = mem["chunked_prefill_size"]
        ok = mem["kv_cache_tokens"] >= context and conc >= need
        best = (tp, pp, mem, conc, chunk)
        if ok:
            break
    else:
        # No layout holds every user: keep the largest one when it starts at all, so the table says how many it
        # holds (a short answer to "how many users?" beats no row); a layout that cannot hold one request is dropped.
        if (
            not opts.tensor_parallel
            and not opts.pipeline_parallel
            and (best is None or best[2]["kv_cache_tokens"] < context)
        ):
            return None
    tp, pp, mem, conc, chunk = best  # type: ignore[misc]
    fits = mem["kv_cache_tokens"] >= context and conc >= need
    nodes = _cdiv(tp * pp, target.gpus_per_node)
    notes = list(util_notes) + precision_notes(spec, precision, gpu, engine)
    if gpu.bf16 is False and precision == "bf16":
        notes.append(f"{gpu.name} has no bf16: served in fp16")
    if engine == "vllm":
        util = mem["gpu_memory_utilization"]
        opts_cmd = opts
        if opts.users and opts.users > mem["max_num_seqs"] and not opts.max_num_seqs:
            opts_cmd = dataclasses.replace(opts, max_num_seqs=opts.users)
        command, steps, extra = server_command(
            "vllm", spec, precision, opts_cmd, tp=tp, pp=pp, context=context, memory=util, nodes=nodes,
            default_memory=default_util or util,
        )  # fmt: skip
        if not mem["cudagraph_in_budget"] and mem["cudagraph_bytes"] > mem["headroom_bytes"]:
            notes.append(
                f"CUDA graphs (~{mem['cudagraph_bytes'] / GiB:.1f} GiB) are captured outside the budget in vLLM "
                f"{mem['engine_version']} and may not fit the {mem['headroom_bytes'] / GiB:.1f} GiB left: lower "
                "--gpu-memory-utilization or add --enforce-eager"
            )
        if mem["warm_start_bytes"] >= 0.1 * GiB:
            notes.append(
                f"a first start has {mem['warm_start_bytes'] / GiB:.1f} GiB less KV cache than a restart: compiling "
                "times kernels on a copy of the embedding table (a warm compile cache skips it)"
            )
        other = mem["requested_bytes"] - mem["weights_bytes"] - mem["kv_cache_bytes"]
        other += mem["cudagraph_outside_budget_bytes"]
        frac = util
    else:
        frac = mem["mem_fraction_static"]
        default_frac = sglang_defaults(gpu, tp=tp, pp=pp, version=version, mla=False)["mem_fraction_static"]
        command, steps, extra = server_command(
            "sglang", spec, precision, opts, tp=tp, pp=pp, context=context, memory=frac,
            default_memory=default_frac, nodes=nodes,
        )  # fmt: skip
        other = max(int(mem["headroom_bytes"]), 0)  # the slack SGLang keeps for activations and graphs
    notes.extend(extra)
    if not fits:
        if mem["kv_cache_tokens"] < context:
            short = (context - mem["kv_cache_tokens"]) * mem.get("kv_bytes_per_token", 0)
            graphs = mem.get("cudagraph_bytes", 0) if engine == "vllm" and mem.get("cudagraph_in_budget") else 0
            hint = (
                f": --enforce-eager would free its ~{graphs / GiB:.1f} GiB of CUDA graphs (slower decode)"
                if graphs >= short > 0 and not opts.enforce_eager
                else ""
            )
            notes.append(
                f"does not start: the KV pool holds {mem['kv_cache_tokens']:,} tokens, less than one "
                f"{context:,}-token request{hint}"
            )
        else:
            notes.append(f"holds {conc:.1f} requests of {context:,} tokens, fewer than --users {need}")
    kvr = kv_per_rank(spec, tp=tp, kv_bytes=kv_dtype_bytes(opts.kv_cache_dtype, precision))
    link = interconnect(gpu) if nodes == 1 else "network"
    largest = max(int(conc), 1)
    batches = sorted({b for b in (1, 8, 32, opts.users or 1, largest) if b <= largest})
    run = Run(engine, tp, pp, link)
    load = load_table(
        spec, precision, gpu, kvr, run, context=context, prompt=opts.prompt_tokens, chunk=chunk, batches=batches
    )
    head = next((r for r in load if r["users"] == min(opts.users or 1, largest)), load[0])
    return ServePlan(
        engine=engine,
        precision=precision,
        kv_cache_dtype=opts.kv_cache_dtype or "auto",
        gpus=tp * pp,
        nodes=nodes,
        tensor_parallel=tp,
        pipeline_parallel=pp,
        gpu_memory_utilization=round(frac, 3),
        context=context,
        weights_bytes_per_gpu=int(mem["weights_bytes"]),
        kv_cache_bytes_per_gpu=int(mem["kv_cache_bytes"]),
        other_bytes_per_gpu=int(max(other, 0)),
        gpu_bytes=gpu.total_bytes,
        kv_cache_tokens=int(mem["kv_cache_tokens"]),
        max_concurrency=round(float(mem["max_concurrency"]), 2),
        decode_tok_s_per_user=head["decode_tok_s_per_user"],
        aggregate_tok_s=head["aggregate_tok_s"],
        ttft_s=head["ttft_s"],
        command=command,
        notes=tuple(notes),
        load=tuple(load),
        compute_bound_batch=compute_bound_batch(spec, precision, gpu, engine=engine, tp=tp, pp=pp),
        fits=fits,
        memory=mem,
        steps=steps,
        quality_rank=SERVE_QUALITY.get(precision, 100),
    )


def _llama_server_plan(
    spec: ModelSpec, target: Target, opts: ServeOptions, *, precision: str, context: int
) -> ServePlan | None:
    gpu = target.gpu
    mem = None
    # --users sets the slots; otherwise llama-server's 4, or fewer where 4 full contexts do not fit
    choices = [opts.users] if opts.users else [s for s in (LLAMA_SERVER_SLOTS, 2, 1) if s <= LLAMA_SERVER_SLOTS]
    found = False
    for slots in choices:
        for n in range(1, target.gpus_per_node + 1):
            mem = llama_server_memory(spec, gpu, opts, precision=precision, gpus=n, context=context, slots=slots)
            if mem["fits"]:
                found = True
                break
        if found:
            break
    if not found:
        return None
    assert mem is not None
    kv_type = mem["kv_cache_type"]
    kvr = kv_per_rank(spec, tp=1, kv_bytes=M.KV_TYPE_BYTES[kv_type])
    # -sm layer: the GPUs run their layers one after another, so a token streams every weight once.
    load = load_table(
        spec, precision, gpu, kvr, Run("llama.cpp"), context=context, prompt=opts.prompt_tokens, chunk=2048,
        batches=sorted({1, min(8, slots), min(32, slots), slots}),
    )  # fmt: skip
    head = next(r for r in load if r["users"] == min(opts.users or 1, slots))  # the table's load, as every row
    notes = [
        f"{slots} slot{'s' if slots > 1 else ''} share{'' if slots > 1 else 's'} one pool of {mem['n_ctx']:,} cells "
        f"(-np {slots}, unified KV): each request may use "
        f"{context:,} tokens when all are busy",
    ]
    if n > 1:
        notes.append(f"layers split over {n} GPUs (-sm layer): more memory, not more speed for one user")
    if (opts.tensor_parallel or 1) > 1 or (opts.pipeline_parallel or 1) > 1:
        notes.append("llama-server splits layers over the GPUs it needs (-sm layer): --tensor-parallel and "
                     "--pipeline-parallel are vLLM's and SGLang's")  # fmt: skip
    return ServePlan(
        engine="llama.cpp",
        precision=precision,
        kv_cache_dtype=kv_type,
        gpus=n,
        nodes=1,
        tensor_parallel=1,
        pipeline_parallel=n,
        gpu_memory_utilization=None,
        context=context,
        weights_bytes_per_gpu=mem["weights_bytes"],
        kv_cache_bytes_per_gpu=mem["kv_cache_bytes"],
        other_bytes_per_gpu=mem["compute_buffer_bytes"] + mem["cuda_context_bytes"],
        gpu_bytes=gpu.total_bytes,
        kv_cache_tokens=mem["kv_cache_tokens"],
        max_concurrency=round(mem["max_concurrency"], 2),
        decode_tok_s_per_user=head["decode_tok_s_per_user"],
        aggregate_tok_s=head["aggregate_tok_s"],
        ttft_s=head["ttft_s"],
        command=llama_server_command(
            spec, precision, context=context, slots=slots, kv_type=kv_type, gpus=n, cpu=gpu.vendor == "cpu"
        ),
        notes=tuple(notes),
        load=tuple(load),
        compute_bound_batch=None,
        fits=True,
        memory=mem,
        quality_rank=P.get(precision, spec).quality_rank if precision != P.CHECKPOINT else 100,
    )
