"""Frozen dataclasses that flow through the pipeline: source -> ModelSpec -> cost model -> Option.

Nothing here does I/O or imports torch. Every class has `to_json()` for `--json` output.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class _Json:
    def to_json(self) -> dict[str, Any]:
        return _jsonable(self)


@dataclass(frozen=True)
class SizeLabel(_Json):
    """What a size label such as '8B', '8x7B' or '141B-A35B' says about parameter counts."""

    label: str
    total_params: int
    active_params: int
    upper_bound: bool = False  # NxM labels: shared attention makes the true total smaller
    experts: int | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParamBreakdown(_Json):
    """Where the parameters live, because runtimes store each group differently.

    total = embedding + lm_head + linear + other. `routed_experts` is a subset of linear + other
    (all experts, not only the active ones); `routed_experts_linear` is the part of it held in
    nn.Linear layers (which bitsandbytes quantizes; fused 3-D expert tensors stay 16-bit).
    """

    embedding: int = 0  # input token embedding (vocab x hidden); one row is read per token
    lm_head: int = 0  # output projection; 0 when tied to the embedding
    linear: int = 0  # nn.Linear weights bitsandbytes replaces (everything but lm_head)
    linear_rows: int = 0  # sum of out_features of those layers: LLM.int8 keeps one fp32 scale per row
    linear_bias: int = 0  # biases of those layers (kept 16-bit), already inside `other`
    other: int = 0  # norms, biases, routers, fused expert tensors, position embeddings
    routed_experts: int = 0
    routed_experts_linear: int = 0
    attn_v: int = 0  # v projections: llama.cpp's *_M mixes keep some of them at higher precision
    ffn_down: int = 0  # down projections: likewise
    attn_output: int = 0  # attention output projections: raised in llama.cpp's Q3_K_M and Q2_K
    # Embedding tables besides the input embedding (Gemma 3n/4's per-layer embeddings), inside `other`: a token
    # reads one row of each, so decode does not stream them.
    lookup: int = 0
    # A multimodal model's parts outside its language model (vision and audio towers, projectors), inside linear
    # + other: what vLLM's --language-model-only leaves unloaded.
    towers: int = 0

    @property
    def total(self) -> int:
        return self.embedding + self.lm_head + self.linear + self.other

    @property
    def fused_experts(self) -> int:
        """Routed-expert weights held as fused 3-D tensors (inside `other`), not as nn.Linear layers."""
        return max(self.routed_experts - self.routed_experts_linear, 0)

    @property
    def matrices(self) -> int:
        """Every weight matrix a quantization replaces: the linear layers and the fused expert tensors."""
        return self.linear + self.fused_experts


@dataclass(frozen=True)
class KVLayout(_Json):
    """Per-token KV cache size, in elements, split by how long each layer keeps tokens."""

    full_elements: int = 0  # per token, summed over full-attention layers (K and V)
    sliding_elements: int = 0  # per token, summed over sliding-window layers
    sliding_window: int | None = None
    full_layers: int = 0
    sliding_layers: int = 0
    # MLA (DeepSeek): transformers caches decompressed per-head K and V (counted above);
    # llama.cpp and vLLM cache the latent: kv_lora_rank + qk_rope_head_dim per layer.
    latent_elements: int | None = None
    # Hybrid models (Mamba-2, Gated DeltaNet) keep a fixed recurrent state per sequence in their other
    # layers instead of a per-token cache: conv + SSM state elements, summed over those layers.
    state_layers: int = 0
    state_elements: int = 0
    note: str | None = None


@dataclass(frozen=True)
class ModelSpec(_Json):
    """Exact (or, where `exact` is False, guessed) facts about a model, from metadata only."""

    id: str
    source: str  # catalog | label | config | hub | local | gguf
    exact: bool
    total_params: int
    active_params: int
    architecture: str | None = None
    model_type: str | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_attention_heads: int | None = None
    num_kv_heads: int | None = None
    head_dim: int | None = None
    vocab_size: int | None = None
    max_context: int | None = None
    sliding_window: int | None = None
    sliding_window_layers: int = 0
    kv_lora_rank: int | None = None
    qk_rope_head_dim: int | None = None
    num_experts: int | None = None
    experts_per_token: int | None = None
    native_dtype: str | None = None
    tied_embeddings: bool = False
    params: ParamBreakdown | None = None
    kv: KVLayout | None = None
    # What the checkpoint on disk holds, where a header was read (safetensors or GGUF).
    checkpoint_bytes: int | None = None
    checkpoint_params_by_dtype: dict[str, int] = field(default_factory=dict)
    checkpoint_bytes_by_dtype: dict[str, int] = field(default_factory=dict)
    quantization: str | None = None  # e.g. "gptq 4-bit", "fp8", "gguf Q4_1"
    loadable_precisions: tuple[str, ...] | None = None  # None: any
    label: SizeLabel | None = None
    revision: str | None = None
    gated: bool | None = None
    files: dict[str, int] = field(default_factory=dict)  # filename -> bytes (e.g. gguf files)
    warnings: tuple[str, ...] = ()

    @property
    def is_moe(self) -> bool:
        return bool(self.num_experts) and self.active_params < self.total_params

    def with_warnings(self, *extra: str) -> ModelSpec:
        return dataclasses.replace(self, warnings=tuple(self.warnings) + tuple(w for w in extra if w))


@dataclass(frozen=True)
class StepCosts(_Json):
    """What a decode step and a prefill pass cost one runtime, for one weight format, on one device: measured by
    the hardware probe on small models (see `advisor.runtime_costs`), kept in `Device.details["runtime_costs"]`."""

    per_token_s: float  # a decode step's constant (sampling, the generation loop)
    per_layer_s: float  # each layer's constant (dispatch, norms, rotary)
    elements_per_s: float  # weight elements a decode step multiplies per second (compute or cache bound)
    context_s_per_element: float  # attention over the cache, per cached K/V element per step
    prefill_pass_s: float  # a prefill pass's constant
    prefill_elements_per_s: float  # token x weight-element products per second in a prefill pass
    context_s_per_token: float = 0.0  # per cached token per step, whatever the width (mask, positions)
    # Where the probe timed two widths (transformers): a weight matrix's decode time split into its elements, read
    # at `stream_elements_per_s`, and its output rows at `per_row_s` each (0: not separated, use elements_per_s).
    per_row_s: float = 0.0
    stream_elements_per_s: float = 0.0
    # a prefill's attention, per layer, attention width (heads x head dim) and token^2 (0: priced at the GEMM rate)
    prefill_attention_s: float = 0.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepCosts:
        fields = dataclasses.fields(cls)
        return cls(**{f.name: float(data.get(f.name, f.default)) for f in fields})  # a missing field: TypeError


@dataclass(frozen=True)
class Device(_Json):
    """One place that can hold weights: a GPU, an Apple chip, or the CPU with system RAM."""

    kind: str  # cpu | cuda | mps
    name: str
    memory_bytes: int
    bandwidth_gbps: float | None  # effective read bandwidth, GB/s (1e9 bytes)
    bandwidth_source: str = "unknown"  # measured | driver | table | user | default
    free_bytes: int | None = None
    matmul_tflops: float | None = None  # dense 16-bit (fp32 on CPU) matrix throughput
    matmul_source: str = "unknown"
    index: int = 0
    theoretical_bandwidth_gbps: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return "cpu" if self.kind == "cpu" else f"{self.kind}:{self.index}"


@dataclass(frozen=True)
class Hardware(_Json):
    """The machine (measured, or described by --device / --memory-gb flags)."""

    devices: tuple[Device, ...]
    source: str  # probe | table | flags
    cpu_name: str | None = None
    physical_cores: int | None = None
    logical_cores: int | None = None
    ram_total_bytes: int | None = None
    ram_available_bytes: int | None = None
    disk_read_gbps: float | None = None
    disk_path: str | None = None
    measured_at: str | None = None
    fingerprint: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def accelerators(self) -> tuple[Device, ...]:
        return tuple(d for d in self.devices if d.kind != "cpu")

    @property
    def cpu(self) -> Device | None:
        return next((d for d in self.devices if d.kind == "cpu"), None)


@dataclass(frozen=True)
class MemoryEstimate(_Json):
    weights_bytes: int
    kv_cache_bytes: int
    overhead_bytes: int
    context: int
    batch: int = 1

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.overhead_bytes

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["total_bytes"] = self.total_bytes
        return out


@dataclass(frozen=True)
class SpeedEstimate(_Json):
    decode_tok_s: float
    decode_tok_s_low: float
    decode_tok_s_high: float
    prefill_tok_s: float
    ttft_s: float
    prompt_tokens: int
    bytes_per_token: int
    basis: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Option(_Json):
    """One way to run the model: precision x runtime x placement, priced."""

    precision: str
    runtime: str  # transformers | llama.cpp
    placement: str  # e.g. "cpu", "cuda:0", "cuda:0+cpu"
    memory: MemoryEstimate
    fits: bool
    max_context: int
    quality_rank: int
    speed: SpeedEstimate | None = None
    per_device_bytes: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    # The longest context reachable by moving more layers off the GPU (longer than max_context, which keeps the
    # shown placement), the placement that takes, and its decode speed at that depth.
    max_context_offload: int | None = None
    offload_placement: str | None = None
    offload_decode_tok_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "precision": self.precision,
            "runtime": self.runtime,
            "placement": self.placement,
            "weights_bytes": self.memory.weights_bytes,
            "kv_cache_bytes": self.memory.kv_cache_bytes,
            "overhead_bytes": self.memory.overhead_bytes,
            "total_bytes": self.memory.total_bytes,
            "context": self.memory.context,
            "batch": self.memory.batch,
            "fits": self.fits,
            "max_context": self.max_context,
            "max_context_offload": self.max_context_offload,
            "offload_placement": self.offload_placement,
            "offload_decode_tok_s": self.offload_decode_tok_s,
            "quality_rank": self.quality_rank,
            "per_device_bytes": dict(self.per_device_bytes),
            "notes": list(self.notes),
        }
        if self.speed is not None:
            out.update(
                decode_tok_s=self.speed.decode_tok_s,
                decode_tok_s_low=self.speed.decode_tok_s_low,
                decode_tok_s_high=self.speed.decode_tok_s_high,
                prefill_tok_s=self.speed.prefill_tok_s,
                ttft_s=self.speed.ttft_s,
                prompt_tokens=self.speed.prompt_tokens,
                bytes_per_token=self.speed.bytes_per_token,
                basis=_jsonable(self.speed.basis),
            )
        return out


@dataclass(frozen=True)
class Recommendation(_Json):
    model: ModelSpec
    hardware: Hardware
    options: tuple[Option, ...]
    recommended: Option | None
    reason: str
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        m = self.model
        return {
            "model": {
                "id": m.id,
                "source": m.source,
                "exact": m.exact,
                "total_params": m.total_params,
                "active_params": m.active_params,
                "spec": m.to_json(),
            },
            "hardware": self.hardware.to_json(),
            "options": [o.to_json() for o in self.options],
            "recommended": self.recommended.to_json() if self.recommended else None,
            "reason": self.reason,
            "warnings": list(self.warnings),
        }


def model_spec_from_json(data: dict[str, Any]) -> ModelSpec:
    """Inverse of `ModelSpec.to_json()` (for the catalog and the Hub metadata cache)."""
    names = {f.name for f in dataclasses.fields(ModelSpec)}
    kwargs = {k: v for k, v in data.items() if k in names}
    if isinstance(kwargs.get("params"), dict):
        kwargs["params"] = ParamBreakdown(**kwargs["params"])
    if isinstance(kwargs.get("kv"), dict):
        kwargs["kv"] = KVLayout(**kwargs["kv"])
    if isinstance(kwargs.get("label"), dict):
        label = dict(kwargs["label"])
        label["warnings"] = tuple(label.get("warnings") or ())
        kwargs["label"] = SizeLabel(**label)
    for key in ("warnings", "loadable_precisions"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    return ModelSpec(**kwargs)
