"""Memory model: weights + KV cache + runtime overhead, per precision. Pure functions: no I/O, no torch.

Every constant carries a NOTE with its source. `advisor bench` measures the same quantities on the
loaded model, and `benchmarks/accuracy.py` compares them.
"""

from __future__ import annotations

import dataclasses
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
# at 128-1024 tokens (glibc 2.36). the engines hand them back after each generation (`engines.memwatch`).
CPU_ALLOCATOR_SLACK = 2.0
# NOTE: see LLM.int8 in `overhead_bytes`: the fraction of its matmul temporaries glibc keeps.
BNB8_CPU_RETAINED = 0.10
# NOTE: CUDA context + cuBLAS/cuDNN workspaces held by a torch process on the GPU: 300-600 MiB on
# Ampere/Hopper with lazy module loading (torch issue #20532 and nvidia-smi readings); 500 MiB
# is the middle. MPS has no separate context.
CUDA_CONTEXT = 500 * MiB
# NOTE: a llama.cpp process besides its buffers: Python, numpy and llama-cpp-python's libraries (20 MiB mapped),
# advisor's modules, the vocabulary and graph metadata: 71 MiB resident after loading the embedded SmolLM2-135M
# (49k vocabulary) with its KV cache and mapped weights taken out (advisor's llama.cpp bench process, this
# machine; see NOTES.md "llama.cpp memory").
LLAMA_CPP_BASE = 72 * MiB
# NOTE: llama.cpp's default micro-batch (n_ubatch = 512; llama-cpp-python and llama-server alike); its compute
# buffer scales with it (llama-context.cpp `sched_reserve`).
LLAMA_CPP_UBATCH = 512


@dataclass(frozen=True)
class LlamaCppSettings:
    """The llama.cpp knobs that change its memory: KV cache element type, flash attention, the micro-batch, the
    logits rows its compute buffer reserves (llama-cpp-python: the whole micro-batch; llama-server: one per slot)
    and whether sliding-window layers keep the full context (llama-cpp-python leaves `swa_full` at true)."""

    kv_cache_type: str = "f16"
    flash_attn: bool = False  # llama-cpp-python's default (llama-server and llama-cli: auto)
    n_ubatch: int = LLAMA_CPP_UBATCH
    n_outputs: int | None = None  # None: the micro-batch
    n_parallel: int = 1
    swa_full: bool = True


DEFAULT_LLAMA = LlamaCppSettings()
# NOTE: bytes per KV element llama.cpp stores for each cache type (ggml blocks: q8_0 34 B / 32, q4_0 18 B / 32).
KV_TYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q5_1": 24 / 32, "q5_0": 22 / 32,
                 "q4_1": 20 / 32, "q4_0": 18 / 32, "iq4_nl": 18 / 32}  # fmt: skip
# NOTE: llama.cpp pads every context to a multiple of 256 cells (llama-context.cpp: GGML_PAD(n_ctx, 256)).
LLAMA_CPP_CTX_PAD = 256


def llama_context(context: int) -> int:
    """The context llama.cpp really allocates for `context` tokens."""
    return -(-max(context, 1) // LLAMA_CPP_CTX_PAD) * LLAMA_CPP_CTX_PAD


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


# NOTE: llama.cpp falls back to another type when a row is not a multiple of the type's block (llama-quant.cpp
# `tensor_type_fallback`, commit 0c1e57098 vendored by llama-cpp-python 0.3.36); if that one does not divide
# the row either, F16.
_FALLBACK = {"Q6_K": "Q8_0", "Q5_K": "Q5_1", "Q4_K": "Q5_0", "Q3_K": "Q4_0", "Q2_K": "Q4_0", "IQ4_XS": "IQ4_NL"}


def gguf_type_for_row(type_name: str, row_len: int | None) -> str:
    """The type llama.cpp really writes for a tensor whose rows hold `row_len` weights."""
    if not row_len:
        return type_name
    block = P.gguf_type_size(type_name)[0]
    if row_len % block == 0:
        return type_name
    fallback = _FALLBACK.get(type_name, "F16")
    return fallback if row_len % P.gguf_type_size(fallback)[0] == 0 else "F16"


# NOTE: llama.cpp's quantization recipe (src/llama-quant.cpp, `llama_tensor_get_type_impl`, at the commit
# llama-cpp-python 0.3.36 vendors, 0c1e57098), role by role, checked tensor by tensor on files its quantizer
# made (`benchmarks/gguf_sizes.py`). Each entry: the file type's default tensor type, then the roles it
# raises: (role, type, which layers) with layers one of "all", "more_bits" (use_more_bits: the first and last
# eighth and every third between), "first_eighth", "first_sixteenth", "first_2" (attn_v's first two).
# GQA rules (n_gqa >= 4) are keyed "gqa4". Tied token embeddings and the output take the output rule.
GGUF_RECIPES: dict[str, tuple[str, tuple[tuple[str, str, str], ...]]] = {
    "F32": ("F32", ()),
    "F16": ("F16", ()),
    "BF16": ("BF16", ()),
    "Q8_0": ("Q8_0", ()),
    "Q6_K": ("Q6_K", ()),
    "Q5_K_M": ("Q5_K", (("attn_v", "Q6_K", "more_bits"), ("ffn_down", "Q6_K", "more_bits"))),
    "Q5_K_S": ("Q5_K", ()),
    "Q4_K_M": ("Q4_K", (("attn_v", "Q6_K", "more_bits"), ("ffn_down", "Q6_K", "more_bits"))),
    "Q4_K_S": ("Q4_K", (("attn_v", "Q5_K", "first_4"), ("ffn_down", "Q5_K", "first_eighth"))),
    "Q4_0": ("Q4_0", ()),
    "Q4_1": ("Q4_1", ()),
    "Q5_0": ("Q5_0", ()),
    "Q5_1": ("Q5_1", ()),
    "Q3_K_M": (
        "Q3_K",
        (
            ("attn_v", "Q5_K", "first_2"),
            ("attn_v", "Q4_K", "rest_2"),
            ("attn_output", "Q4_K", "all"),
            ("ffn_down", "Q5_K", "first_sixteenth"),
            ("ffn_down", "Q4_K", "rest_sixteenth"),
        ),
    ),
    "Q3_K_S": ("Q3_K", ()),
    "Q2_K": (
        "Q2_K",
        (
            ("attn_v", "Q4_K", "gqa4"),
            ("attn_v", "Q3_K", "not_gqa4"),
            ("attn_output", "Q3_K", "all"),
            ("ffn_down", "Q3_K", "all"),
        ),
    ),
    "IQ4_XS": ("IQ4_XS", (("attn_v", "Q5_K", "gqa4"), ("ffn_down", "Q5_K", "first_eighth"))),
}


# Types of the float file types (every 2-D weight in that type, nothing raised or lowered).
_FLOAT_FTYPES = {"F32", "F16", "BF16"}


def _layers_where(rule: str, n_layers: int, n_gqa: int) -> int:
    """How many of `n_layers` layers a recipe rule covers (llama-quant.cpp's layer tests)."""
    eighth, sixteenth = n_layers // 8, n_layers // 16
    if rule == "all":
        return n_layers
    if rule == "more_bits":  # use_more_bits: i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2
        return sum(1 for i in range(n_layers) if i < eighth or i >= 7 * n_layers // 8 or (i - eighth) % 3 == 2)
    if rule == "first_eighth":
        return eighth
    if rule == "first_sixteenth":
        return sixteenth
    if rule == "rest_sixteenth":
        return n_layers - sixteenth
    if rule.startswith("first_"):
        return min(int(rule.split("_")[1]), n_layers)
    if rule == "rest_2":
        return max(n_layers - 2, 0)
    if rule == "gqa4":
        return n_layers if n_gqa >= 4 else 0
    if rule == "not_gqa4":
        return n_layers if n_gqa < 4 else 0
    raise ValueError(f"unknown recipe rule {rule!r}")


def gguf_file_type(prec: P.Precision) -> str:
    """The llama.cpp file type a GGUF precision stands for: q4_k_m -> Q4_K_M, gguf-f16 -> F16."""
    name = prec.name.upper().removeprefix("GGUF-")
    if name in GGUF_RECIPES:
        return name
    base = (prec.gguf_type or "Q8_0").upper()
    mixed = f"{base}_{prec.gguf_mix}" if prec.gguf_mix else base
    return mixed if mixed in GGUF_RECIPES else base if base in GGUF_RECIPES else "Q8_0"


def gguf_role_types(ftype: str, *, role: str, n_layers: int, n_gqa: int = 1) -> list[tuple[float, str]]:
    """(share of the role's weights, tensor type) under llama.cpp's recipe for file type `ftype`: roles are
    attn_v, attn_output, ffn_down and "matrix" (any other 2-D weight of a layer)."""
    default, rules = GGUF_RECIPES.get(ftype, (ftype, ()))
    if ftype in _FLOAT_FTYPES or not n_layers:
        return [(1.0, default)]
    shares: list[tuple[float, str]] = []
    covered = 0.0
    for rule_role, rule_type, where in rules:
        if rule_role != role:
            continue
        share = _layers_where(where, n_layers, n_gqa) / n_layers
        if share > 0:
            shares.append((share, rule_type))
            covered += share
    if covered < 1.0:
        shares.append((1.0 - covered, default))
    return shares


def _gguf_layer_tensors(spec: ModelSpec, params: ParamBreakdown, ftype: str) -> list[tuple[str, int]]:
    """(tensor type, weights) of the decoder layers' matrices under llama.cpp's recipe for `ftype`: attn_v,
    attn_output and ffn_down by the file type's layer rules, every other matrix in its default type, each with
    the fallback its row length forces."""
    default = GGUF_RECIPES.get(ftype, (ftype, ()))[0]
    layers = spec.num_layers or 0
    heads, kv_heads = spec.num_attention_heads or 1, spec.num_kv_heads or spec.num_attention_heads or 1
    n_gqa = heads // kv_heads if kv_heads else 1
    matrices = params.matrices
    roles = {"attn_v": (params.attn_v, spec.hidden_size), "attn_output": (params.attn_output, spec.hidden_size),
             "ffn_down": (params.ffn_down, spec.intermediate_size)}  # fmt: skip
    out: list[tuple[str, int]] = []
    named = 0
    for role, (count, row) in roles.items():
        count = min(count, matrices - named)
        named += count
        for share, type_name in gguf_role_types(ftype, role=role, n_layers=layers, n_gqa=n_gqa):
            out.append((gguf_type_for_row(type_name, row), int(count * share)))
    out.append((gguf_type_for_row(default, spec.hidden_size), max(matrices - named, 0)))
    return out


def _gguf_head_types(spec: ModelSpec, params: ParamBreakdown, ftype: str) -> tuple[str, str]:
    """(output type, token-embedding type): the output Q6_K in every quantized recipe below Q8_0 (Q8_0 where its row
    is not a multiple of 256); a tied token embedding plays the output's role and takes its type."""
    default = GGUF_RECIPES.get(ftype, (ftype, ()))[0]
    hidden = spec.hidden_size
    if ftype in _FLOAT_FTYPES:
        out_type = default
    elif default == "Q8_0" or (hidden and hidden % 256):
        out_type = "Q8_0"
    else:
        out_type = "Q6_K"
    emb_type = out_type if not params.lm_head else gguf_type_for_row(default, hidden)
    return out_type, emb_type


def gguf_matmul_types(spec: ModelSpec, precision: str) -> tuple[dict[str, int], tuple[str, int]]:
    """({tensor type: weight elements} of the decoder layers' matrices, (type, elements) of the output projection
    (the token embedding when tied)) under llama.cpp's recipe for a GGUF precision."""
    prec = P.get(precision, spec)
    params = _breakdown_or_guess(spec)
    ftype = gguf_file_type(prec)
    by_type: dict[str, int] = {}
    for type_name, n in _gguf_layer_tensors(spec, params, ftype):
        by_type[type_name] = by_type.get(type_name, 0) + n
    out_type, emb_type = _gguf_head_types(spec, params, ftype)
    head = (out_type, params.lm_head) if params.lm_head else (emb_type, params.embedding)
    return by_type, head


def _gguf_weight_bytes(spec: ModelSpec, params: ParamBreakdown, prec: P.Precision) -> WeightBytes:
    """llama.cpp's quantization recipe (llama-quant.cpp) applied to the parameter groups: the output (or a tied
    token embedding) Q6_K below Q8_0, attn_v / attn_output / ffn_down raised in the layers the file type says,
    every type replaced by its fallback where a row is not a multiple of its block, 1-D tensors F32."""
    ftype = gguf_file_type(prec)
    out_type, emb_type = _gguf_head_types(spec, params, ftype)
    matrices = params.matrices
    rest = max(params.other - params.fused_experts, 0)  # norms, biases, routers stay F32
    body = sum(P.gguf_bytes(type_name, n) for type_name, n in _gguf_layer_tensors(spec, params, ftype))
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
    return {first: total for first, (_parts, total) in P.gguf_file_groups(files).items()}


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


def cache_dtype_bytes(precision: str, llama: LlamaCppSettings = DEFAULT_LLAMA) -> float:
    """KV cache element size: the compute dtype for transformers (fp32 for fp32, else 16-bit); llama.cpp's cache
    type (f16 unless set)."""
    if precision == "fp32":
        return 4
    try:
        llama_cpp = P.get(precision).runtime == "llama.cpp"
    except KeyError:
        llama_cpp = False
    return KV_TYPE_BYTES.get(llama.kv_cache_type, 2.0) if llama_cpp else 2


def kv_cache_bytes(
    spec: ModelSpec,
    context: int,
    *,
    batch: int = 1,
    dtype_bytes: float = 2,
    runtime: str = "transformers",
    llama: LlamaCppSettings = DEFAULT_LLAMA,
) -> int:
    """KV cache for `context` tokens held: full layers grow with it, sliding layers stop at their window
    (transformers; llama.cpp keeps the full context in them unless swa_full is off), MLA caches its latent in
    llama.cpp."""
    kv = spec.kv
    if kv is None:
        return 0
    if runtime == "llama.cpp" and kv.latent_elements:
        per_token = kv.latent_elements * context
    else:
        window = kv.sliding_window or context
        if runtime == "llama.cpp" and llama.swa_full:
            window = context
        elif runtime == "llama.cpp":  # llama-kv-cache-iswa: the window plus one micro-batch, padded
            window = llama_context(window + llama.n_ubatch)
        per_token = kv.full_elements * context + kv.sliding_elements * min(context, window)
    # NOTE: recurrent layers (Mamba-2, Gated DeltaNet) hold one fixed state per sequence: transformers in
    # the model dtype, llama.cpp in F32 (llama-memory-recurrent.cpp: type_r/type_s GGML_TYPE_F32).
    state = kv.state_elements * batch * (4 if runtime == "llama.cpp" else dtype_bytes)
    return int(per_token * batch * dtype_bytes + state)


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


def llama_compute_buffer(
    spec: ModelSpec, context: int, *, batch: int = 1, llama: LlamaCppSettings = DEFAULT_LLAMA
) -> int:
    """The compute buffer llama.cpp reserves on a device that holds layers: the worst graph of one micro-batch
    against the whole KV cache (llama-context.cpp `sched_reserve`), the largest of three phases:
    attention (KQ in f32 for every head without flash attention, or only an f16 mask with it), the logits of
    the outputs reserved, and the feed-forward's gate/up/activation; each with ~5 or 2 hidden-wide f32 tensors.
    Checked against 17 logged buffers, 14 within 6% (`benchmarks/data/llamacpp_buffers.csv`)."""
    hidden = spec.hidden_size or 0
    n_kv = llama_context(context)
    n_ub = min(n_kv, llama.n_ubatch)
    n_out = min(n_ub, llama.n_outputs or n_ub) * batch
    inter = spec.intermediate_size or 4 * hidden
    if spec.num_experts and spec.experts_per_token and spec.params and spec.params.routed_experts and spec.num_layers:
        # MoE: the routed experts of one layer, one expert's worth of intermediate width each, times top-k.
        per_expert = spec.params.routed_experts / spec.num_layers / spec.num_experts / max(3 * hidden, 1)
        inter = int(per_expert * spec.experts_per_token) or inter
    e = hidden * n_ub * 4
    heads = spec.num_attention_heads or 1
    # KQ: f32 for every head without flash attention; with it, only the f16 mask exists.
    kq = n_kv * n_ub * 2 if llama.flash_attn else (heads + 1) * n_kv * n_ub * 4
    attention = kq + 5 * e
    logits = (spec.vocab_size or 0) * n_out * 4 + 2 * e
    ffn = 3 * inter * n_ub * 4 + 2 * e
    return int(max(attention, logits, ffn))


# NOTE: on x86 CPUs with AVX2, llama.cpp repacks Q4_0, Q4_K and IQ4_NL weights (rows a multiple of 8) into an
# interleaved private copy, "CPU_REPACK model buffer" (ggml-cpu/repack.cpp `ggml_repack_get_optimal_repack_type`);
# the token embedding (a row lookup) stays mapped. The copy is memory the process holds beside the mapped file.
REPACKED_TYPES = ("Q4_0", "Q4_K", "IQ4_NL")


def llama_repack_bytes(spec: ModelSpec, precision: str) -> int:
    """Bytes of the weights llama.cpp repacks into a private copy on a CPU (x86 AVX2): the layers' tensors of the
    repacked types (never the token embedding, a row lookup)."""
    prec = P.get(precision, spec)
    if prec.kind != "gguf":
        return 0
    tensors = _gguf_layer_tensors(spec, _breakdown_or_guess(spec), gguf_file_type(prec))
    return sum(P.gguf_bytes(type_name, n) for type_name, n in tensors if type_name in REPACKED_TYPES)


def overhead_bytes(
    spec: ModelSpec,
    precision: str,
    *,
    device_kind: str,
    prompt_tokens: int = 512,
    batch: int = 1,
    context: int | None = None,
    llama: LlamaCppSettings = DEFAULT_LLAMA,
) -> int:
    """Runtime overhead: process or CUDA context, plus the prefill's peak activations (transformers), or
    llama.cpp's compute and output buffers and, on a CPU, its repacked weights."""
    prec = P.get(precision, spec)
    hidden = spec.hidden_size or 0
    inter = spec.intermediate_size or 4 * hidden
    vocab = spec.vocab_size or 0
    if prec.runtime == "llama.cpp":
        ctx = context or max(prompt_tokens, 1)
        on_cpu = device_kind == "cpu"
        # NOTE: on a CPU the compute buffer is reserved with malloc and only the pages a graph touches become
        # resident: llama-cpp-python computes the logits of the last position only, so the touched worst case
        # is attention over the whole context, or the feed-forward (measured: +13 MiB resident with flash
        # attention, +45 MiB without at 1,500 tokens, against a 99 MiB reserve, SmolLM2-135M). A GPU's buffer is
        # allocated whole.
        touched = dataclasses.replace(llama, n_outputs=1) if on_cpu else llama
        compute = llama_compute_buffer(spec, ctx, batch=batch, llama=touched)
        output = vocab * max(llama.n_parallel, 1) * 4
        repack = llama_repack_bytes(spec, precision) if on_cpu else 0
        base = LLAMA_CPP_BASE if on_cpu else CUDA_CONTEXT if device_kind == "cuda" else 0
        return int(base + compute + output + repack)
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
    llama: LlamaCppSettings = DEFAULT_LLAMA,
) -> MemoryEstimate:
    """Weights + KV cache + overhead for `context` tokens held, in `precision` (llama.cpp allocates its whole
    context, padded to 256, up front)."""
    prec = P.get(precision, spec)
    w = weight_bytes(spec, precision)
    held = llama_context(context) if prec.runtime == "llama.cpp" else context
    kv = kv_cache_bytes(spec, held, batch=batch, dtype_bytes=cache_dtype_bytes(precision, llama),
                        runtime=prec.runtime, llama=llama)  # fmt: skip
    over = overhead_bytes(
        spec, precision, device_kind=device_kind, prompt_tokens=min(prompt_tokens, context), batch=batch,
        context=context, llama=llama,
    )  # fmt: skip
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
