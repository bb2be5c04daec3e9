"""GGUF files: an exact ModelSpec from the header (metadata and tensor shapes), never the weights.

`spec_from_gguf(path)` reads a local file (and the other shards of a split model);
`spec_from_gguf_prefix(prefix, total_size, filename=...)` reads the first bytes of a file on the
Hub, fetched with an HTTP range request. The header itself is read by `advisor.sources.gguf_reader`
(GGUFReader with bounds checks); this module maps its fields and tensors to a ModelSpec.

`import gguf` happens inside functions: importing this module stays cheap.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from advisor import precision as P
from advisor.errors import HeaderError, ModelNotFoundError
from advisor.sources.gguf_reader import (
    MAX_LAYERS,
    Array,
    GGUFPrefixTooShort,
    Tensor,
    read_local,
    read_prefix,
)
from advisor.spec import KVLayout, ModelSpec, ParamBreakdown

__all__ = ["GGUFPrefixTooShort", "spec_from_gguf", "spec_from_gguf_prefix"]

_FLOAT_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
_EMBEDDING_TENSORS = ("token_embd.weight", "per_layer_token_embd.weight")
_LM_HEAD_TENSOR = "output.weight"
_FUSED_EXPERTS = re.compile(r"_exps\.")  # ffn_{gate,up,down,gate_up}_exps.{weight,bias}; not _shexp
_PER_EXPERT = re.compile(r"\.ffn_(?:gate|up|down)\.\d+\.weight$")  # pre-2024 Mixtral layout
_ATTN_V = re.compile(r"\.attn_v(?:_b)?\.weight$")

# llama.cpp's set_swa_pattern(n) per architecture, for files without attention.sliding_window_pattern:
# layer il slides when il % n < n - 1 (the last layer of each group of n attends to everything).
_ARCH_SWA_PERIOD = {
    "gemma2": 2,
    "gemma3": 6,
    "gemma3n": 5,
    "gemma-embedding": 6,
    "cohere2": 4,
    "exaone4": 4,
    "gpt-oss": 2,
    "llama4": 4,  # chunked attention, 8192-token chunks
}
_LLAMA4_CHUNK = 8192


# ----------------------------------------------------------------------------------------------
# Public API


def spec_from_gguf(path: str | Path, *, model_id: str | None = None) -> ModelSpec:
    """An exact spec from a local GGUF file's header. The other shards of a split model are read too."""
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise ModelNotFoundError(f"'{name}' does not exist: check the path to the .gguf file.")
    if path.is_dir():
        raise ModelNotFoundError(f"'{name}' is a directory: pass the .gguf file inside it.")
    header = read_local(path)
    files = {path.name: path.stat().st_size}
    warnings: list[str] = []
    exact = True
    meta, tensors = header, list(header.tensors)

    n_split = _as_int(header.fields.get("split.count")) or 1
    if n_split > 1:
        shards = _shard_paths(path, n_split)
        missing = [p.name for p in shards if not p.is_file()] if shards else []
        if shards is None or missing:
            exact = False
            what = f"missing {', '.join(missing[:3])}" if missing else "its name lacks -NNNNN-of-NNNNN.gguf"
            warnings.append(
                f"'{path.name}' is one shard of a model split into {n_split} files ({what}): "
                "the counts cover this shard only; put all shards side by side."
            )
        else:
            headers = [header if p == path else read_local(p) for p in shards]
            meta = next((h for h in headers if _as_int(h.fields.get("split.no")) == 0), headers[0])
            tensors = [t for h in headers for t in h.tensors]
            files = {p.name: p.stat().st_size for p in shards}
            expected = _as_int(meta.fields.get("split.tensors.count"))
            if expected is not None and expected != len(tensors):
                warnings.append(
                    f"the {n_split} shards hold {len(tensors)} tensors; split.tensors.count says {expected}"
                )
    return _build_spec(
        meta.fields, tensors, files=files, name=name, model_id=model_id or path.name, exact=exact, warnings=warnings
    )


def spec_from_gguf_prefix(prefix: bytes, total_size: int, *, filename: str, model_id: str | None = None) -> ModelSpec:
    """An exact spec from the first bytes of a GGUF file whose full size is `total_size`.

    Raises GGUFPrefixTooShort (with `suggested_size`) when the header runs past the prefix.
    The prefix is written into a sparse temporary file of the real size, so GGUFReader's offset
    checks hold; tensor data are never read.
    """
    header = read_prefix(prefix, total_size, filename)
    warnings: list[str] = []
    exact = True
    n_split = _as_int(header.fields.get("split.count")) or 1
    if n_split > 1:
        exact = False
        warnings.append(
            f"'{filename}' is one shard of a model split into {n_split} files: the counts cover this shard only"
        )
    return _build_spec(
        header.fields,
        list(header.tensors),
        files={filename: total_size},
        name=filename,
        model_id=model_id or filename,
        exact=exact,
        warnings=warnings,
    )


def _shard_paths(path: Path, count: int) -> list[Path] | None:
    m = P.GGUF_SPLIT.match(path.name)
    if not m or int(m["count"]) != count:
        return None
    return [path.with_name(f"{m['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


# ----------------------------------------------------------------------------------------------
# Building the spec


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _per_layer(value: Any, n_layers: int) -> list[int] | None:
    """A scalar or a per-layer array as one int per layer (None when absent or unreadable)."""
    if isinstance(value, tuple):
        ints = [_as_int(v) for v in value]
        if len(ints) != n_layers or any(v is None or v < 0 for v in ints):
            return None
        return [int(v) for v in ints]  # type: ignore[arg-type]
    v = _as_int(value)
    return None if v is None or v < 0 else [v] * n_layers


def _max_or_scalar(value: Any) -> int | None:
    if isinstance(value, tuple):
        ints = [v for v in (_as_int(x) for x in value) if v is not None]
        return max(ints) if ints else None
    return _as_int(value)


def _quant_name(fields: dict[str, Any], params_by_dtype: dict[str, int]) -> str | None:
    from gguf.constants import LlamaFileType

    ft = _as_int(fields.get("general.file_type"))
    if ft is not None:
        try:
            member = LlamaFileType(ft)
        except ValueError:
            member = None
        if member is not None and member != LlamaFileType.GUESSED:
            return member.name.removeprefix("MOSTLY_").removeprefix("ALL_")
    return next(iter(params_by_dtype), None)


def _build_spec(
    fields: dict[str, Any],
    tensors: list[Tensor],
    *,
    files: dict[str, int],
    name: str,
    model_id: str,
    exact: bool,
    warnings: list[str],
) -> ModelSpec:
    gtype = fields.get("general.type")
    arch = fields.get("general.architecture")
    if gtype == "adapter":
        raise HeaderError(f"'{name}' is a LoRA adapter, not a model: pass the base model's GGUF file.")
    if gtype == "imatrix" or (arch is None and "imatrix.chunk_count" in fields):
        raise HeaderError(f"'{name}' is an importance matrix (imatrix), not a model: pass the model's GGUF file.")
    if gtype == "mmproj" or arch == "clip":
        raise HeaderError(
            f"'{name}' is a multimodal projector (mmproj), not a language model: pass the model's main GGUF file."
        )
    if not isinstance(arch, str) or not arch:
        split_no = _as_int(fields.get("split.no"))
        if split_no:
            raise HeaderError(
                f"'{name}' is shard {split_no + 1} of a split model and holds no metadata: pass the first shard."
            )
        raise HeaderError(f"'{name}' has no general.architecture key: it is not a model GGUF; check the file.")

    def key(suffix: str) -> Any:
        return fields.get(f"{arch}.{suffix}")

    notes: list[str] = []

    # --- tensors: totals, dtypes, breakdown -----------------------------------------------------
    params_by_dtype: dict[str, int] = {}
    bytes_by_dtype: dict[str, int] = {}
    embedding = lm_head = linear = linear_rows = other = 0
    routed = routed_linear = attn_v = ffn_down = attn_output = 0
    linear_names: set[str] = set()
    fused_expert_tensors: list[Tensor] = []
    per_expert_elements = 0
    tensor_by_name = {t.name: t for t in tensors}
    for t in tensors:
        n = t.n_elements
        params_by_dtype[t.dtype] = params_by_dtype.get(t.dtype, 0) + n
        bytes_by_dtype[t.dtype] = bytes_by_dtype.get(t.dtype, 0) + t.n_bytes
        is_linear = False
        if t.name in _EMBEDDING_TENSORS:
            embedding += n
        elif t.name == _LM_HEAD_TENSOR:
            lm_head += n
        elif _is_linear(t):
            is_linear = True
            linear += n
            linear_rows += t.shape[1]
            linear_names.add(t.name)
        else:
            other += n
        if _FUSED_EXPERTS.search(t.name):
            routed += n
            fused_expert_tensors.append(t)
        elif _PER_EXPERT.search(t.name):
            routed += n
            per_expert_elements += n
            if is_linear:
                routed_linear += n
        if _ATTN_V.search(t.name):
            attn_v += n
        if "ffn_down" in t.name and t.name.endswith(".weight"):
            ffn_down += n
        if t.name.endswith(".attn_output.weight"):
            attn_output += n
    linear_bias = sum(
        t.n_elements
        for t in tensors
        if t.name.endswith(".bias") and t.name.removesuffix(".bias") + ".weight" in linear_names
    )
    total = embedding + lm_head + linear + other
    order = sorted(params_by_dtype, key=lambda d: (-params_by_dtype[d], d))
    params_by_dtype = {d: params_by_dtype[d] for d in order}
    bytes_by_dtype = {d: bytes_by_dtype[d] for d in order}
    checkpoint_bytes = sum(t.n_bytes for t in tensors)

    # --- experts -----------------------------------------------------------------------------------
    n_experts = _as_int(key("expert_count")) or None
    used = _as_int(key("expert_used_count"))
    inactive = 0
    if routed:
        if used is None:
            warnings.append("routed-expert tensors but no expert_used_count: active params counted as total")
        else:
            for t in fused_expert_tensors:
                e = t.shape[-1] if len(t.shape) >= 2 else (n_experts or 1)
                if e > 0:  # a forged zero dimension holds no elements
                    inactive += (t.n_elements // e) * max(e - used, 0)
            if per_expert_elements and n_experts:
                inactive += per_expert_elements * max(n_experts - used, 0) // n_experts
    active = total - inactive

    # --- shape -----------------------------------------------------------------------------------
    n_layers = _as_int(key("block_count"))
    if n_layers is not None and not 0 < n_layers <= MAX_LAYERS:
        raise HeaderError(f"'{name}' is corrupt ({arch}.block_count = {n_layers:,}): re-download it.")
    hidden = _as_int(key("embedding_length"))
    heads_max = _max_or_scalar(key("attention.head_count"))
    kv_heads_max = _max_or_scalar(key("attention.head_count_kv"))
    key_length = _as_int(key("attention.key_length"))
    value_length = _as_int(key("attention.value_length"))
    kv_lora_rank = _as_int(key("attention.kv_lora_rank")) or None
    key_length_mla = _as_int(key("attention.key_length_mla"))
    value_length_mla = _as_int(key("attention.value_length_mla"))
    rope_dim = _as_int(key("rope.dimension_count"))
    default_head = hidden // heads_max if hidden and heads_max else None
    head_dim = key_length_mla if kv_lora_rank and key_length_mla else key_length or default_head

    vocab = None
    embd = tensor_by_name.get("token_embd.weight")
    if embd is not None and len(embd.shape) == 2:
        vocab = embd.shape[1]
    else:
        tokens = fields.get("tokenizer.ggml.tokens")
        vocab = tokens.length if isinstance(tokens, Array) else _as_int(key("vocab_size"))

    tied = embd is not None and _LM_HEAD_TENSOR not in tensor_by_name

    # --- KV cache --------------------------------------------------------------------------------
    window = _as_int(key("attention.sliding_window"))
    kv_layout: KVLayout | None = None
    sliding_layers = 0
    if n_layers:
        kv_layout = _kv_layout(
            arch,
            key,
            n_layers=n_layers,
            head_k=key_length or default_head,
            head_v=value_length or key_length or default_head,
            kv_lora_rank=kv_lora_rank,
            key_length_mla=key_length_mla,
            value_length_mla=value_length_mla,
            rope_dim=rope_dim,
            notes=notes,
        )
        if kv_layout is not None:
            sliding_layers = kv_layout.sliding_layers
            if arch == "llama4" and window is None and sliding_layers:
                window = kv_layout.sliding_window

    num_kv_heads = kv_heads_max if kv_heads_max is not None else heads_max
    if kv_lora_rank and key_length_mla:
        num_kv_heads = heads_max  # the file stores MLA as one latent "head"; report per-head K/V like HF

    quant = _quant_name(fields, params_by_dtype)
    dominant = order[0] if order else None
    return ModelSpec(
        id=model_id,
        source="gguf",
        exact=exact,
        total_params=total,
        active_params=active,
        architecture=arch,
        model_type=arch,
        num_layers=n_layers,
        hidden_size=hidden,
        intermediate_size=_max_or_scalar(key("feed_forward_length")),
        num_attention_heads=heads_max,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        vocab_size=vocab,
        max_context=_as_int(key("context_length")),
        sliding_window=window or None,
        sliding_window_layers=sliding_layers,
        kv_lora_rank=kv_lora_rank,
        qk_rope_head_dim=rope_dim if kv_lora_rank else None,
        num_experts=n_experts,
        experts_per_token=used if n_experts else None,
        native_dtype=_FLOAT_DTYPES.get(dominant) if dominant else None,
        tied_embeddings=tied,
        params=ParamBreakdown(
            embedding=embedding,
            lm_head=lm_head,
            linear=linear,
            linear_rows=linear_rows,
            linear_bias=linear_bias,
            other=other,
            routed_experts=routed,
            routed_experts_linear=routed_linear,
            attn_v=attn_v,
            ffn_down=ffn_down,
            attn_output=attn_output,
        ),
        kv=kv_layout,
        checkpoint_bytes=checkpoint_bytes,
        checkpoint_params_by_dtype=params_by_dtype,
        checkpoint_bytes_by_dtype=bytes_by_dtype,
        quantization=f"gguf {quant}" if quant else None,
        loadable_precisions=None,
        files=dict(files),
        warnings=tuple(warnings),
    )


def _is_linear(t: Tensor) -> bool:
    """A 2-D matmul weight (what a runtime quantizes), not a router, conv kernel or position table."""
    if len(t.shape) != 2 or not t.name.endswith(".weight"):
        return False
    if "ffn_gate_inp" in t.name or "conv" in t.name:
        return False
    return not t.name.startswith(("position_embd.", "token_types."))


def _sliding_flags(arch: str, key: Any, n_layers: int, notes: list[str]) -> tuple[list[bool], int | None]:
    window = _as_int(key("attention.sliding_window"))
    if arch == "llama4" and window is None:
        window = _LLAMA4_CHUNK
        notes.append(f"llama4 chunked attention ({_LLAMA4_CHUNK}-token chunks) counted as a sliding window")
    if not window:
        return [False] * n_layers, None
    pattern = key("attention.sliding_window_pattern")
    period: int | None = None
    if isinstance(pattern, tuple):
        if len(pattern) == n_layers:
            return [bool(p) for p in pattern], window
        notes.append(f"sliding_window_pattern has {len(pattern)} entries for {n_layers} layers; ignored")
    elif _as_int(pattern) is not None:
        period = _as_int(pattern)
    if period is None:
        period = _ARCH_SWA_PERIOD.get(arch)
    if period is None:
        notes.append(
            f"sliding_window={window} but advisor does not know which {arch} layers slide: "
            "counted every layer as full attention (an upper bound)"
        )
        return [False] * n_layers, window
    return [period == 0 or il % period < period - 1 for il in range(n_layers)], window


def _kv_layout(
    arch: str,
    key: Any,
    *,
    n_layers: int,
    head_k: int | None,
    head_v: int | None,
    kv_lora_rank: int | None,
    key_length_mla: int | None,
    value_length_mla: int | None,
    rope_dim: int | None,
    notes: list[str],
) -> KVLayout | None:
    heads = _per_layer(key("attention.head_count"), n_layers)
    kv_raw = key("attention.head_count_kv")
    kv_heads = _per_layer(kv_raw, n_layers) if kv_raw is not None else heads
    if heads is None or kv_heads is None or not head_k or not head_v:
        notes.append("head counts or head sizes missing: KV cache not computed")
        return KVLayout(note="; ".join(notes))
    sliding, window = _sliding_flags(arch, key, n_layers, notes)
    k_swa = _as_int(key("attention.key_length_swa")) or head_k
    v_swa = _as_int(key("attention.value_length_swa")) or head_v

    has_kv = [True] * n_layers
    interval = _as_int(key("full_attention_interval"))
    if interval and interval > 0:  # qwen3next-style hybrids: every interval-th layer attends
        has_kv = [(il + 1) % interval == 0 for il in range(n_layers)]
    shared = _as_int(key("attention.shared_kv_layers")) or 0
    if 0 < shared < n_layers:  # gemma3n-style: the last layers reuse earlier layers' cache
        has_kv = [ok and il < n_layers - shared for il, ok in enumerate(has_kv)]
        notes.append(f"the last {shared} layers reuse earlier layers' KV cache")
    no_kv = sum(1 for il in range(n_layers) if not has_kv[il] or kv_heads[il] == 0)
    if no_kv and (interval or any(h == 0 for h in kv_heads) or _as_int(key("ssm.state_size"))):
        notes.append(f"{no_kv} recurrent layers keep a fixed-size state, not counted here")
    nextn = _as_int(key("nextn_predict_layers")) or 0
    if nextn:
        notes.append(f"block_count includes {nextn} multi-token-prediction layers, counted here")

    mla_heads = bool(kv_lora_rank and key_length_mla)
    full = slide = n_full = n_slide = 0
    for il in range(n_layers):
        if not has_kv[il] or kv_heads[il] == 0:
            continue
        if mla_heads:  # new-style MLA files store one latent head; count HF's per-head K and V
            elements = heads[il] * (key_length_mla + (value_length_mla or key_length_mla))  # type: ignore[operator]
        elif sliding[il]:
            elements = kv_heads[il] * (k_swa + v_swa)
        else:
            elements = kv_heads[il] * (head_k + head_v)
        if sliding[il]:
            slide += elements
            n_slide += 1
        else:
            full += elements
            n_full += 1

    latent = None
    if kv_lora_rank:
        if rope_dim:
            latent = (n_full + n_slide) * (kv_lora_rank + rope_dim)
        else:
            notes.append("MLA without rope.dimension_count: latent cache size unknown")
    return KVLayout(
        full_elements=full,
        sliding_elements=slide,
        sliding_window=window if n_slide else None,
        full_layers=n_full,
        sliding_layers=n_slide,
        latent_elements=latent,
        note="; ".join(notes) or None,
    )
