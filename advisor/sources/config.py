"""An exact ModelSpec from a `config.json`: the model is built on the meta device and counted.

Building with accelerate's `init_empty_weights` and transformers' `AutoModelForCausalLM.from_config`
inside `torch.device("meta")` (so that tensors an `__init__` makes with `torch.empty`/`torch.ones` before
registering them are not allocated either: a config claiming 100,000 experts costs nothing) allocates
nothing, counts the LM head, and (after `tie_weights()`) counts tied embeddings once.
Which layers bitsandbytes would quantize is decided by transformers' own rules
(`get_keys_to_not_convert`, exact `nn.Linear`/`Conv1D` types), and which layers keep a sliding
window of KV cache by its own `get_layer_types_and_kwargs`, so the spec matches what the
transformers runtime really does.
"""

from __future__ import annotations

import itertools
import re
import threading
from pathlib import Path
from typing import Any

from advisor.errors import ConfigError, UnsupportedArchitectureError
from advisor.fileio import read_json_file
from advisor.sources import keys as K
from advisor.spec import KVLayout, ModelSpec, ParamBreakdown
from advisor.textutil import one_line as _first_line
from advisor.textutil import safe

# Past these a config describes no real model, and building it on the meta device would take minutes
# (a few ms per layer): refuse before building. The largest open models have under 200 layers, 512 experts.
MAX_LAYERS = 1024
MAX_EXPERTS = 1 << 16
# One build at a time: the registration hook that bounds a build is global to the process.
_BUILD_LOCK = threading.Lock()


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a config.json; ConfigError with the path if it is not a JSON object."""
    path = Path(path)
    try:
        data = read_json_file(path)
    except OSError as exc:
        raise ConfigError(f"Cannot read config '{path}': {exc.strerror or exc}.") from None
    except ValueError as exc:
        raise ConfigError(f"Config '{path}' is not valid JSON ({exc}): re-download it or fix the file.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Config '{path}' is not a JSON object: expected a Hugging Face config.json.")
    return data


# Config keys that size a stack of modules, whatever the architecture calls them: num_hidden_layers, n_layer,
# decoder_layers, encoder_layers, num_blocks, depth ... and num_experts, n_routed_experts, num_local_experts.
_LAYERISH = re.compile(r"(?:^|_)(?:layers?|blocks?|depth)$")
_EXPERTISH = re.compile(r"(?:^|_)experts?$")
_HEADISH = re.compile(r"(?:^|_)heads?$")
MAX_HEADS = 1 << 14


def check_sizes(config: dict[str, Any], model_id: str) -> None:
    """Refuse layer, expert and head counts no real model has, before anything is built from them: every key
    that names such a count, in the config and every sub-config nested in it (text_config, ffn_config ...)."""
    stack: list[tuple[dict[str, Any], int]] = [(config, 0)]
    seen = 0
    while stack:
        part, depth = stack.pop()
        for key, value in part.items():
            seen += 1
            if seen > 100_000:
                raise ConfigError(f"Config of '{safe(model_id)}' holds over 100,000 fields: it is not a config.json.")
            if isinstance(value, dict) and depth < 8:
                stack.append((value, depth + 1))
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not isinstance(key, str):
                continue
            name = key.lower()
            for pattern, limit, what in (
                (_LAYERISH, MAX_LAYERS, "layers"),
                (_EXPERTISH, MAX_EXPERTS, "experts"),
                (_HEADISH, MAX_HEADS, "attention heads"),
            ):
                if pattern.search(name) and value > limit:
                    shown = safe(f"{value:,}" if isinstance(value, int) else f"{value:.3g}", 40)
                    raise ConfigError(
                        f"Config of '{safe(model_id)}' claims {safe(key, 60)} = {shown}: more {what} than any "
                        f"real model (at most {limit:,}); fix or re-download config.json."
                    )


def _get(obj: Any, key: str) -> Any:
    """getattr that never raises. transformers' heterogeneous configs (gemma4) raise a RuntimeError for a field
    that varies by layer: the largest per-layer value is taken then (an upper bound for sizes)."""
    if isinstance(obj, dict):
        return obj.get(key)
    try:
        return getattr(obj, key, None)
    except Exception:
        pass
    try:
        layers = object.__getattribute__(obj, "per_layer_config")
        values = [_count(_get(layer, key)) for layer in (layers.values() if isinstance(layers, dict) else layers)]
    except Exception:
        return None
    values = [v for v in values if v is not None]
    return max(values) if values else None


def _first(obj: Any, keys: tuple[str, ...]) -> Any:
    """The first of `keys` that holds a whole positive count (config fields the build may never have used can
    hold anything: a string, a list, 1e308)."""
    for key in keys:
        value = _count(_get(obj, key))
        if value is not None:
            return value
    return None


def _count(value: Any) -> int | None:
    """A whole positive number as an int, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer() and 0 < value < 2**63:
        return int(value)
    return value if isinstance(value, int) and 0 < value < 2**63 else None  # 10**400 would overflow floats later


def _attr(obj: Any, key: str) -> int | None:
    return _count(_get(obj, key))


def _quiet():
    """transformers logs and warns freely while building; the user needs none of it here."""
    from advisor.hf import quiet

    return quiet()


def build_config(
    config: dict[str, Any], *, model_id: str, trust_remote_code: bool = False, code_dir: str | None = None
):
    """A transformers PretrainedConfig from a config dict; raises UnsupportedArchitectureError."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ConfigError(f"Config of '{model_id}' has no 'model_type': it is not a transformers config.json.")
    needs_code = "auto_map" in config and model_type not in CONFIG_MAPPING
    if needs_code and not trust_remote_code:
        raise UnsupportedArchitectureError(
            f"'{model_id}' needs the repository's own code (auto_map, model_type '{model_type}'), "
            "which advisor never runs by default: pass --trust-remote-code to build it exactly."
        )
    if model_type not in CONFIG_MAPPING:
        if needs_code and code_dir:
            with _quiet():
                return AutoConfig.from_pretrained(code_dir, trust_remote_code=True)
        raise UnsupportedArchitectureError(
            f"transformers does not know the architecture '{model_type}' of '{model_id}': "
            "upgrade transformers, or the estimate falls back to the size in the name."
        )
    rest = {k: v for k, v in config.items() if k != "model_type"}
    try:
        with _quiet():
            return AutoConfig.for_model(model_type, **rest)
    except Exception as exc:  # transformers raises ValueError, TypeError, KeyError... on bad fields
        raise ConfigError(f"Config of '{model_id}' is malformed for '{model_type}': {_first_line(exc)}") from None


# NOTE: module registrations one meta-device build may make. The largest catalog models register under 30,000
# (DeepSeek-V3: 61 layers of 256 fused experts; Llama-3.1-405B: 126 layers x ~15 modules); a config past this
# describes no real model, whatever key it sizes itself with, and is refused instead of built.
MAX_BUILD_MODULES = 200_000
# NOTE: seconds a meta-device build may take: the largest catalog configs build in under 5 s on this 2-core
# machine; a build still running past this is stopped (every module registration checks the clock).
MAX_BUILD_SECONDS = 60.0


class _BuildBudget:
    """Counts module registrations while a model is built (torch's global registration hook) and stops the build,
    by raising from the hook, when it passes MAX_BUILD_MODULES or MAX_BUILD_SECONDS."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.modules = 0
        self.exceeded: str | None = None

    def __enter__(self) -> _BuildBudget:
        import time

        from torch.nn.modules.module import register_module_module_registration_hook

        self._deadline = time.monotonic() + MAX_BUILD_SECONDS
        self._clock = time.monotonic
        self._handle = register_module_module_registration_hook(self._hook)
        return self

    def _hook(self, module, name, submodule):
        self.modules += 1
        if self.modules > MAX_BUILD_MODULES:
            self.exceeded = f"more than {MAX_BUILD_MODULES:,} modules"
        elif self.modules % 256 == 0 and self._clock() > self._deadline:
            self.exceeded = f"more than {MAX_BUILD_SECONDS:.0f} s"
        if self.exceeded:
            raise _BuildTooBig(self.exceeded)
        return None

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()


class _BuildTooBig(Exception):
    pass


# Spec cache: a config's exact counts, keyed by its content, so the second look at a model needs no build.
SPEC_CACHE = "specs"
# Bump when ModelSpec or ParamBreakdown gains a field, or a count changes (5: per-layer KV shapes).
SPEC_CACHE_FORMAT = 6


def _cache_key(config: dict[str, Any]) -> str | None:
    """sha256 of the config's canonical JSON, advisor's spec format and the transformers version (whose rules
    decide what bitsandbytes converts and which layers slide); None when it cannot be keyed."""
    import hashlib
    import json
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        tf = version("transformers")
    except (TypeError, ValueError, PackageNotFoundError, RecursionError):
        return None
    return hashlib.sha256(f"{SPEC_CACHE_FORMAT}|{tf}|{text}".encode()).hexdigest()


def _cached_spec(key: str) -> ModelSpec | None:
    from advisor.fileio import MAX_STATE_BYTES, read_json_file
    from advisor.paths import cache_dir
    from advisor.spec import model_spec_from_json

    try:
        data = read_json_file(cache_dir() / SPEC_CACHE / f"{key}.json", limit=MAX_STATE_BYTES)
        return model_spec_from_json(data) if isinstance(data, dict) else None
    except Exception:  # absent, unreadable or damaged: build again (and rewrite it)
        return None


def _store_spec(key: str, spec: ModelSpec) -> None:
    import json

    from advisor.fileio import write_atomic
    from advisor.paths import cache_dir

    try:
        write_atomic(cache_dir() / SPEC_CACHE / f"{key}.json", json.dumps(spec.to_json(), sort_keys=True))
    except (OSError, TypeError, ValueError):
        pass  # a read-only cache costs a rebuild next time, nothing more


def spec_from_config(
    config: dict[str, Any],
    *,
    model_id: str,
    source: str = "config",
    trust_remote_code: bool = False,
    code_dir: str | None = None,
    cache: bool = True,
) -> ModelSpec:
    """Build the model on the meta device and count it: the exact ModelSpec for this config. Kept in advisor's
    cache by the config's content, so the same config is counted once (not for remote code, which may change
    under the same config; `cache=False` always builds)."""
    import dataclasses

    if not isinstance(config, dict):
        raise ConfigError(f"Config of '{safe(model_id)}' is not a JSON object.")
    check_sizes(config, model_id)
    key = None if trust_remote_code or not cache else _cache_key(config)
    cached = _cached_spec(key) if key else None
    if cached is not None:
        return dataclasses.replace(cached, id=model_id, source=source)
    spec = _build_spec(config, model_id=model_id, source=source, trust_remote_code=trust_remote_code,
                       code_dir=code_dir)  # fmt: skip
    if key:
        _store_spec(key, spec)
    return spec


def _build_spec(
    config: dict[str, Any], *, model_id: str, source: str, trust_remote_code: bool, code_dir: str | None
) -> ModelSpec:
    hf_config = build_config(config, model_id=model_id, trust_remote_code=trust_remote_code, code_dir=code_dir)

    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    budget = _BuildBudget(model_id)
    try:
        with _quiet(), init_empty_weights(), torch.device("meta"), _BUILD_LOCK, budget:
            model = AutoModelForCausalLM.from_config(hf_config, trust_remote_code=trust_remote_code)
        model.tie_weights()
    except _BuildTooBig as exc:
        raise ConfigError(
            f"Config of '{safe(model_id)}' builds {exc}: no real model is that large; fix or re-download config.json."
        ) from None
    except ValueError as exc:
        raise UnsupportedArchitectureError(
            f"transformers cannot build '{safe(model_id)}' as a causal LM ({_first_line(exc)})."
        ) from None
    except Exception as exc:
        if budget.exceeded:  # the hook's exception was wrapped by the model's own code
            raise ConfigError(
                f"Config of '{safe(model_id)}' builds {budget.exceeded}: no real model is that large; fix or "
                "re-download config.json."
            ) from None
        raise ConfigError(f"Config of '{safe(model_id)}' does not build a model: {_first_line(exc)}") from None
    try:
        return _spec_from_model(model, hf_config, model_id=model_id, source=source)
    except (TypeError, ValueError, ArithmeticError, AttributeError) as exc:  # a field the build never used
        raise ConfigError(
            f"Config of '{safe(model_id)}' has a field of the wrong kind ({_first_line(exc)}): "
            "fix or re-download config.json."
        ) from None


def _spec_from_model(model, hf_config, *, model_id: str, source: str) -> ModelSpec:
    params = _breakdown(model)
    text = hf_config.get_text_config(decoder=True)
    num_experts, top_k = _moe_counts(text, model)
    total = params.total
    active = total
    if num_experts and top_k and params.routed_experts:
        # Unselected experts are never read: active = total - routed * (1 - k / E).
        active = total - params.routed_experts * (num_experts - top_k) // num_experts

    heads = _attr(text, "num_attention_heads")
    hidden = _attr(text, "hidden_size")
    kv_heads = _attr(text, "num_key_value_heads") or heads
    head_dim = _attr(text, "head_dim") or (hidden // heads if hidden and heads else None)
    kv = _kv_layout(text, kv_heads, head_dim)
    dtype = _get(hf_config, "dtype")
    dtype_name = str(dtype).replace("torch.", "") if dtype is not None else None
    tied = params.lm_head == 0 and model.get_output_embeddings() is not None
    window = kv.sliding_window
    return ModelSpec(
        id=model_id,
        source=source,
        exact=True,
        total_params=total,
        active_params=active,
        architecture=type(model).__name__,
        model_type=hf_config.model_type,
        num_layers=_attr(text, "num_hidden_layers"),
        hidden_size=hidden,
        intermediate_size=_attr(text, "intermediate_size"),
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=_attr(text, "vocab_size"),
        max_context=_first(text, K.CONTEXT),
        sliding_window=window,
        sliding_window_layers=kv.sliding_layers,
        kv_lora_rank=_attr(text, "kv_lora_rank"),
        qk_rope_head_dim=_attr(text, "qk_rope_head_dim"),
        num_experts=num_experts,
        experts_per_token=top_k,
        native_dtype=dtype_name,
        tied_embeddings=tied,
        params=params,
        kv=kv,
    )


def _moe_counts(text, model) -> tuple[int | None, int | None]:
    """(routed experts per layer, experts each token uses) wherever the config keeps them: its own fields, a nested
    sub-config (DBRX's `ffn_config`: moe_num_experts, moe_top_k), or else the built modules' own attributes (a
    router's `top_k`, an expert block's `num_experts`)."""
    experts, top_k = _first(text, K.EXPERTS), _first(text, K.TOP_K)
    if experts and top_k:
        return experts, top_k
    nested = [value for value in vars(text).values() if hasattr(value, "__dict__") or isinstance(value, dict)]
    for source in itertools.chain(nested, model.modules()):  # sub-configs first, then the modules
        experts = experts or _first(source, K.EXPERTS)
        top_k = top_k or _first(source, K.TOP_K)
        if experts and top_k:
            break
    return experts, top_k


def _breakdown(model) -> ParamBreakdown:
    """Split the parameters into the groups runtimes store differently."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D
    from transformers.quantizers.base import get_keys_to_not_convert
    from transformers.quantizers.quantizers_utils import should_convert_module

    not_convert = get_keys_to_not_convert(model)
    in_emb = model.get_input_embeddings()
    out_emb = model.get_output_embeddings()
    in_weight = getattr(in_emb, "weight", None)
    out_weight = getattr(out_emb, "weight", None)

    total = sum(p.numel() for p in model.parameters())  # parameters() yields a shared tensor once
    embedding = in_weight.numel() if in_weight is not None else 0
    lm_head = out_weight.numel() if out_weight is not None and out_weight is not in_weight else 0

    linear = linear_rows = linear_bias = 0
    routed = routed_linear = attn_v = ffn_down = attn_output = lookup = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding) and module.weight is not in_weight and module.weight is not out_weight:
            lookup += module.weight.numel()
        weight = getattr(module, "weight", None)
        is_linear = type(module) is nn.Linear or isinstance(module, Conv1D)
        parts = name.split(".")
        in_experts = "experts" in parts  # routed experts; "shared_expert(s)" is a different segment
        if is_linear and weight is not None and weight is not out_weight and should_convert_module(name, not_convert):
            linear += weight.numel()
            linear_rows += weight.shape[1] if isinstance(module, Conv1D) else weight.shape[0]
            if module.bias is not None:
                linear_bias += module.bias.numel()
            if in_experts:
                routed_linear += weight.numel()
        if parts[-1] in ("v_proj", "wv", "value"):
            attn_v += weight.numel() if weight is not None else 0
        in_attention = any(p in ("self_attn", "attn", "attention", "self_attention") for p in parts[:-1])
        if parts[-1] in ("o_proj", "wo", "out_proj", "dense", "c_proj") and in_attention and weight is not None:
            attn_output += weight.numel()
        for pname, param in module.named_parameters(recurse=False):
            if in_experts:
                routed += param.numel()
            is_down = "down_proj" in (parts[-1], pname) or (parts[-1] in ("w2", "c_proj") and "mlp" in parts)
            if is_down and pname in ("weight", "down_proj"):
                ffn_down += param.numel()

    other = total - embedding - lm_head - linear
    return ParamBreakdown(
        towers=_towers(model, total),
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
        lookup=lookup,
    )


def _towers(model, total: int) -> int:
    """Parameters outside the language model and its output head: a multimodal model's towers and projectors
    (0 for a text model, whose decoder holds everything but the head)."""
    try:
        decoder = model.get_decoder()
    except (AttributeError, NotImplementedError, ValueError):
        return 0
    if decoder is None or decoder is model:
        return 0
    kept = {id(p) for p in decoder.parameters()}
    head = model.get_output_embeddings()
    if head is not None:
        kept |= {id(p) for p in head.parameters()}
    return int(sum(p.numel() for p in model.parameters() if id(p) not in kept))


def _per_layer_kv_shapes(text, layers: int) -> tuple[list[int], list[int]] | None:
    """(KV heads, head dim) of each layer, where a heterogeneous config gives them per layer; None otherwise.

    NOTE: transformers 5.24 describes layers that differ in shape with `per_layer_config` (Gemma 4: sliding
    layers of `head_dim` 256, full ones of `global_head_dim` 512) and reads their cache shapes with
    `configuration_utils.get_head_shapes`, as its StaticCache does (generation/utils.py
    `_get_static_cache_init_shape`); vLLM sizes each layer's spec the same way (0.21.0
    model_executor/models/gemma4.py:558-562, full layers `global_head_dim`, the others `head_dim`).
    """
    if not getattr(text, "is_heterogeneous", False):
        return None
    try:
        from transformers.configuration_utils import get_head_shapes

        heads, dims = get_head_shapes(text)
    except Exception:  # an older transformers, or per-layer settings it cannot read: one shape for all
        return None
    heads = heads if isinstance(heads, list) else [heads] * layers
    dims = dims if isinstance(dims, list) else [dims] * layers
    if len(heads) < layers or len(dims) < layers:
        return None
    return [int(h) for h in heads], [int(d) for d in dims]


def _kv_layout(text, kv_heads: int | None, head_dim: int | None) -> KVLayout:
    """Per-token KV elements as transformers' DynamicCache stores them, layer by layer."""
    from transformers.cache_utils import get_layer_types_and_kwargs

    layers = _attr(text, "num_hidden_layers") or 0
    try:
        layer_types, layer_kwargs = get_layer_types_and_kwargs(text)
    except Exception:  # older or unusual configs: treat every layer as full attention
        layer_types, layer_kwargs = ["full_attention"] * layers, [{}] * layers

    kv_lora = _attr(text, "kv_lora_rank")
    note = None
    latent = None
    if kv_lora:
        heads = _attr(text, "num_attention_heads") or 0
        nope = _attr(text, "qk_nope_head_dim") or 0
        rope = _attr(text, "qk_rope_head_dim") or 0
        v_dim = _attr(text, "v_head_dim") or nope
        per_layer = heads * (nope + rope) + heads * v_dim
        latent = (kv_lora + rope) * len(layer_types)
        note = (
            "MLA: transformers caches decompressed per-head K and V "
            f"({per_layer} values per layer per token); llama.cpp and vLLM cache the latent "
            f"({kv_lora + rope})."
        )
    else:
        per_layer = 2 * (kv_heads or 0) * (head_dim or 0)
    shapes = _per_layer_kv_shapes(text, len(layer_types)) if not kv_lora else None

    full = sliding = 0
    full_layers = sliding_layers = state_layers = 0
    window = None
    for i, (layer_type, kwargs) in enumerate(zip(layer_types, layer_kwargs, strict=False)):
        if layer_type == "dummy":  # shares another layer's cache or has no attention
            continue
        if layer_type in _STATE_LAYER_TYPES:  # a recurrent state, not a cache growing with the context
            state_layers += 1
            continue
        if shapes is not None:
            per_layer = 2 * shapes[0][i] * shapes[1][i]
        layer_window = _count(kwargs.get("sliding_window"))  # a window of another kind ([None], "4k") is none
        if layer_window:
            sliding += per_layer
            sliding_layers += 1
            window = layer_window if window is None else min(window, layer_window)
        else:
            full += per_layer
            full_layers += 1
    state = _recurrent_state_elements(text) if state_layers else 0
    if state_layers and not state:
        note = (note + " " if note else "") + (
            f"{state_layers} recurrent layers whose state size the config does not give: counted as 0."
        )
    return KVLayout(
        full_elements=full,
        sliding_elements=sliding,
        sliding_window=window,
        full_layers=full_layers,
        sliding_layers=sliding_layers,
        latent_elements=latent,
        state_layers=state_layers,
        state_elements=state * state_layers,
        note=note,
    )


# NOTE: transformers' `get_layer_types_and_kwargs` names Mamba-2 layers (Nemotron-H, Granite 4 H,
# Falcon-H1) and Gated DeltaNet layers (Qwen3-Next, Qwen3.5) "linear_attention", LFM2's short
# convolutions "conv" (transformers 5.x cache_utils.py); they hold a fixed state per sequence.
_STATE_LAYER_TYPES = frozenset({"linear_attention", "conv", "mamba", "mamba2", "recurrent"})


def _recurrent_state_elements(text) -> int:
    """Elements of one recurrent layer's state for one sequence: convolution window + SSM state.

    NOTE: Mamba-2 (transformers' modeling_nemotron_h / vLLM mamba_utils.mamba2_state_shape): conv state
    (d_conv - 1) x (heads x head_dim + 2 x groups x d_state), SSM state heads x head_dim x d_state.
    Gated DeltaNet (modeling_qwen3_next / vLLM gated_delta_net_state_shape): conv state (kernel - 1) x
    (2 x key_heads x key_dim + value_heads x value_dim), recurrent state value_heads x key_dim x value_dim.
    """
    v_heads = _attr(text, "linear_num_value_heads")
    if v_heads:
        k_heads = _attr(text, "linear_num_key_heads") or v_heads
        k_dim = _attr(text, "linear_key_head_dim") or 0
        v_dim = _attr(text, "linear_value_head_dim") or 0
        kernel = _attr(text, "linear_conv_kernel_dim") or 4
        return (kernel - 1) * (2 * k_heads * k_dim + v_heads * v_dim) + v_heads * k_dim * v_dim
    heads = _attr(text, "mamba_num_heads") or _attr(text, "mamba_n_heads")
    head_dim = _attr(text, "mamba_head_dim") or _attr(text, "mamba_d_head")
    d_state = _attr(text, "ssm_state_size") or _attr(text, "mamba_d_state") or _attr(text, "state_size")
    if heads and head_dim and d_state:
        groups = _attr(text, "n_groups") or _attr(text, "mamba_n_groups") or 1
        kernel = _attr(text, "conv_kernel") or _attr(text, "mamba_d_conv") or 4
        inner = heads * head_dim
        return (kernel - 1) * (inner + 2 * groups * d_state) + inner * d_state
    return 0
