"""Speed model: placement across devices, decode tokens/s, prefill and time to first token.

Pure functions: no I/O, no torch. Decode is memory-bound: each token reads every weight on its
active path once, so time per token = sum over devices of (bytes read there / effective bandwidth)
plus a fixed per-layer cost (kernel launches, Python and framework work). Prefill is
compute-bound: 2 x active parameters FLOPs per token plus attention, over matrix throughput.
The efficiencies below are defaults; `advisor bench` measures this machine's own and the
calibration store replaces them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import NamedTuple

from advisor import precision as P
from advisor.costmodel import memory as M
from advisor.spec import Device, Hardware, ModelSpec, SpeedEstimate, StepCosts

GB = 1e9
# Bump when the decode estimate changes shape: calibration ratios measured against another version's estimates are
# set aside (a ratio only corrects the estimate it was measured against). 7: llama.cpp's CPU decode is never faster
# than memory delivers its bytes, and its cost per byte is corrected where the probe's reference model spilled.
COST_MODEL_VERSION = 7

# NOTE: fraction of the *measured* read bandwidth a runtime's decode attains, by
# (runtime, precision kind, device kind). Sources:
# - transformers float on CPU: the probe measures bandwidth with the same torch matrix-vector
#   product decode uses, so the weight stream runs near it; 0.85 leaves room for the non-GEMV
#   ops (norms, rotary, sampling). Measured here by `advisor bench` on SmolLM2-135M.
# - bitsandbytes on CPU: LLM.int8 dequantizes into a 16-bit copy before the GEMM, writing and
#   reading the weight again: well under the bandwidth (0.34 fitted on this CPU); nf4 see below.
# - transformers bf16 on CUDA: 0.8 of measured bandwidth in eager mode with SDPA (HF's LLM
#   optimisation guide; gpt-fast reports ~0.85 once launch overhead is gone).
# - bitsandbytes on CUDA: LLM.int8 runs ~3-4x slower than fp16 per byte (bitsandbytes docs:
#   "int8 inference is ~ 15-40% slower" than fp16 for large models, far worse for small
#   batches); nf4 uses a dedicated GEMV kernel for batch 1 (~0.5).
# - llama.cpp: its quantized GEMV kernels reach 0.6-0.8 of bandwidth on CPU and GPU (llama.cpp
#   discussion #4167, tokens/s x model size / bandwidth over many Apple and NVIDIA devices).
EFFICIENCY: dict[tuple[str, str, str], float] = {
    ("transformers", "float", "cpu"): 0.85,
    ("transformers", "bnb8", "cpu"): 0.25,
    # NOTE: bitsandbytes >= 0.48 repacks nf4 weights for AVX512-BF16 CPUs (fitted 0.8 on this CI CPU
    # by `benchmarks/accuracy.py`); older CPUs dequantize to 16-bit before the GEMM (~0.3). 0.55 is
    # the middle until this machine's runs calibrate it.
    ("transformers", "bnb4", "cpu"): 0.55,
    ("transformers", "float", "cuda"): 0.80,
    ("transformers", "bnb8", "cuda"): 0.25,
    ("transformers", "bnb4", "cuda"): 0.50,
    ("transformers", "float", "mps"): 0.70,
    ("transformers", "bnb8", "mps"): 0.20,
    ("transformers", "bnb4", "mps"): 0.30,
    # Pre-quantized checkpoints (GPTQ/AWQ/FP8 kernels): like nf4's dedicated kernels.
    ("transformers", "prequant", "cpu"): 0.30,
    ("transformers", "prequant", "cuda"): 0.55,
    ("transformers", "prequant", "mps"): 0.30,
    # NOTE: llama.cpp on a CPU priced from a datasheet bandwidth (hypothetical hardware; a probed CPU uses its measured
    # step costs instead): 6 public runs on Apple chips' CPU cores reached 0.35 of the chip's bandwidth
    # (data/measurements.csv via benchmarks/public_accuracy.py; the SoC's figure is the GPU's, CPU cores reach less).
    ("llama.cpp", "gguf", "cpu"): 0.35,
    # NOTE: llama.cpp decode on table hardware, by advisor.accelerators.device_class: fraction of the table
    # bandwidth (and FIXED_PER_LAYER below: a cost per layer per token, kernel launches and host graph work),
    # fitted by `benchmarks/public_accuracy.py --holdout` on public llama-bench runs (data/measurements.csv):
    # XiongjieDai/GPU-Benchmarks-on-LLM-Inference's Llama-3 notebooks (build 2824, flash attention off), llama.cpp
    # PRs #2059/#5835/#13324/#4812/#21024 and geerlingguy's issues, rows at mean depth <= 1024; checked on the other
    # sources (the same repo's Dec-2023 runs, mlc-ai/llm-perf-bench, llama.cpp's dgx-spark bench, AtomGradient,
    # normiebench): median 9%, p90 21% on 144 GPU rows where 0.75 and 0.02 ms gave 12% and 53%. A100/H100 reach
    # ~0.6 of HBM bandwidth plus 0.13 ms a layer, why Llama-3-8B Q4_K_M runs 133-144 tok/s there where bandwidth
    # alone allows 230+; GDDR cards ~0.9 plus 0.09-0.10 ms; Apple GPUs 0.78 plus 0.165 ms. AMD/Intel: 7 rows only.
    ("llama.cpp", "gguf", "cuda"): 0.88,
    ("llama.cpp", "gguf", "cuda/hbm"): 0.62,
    ("llama.cpp", "gguf", "cuda/geforce"): 0.92,
    ("llama.cpp", "gguf", "cuda/pro"): 0.88,
    ("llama.cpp", "gguf", "cuda/other"): 0.66,
    ("llama.cpp", "gguf", "mps"): 0.78,
}

# NOTE: fixed cost per decoder layer per token (seconds): Python dispatch and kernel launches.
# transformers eager on CUDA: Llama-3-8B bf16 decodes at ~35-40 tok/s on an A100 in eager mode
# (HF LLM optimisation guide, before static cache + torch.compile) where bandwidth alone allows
# ~127: ~18 ms of 32 layers' overhead, ~0.5 ms a layer. On CPU the same dispatch costs ~0.35 ms a
# layer on this 2-core machine (bench of SmolLM2-135M, 30 layers). llama.cpp's C++ graph:
# ~0.02 ms a layer.
FIXED_PER_LAYER: dict[tuple[str, str], float] = {
    ("transformers", "cpu"): 0.35e-3,
    ("transformers", "cuda"): 0.50e-3,
    ("transformers", "mps"): 0.60e-3,
    ("llama.cpp", "cpu"): 0.03e-3,
    # NOTE: see EFFICIENCY's llama.cpp note (benchmarks/public_accuracy.py fit on public llama-bench runs).
    ("llama.cpp", "cuda"): 0.09e-3,
    ("llama.cpp", "cuda/hbm"): 0.13e-3,
    ("llama.cpp", "cuda/geforce"): 0.10e-3,
    ("llama.cpp", "cuda/pro"): 0.09e-3,
    ("llama.cpp", "cuda/other"): 0.11e-3,
    ("llama.cpp", "mps"): 0.165e-3,
}

# NOTE: fraction of peak matrix throughput that prefill reaches (large GEMMs): ~0.6 on GPUs for
# transformers eager (MLPerf-style measurements put cuBLAS bf16 GEMMs at 0.7-0.8 of the
# datasheet; attention and small ops pull it down), and on the CPU relative to the probe's
# measured fp32 GEMM rate, ~0.8.
MATMUL_EFFICIENCY = {"cpu": 0.8, "cuda": 0.6, "mps": 0.5}
# NOTE: bitsandbytes and GGUF prefill dequantize weights before each GEMM: a fraction of the
# float rate (llama.cpp CPU prompt processing runs 0.3-0.6 of its f16 rate for Q4_K).
QUANT_PREFILL_FACTOR = {"float": 1.0, "bnb8": 0.35, "bnb4": 0.5, "gguf": 0.5, "prequant": 0.5}

# NOTE: host-to-device copies over PCIe 4.0 x16 reach ~25 GB/s of the 31.5 GB/s theoretical
# (pinned memory, NVIDIA bandwidthTest); transformers streams offloaded weights this way.
PCIE_GBPS_DEFAULT = 25.0
# NOTE: uncalibrated estimates span -30%/+25% (the efficiencies above vary by that much across
# the sources quoted); calibrated ones +-15% (the spread `advisor bench` observes run to run).
RANGE_UNCALIBRATED = (0.70, 1.25)
RANGE_CALIBRATED = (0.85, 1.15)


# NOTE: seconds per cached K/V element per decode step, beyond reading it: attention over the
# cache in transformers on the CPU (scores, softmax, mask building, DynamicCache's torch.cat
# copy of each layer's cache every step) is compute- and copy-bound, and by the cache dtype.
# Measured here with `advisor bench` of SmolLM2-135M at depths 64/512/1024 (decode time grows
# 0.18 us (fp32), 0.53 us (bf16), 0.85 us (fp16) per layer per token of context, 384 K/V
# elements each). On GPUs reading the cache dominates, which the bandwidth term already counts.
CONTEXT_COST: dict[tuple[str, str, str], float] = {
    ("transformers", "fp32", "cpu"): 0.47e-9,
    ("transformers", "bf16", "cpu"): 1.38e-9,
    ("transformers", "fp16", "cpu"): 2.2e-9,
}


def cache_dtype(precision: str) -> str:
    """The dtype the KV cache holds: fp32 for fp32, fp16 for fp16, else bf16 (bitsandbytes computes in bf16)."""
    return precision if precision in ("fp32", "fp16") else "bf16"


def efficiency_group(precision: str, kind: str | None = None) -> str:
    """The precisions that lend each other a fitted efficiency when only one of them was measured: one
    kind of kernel streaming one dtype. fp32 does not borrow from bf16 or fp16: the probe measures the two
    bandwidths with the same torch.mv, which reads 16-bit weights slower than transformers' matmuls do,
    so the fitted efficiencies differ (~1.0 for fp32, ~1.5 for bf16 on the CI machine)."""
    try:
        kind = P.get(precision).kind
    except KeyError:  # a run stored by another version of advisor: its own kind
        return kind or precision
    return f"{kind}-fp32" if precision == "fp32" else kind


def _by_device_class(table: dict, key: tuple[str, ...], device: str, default: float) -> float:
    """`table[(*key, device)]` for a device class ("cuda/hbm"), else its kind's ("cuda"), else `default`."""
    for name in (device, device.split("/")[0]):
        if (*key, name) in table:
            return table[(*key, name)]
    return default


@dataclass(frozen=True)
class Calibration:
    """This machine's corrections from `advisor bench` runs: per (runtime, precision, device kind), the ratio of
    measured to estimated time per decode step, by which later estimates are multiplied. The estimate's shape
    (constants, per-layer and per-element costs) comes from the probe and the tables; calibration only scales
    it, so what one model's runs teach carries to models of other shapes. A precision never measured borrows
    the ratio of its group (int4 for int4-dq; one kind of llama.cpp kernel for another)."""

    scale: dict[tuple[str, str, str], float] = field(default_factory=dict)
    runs: int = 0

    def step_scale(self, runtime: str, precision: str, kind: str, device: str) -> tuple[float, bool]:
        group = efficiency_group(precision, kind)
        for key in ((runtime, precision, device), (runtime, group, device)):
            if key in self.scale:
                return self.scale[key], True
        return 1.0, False

    @staticmethod
    def eff(runtime: str, kind: str, device: str, precision: str | None = None) -> tuple[float, bool]:
        """`device` is a device class ("cuda/hbm") or kind ("cuda"): the class's figure where the table has one."""
        return _by_device_class(EFFICIENCY, (runtime, kind), device, 0.5), False

    @staticmethod
    def context(runtime: str, precision: str, device: str) -> tuple[float, bool]:
        return CONTEXT_COST.get((runtime, cache_dtype(precision), device), 0.0), False

    @staticmethod
    def fixed(runtime: str, device: str) -> tuple[float, bool]:
        return _by_device_class(FIXED_PER_LAYER, (runtime,), device, 0.3e-3), False


def device_key(dev: Device) -> str:
    """The device's class where the accelerator table gave one (advisor.accelerators.device_class), else its kind."""
    return str((dev.details or {}).get("device_class") or dev.kind)


NO_CALIBRATION = Calibration()


@dataclass(frozen=True)
class Placement:
    """Where the model's parts sit: layer counts and bytes per device, and whether it fits."""

    label: str  # "cpu", "cuda:0", "cuda:0+cuda:1", "cuda:0+cpu (20/32 layers on GPU)"
    layers: dict[str, int]  # device label -> decoder layers held
    bytes: dict[str, int]  # device label -> bytes held (weights + KV + overhead)
    budgets: dict[str, int]  # device label -> usable bytes
    fits: bool
    offloaded_layers: int = 0  # layers kept in host RAM while GPUs compute
    head_device: str = "cpu"
    embed_device: str = "cpu"


def usable_bytes(device: Device, headroom: float) -> int:
    """Memory a plan may use on a device: its total less headroom, and never more than is free now (NVML's free
    bytes on a GPU, psutil's available RAM on the CPU). `advisor.hardware.fit_to_total` drops the free figure
    when the user asks to plan against the total (`--fit total`)."""
    usable = int(device.memory_bytes * (1 - headroom))
    if device.free_bytes is not None:
        usable = min(usable, int(device.free_bytes * (1 - headroom / 2)))
    return usable


def plan(
    spec: ModelSpec,
    precision: str,
    hw: Hardware,
    *,
    context: int,
    batch: int = 1,
    prompt_tokens: int = 512,
    headroom: float = 0.10,
    offload: bool = True,
    llama: M.LlamaCppSettings = M.DEFAULT_LLAMA,
) -> Placement:
    """Place the model as accelerate's device_map="auto" does: fill GPUs in order, then the CPU (llama.cpp's
    GPU layers fill the same way)."""
    w = M.weight_bytes(spec, precision)
    layers = spec.num_layers or 1
    kv_total = _kv_total(spec, precision, context, batch, llama)
    per_layer = (w.layers + kv_total) / layers
    gpus = [d for d in hw.devices if d.kind != "cpu"]
    cpu = hw.cpu
    budgets = {d.label: usable_bytes(d, headroom) for d in hw.devices}
    over_args = dict(prompt_tokens=min(prompt_tokens, context), batch=batch, context=context, llama=llama)

    if not gpus:
        dev = cpu or hw.devices[0]
        over = M.overhead_bytes(spec, precision, device_kind=dev.kind, **over_args)
        total = w.total + kv_total + over
        return Placement(
            label=dev.label,
            layers={dev.label: layers},
            bytes={dev.label: int(total)},
            budgets=budgets,
            fits=total <= budgets[dev.label],
            head_device=dev.label,
            embed_device=dev.label,
        )

    # Embedding on the first GPU, head on the last one used; layers fill GPUs in order.
    used: dict[str, float] = {}
    held: dict[str, int] = {}
    remaining = layers
    for i, gpu in enumerate(gpus):
        over = M.overhead_bytes(spec, precision, device_kind=gpu.kind, **over_args)
        fixed = over + (w.embedding if i == 0 else 0)
        room = budgets[gpu.label] - fixed
        head_room = w.lm_head if not spec.tied_embeddings else 0
        n = max(0, min(remaining, int((room - head_room) // per_layer) if per_layer else remaining))
        if n == 0 and i > 0:
            break
        held[gpu.label] = n
        used[gpu.label] = fixed + n * per_layer
        remaining -= n
        if remaining == 0:
            break
    last_gpu = list(held)[-1]
    head_dev = last_gpu
    if remaining == 0:
        used[last_gpu] += w.lm_head
    offloaded = remaining
    fits = all(used[k] <= budgets[k] for k in used)
    if offloaded:
        cpu_label = cpu.label if cpu else "cpu"
        held[cpu_label] = offloaded
        head_dev = cpu_label
        used[cpu_label] = offloaded * per_layer + w.lm_head + M.CPU_RUNTIME_BASE
        fits = offload and fits and cpu is not None and used[cpu_label] <= budgets.get(cpu_label, 0)
    gpu_labels = [k for k in held if k != "cpu" and held[k] > 0] or [gpus[0].label]
    label = "+".join(gpu_labels)
    if offloaded:
        label += f"+cpu ({layers - offloaded}/{layers} layers on GPU)"
    return Placement(
        label=label,
        layers=held,
        bytes={k: int(v) for k, v in used.items()},
        budgets=budgets,
        fits=fits,
        offloaded_layers=offloaded,
        head_device=head_dev,
        embed_device=gpus[0].label,
    )


def _kv_total(spec: ModelSpec, precision: str, context: int, batch: int, llama: M.LlamaCppSettings) -> int:
    """The KV cache a runtime holds for `context` tokens (llama.cpp allocates its padded context up front)."""
    prec = P.get(precision, spec)
    held = M.llama_context(context) if prec.runtime == "llama.cpp" else context
    return M.kv_cache_bytes(
        spec, held, batch=batch, dtype_bytes=M.cache_dtype_bytes(precision, llama), runtime=prec.runtime, llama=llama
    )


def placement_from_layers(
    spec: ModelSpec,
    precision: str,
    hw: Hardware,
    layers: dict[str, int],
    *,
    context: int,
    batch: int = 1,
    prompt_tokens: int = 512,
    headroom: float = 0.10,
    llama: M.LlamaCppSettings = M.DEFAULT_LLAMA,
) -> Placement:
    """The placement a runtime really loaded: `layers` decoder layers per device label (from accelerate's device
    map, or llama.cpp's GPU layer count), priced like `plan`'s. Embedding on the first device, head on the last
    one, as both runtimes place them."""
    w = M.weight_bytes(spec, precision)
    n_layers = spec.num_layers or 1
    kv_total = _kv_total(spec, precision, context, batch, llama)
    per_layer = (w.layers + kv_total) / n_layers
    held = {label: n for label, n in layers.items() if n > 0} or {hw.devices[0].label: n_layers}
    order = sorted(held, key=lambda label: (label == "cpu", label))  # GPUs first, in index order
    budgets = {d.label: usable_bytes(d, headroom) for d in hw.devices}
    kinds = {d.label: d.kind for d in hw.devices}
    used: dict[str, int] = {}
    for i, label in enumerate(order):
        over = M.overhead_bytes(
            spec, precision, device_kind=kinds.get(label, "cpu"), prompt_tokens=min(prompt_tokens, context),
            batch=batch, context=context, llama=llama,
        )  # fmt: skip
        used[label] = int(held[label] * per_layer + over + (w.embedding if i == 0 else 0))
    head = order[-1]
    used[head] += w.lm_head
    gpus = [label for label in order if label != "cpu"]
    offloaded = held.get("cpu", 0) if gpus else 0
    label = "+".join(gpus) if gpus else order[0]
    if offloaded:
        label += f"+cpu ({n_layers - offloaded}/{n_layers} layers on GPU)"
    return Placement(
        label=label,
        layers=held,
        bytes=used,
        budgets=budgets,
        fits=all(used[k] <= budgets.get(k, 0) for k in used),
        offloaded_layers=offloaded,
        head_device=head,
        embed_device=order[0],
    )


def experts_read_fraction(spec: ModelSpec, tokens: int) -> float:
    """Fraction of routed-expert bytes read when `tokens` tokens pass at once (batch or verify).

    Each token picks k of E experts; an expert is read if any token picked it:
    1 - (1 - k/E)^tokens, assuming independent, uniform routing.
    """
    if not spec.num_experts or not spec.experts_per_token:
        return 1.0
    k, e = spec.experts_per_token, spec.num_experts
    return 1 - (1 - k / e) ** max(tokens, 1)


def bytes_per_token(
    spec: ModelSpec,
    precision: str,
    *,
    depth: int,
    batch: int = 1,
    tokens_in_pass: int = 1,
    llama: M.LlamaCppSettings = M.DEFAULT_LLAMA,
) -> dict[str, int]:
    """Bytes one decode step reads, by group: layers (active path), head, embedding rows, KV cache."""
    prec = P.get(precision)
    w = M.weight_bytes(spec, precision)
    unread_experts = int(w.routed_experts * (1 - experts_read_fraction(spec, batch * tokens_in_pass)))
    vocab = spec.vocab_size or 1
    if spec.tied_embeddings or not w.lm_head:
        head = w.embedding  # the tied table is the output projection: read in full
        emb_rows = 0
    else:
        head = w.lm_head
        emb_rows = int(w.embedding / vocab * batch * tokens_in_pass)
    kv = M.kv_cache_bytes(
        spec, depth, batch=batch, dtype_bytes=M.cache_dtype_bytes(precision, llama), runtime=prec.runtime, llama=llama
    )
    # per-layer embedding tables (Gemma 3n/4) are looked up, one row per token: not streamed
    params = M._breakdown_or_guess(spec)
    layer_params = max(spec.total_params - params.embedding - params.lm_head, 1)
    unread_lookup = int(w.layers * params.lookup / layer_params)
    layers = w.layers - unread_experts - unread_lookup
    return {"layers": layers, "head": head, "embedding_rows": emb_rows, "kv_cache": kv}


# NOTE: the rate of bitsandbytes' CPU kernels per weight element, against the bf16 matmul the probe times: LLM.int8
# quantizes the activations and dequantizes an int32 product in every matmul, nf4 dequantizes every block before
# a bf16 GEMM; both took about twice bf16's time per element here (weights part of a decode step of SmolLM2-135M:
# int8 2.0x, nf4 1.9x bf16's; benchmarks/accuracy.py, bitsandbytes 0.50, torch 2.13). bench calibrates them.
BNB_CPU_ELEMENT_FACTOR = {"bnb8": 0.5, "bnb4": 0.5, "prequant": 1.0}
# NOTE: prefill rate against bf16's: LLM.int8's CPU matmul multiplies int8 by int8 (1.9-2.4x the bf16 prompt rate
# here over three runs, 504-639 vs 264-266 tok/s at 512 tokens on SmolLM2-135M, torch 2.13 without AMX); nf4
# dequantizes to bf16 first (1.0x, 255 vs 266).
BNB_CPU_PREFILL_FACTOR = {"bnb8": 2.2, "bnb4": 1.0}
BNB_KINDS = ("bnb8", "bnb4")  # bitsandbytes kinds the probe times itself where bitsandbytes runs (runtime_costs)
# NOTE: the measured type that stands for a llama.cpp tensor type the probe did not time, by the CPU kernel that
# runs it on x86 (ggml-cpu/repack.cpp and llamafile/sgemm.cpp): IQ4_NL is repacked like Q4_0; Q5_0 goes through
# tinyBLAS like Q8_0, Q5_1 through the plain dot product like Q4_1 (both timed directly since hardware SCHEMA 4:
# these two classes serve older profiles); Q5_K, Q3_K, Q2_K and IQ4_XS run the generic K-quant dot product like
# Q6_K; BF16 and F32 (both timed since hardware SCHEMA 5 and 4: these serve older profiles) the float path like F16,
# their different bytes being the stream term's (see _llama_cpu_weights).
LLAMA_RATE_CLASS = {
    "F32": "F16", "BF16": "F16", "Q5_0": "Q8_0", "Q5_1": "Q4_1", "IQ4_NL": "Q4_0", "Q5_K": "Q6_K", "Q3_K": "Q6_K",
    "Q2_K": "Q6_K", "IQ4_XS": "Q6_K",
}  # fmt: skip
# NOTE: llama.cpp's CPU kernels do not hide memory behind arithmetic: a decode step costs the dot products at the
# rate the probe timed on its small (cache-resident, 14-48 MB) models *plus* streaming the weights from DRAM once
# they are larger than that. On this 2-core VM (DRAM 30.6 GB/s) the sum put the embedded SmolLM2-135M within 3-7%
# of measured in Q4_1, BF16 and F32 GGUF, where the larger of the two missed by 26-95% (benchmarks/accuracy.py,
# NOTES.md "llama.cpp on the CPU: compute plus stream"). transformers' torch GEMV overlaps the two (its probe
# models, 48-97 MB, already stream), so there the larger of the two holds.
PROBE_MATMUL_ELEMENTS = 24_248_320  # advisor.runtime_costs: the wide8 probe's weight elements


def measured_costs(dev: Device, runtime: str, key: str) -> StepCosts | None:
    """The probe's step costs of `runtime` for weight format `key` on this device, when it measured them."""
    table = ((dev.details or {}).get("runtime_costs") or {}).get(runtime) or {}
    data = table.get(key)
    if not isinstance(data, dict):
        return None
    try:
        return StepCosts.from_json(data)
    except (KeyError, TypeError, ValueError):
        return None


def _llama_context_per_element(dev: Device) -> float | None:
    """The median over llama.cpp's timed types of the attention cost per cached element on this device."""
    table = ((dev.details or {}).get("runtime_costs") or {}).get("llama.cpp") or {}
    values = sorted(float(v["context_s_per_element"]) for v in table.values()
                    if isinstance(v, dict) and "context_s_per_element" in v)  # fmt: skip
    return values[len(values) // 2] if values else None


def _transformers_key(prec: P.Precision, precision: str, dev: Device | None = None) -> tuple[str, float]:
    """(the format whose measured costs apply, the per-element factor on them): a bitsandbytes kind the probe timed
    on this device is its own; otherwise bf16's costs with the kind's factor (profiles from before it was timed,
    and devices where bitsandbytes did not run)."""
    if prec.kind == "float":
        return precision, 1.0
    if dev is not None and prec.kind in BNB_KINDS and measured_costs(dev, "transformers", prec.kind) is not None:
        return prec.kind, 1.0
    return "bf16", BNB_CPU_ELEMENT_FACTOR.get(prec.kind, 1.0)


def _llama_rate(dev: Device, type_name: str) -> StepCosts | None:
    """The measured costs that time a llama.cpp tensor type: its own, else its kernel class's."""
    direct = measured_costs(dev, "llama.cpp", type_name)
    if direct is not None:
        return direct
    return measured_costs(dev, "llama.cpp", LLAMA_RATE_CLASS.get(type_name, "Q8_0"))


class Group(NamedTuple):
    """Weight matrices one set of measured costs times."""

    costs: StepCosts
    elements: float
    factor: float = 1.0  # on the element rate (bitsandbytes kinds priced from bf16's costs)
    rows: float = 0.0  # output rows, where counted (transformers)
    bytes_per_element: float = 0.0  # llama.cpp: the tensor type's bytes per weight


def matrix_rows(spec: ModelSpec, layer_elements: float) -> float:
    """Output rows of the decoder layers' matrices a step multiplies: the linear layers' rows (from the meta model or
    the GGUF header) in proportion to the elements read (routed experts no token picked are not read); 0 when the
    spec does not count them (a size label)."""
    params = M._breakdown_or_guess(spec)
    if not params.linear_rows or not params.linear:
        return 0.0
    return params.linear_rows * layer_elements / params.linear


def group_seconds(group: Group, tokens: int = 1) -> float:
    """Seconds a group of matrices takes in a decode step: elements at the streaming rate plus a cost per output row
    where the probe separated the two (transformers), else elements at the probe's one rate. Both scale with the
    tokens of the pass (an output row is one reduction and store per token), as the one rate does."""
    c, n, f, rows, _bpe = group
    if rows > 0 and c.per_row_s > 0 and c.stream_elements_per_s > 0 and f > 0:
        return (n * tokens / c.stream_elements_per_s + rows * tokens * c.per_row_s) / f
    return n * tokens / (c.elements_per_s * f) if c.elements_per_s > 0 and f > 0 else 0.0


def _matmul_groups(
    spec: ModelSpec, precision: str, dev: Device, *, layer_elements: float, head_elements: float, share: float
) -> tuple[list[Group], Group | None] | None:
    """This device's share of the decoder layers' matrices, grouped by the measured costs that time them, and the
    output projection's group (None when its type was not timed); None when the probe did not time this runtime
    and format here."""
    prec = P.get(precision, spec)
    if prec.runtime == "transformers":
        key, factor = _transformers_key(prec, precision, dev)
        costs = measured_costs(dev, "transformers", key)
        if costs is None:
            return None
        rows = matrix_rows(spec, layer_elements)
        head_rows = float(spec.vocab_size or 0) if rows else 0.0
        head = Group(costs, head_elements, factor, head_rows)
        if key in BNB_KINDS:
            # bitsandbytes leaves the output projection in the compute dtype (transformers' skip list)
            head = Group(measured_costs(dev, "transformers", "bf16") or costs, head_elements, 1.0, head_rows)
        return [Group(costs, layer_elements * share, factor, rows * share)], head
    if prec.runtime != "llama.cpp":
        return None
    by_type, (head_type, _n) = M.gguf_matmul_types(spec, precision)
    total = sum(by_type.values()) or 1
    groups: list[Group] = []
    for type_name, n in by_type.items():
        costs = _llama_rate(dev, type_name)
        if costs is None:
            return None
        groups.append(Group(costs, n * layer_elements / total * share, bytes_per_element=_gguf_bytes(type_name)))
    head_costs = _llama_rate(dev, head_type)
    head = Group(head_costs, head_elements, bytes_per_element=_gguf_bytes(head_type)) if head_costs else None
    return groups, head


def _gguf_bytes(type_name: str) -> float:
    try:
        return P.gguf_bits_per_weight(type_name) / 8
    except (KeyError, ValueError, AttributeError):
        return 0.0


def matmul_elements(spec: ModelSpec, *, tokens: int = 1) -> tuple[int, int]:
    """(weight elements the decoder layers multiply per step, elements of the output projection): routed experts
    no token of the step picked are left out."""
    params = M._breakdown_or_guess(spec)
    layers = params.matrices
    unread = int(params.routed_experts * (1 - experts_read_fraction(spec, tokens)))
    head = params.lm_head or params.embedding
    return max(layers - unread, 0), head


def _measured_step(
    spec: ModelSpec,
    precision: str,
    dev: Device,
    *,
    share: float,
    head: bool,
    read_bytes: float,
    kv_elements: float,
    tokens: int,
    depth: int = 0,
) -> tuple[float, dict] | None:
    """Seconds of this device's part of a decode step from the probe's measured step costs, or None when the probe
    did not time this runtime and format here. Weights cost their elements at the kernels' measured rate, never
    less than streaming their bytes at the measured bandwidth; plus the step's constant (on the head's device),
    each layer's constant and attention over the cache."""
    prec = P.get(precision, spec)
    layers = spec.num_layers or 1
    layer_elements, head_elements = matmul_elements(spec, tokens=tokens)
    found = _matmul_groups(
        spec, precision, dev, layer_elements=layer_elements, head_elements=head_elements, share=share
    )
    if found is None:
        return None
    groups, head_group = found
    if head:
        if head_group is None:
            return None
        groups = [*groups, head_group]
    main = groups[0][0]
    if prec.runtime == "llama.cpp":
        # attention over the cache does not depend on the weights' type: one figure (the median of the types'
        # timings) rather than whichever type happens to come first
        per_element = _llama_context_per_element(dev) or main.context_s_per_element
        main = dataclasses.replace(main, context_s_per_element=per_element)
    compute = sum(group_seconds(g, tokens) for g in groups)
    llc = float((dev.details or {}).get("llc_bytes") or 0)
    bw = float(dev.bandwidth_gbps or 0.0) * GB
    if prec.runtime == "llama.cpp" and dev.kind == "cpu":
        weights_s, stream = _llama_cpu_weights(dev, groups, tokens, read_bytes, bw)
    else:
        stream = read_bytes / bw if bw > 0 and read_bytes > llc else 0.0
        weights_s = max(compute, stream)
    constant = main.per_token_s if head else 0.0
    # attention over the cache: per cached element on every device, and per cached token once a step (the mask)
    # the probe's per-element cost is per cached element as attention reads it: once for each query head
    context = main.context_s_per_element * kv_elements * query_groups(spec, prec.runtime)
    context += main.context_s_per_token * depth if head else 0.0
    t = weights_s + constant + main.per_layer_s * layers * share + context
    return t, {
        "compute_s": compute,
        "stream_s": stream,
        "constant_s": constant,
        "layers_s": main.per_layer_s * layers * share,
        "context_s": context,
        "measured_costs": True,
    }


# NOTE: how large a probe model can be and still run from the cache: half the last-level cache the system reports,
# at most 64 MiB (a VM shares the host's cache with its neighbours). Checked on two VMs: the Intel one (260 MiB LLC
# reported) ran the 48 MB F16 probe from the cache and streamed the 97 MB F32 one; the AMD one (32 MiB L3) ran the
# 13.6-15.1 MB Q4_0/Q4_1 probes from the cache (a 51 MB Q4_0 model took 1.6x the time per layer) and streamed the
# 18-26 MB Q5_1 and Q8_0 ones (benchmarks/accuracy.py runs 8 and 10: the sum of compute and stream priced them
# within 10% on the side of this line where it is used, 40-80% off on the other).
PROBE_CACHE_CAP = 64 * 2**20


def _probe_cache_bytes(dev: Device) -> float:
    """The part of the last-level cache a probe model could sit in (see the NOTE above)."""
    llc = float((dev.details or {}).get("llc_bytes") or 0)
    return min(llc / 2, PROBE_CACHE_CAP) if llc else 32 * 2**20


def llama_stream_cost(dev: Device) -> float:
    """Seconds per byte a llama.cpp decode step pays for weights read from memory, as the probe measured it
    (runtime_costs._stream_per_byte); 0 when it did not.

    The probe measured it against the wide8 Q4_0 model's rate, taken as arithmetic alone. Where that model did not
    fit in the cache either (an LLC under ~26 MiB: see `_probe_cache_bytes`), a share s of its bytes was read from
    memory inside its rate, and the deep model's extra time counts only (1 - s) of the cost per byte: it is divided
    back out, by the same cache rule that `_llama_cpu_weights` prices with."""
    data = ((dev.details or {}).get("runtime_costs") or {}).get("llama.cpp stream") or {}
    try:
        per_byte = max(float(data.get("s_per_byte") or 0.0), 0.0)
        small = max(float(data.get("cache_resident_bytes") or 0.0), 0.0)
    except (TypeError, ValueError):
        return 0.0
    spilled = max(small - _probe_cache_bytes(dev), 0.0) / small if small > 0 else 0.0
    return per_byte / (1 - spilled) if spilled < 0.9 else per_byte


def llama_stream_bandwidth(dev: Device) -> float:
    """Bytes a second llama.cpp's CPU kernels were seen to read from memory: the fastest of the probe's models that
    were too large for the cache (their rate times their bytes per weight), 0 when none was. NOTE: torch's
    matrix-vector product, which measures the device's bandwidth, does not reach what llama.cpp's kernels read on
    every CPU: on a 2-vCPU AMD EPYC VM (32 MiB L3) torch read 28 GB/s in fp32 while llama.cpp's F32 and F16 probe
    models streamed at 54-56 GB/s, and the embedded model's F32 GGUF decoded at 53 GB/s (98 tok/s, priced 46 by
    torch's figure; benchmarks/accuracy.py run 9). On the Intel VM the two agreed (30 GB/s)."""
    table = ((dev.details or {}).get("runtime_costs") or {}).get("llama.cpp") or {}
    cache = _probe_cache_bytes(dev)
    best = 0.0
    for type_name, data in table.items():
        try:
            per_weight = P.gguf_bits_per_weight(type_name) / 8
            rate = float(data["elements_per_s"])
        except (KeyError, TypeError, ValueError):
            continue
        if PROBE_MATMUL_ELEMENTS * per_weight > cache:
            best = max(best, rate * per_weight)
    return best


def query_groups(spec: ModelSpec, runtime: str = "transformers") -> float:
    """Query heads that read each cached element: query heads per KV head (grouped-query attention); 1 where the
    spec does not say. llama.cpp caches MLA's one latent per layer (DeepSeek: 576 values), which every query head
    reads (its absorbed attention is grouped-query attention with one KV head), where transformers caches K and V
    per head. NOTE: one ratio for the model; Gemma 4's full layers (2 global KV heads against 8) are read by more
    query heads per element than its sliding ones, which this averages away (per-layer ratios not kept)."""
    heads, kv = spec.num_attention_heads or 0, spec.num_kv_heads or 0
    if runtime == "llama.cpp" and spec.kv is not None and spec.kv.latent_elements and heads:
        return float(heads)
    return heads / kv if heads and kv else 1.0


def _llama_cpu_weights(
    dev: Device, groups: list[Group], tokens: int, read_bytes: float, bw: float
) -> tuple[float, float]:
    """(seconds of the weights, of which reading them from memory) of a llama.cpp decode step on the CPU, group by
    group. The probe's model of a type ran partly from the cache: the part of it larger than the cache was read from
    memory at the measured cost per byte, the rest is the arithmetic. A real model reads all its bytes from memory:
    its arithmetic at the probe's rate less the probe's own reading, plus all its bytes at that cost, and never
    faster than the probe's own rate (F32 and F16's plain dot products overlap reading and arithmetic, as the
    quantized kernels do not: their probes ran about as fast as that cost allows).
    Without the measured cost (older profiles): the sum with torch's
    bandwidth where the probe fit the cache, else the larger of the two at what llama.cpp was seen to read. Nothing
    streams when the whole step reads no more than the probe model did."""
    total_elements = sum(g.elements for g in groups) or 1.0
    cache = _probe_cache_bytes(dev)
    per_byte = llama_stream_cost(dev)
    seen = max(bw, llama_stream_bandwidth(dev))
    weights_s = stream_s = 0.0
    for g in groups:
        compute = group_seconds(g, tokens)
        nbytes = read_bytes * g.elements / total_elements  # (the file's real bytes, shared by elements)
        probe_bytes = PROBE_MATMUL_ELEMENTS * g.bytes_per_element
        if total_elements <= PROBE_MATMUL_ELEMENTS:
            weights_s += compute
        elif per_byte > 0:
            spilled = max(probe_bytes - cache, 0.0) / probe_bytes if probe_bytes > 0 else 0.0
            probe_reading = spilled * g.bytes_per_element * g.elements * per_byte
            stream_s += nbytes * per_byte
            # never faster than memory can deliver the bytes: a deep probe that still sat in a large cache (a
            # host's 260-384 MiB of L3) measures a cost per byte near zero
            floor = nbytes / seen if seen > 0 else 0.0
            weights_s += max(compute, compute - probe_reading + nbytes * per_byte, floor)
        elif probe_bytes <= cache:
            stream = nbytes / bw if bw > 0 else 0.0
            stream_s += stream
            weights_s += compute + stream
        else:
            stream = nbytes / seen if seen > 0 else 0.0
            stream_s += stream
            weights_s += max(compute, stream)
    return weights_s, stream_s


def _device_bandwidth(dev: Device, precision: str) -> float:
    """Measured bandwidth for the dtype decode streams (the probe measures bf16 separately on CPU)."""
    by_dtype = dev.details.get("bandwidth_gbps_by_dtype") if dev.details else None
    if by_dtype and precision in ("bf16", "fp16") and by_dtype.get("bf16"):
        return float(by_dtype["bf16"])
    return float(dev.bandwidth_gbps or 0.0)


def decode_seconds(
    spec: ModelSpec,
    precision: str,
    hw: Hardware,
    placement: Placement,
    *,
    depth: int,
    batch: int = 1,
    tokens_in_pass: int = 1,
    calibration: Calibration = NO_CALIBRATION,
    llama: M.LlamaCppSettings = M.DEFAULT_LLAMA,
) -> tuple[float, dict]:
    """Seconds for one decode step (one forward pass) and the basis of the figure."""
    prec = P.get(precision, spec)
    parts = bytes_per_token(spec, precision, depth=depth, batch=batch, tokens_in_pass=tokens_in_pass, llama=llama)
    layers = spec.num_layers or 1
    layer_bytes = (parts["layers"] + parts["kv_cache"]) / layers
    devices = {d.label: d for d in hw.devices}
    total_layers = sum(placement.layers.values()) or layers
    seconds = uncalibrated = 0.0
    per_device = {}
    calibrated = True
    for label, n in placement.layers.items():
        dev = devices.get(label) or hw.cpu or hw.devices[0]
        read = layer_bytes * n * layers / total_layers
        if label == placement.head_device:
            read += parts["head"]
        if label == placement.embed_device:
            read += parts["embedding_rows"]
        compute_kind = dev.kind
        if dev.kind == "cpu" and placement.offloaded_layers and prec.runtime == "transformers":
            # transformers (accelerate hooks) copies offloaded weights to the GPU on every pass.
            gpu = next(d for d in hw.devices if d.kind != "cpu")
            pcie = float(gpu.details.get("pcie_gbps") or PCIE_GBPS_DEFAULT) if gpu.details else PCIE_GBPS_DEFAULT
            t = read / (pcie * GB)
            fixed, _ = calibration.fixed(prec.runtime, gpu.kind)
            t += fixed * n
            per_device[label] = {"bytes": int(read), "via": "PCIe to GPU", "gbps": pcie, "seconds": t}
            seconds += t
            uncalibrated += t
            calibrated = False
            continue
        kv_elements = parts["kv_cache"] / M.cache_dtype_bytes(precision, llama) * n / total_layers
        tokens = batch * tokens_in_pass
        bw = _device_bandwidth(dev, precision)
        measured = _measured_step(
            spec, precision, dev, share=n / total_layers, head=label == placement.head_device, read_bytes=read,
            kv_elements=kv_elements, tokens=tokens, depth=depth * batch,
        )  # fmt: skip
        if measured is not None:
            t, info = measured
            info.update(bytes=int(read), bandwidth_gbps=bw, bandwidth_source=dev.bandwidth_source)
        else:
            eff, _ = calibration.eff(prec.runtime, prec.kind, device_key(dev), precision)
            fixed, _ = calibration.fixed(prec.runtime, device_key(dev))
            per_element, _ = calibration.context(prec.runtime, precision, compute_kind)
            t = read / (bw * eff * GB) if bw > 0 else math.inf
            if tokens > 1:
                # Several tokens per pass (a batch, or verifying draft tokens) share the weight reads but
                # not the arithmetic: the pass is bound by whichever is slower.
                peak = _matmul_tflops(dev, precision) * 1e12 * MATMUL_EFFICIENCY.get(compute_kind, 0.5)
                flops = 2 * spec.active_params * tokens * (n / total_layers)
                t = max(t, flops / peak if peak > 0 else 0.0)
            t += fixed * n + kv_elements * per_element
            info = {
                "bytes": int(read),
                "bandwidth_gbps": bw,
                "bandwidth_source": dev.bandwidth_source,
                "efficiency": eff,
                "fixed_s_per_layer": fixed,
                "context_s": kv_elements * per_element,
            }
        scale, cal = calibration.step_scale(prec.runtime, precision, prec.kind, compute_kind)
        uncalibrated += t
        t *= scale
        info.update(seconds=t, calibration_scale=scale)
        per_device[label] = info
        seconds += t
        calibrated &= cal
    basis = {"bytes_per_token": parts, "devices": per_device, "calibrated": calibrated,
             "uncalibrated_s": uncalibrated, "cost_model": COST_MODEL_VERSION}  # fmt: skip
    return seconds, basis


def _matmul_tflops(dev: Device, precision: str) -> float:
    """The device's matrix throughput for the dtype the precision computes in (measured per dtype on CPU)."""
    by_dtype = dev.details.get("matmul_tflops_by_dtype") if dev.details else None
    if by_dtype:
        # fp32 computes in fp32; the 16-bit formats and bitsandbytes/GGUF kernels in 16-bit.
        key = "fp32" if precision == "fp32" else "bf16"
        if by_dtype.get(key):
            return float(by_dtype[key])
    return float(dev.matmul_tflops or 0.0)


def _measured_prefill(
    spec: ModelSpec,
    precision: str,
    dev: Device,
    *,
    share: float,
    head: bool,
    prompt_tokens: int,
    batch: int,
    attn_flops: float,
    read_bytes: float,
) -> tuple[float, dict] | None:
    """Seconds of this device's share of a prefill from the probe's measured step costs (None when it did not
    time this runtime and format here): a constant per pass (prompts go through in passes of one micro-batch or
    chunk), the weight elements times the tokens at the kernels' measured prefill rate, attention's arithmetic at
    the same rate, and never less than streaming the weights once per pass."""
    prec = P.get(precision, spec)
    layer_elements, head_elements = matmul_elements(spec, tokens=prompt_tokens * batch)
    found = _matmul_groups(
        spec, precision, dev, layer_elements=layer_elements, head_elements=head_elements, share=share
    )
    if found is None:
        return None
    groups, head_group = found
    if head_group is None:
        return None
    main = max(groups, key=lambda g: g.elements).costs
    chunk = M.prefill_chunk(prompt_tokens, device_kind=dev.kind, runtime=prec.runtime)
    passes = -(-prompt_tokens // max(chunk, 1)) * batch
    tokens = prompt_tokens * batch
    # A quantized kernel's extra cost per element (bitsandbytes dequantizing a block) is paid once per matmul, so
    # once per pass, not per token: a prompt runs at the 16-bit prefill rate plus one dequantization of each
    # weight per pass (nf4 prefill ran at bf16's speed here while its decode took twice bf16's time).
    pass_s = main.prefill_pass_s
    if prec.runtime == "transformers" and _transformers_key(prec, precision, dev)[0] in BNB_KINDS:
        # The probe timed this kind's prompts itself: its rate is the measured one, and its pass constant holds,
        # beyond the 16-bit pass's, one dequantization of the probe model's weights (nf4 dequantizes every block
        # before a bf16 GEMM): that part grows with the weights a pass multiplies.
        pf = 1.0
        base = measured_costs(dev, "transformers", "bf16")
        if base is not None:
            per_element = max(main.prefill_pass_s - base.prefill_pass_s, 0.0) / PROBE_MATMUL_ELEMENTS
            pass_s = base.prefill_pass_s + per_element * sum(g.elements for g in groups)
    else:
        pf = BNB_CPU_PREFILL_FACTOR.get(prec.kind, 1.0) if prec.runtime == "transformers" else 1.0
    compute = sum(g.elements * tokens / (g.costs.prefill_elements_per_s * pf) for g in groups
                  if g.costs.prefill_elements_per_s > 0)  # fmt: skip
    compute += passes * sum(g.elements * max(1 / (g.costs.elements_per_s * g.factor) - 1 / g.costs.elements_per_s, 0)
                            for g in groups if g.costs.elements_per_s > 0 and g.factor > 0)  # fmt: skip
    if head:
        # Only the last position's logits are computed in a prompt pass (transformers' logits_to_keep=1,
        # llama.cpp's one output): the head costs one token's worth per pass, at the decode rate.
        compute += passes * group_seconds(head_group)
    if main.prefill_attention_s > 0:  # attention's own measured cost (softmax, masks: not the GEMMs' rate)
        compute += main.prefill_attention_s * attn_flops / 2
    else:
        compute += attn_flops / 2 / max(main.prefill_elements_per_s, 1.0)
    bw = float(dev.bandwidth_gbps or 0.0) * GB
    stream = passes * read_bytes / bw if bw > 0 else 0.0
    # NOTE: on a CPU a prompt pass pays reading its weights on top of its arithmetic, not overlapped with it: the
    # probe's 512-wide bf16 Llama, built at 8 and at 30 layers, took 13.9 and 45.1 ms for a 16-token prompt on the
    # AMD EPYC VM (1.42 ms a layer), where its measured arithmetic (0.34 ms), per-layer constant (0.57) and reading
    # 6 MB at the probe's 10 GB/s (0.6) sum to 1.5 and their larger part to 0.9 (NOTES.md, stop 22). A GPU's kernels
    # overlap the two.
    t = passes * pass_s + (compute + stream if dev.kind == "cpu" else max(compute, stream))
    return t, {"passes": passes, "pass_s": pass_s, "compute_s": compute, "stream_s": stream, "measured_costs": True}


def prefill_seconds(
    spec: ModelSpec,
    precision: str,
    hw: Hardware,
    placement: Placement,
    *,
    prompt_tokens: int,
    batch: int = 1,
    calibration: Calibration = NO_CALIBRATION,
) -> tuple[float, dict]:
    """Seconds to process the prompt: max(compute, weight streaming) per device, plus fixed costs."""
    prec = P.get(precision)
    layers = spec.num_layers or 1
    tokens = prompt_tokens * batch
    d_attn = (spec.num_attention_heads or 0) * (spec.head_dim or 0)
    # Causal attention: QK^T and AV, 2 FLOPs per MAC, half the square on average.
    attn = 2 * layers * d_attn * prompt_tokens * prompt_tokens * batch
    flops_total = 2 * spec.active_params * tokens + attn
    w = M.weight_bytes(spec, precision)
    weight_read = w.layers + w.lm_head + w.embedding * (1 if spec.tied_embeddings else 0)
    devices = {d.label: d for d in hw.devices}
    total_layers = sum(placement.layers.values()) or layers
    seconds = 0.0
    info = {}
    for label, n in placement.layers.items():
        dev = devices.get(label) or hw.cpu or hw.devices[0]
        share = n / total_layers
        flops = flops_total * share
        measured = _measured_prefill(
            spec, precision, dev, share=share, head=label == placement.head_device, prompt_tokens=prompt_tokens,
            batch=batch, attn_flops=attn * share, read_bytes=weight_read * share,
        )  # fmt: skip
        if measured is not None:
            t, detail = measured
            info[label] = {"flops": flops, "seconds": t, **detail}
            seconds += t
            continue
        peak = _matmul_tflops(dev, precision) * 1e12
        mm_eff = MATMUL_EFFICIENCY.get(dev.kind, 0.5) * QUANT_PREFILL_FACTOR.get(prec.kind, 1.0)
        if precision == "fp32" and dev.kind != "cpu":
            mm_eff *= 0.25  # NOTE: fp32 on tensor-core GPUs runs at ~1/4 of the 16-bit rate (TF32 off)
        compute = flops / (peak * mm_eff) if peak > 0 else math.inf
        eff, _ = calibration.eff(prec.runtime, prec.kind, device_key(dev), precision)
        bw = _device_bandwidth(dev, precision)
        stream = weight_read * share / (bw * eff * GB) if bw > 0 else math.inf
        fixed, _ = calibration.fixed(prec.runtime, device_key(dev))
        t = max(compute, stream) + fixed * n
        if dev.kind == "cpu" and placement.offloaded_layers and prec.runtime == "transformers":
            t = max(t, weight_read * share / (PCIE_GBPS_DEFAULT * GB))
        info[label] = {"flops": flops, "matmul_tflops": dev.matmul_tflops, "efficiency": mm_eff, "seconds": t}
        seconds += t
    return seconds, {"flops": flops_total, "devices": info}


def estimate_speed(
    spec: ModelSpec,
    precision: str,
    hw: Hardware,
    placement: Placement,
    *,
    context: int,
    prompt_tokens: int = 512,
    batch: int = 1,
    depth: int | None = None,
    calibration: Calibration = NO_CALIBRATION,
    llama: M.LlamaCppSettings = M.DEFAULT_LLAMA,
) -> SpeedEstimate:
    """Decode tokens/s at `depth` tokens of context (default: the prompt), prefill tokens/s and TTFT."""
    depth = prompt_tokens if depth is None else depth
    step, basis = decode_seconds(
        spec, precision, hw, placement, depth=depth, batch=batch, calibration=calibration, llama=llama
    )
    pre, pre_basis = prefill_seconds(
        spec, precision, hw, placement, prompt_tokens=prompt_tokens, batch=batch, calibration=calibration
    )
    first = first_token_seconds(step, basis)
    tok_s = batch / step if step > 0 and math.isfinite(step) else 0.0
    lo, hi = RANGE_CALIBRATED if basis["calibrated"] else RANGE_UNCALIBRATED
    bpt = sum(basis["bytes_per_token"].values())
    basis.update(depth=depth, prefill=pre_basis, range=[lo, hi])
    return SpeedEstimate(
        decode_tok_s=tok_s,
        decode_tok_s_low=tok_s * lo,
        decode_tok_s_high=tok_s * hi,
        # NOTE: prefill speed is the prompt over the time to first token, as every engine reports it
        # (advisor.engines.base.Generation.prefill_tok_s) and bench measures it: the prompt pass cannot be timed
        # apart from the first token it yields. Pricing the pass alone against that measurement read short prompts
        # 20-56% fast while their TTFT held within 10% (benchmarks/accuracy.py, NOTES.md).
        prefill_tok_s=prompt_tokens * batch / (pre + first) if pre > 0 and math.isfinite(pre + first) else 0.0,
        ttft_s=pre + first if math.isfinite(pre) else math.inf,
        prompt_tokens=prompt_tokens,
        bytes_per_token=int(bpt),
        basis=basis,
    )


def first_token_seconds(step: float, basis: dict) -> float:
    """What the first token adds to the prompt pass, given a decode step of `step` seconds and its basis.

    NOTE: the first token's logits come out of the prompt pass itself, which has already read (and been priced for)
    every weight; what the pass's measured constant does not hold is the model's own constants: the probe's pass
    constant was timed on an 8-layer model, and the step's per-token, per-layer and attention costs stand for the
    rest. Where the probe priced every device, the first token is those costs alone, not a whole decode step that
    reads the weights a second time. That second reading had priced the embedded model's 32-token TTFT 15-68% slow
    in fp32, bf16 and the bitsandbytes formats (benchmarks/accuracy.py runs 13-24); without it, runs 16 and 23 (whose
    decode estimates were within target) put 17 of 18 transformers TTFTs within 25%, against 16 and 15 before
    (NOTES.md, stop 22). Elsewhere (table defaults, offloaded layers) the whole step is kept."""
    devices = (basis or {}).get("devices") or {}
    if not devices or not all(d.get("measured_costs") for d in devices.values()):
        return step
    return sum(
        (d.get("constant_s", 0.0) + d.get("layers_s", 0.0) + d.get("context_s", 0.0)) * d.get("calibration_scale", 1.0)
        for d in devices.values()
    )


def assisted_speedup(
    spec: ModelSpec,
    precision: str,
    hw: Hardware,
    placement: Placement,
    draft: ModelSpec,
    draft_precision: str,
    draft_placement: Placement,
    *,
    depth: int,
    acceptance: float = 0.7,
    lookahead: int = 5,
    calibration: Calibration = NO_CALIBRATION,
) -> dict:
    """Expected speed-up of assisted generation (speculative decoding) over plain decoding.

    With per-token acceptance rate a and lookahead g, one target pass yields on average
    (1 - a^(g+1)) / (1 - a) tokens (Leviathan et al., 2023). A cycle costs g draft steps plus one
    target pass verifying g+1 tokens; for MoE targets that pass reads the experts any of those
    tokens picked, which can erase the gain.
    """
    a = min(max(acceptance, 0.0), 0.999)
    expected = (1 - a ** (lookahead + 1)) / (1 - a)
    plain, _ = decode_seconds(spec, precision, hw, placement, depth=depth, calibration=calibration)
    verify, _ = decode_seconds(
        spec, precision, hw, placement, depth=depth, tokens_in_pass=lookahead + 1, calibration=calibration
    )
    draft_step, _ = decode_seconds(draft, draft_precision, hw, draft_placement, depth=depth, calibration=calibration)
    cycle = lookahead * draft_step + verify
    tok_s = expected / cycle if cycle > 0 else 0.0
    plain_tok_s = 1 / plain if plain > 0 else 0.0
    return {
        "acceptance": a,
        "lookahead": lookahead,
        "tokens_per_target_pass": expected,
        "target_step_s": plain,
        "verify_step_s": verify,
        "draft_step_s": draft_step,
        "tok_s": tok_s,
        "plain_tok_s": plain_tok_s,
        "speedup": tok_s / plain_tok_s if plain_tok_s else 0.0,
        "experts_read_fraction_verify": experts_read_fraction(spec, lookahead + 1),
    }
