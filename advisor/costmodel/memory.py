"""Memory model: weights + KV cache + runtime overhead, per precision. Pure functions: no I/O, no torch.

Every constant carries a NOTE with its source. `advisor bench` measures the same quantities on the
loaded model, and `benchmarks/accuracy.py` compares them.
"""

from __future__ import annotations

from dataclasses import dataclass

from advisor import precision as P
from advisor.spec import MemoryEstimate, ModelSpec, ParamBreakdown

GiB = 1024**3
MiB = 1024**2

# NOTE: bitsandbytes 0.50 `Params4bit` default blocksize (bitsandbytes/nn/modules.py: `blocksize = 64`);
# one fp32 absmax per block, or with double quantization one uint8 per block plus one fp32 per
# 256 blocks (`nested_blocksize`).
BNB4_BLOCK = 64
BNB4_NESTED_BLOCK = 256

# NOTE: process baseline on CPU: `import torch, transformers` is 245 MiB RSS with torch 2.13 CPU and
# transformers 5.24 (measured on the 2-core CI machine); the model classes, tokenizer and generation
# buffers bring a loaded process to ~295 MiB besides weights, KV cache and prefill activations
# (bench of SmolLM2-135M in fp32/bf16/fp16 and a 360M model in bf16: 292-295 MiB).
CPU_RUNTIME_BASE = 295 * MiB
# NOTE: a bitsandbytes load adds its library: `import bitsandbytes` is +116 MiB RSS over torch and
# transformers alone, about half of it modules a float load imports too (bench of SmolLM2-135M in
# nf4 and LLM.int8: +50-70 MiB over the float runs).
BNB_CPU_EXTRA = 60 * MiB
# NOTE: advisor's runtime prefills prompts longer than this in chunks on the CPU (transformers'
# `prefill_chunk_size`), as llama.cpp does with n_ubatch: activations scale with the chunk, and
# the speed of a 1024-token prefill did not change (int8, bf16 SmolLM2-135M on the CI machine).
CPU_PREFILL_CHUNK = 512
# NOTE: glibc malloc keeps the freed buffers of a prefill resident (small freed chunks in its
# per-thread cache stop large ones from merging): one pass grew the process by 1.6-2.4x (mean 2.0)
# the live activations modelled below, for fp32, bf16 and nf4 on SmolLM2-135M and a 360M model
# at 128-1024 tokens (glibc 2.36). `runtime.generate` hands them back after each generation.
CPU_ALLOCATOR_SLACK = 2.0
# NOTE: see LLM.int8 in `overhead_bytes`: the fraction of its matmul temporaries glibc keeps.
BNB8_CPU_RETAINED = 0.10
# NOTE: CUDA context + cuBLAS/cuDNN workspaces held by a torch process on the GPU: 300-600 MiB on
# Ampere/Hopper with lazy module loading (torch issue #20532 and nvidia-smi readings); 500 MiB
# is the middle. MPS has no separate context.
CUDA_CONTEXT = 500 * MiB
# NOTE: llama.cpp: the runtime's own buffers besides its compute buffer (~100 MiB in llama-cli logs).
LLAMA_CPP_BASE = 100 * MiB
# NOTE: llama.cpp's default micro-batch (n_ubatch = 512); its compute buffer scales with it.
LLAMA_CPP_UBATCH = 512


@dataclass(frozen=True)
class WeightBytes:
    """Loaded weight bytes by where they sit: what decode reads differs per group."""

    embedding: int  # input embedding (also the output projection when tied)
    lm_head: int  # untied output projection
    layers: int  # decoder layers: attention, MLP or experts, norms
    routed_experts: int = 0  # the part of `layers` in routed experts (all of them)
    quantized: int = 0  # bytes held in the quantized format (0 for float precisions)
    note: str = ""

    @property
    def total(self) -> int:
        return self.embedding + self.lm_head + self.layers

    @property
    def kept(self) -> int:
        return self.total - self.quantized


def _breakdown_or_guess(spec: ModelSpec) -> ParamBreakdown:
    """The spec's breakdown, or for a size label a guess."""
    if spec.params is not None:
        return spec.params
    # NOTE: in the catalog's dense models the input embedding is 1.6-7% of the total (Llama-3-8B
    # 6.5%, Qwen2.5-72B 1.7%); without metadata assume 3% each for embedding and untied head.
    emb = int(spec.total_params * 0.03)
    routed = spec.total_params - spec.active_params
    if routed and spec.num_experts and spec.experts_per_token:
        routed = routed * spec.num_experts // (spec.num_experts - spec.experts_per_token)
    return ParamBreakdown(
        embedding=emb,
        lm_head=emb,
        linear=spec.total_params - 2 * emb,
        other=0,
        routed_experts=routed,
        routed_experts_linear=routed,
    )


_FUSED_EXPERTS_NOTE = (
    "bitsandbytes quantizes nn.Linear layers only: this model's experts are fused 3-D tensors in "
    "transformers 5, so they stay 16-bit"
)


def weight_bytes(spec: ModelSpec, precision: str, *, compute_dtype_bytes: int = 2) -> WeightBytes:
    """Bytes the weights take once loaded in `precision` (a name from advisor.precision)."""
    prec = P.get(precision)
    params = _breakdown_or_guess(spec)
    if prec.kind == "float":
        b = prec.bytes_per_param
        layers = spec.total_params - params.embedding - params.lm_head
        return WeightBytes(
            embedding=int(params.embedding * b),
            lm_head=int(params.lm_head * b),
            layers=int(layers * b),
            routed_experts=int(params.routed_experts * b),
        )
    if prec.kind in ("bnb8", "bnb4"):
        if prec.kind == "bnb8":
            # LLM.int8: int8 weights + one fp32 scale (SCB) per output row.
            quantized = params.linear + params.linear_rows * 4
        else:
            packed = -(-params.linear // 2)
            blocks = -(-params.linear // BNB4_BLOCK)
            scales = blocks + -(-blocks // BNB4_NESTED_BLOCK) * 4 if prec.double_quant else blocks * 4
            quantized = packed + scales
        cd = compute_dtype_bytes
        fused = params.routed_experts - params.routed_experts_linear
        per_linear = quantized / params.linear if params.linear else 0.0
        experts = int(params.routed_experts_linear * per_linear + fused * cd)
        note = _FUSED_EXPERTS_NOTE if fused > 0 else ""
        return WeightBytes(
            embedding=params.embedding * cd,
            lm_head=params.lm_head * cd,
            layers=quantized + params.other * cd,
            routed_experts=experts,
            quantized=quantized,
            note=note,
        )
    if prec.kind == "prequant":
        return _checkpoint_bytes(spec, params)
    if prec.kind == "gguf":
        if precision == P.GGUF_FILE:
            return _gguf_file_bytes(spec, params)
        if precision.lower().startswith(P.GGUF_PREFIX):
            return _gguf_sibling_bytes(spec, params, precision)
        return _gguf_weight_bytes(spec, params, prec)
    raise ValueError(f"unknown precision kind {prec.kind}")


# llama.cpp falls back to a legacy type when a row length is not a multiple of the 256-weight
# K-quant super-block (llama-quant.cpp, `tensor_type_fallback`).
_K_FALLBACK = {"Q6_K": "Q8_0", "Q5_K": "Q5_1", "Q4_K": "Q5_0", "Q3_K": "IQ4_NL", "Q2_K": "IQ4_NL"}


def _gguf_type_for_row(type_name: str, row_len: int | None) -> str:
    if type_name in _K_FALLBACK and row_len and row_len % 256:
        return _K_FALLBACK[type_name]
    return type_name


def _more_bits_layers(n_layers: int) -> int:
    """Layers where llama.cpp's *_M recipes raise attn_v/ffn_down to Q6_K (`use_more_bits`)."""
    eighth = n_layers // 8
    return sum(1 for i in range(n_layers) if i < eighth or i >= 7 * n_layers // 8 or (i - eighth) % 3 == 2)


def _gguf_weight_bytes(spec: ModelSpec, params: ParamBreakdown, prec: P.Precision) -> WeightBytes:
    """llama.cpp's quantization recipe applied to the parameter groups (llama-quant.cpp)."""
    base = prec.gguf_type or "Q8_0"
    hidden = spec.hidden_size
    # Output projection: Q6_K in every recipe below Q8_0; with tied embeddings the token
    # embedding plays the output's role and takes its type.
    out_type = _gguf_type_for_row(base if base == "Q8_0" else "Q6_K", hidden)
    emb_type = out_type if not params.lm_head else _gguf_type_for_row(base, hidden)
    fused = max(params.routed_experts - params.routed_experts_linear, 0)
    matrices = params.linear + fused
    rest = max(params.other - fused, 0)  # norms, biases, routers stay F32
    raised = 0
    body = 0
    if prec.gguf_mix == "M" and spec.num_layers:
        frac = _more_bits_layers(spec.num_layers) / spec.num_layers
        raised = min(int((params.attn_v + params.ffn_down) * frac), matrices)
        body += P.gguf_bytes(_gguf_type_for_row("Q6_K", spec.intermediate_size), raised)
    body += P.gguf_bytes(_gguf_type_for_row(base, hidden), matrices - raised)
    per_matrix = body / matrices if matrices else 0.0
    emb = P.gguf_bytes(emb_type, params.embedding)
    head = P.gguf_bytes(out_type, params.lm_head)
    return WeightBytes(
        embedding=emb,
        lm_head=head,
        layers=body + rest * 4,
        routed_experts=int(params.routed_experts * per_matrix),
        quantized=body + emb + head,
        note=f"llama.cpp {prec.description} recipe",
    )


def _checkpoint_bytes(spec: ModelSpec, params: ParamBreakdown) -> WeightBytes:
    """A pre-quantized checkpoint's real bytes; embeddings and head stay 16-bit in GPTQ/AWQ/FP8 files."""
    emb, head = params.embedding * 2, params.lm_head * 2
    real = spec.checkpoint_bytes or int(spec.total_params * 0.6)
    layers = max(real - emb - head, 0)
    body = params.linear + params.other
    experts = int(layers * params.routed_experts / body) if body else 0
    return WeightBytes(emb, head, layers, experts, quantized=layers, note="the checkpoint's real tensor bytes")


def _gguf_file_bytes(spec: ModelSpec, params: ParamBreakdown) -> WeightBytes:
    """A GGUF file's real bytes, split into groups in the proportions of its dominant type's recipe."""
    shape = _gguf_weight_bytes(spec, params, P.get(P.GGUF_FILE, spec))
    real = spec.checkpoint_bytes or shape.total
    scale = real / shape.total if shape.total else 1.0
    emb, head = int(shape.embedding * scale), int(shape.lm_head * scale)
    return WeightBytes(
        embedding=emb,
        lm_head=head,
        layers=real - emb - head,
        routed_experts=int(shape.routed_experts * scale),
        quantized=int(shape.quantized * scale),
        note="the GGUF file's real tensor bytes",
    )


def gguf_groups(files: dict[str, int]) -> dict[str, int]:
    """First part -> total bytes of each GGUF model among `files` (split files name-0000N-of-0000M count once)."""
    import re

    split = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<count>\d{5})\.gguf$")
    groups: dict[str, list[str]] = {}
    for name in sorted(files):
        if name.endswith(".gguf"):
            m = split.match(name)
            groups.setdefault(f"{m['stem']}|{m['count']}" if m else name, []).append(name)
    return {parts[0]: sum(files[p] for p in parts) for parts in groups.values()}


# NOTE: a GGUF header (metadata, tokenizer) stays well under 256 MiB; the file whose size exceeds the
# tensor bytes read from a header by less than that is the file the header came from.
GGUF_HEADER_MAX = 256 * MiB


def gguf_read_file(spec: ModelSpec) -> str | None:
    """Among the GGUF models in `spec.files`, the one whose header the spec was read from."""
    if not spec.checkpoint_bytes:
        return None
    return next(
        (n for n, total in gguf_groups(spec.files).items() if 0 <= total - spec.checkpoint_bytes < GGUF_HEADER_MAX),
        None,
    )


def _gguf_sibling_bytes(spec: ModelSpec, params: ParamBreakdown, precision: str) -> WeightBytes:
    """Another quantization in the same repo: its file size less a header as large as the one read
    (the header is metadata and tokenizer, the same in every quantization of a model)."""
    name = precision[len(P.GGUF_PREFIX) :]
    groups = gguf_groups(spec.files)
    size = groups.get(name)
    shape = _gguf_weight_bytes(spec, params, P.get(precision))
    if size is None:
        return shape
    read_file = gguf_read_file(spec)
    header = groups[read_file] - spec.checkpoint_bytes if read_file else 0
    real = max(size - header, 1)
    scale = real / shape.total if shape.total else 1.0
    emb, head = int(shape.embedding * scale), int(shape.lm_head * scale)
    return WeightBytes(
        emb,
        head,
        real - emb - head,
        int(shape.routed_experts * scale),
        int(shape.quantized * scale),
        note=f"file size of {name} less its header",
    )


def cache_dtype_bytes(precision: str) -> int:
    """KV cache element size: the compute dtype (fp32 for fp32, else 16-bit; llama.cpp f16)."""
    return 4 if precision == "fp32" else 2


def kv_cache_bytes(
    spec: ModelSpec, context: int, *, batch: int = 1, dtype_bytes: int = 2, runtime: str = "transformers"
) -> int:
    """KV cache for `context` tokens held: full layers grow with it, sliding layers stop at their window."""
    kv = spec.kv
    if kv is None:
        return 0
    if runtime == "llama.cpp" and kv.latent_elements:
        per_token = kv.latent_elements * context
    else:
        window = kv.sliding_window or context
        per_token = kv.full_elements * context + kv.sliding_elements * min(context, window)
    return int(per_token * batch * dtype_bytes)


def _bnb8_sums(spec: ModelSpec, hidden: int, inter: int) -> tuple[int, int]:
    """Per decoder layer, the summed out_features and in_features of the layers LLM.int8 replaces."""
    layers = spec.num_layers or 1
    p = spec.params
    if p is not None and p.linear_rows:
        outs = p.linear_rows // layers
    else:
        kv_width = (spec.num_kv_heads or spec.num_attention_heads or 1) * (spec.head_dim or 0) or hidden
        outs = 2 * hidden + 2 * kv_width + 3 * inter
    if not spec.is_moe:
        return outs, 6 * hidden + inter
    if p is None or not p.routed_experts_linear or not p.linear:
        return outs, 4 * hidden  # fused 3-D experts stay 16-bit: only attention is LLM.int8
    # Experts as nn.Linear: a token passes its top-k of them, so only their share of the rows counts.
    k, experts = spec.experts_per_token or 1, spec.num_experts or 1
    share = p.routed_experts_linear / p.linear
    outs = int(outs * (1 - share) + outs * share * k / experts)
    return outs, 4 * hidden + k * (2 * hidden + inter)


def prefill_chunk(prompt_tokens: int, *, device_kind: str, runtime: str = "transformers") -> int:
    """Tokens one forward pass takes: advisor's runtime prefills long prompts in chunks on the CPU."""
    if runtime == "transformers" and device_kind == "cpu":
        return max(1, min(prompt_tokens, CPU_PREFILL_CHUNK))
    return max(1, prompt_tokens)


def overhead_bytes(
    spec: ModelSpec, precision: str, *, device_kind: str, prompt_tokens: int = 512, batch: int = 1
) -> int:
    """Runtime overhead: process or CUDA context, plus the prefill's peak activations."""
    prec = P.get(precision)
    hidden = spec.hidden_size or 0
    inter = spec.intermediate_size or 4 * hidden
    vocab = spec.vocab_size or 0
    if prec.runtime == "llama.cpp":
        ubatch = min(prompt_tokens, LLAMA_CPP_UBATCH) * batch
        # NOTE: llama.cpp's compute buffer holds one micro-batch's activations in f32, logits
        # included (~260 MiB for a 128k vocabulary at n_ubatch 512, as llama.cpp prints at load).
        compute = ubatch * (vocab + 4 * hidden + 2 * inter) * 4
        return LLAMA_CPP_BASE + compute
    on_cpu = device_kind == "cpu"
    base = CUDA_CONTEXT if device_kind == "cuda" else CPU_RUNTIME_BASE if on_cpu else 0
    if on_cpu and prec.kind in ("bnb4", "bnb8"):
        base += BNB_CPU_EXTRA
    act_bytes = 4 if precision == "fp32" else 2
    chunk = prefill_chunk(prompt_tokens, device_kind=device_kind)
    tokens = chunk * batch
    # NOTE: peak prefill activations in one decoder layer: residual, normed input, q/k/v/out
    # (~6 hidden-wide tensors) and the MLP's gate, up and product (3 intermediate-wide), plus
    # the boolean causal mask SDPA receives (chunk x prompt); the logits of the last position
    # only (generate() passes logits_to_keep=1) in fp32.
    live = tokens * (6 * hidden + 3 * inter) * act_bytes + tokens * prompt_tokens + batch * vocab * 4
    retained = 0
    if prec.kind == "bnb4":
        # bitsandbytes dequantizes one weight matrix at a time for 4-bit matmuls over many tokens.
        live += hidden * inter * act_bytes
    elif prec.kind == "bnb8":
        outs, ins = _bnb8_sums(spec, hidden, inter)
        widest = max(inter, hidden)
        if on_cpu:
            # NOTE: LLM.int8 on the CPU (bitsandbytes 0.50 backends/default/ops.py): each matmul
            # holds an int32 product, two fp32 tensors of `int8_mm_dequant` and its 16-bit output
            # (14 bytes per output element); quantizing the input makes a float16 copy, its abs,
            # the scaled copy (2 bytes each) and the int8 result with the outlier mask (1 each).
            live += tokens * (widest * 14 + hidden * 8)
            # NOTE: every matmul allocates 18 bytes per output and 10 per input element; glibc keeps
            # about a tenth of that volume resident across the layers of one pass (measured on
            # SmolLM2-135M and a 360M model at 128-1024 tokens: 8.6% and 11.4%).
            retained = int(BNB8_CPU_RETAINED * (spec.num_layers or 1) * tokens * (18 * outs + 10 * ins))
        else:
            # cuBLASLt's int32 product and the dequantized 16-bit output of the widest matmul.
            live += tokens * widest * 6
    if on_cpu:
        live = int(live * CPU_ALLOCATOR_SLACK)
    return int(base + live + retained)


def estimate(
    spec: ModelSpec,
    precision: str,
    *,
    context: int,
    batch: int = 1,
    device_kind: str = "cpu",
    prompt_tokens: int = 512,
) -> MemoryEstimate:
    """Weights + KV cache + overhead for `context` tokens held, in `precision`."""
    prec = P.get(precision)
    w = weight_bytes(spec, precision)
    kv = kv_cache_bytes(spec, context, batch=batch, dtype_bytes=cache_dtype_bytes(precision), runtime=prec.runtime)
    over = overhead_bytes(
        spec, precision, device_kind=device_kind, prompt_tokens=min(prompt_tokens, context), batch=batch
    )
    return MemoryEstimate(weights_bytes=w.total, kv_cache_bytes=kv, overhead_bytes=over, context=context, batch=batch)


def max_context(
    spec: ModelSpec,
    precision: str,
    budget_bytes: int,
    *,
    batch: int = 1,
    device_kind: str = "cpu",
    prompt_tokens: int = 512,
) -> int:
    """Longest context (tokens, up to the model's own limit) whose total fits in `budget_bytes`; 0 if none."""

    def fits(ctx: int) -> bool:
        est = estimate(spec, precision, context=ctx, batch=batch, device_kind=device_kind, prompt_tokens=prompt_tokens)
        return est.total_bytes <= budget_bytes

    return longest_fitting(spec.max_context or DEFAULT_CONTEXT_LIMIT, fits)


# NOTE: a model whose config names no context limit is searched up to 128k tokens.
DEFAULT_CONTEXT_LIMIT = 131072


def longest_fitting(limit: int, fits) -> int:
    """Largest context in [1, limit] for which `fits(context)` holds, by bisection (memory grows
    monotonically with context); 0 when not even one token fits."""
    if not fits(1):
        return 0
    if fits(limit):
        return limit
    lo, hi = 1, limit  # fits(lo) and not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo
