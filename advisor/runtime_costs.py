"""What one decode step and one prefill pass cost on this machine, per runtime and weight format, measured.

A decode step costs a constant (sampling, the generation loop), a constant per layer (kernel dispatch, norms,
rotary, Python), reading the weights (per weight element at the rate the runtime's kernels reach, and never
faster than the memory bandwidth allows), and attention over the cache (per cached element). A prefill pass
costs a constant, then its arithmetic. One model cannot separate these, so the probe times three small ones,
built here with random weights (speed does not depend on weight values for these kernels):

    tiny2  2 layers, hidden 64   -> the per-token constant        (weights negligible)
    tiny8  8 layers, hidden 64   -> the per-layer constant        (slope over layers)
    wide8  8 layers, hidden 512  -> the weight rate, attention and prefill (what the constants leave)
    wide2k 2 layers, hidden 2048 -> (transformers) the weight rate split into a cost per element and per output row

A matrix-vector product costs a little per output row (the row's reduction and store) besides reading its elements:
torch's bf16 GEMV ran 6-7 G elements/s on 576-wide rows and 13-15 on 4864-wide ones here (~60 ns a row plus
~17 G elements/s, the DRAM's 34 GB/s). One probe width cannot tell the two apart, and a model of another width
then inherits the wrong mix: calibrated on SmolLM2-135M (about 650 elements a row), bf16 decode of 1B models
(2,400 a row) was predicted 15-25% off, in either direction as the probe's one rate moved. wide8 (620 elements a
row) and wide2k (2,450) separate them.

transformers models are built with transformers' own Llama in each dtype and run by advisor's transformers
engine; llama.cpp models are written as GGUF files (gguf-py's quantizers, and llama.cpp's own for the K-quants)
and run by advisor's llama.cpp engine in a child process (native code never runs in the probing process).
The figures go into the hardware profile (`details["runtime_costs"]`), measured once and cached with it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from advisor.spec import StepCosts

# (layers, hidden, intermediate) of the probe models; heads of 64 dimensions, a quarter of them KV heads.
SHAPES = {"tiny2": (2, 64, 128), "tiny8": (8, 64, 128), "wide8": (8, 512, 1536)}
WIDE2K = (2, 2048, 5632)  # transformers only (llama.cpp's stream term is priced apart: see costmodel.speed)
VOCAB = 256
DECODE_TOKENS = 16
# NOTE: the long depth is the deepest bench measures: fp32's attention over the cache added only 0.4 ms to a
# 6.4 ms step at depth 384 on wide8, within the repeats' spread, and its per-element cost read 1.6e-10 to 7.6e-10 s
# between probes; at 1024 the difference doubles and read 3.2-3.8e-10 (bf16 1.4-1.5e-9 at both depths).
DEPTH_SHORT, DEPTH_LONG = 8, 1024
# NOTE: prompts of 16, 128 and 512 tokens separate a pass's constant, its cost per token (the weights' GEMMs) and
# attention's cost, which grows with the square of the prompt: timed at 16 and 128 tokens alone, llama.cpp's 512-token
# prompts on the AMD VM ran 27-31% slower than priced in F16, BF16 and F32 (benchmarks/accuracy.py run 9).
PREFILL_SHORT, PREFILL_LONG, PREFILL_LONGEST = 16, 128, 512
TRANSFORMERS_DTYPES = ("fp32", "bf16", "fp16")
# llama.cpp tensor types timed: those gguf-py writes directly, and two K-quants made by llama.cpp's quantizer
# (Q4_K is repacked on x86 like Q4_0; Q6_K runs the generic K-quant dot product). F32 has a rate of its own: no
# conversion before the dot product, so borrowing F16's priced F32 GGUF decode 30% slow. Q5_0 and Q5_1 are timed
# too (written directly, ~1.3 s each): on x86 a prompt goes through llamafile's tinyBLAS for Q5_0 (as for Q8_0 and
# Q4_0) but through the plain dot product for Q5_1 (as for Q4_1) (ggml-cpu/llamafile/sgemm.cpp), so no one
# measured type stood for both: borrowing Q4_1's rate priced Q5_0 prompts 30-40% slow and Q5_1's 20-30% fast
# (benchmarks/accuracy.py; they are also what the K-quants fall back to on rows that are not a multiple of 256).
# BF16 has its own rate too: on a CPU with AVX512-BF16 (the AMD EPYC VM) llama.cpp multiplies BF16 natively, and a
# BF16 GGUF's prompts ran 25-30% faster than F16's rate priced them (benchmarks/accuracy.py runs 11 and 12).
LLAMA_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q6_K")
LLAMA_DIRECT = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")


def heads_of(hidden: int) -> tuple[int, int, int]:
    """(attention heads, KV heads, head dim) of a probe model."""
    heads = max(hidden // 64, 1)
    return heads, max(heads // 4, 1), hidden // heads


def matmul_elements(layers: int, hidden: int, inter: int, vocab: int = VOCAB) -> int:
    """Weight elements one decode step multiplies: q/k/v/o, gate/up/down per layer, and the (tied) head."""
    _heads, kv, hd = heads_of(hidden)
    per_layer = 2 * hidden * hidden + 2 * hidden * kv * hd + 3 * hidden * inter
    return layers * per_layer + vocab * hidden


def matmul_rows(layers: int, hidden: int, inter: int, vocab: int = VOCAB) -> int:
    """Output rows of the matrices one decode step multiplies (q, k, v, o, gate, up, down per layer; the head)."""
    _heads, kv, hd = heads_of(hidden)
    return layers * (3 * hidden + 2 * kv * hd + 2 * inter) + vocab


def kv_elements(layers: int, hidden: int, depth: int) -> int:
    """Cached K/V elements as attention reads them: once for each query head (a grouped KV head serves several).
    NOTE: per query head, not per stored element: attention's cost on the CPU is its arithmetic (transformers'
    SDPA repeats K and V for each query head; llama.cpp multiplies each head's queries by the cache), far below
    the memory's speed. Counted per stored element, the probe (4 query heads to a KV head) overpriced the depth
    cost of SmolLM2 (3 to 1) by ~35% in bf16, int4 and int8 and every llama.cpp type (benchmarks/accuracy.py runs
    7-9: decode at depth 1024 read 12-26% fast there, 64 within 10%)."""
    heads, _kv, hd = heads_of(hidden)
    return 2 * layers * heads * hd * depth


def fit(samples: dict[str, dict[str, float]], shared: StepCosts | None = None) -> StepCosts:
    """StepCosts from per-shape timings: {shape: {"decode_s", "decode_long_s", "prefill_short_s",
    "prefill_long_s", "prefill_longest_s"}} (seconds per decode step at the short and long depth, seconds of the
    prefills at PREFILL_SHORT/LONG/LONGEST tokens; the longest optional), with a "wide2k" shape where the cost per
    output row is to be split from the cost per element (transformers).

    A deeper cache costs twice over: per cached token whatever the model's width (the causal mask and positions
    are built once a step, for all layers) and per cached K/V element (reading it, and the cache's own copies).
    The narrow tiny2 and the wide8 timed at both depths separate the two: on a 2-layer, 64-wide model nearly all
    of the depth cost is the per-token part, which a per-element rate would have spread over 8x fewer elements.

    `shared`: costs that do not depend on the weights (llama.cpp's attention over the cache and in the prompt, the
    same kernels on the same F16 cache whatever the tensor type), for a wide8 timed without the long depth or the
    longest prompt."""
    l2 = SHAPES["tiny2"][0]
    l8 = SHAPES["tiny8"][0]
    lw, hw, iw = SHAPES["wide8"]
    t2, t8, tw = samples["tiny2"]["decode_s"], samples["tiny8"]["decode_s"], samples["wide8"]["decode_s"]
    per_layer = max((t8 - t2) / (l8 - l2), 0.0)
    per_token = max(t2 - l2 * per_layer, 0.0)
    weights_s = tw - per_token - lw * per_layer
    elements = matmul_elements(lw, hw, iw)  # (the tiny models' weights are noise next to these)
    rate = elements / weights_s if weights_s > 0 else elements / max(tw, 1e-9)
    per_row, stream_rate = 0.0, 0.0
    if "wide2k" in samples:
        split = _fit_rows(samples)
        if split is not None:
            per_token, per_layer, per_row, stream_rate = split
            weights_s = tw - per_token - lw * per_layer
            rate = elements / weights_s if weights_s > 0 else rate
    long = samples["wide8"].get("decode_long_s")
    extra = kv_elements(lw, hw, DEPTH_LONG) - kv_elements(lw, hw, DEPTH_SHORT)
    depth = DEPTH_LONG - DEPTH_SHORT
    per_token_depth = 0.0
    if long is None:
        if shared is None:
            raise ValueError("wide8 was timed without the long depth and no shared attention cost was given")
        context, per_token_depth = shared.context_s_per_element, shared.context_s_per_token
    elif "decode_long_s" in samples["tiny2"]:
        h2 = SHAPES["tiny2"][1]
        extra2 = kv_elements(l2, h2, DEPTH_LONG) - kv_elements(l2, h2, DEPTH_SHORT)
        d_wide, d_tiny = max(long - tw, 0.0), max(samples["tiny2"]["decode_long_s"] - t2, 0.0)
        per_element = (d_wide - d_tiny) / (extra - extra2) if extra > extra2 else 0.0
        if per_element < 0:  # disturbed: the tiny model's depth cost is all per token
            per_element = 0.0
        per_token_depth = max((d_tiny - extra2 * per_element) / depth, 0.0)
        context = per_element
    else:
        context = max((long - tw) / extra, 0.0) if extra else 0.0
    p_short, p_long = samples["wide8"]["prefill_short_s"], samples["wide8"]["prefill_long_s"]
    per_token_prefill = (p_long - p_short) / (PREFILL_LONG - PREFILL_SHORT)
    if per_token_prefill <= 0:  # a disturbed pair: the long prefill's own rate is the better figure
        per_token_prefill = p_long / PREFILL_LONG
    pass_s = max(p_short - PREFILL_SHORT * per_token_prefill, 0.0)
    attention = 0.0
    if "prefill_longest_s" in samples["wide8"]:
        square = _fit_square(p_short, p_long, samples["wide8"]["prefill_longest_s"])
        if square is not None:
            pass_s, per_token_prefill, per_square = square
            attention = per_square / (lw * hw)  # per layer, attention width (heads x head dim = hidden) and token^2
    elif shared is not None and shared.prefill_attention_s > 0:
        # the shared square taken out of both prompts, the line through what is left
        attention = shared.prefill_attention_s
        per_square = attention * lw * hw
        q_short = p_short - per_square * PREFILL_SHORT**2
        q_long = p_long - per_square * PREFILL_LONG**2
        linear = (q_long - q_short) / (PREFILL_LONG - PREFILL_SHORT)
        if linear > 0:
            per_token_prefill = linear
            pass_s = max(q_short - PREFILL_SHORT * linear, 0.0)
        else:
            attention = 0.0
    prefill_rate = matmul_elements(lw, hw, iw) / per_token_prefill
    return StepCosts(per_token, per_layer, rate, context, pass_s, prefill_rate, per_token_depth, per_row, stream_rate,
                     attention)  # fmt: skip


def _fit_square(p1: float, p2: float, p3: float) -> tuple[float, float, float] | None:
    """(constant, per token, per token^2) of prefills timed at the three prompt lengths; None when the timings do
    not describe a machine (a negative term: a disturbed repeat)."""
    n1, n2, n3 = PREFILL_SHORT, PREFILL_LONG, PREFILL_LONGEST
    d1, d2 = (p2 - p1) / (n2 - n1), (p3 - p2) / (n3 - n2)
    square = (d2 - d1) / (n3 - n1)
    per_token = d1 - square * (n1 + n2)
    constant = p1 - per_token * n1 - square * n1 * n1
    if square <= 0 or per_token <= 0:
        return None
    return max(constant, 0.0), per_token, square


def _fit_rows(samples: dict[str, dict[str, float]]) -> tuple[float, float, float, float] | None:
    """(per_token, per_layer, per_row, stream rate): the two wide models' weight time solved for a cost per element
    and per output row; the tiny models' own rows and elements then come out of the constants, and the solve is
    repeated until it settles. None when a split comes out negative (a disturbed timing): the costs stay unseparated."""
    shapes = {**SHAPES, "wide2k": WIDE2K}
    elements = {name: matmul_elements(*shapes[name]) for name in ("tiny2", "tiny8", "wide8", "wide2k")}
    rows = {name: matmul_rows(*shapes[name]) for name in elements}
    layers = {name: shapes[name][0] for name in elements}
    per_row = per_element = 0.0
    for _ in range(8):  # the tiny models' weights are small: each round takes most of what is left
        own = {n: samples[n]["decode_s"] - rows[n] * per_row - elements[n] * per_element for n in elements}
        per_layer = max((own["tiny8"] - own["tiny2"]) / (layers["tiny8"] - layers["tiny2"]), 0.0)
        per_token = max(own["tiny2"] - layers["tiny2"] * per_layer, 0.0)
        w1, w2 = (samples[n]["decode_s"] - per_token - layers[n] * per_layer for n in ("wide8", "wide2k"))
        e1, e2, r1, r2 = elements["wide8"], elements["wide2k"], rows["wide8"], rows["wide2k"]
        per_row = (w1 * e2 - w2 * e1) / (r1 * e2 - r2 * e1)
        per_element = (w1 - r1 * per_row) / e1
        if per_row <= 0 or per_element <= 0:
            return None
    return per_token, per_layer, per_row, 1.0 / per_element


def rounded(costs: StepCosts) -> dict[str, float]:
    """StepCosts as JSON, to six significant digits."""
    return {k: float(f"{v:.6g}") for k, v in costs.to_json().items()}


# What a probe model is timed for, beyond the decode step at the short depth.
DECODE_LONG = "decode_long"  # a decode step at the long depth (attention over the cache)
PREFILLS = "prefills"  # prompts of PREFILL_SHORT and PREFILL_LONG tokens (the pass and its rate per token)
PREFILL_SQUARE = "prefill_longest"  # a prompt of PREFILL_LONGEST tokens too (attention's square in the prompt)
FULL = (DECODE_LONG, PREFILLS, PREFILL_SQUARE)


def _warm(engine, figures: tuple[str, ...] = ()) -> None:
    """One untimed run of what a round times (first calls allocate, compile and fill caches)."""
    engine.generate([5] * DEPTH_SHORT, max_new_tokens=4, exact_length=True)
    for n in _prefill_lengths(figures):
        engine.generate([5] * n, max_new_tokens=1, exact_length=True)


def _prefill_lengths(figures: tuple[str, ...]) -> tuple[int, ...]:
    lengths = (PREFILL_SHORT, PREFILL_LONG) if PREFILLS in figures else ()
    return lengths + ((PREFILL_LONGEST,) if PREFILL_SQUARE in figures else ())


def _time_round(engine, figures: tuple[str, ...] = ()) -> dict[str, float]:
    """One sample of each figure: seconds per decode step at the short depth, and those `figures` name: a step at
    the long depth, the prefills."""

    def step(prompt: list[int]) -> float:
        return 1.0 / engine.generate(prompt, max_new_tokens=DECODE_TOKENS, exact_length=True).decode_tok_s

    def prefill(n: int) -> float:
        return engine.generate([5] * n, max_new_tokens=1, exact_length=True).ttft_s

    out = {"decode_s": step([5] * DEPTH_SHORT)}
    if DECODE_LONG in figures:
        out["decode_long_s"] = step([5] * DEPTH_LONG)
    names = {PREFILL_SHORT: "prefill_short_s", PREFILL_LONG: "prefill_long_s", PREFILL_LONGEST: "prefill_longest_s"}
    for n in _prefill_lengths(figures):
        out[names[n]] = prefill(n)
    return out


# NOTE: the probe's constants are medians over rounds spread across the whole timing, the models taking turns. On
# the 2-vCPU AMD EPYC VM the per-layer constant, (tiny8 - tiny2) / 6, moves on a scale of seconds (thread wake-ups
# on a shared host): timed as the fastest of 3 repeats a fraction of a second apart, six probes 3 s apart read
# 0.22-0.62 ms a layer in bf16, and one in a fast moment priced every transformers decode 15-70% fast
# (benchmarks/accuracy.py run 21; run 22 read bitsandbytes' 2.3x slow). Medians of 15 rounds spread over ~10 s read
# 0.33-0.39 ms in five tries (NOTES.md, stop 22). The median is also what bench reports, so the probe prices the
# machine bench will measure, not its fastest moment.
ROUNDS = 5


def _time_engines(engines: dict[str, tuple[Any, tuple[str, ...]]], rounds: int = ROUNDS) -> dict[str, dict[str, float]]:
    """{name: figures} of engines given as {name: (engine, what to time beyond the short decode step)}, each figure
    the median of `rounds` samples; the engines take turns within every round, starting one later each round, so a
    slow moment of the host lands on all of them instead of on one model's figures."""
    import statistics

    for engine, figures in engines.values():
        _warm(engine, figures)
    names = list(engines)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            engine, figures = engines[name]
            samples[name].append(_time_round(engine, figures))
    return {name: {key: statistics.median(s[key] for s in rows) for key in rows[0]} for name, rows in samples.items()}


def plausible(costs: StepCosts) -> bool:
    """Whether a fit describes a machine rather than a disturbed measurement: every figure finite, rates between a
    slow phone and the fastest GPU, constants under a tenth of a second."""
    import math

    values = costs.to_json().values()
    return (
        all(math.isfinite(v) and v >= 0 for v in values)
        and 1e7 < costs.elements_per_s < 1e14
        and 1e8 < costs.prefill_elements_per_s < 1e16
        and costs.per_token_s < 0.1
        and costs.per_layer_s < 0.01
        and costs.context_s_per_element < 1e-6
        and costs.prefill_pass_s < 0.5
        and costs.per_row_s < 1e-5
        and costs.prefill_attention_s < 1e-8
        and (costs.stream_elements_per_s == 0 or 1e7 < costs.stream_elements_per_s < 1e14)
    )


# ---------------------------------------------------------------------------------------------------------------
# transformers


class _NoTokenizer:
    """What the transformers engine asks of a tokenizer when it times token ids alone."""

    pad_token_id = 0
    chat_template = None

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return ""


# bitsandbytes kinds timed like the dtypes, by the precision that loads them (int4-dq shares int4's kind)
BNB_PRECISIONS = {"bnb8": "int8", "bnb4": "int4"}


def measure_transformers(
    dtypes: tuple[str, ...] = TRANSFORMERS_DTYPES, device: str = "cpu", notes: list[str] | None = None
) -> dict[str, Any]:
    """{dtype or bitsandbytes kind: StepCosts json} for transformers on `device` (torch is imported by the caller's
    probe). The bitsandbytes kinds are timed where bitsandbytes is installed: their kernels' costs differ from the
    16-bit ones in ways no constant carries between machines (LLM.int8's CPU prompt rate against bf16's read 1.9x to
    2.8x on different days here). A kind that fails (a bitsandbytes build without CPU kernels, a library mismatch)
    is left out, with a line in `notes`: the kinds already timed are kept."""
    import importlib.util
    import tempfile

    kinds = [*dtypes]
    if dtypes == TRANSFORMERS_DTYPES and device == "cpu" and importlib.util.find_spec("bitsandbytes") is not None:
        kinds += list(BNB_PRECISIONS)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="advisor-probe-") as tmp:
        for kind in kinds:
            try:
                costs = _measure_kind(kind, device, Path(tmp))
            except Exception as exc:  # one kind's failure must not cost the others (~30 s of timing)
                if notes is not None:
                    notes.append(f"transformers {kind} step costs not measured ({type(exc).__name__}: {exc})"[:300])
                continue
            if plausible(costs):
                out[kind] = rounded(costs)
    return out


def _measure_kind(kind: str, device: str, tmp: Path) -> StepCosts:
    """StepCosts of one dtype or bitsandbytes kind, timed on the probe shapes."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from advisor.engines.base import Artifact, LoadOptions
    from advisor.engines.transformers import TransformersEngine
    from advisor.hf import quiet

    torch_dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    engines = {}
    try:  # models built before a failing one are closed too
        for name, (layers, hidden, inter) in {**SHAPES, "wide2k": WIDE2K}.items():
            heads, kv, _hd = heads_of(hidden)
            config = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=inter,
                                 num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                                 max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=0,
                                 eos_token_id=None, pad_token_id=0)  # fmt: skip
            torch.manual_seed(0)
            with quiet():
                if kind in BNB_PRECISIONS:
                    model = _bnb_model(LlamaForCausalLM(config).to(torch.bfloat16), kind, tmp / name)
                else:
                    model = LlamaForCausalLM(config).to(torch_dtypes[kind]).to(device).eval()
            engine = TransformersEngine(
                model, _NoTokenizer(), artifact=Artifact("probe", Path("."), "transformers", "probe"),
                options=LoadOptions(BNB_PRECISIONS.get(kind, kind)), load_seconds=0.0,
            )  # fmt: skip
            engines[name] = (engine, FULL if name == "wide8" else (DECODE_LONG,) if name == "tiny2" else ())
        samples = _time_engines(engines)
    finally:
        for engine, _figures in engines.values():
            engine.close()
    return fit(samples)


def _bnb_model(model, kind: str, folder: Path):
    """The probe model quantized by bitsandbytes the way advisor loads a checkpoint (from_pretrained with the
    precision's quantization config), from a bf16 safetensors copy in `folder`."""
    from transformers import LlamaForCausalLM

    from advisor.engines.transformers import load_kwargs

    model.save_pretrained(folder)
    quantized = LlamaForCausalLM.from_pretrained(folder, device_map="cpu", **load_kwargs(BNB_PRECISIONS[kind]))
    return quantized.eval()


# ---------------------------------------------------------------------------------------------------------------
# llama.cpp (the child process side)


def _byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode table: a 256-token byte-level BPE vocabulary llama.cpp accepts."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_probe_gguf(
    path: Path,
    layers: int,
    hidden: int,
    inter: int,
    tensor_type: str,
    seed: int = 0,
    vocab: int = VOCAB,
    reuse_layers: bool = False,
) -> Path:
    """A Llama of random weights in one GGUF tensor type (gguf-py's own quantizers), with a byte vocabulary; with
    `reuse_layers`, every layer holds the same (quantized once) matrices: as fast to read, far faster to write."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize

    heads, kv, hd = heads_of(hidden)
    writer = GGUFWriter(str(path), arch="llama")
    writer.add_name("advisor-probe")
    writer.add_block_count(layers)
    writer.add_context_length(4096)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(inter)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_rope_dimension_count(hd)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_file_type(0)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([*_byte_tokens()[: VOCAB - 1], "ĠĠ", *(f"<p{i}>" for i in range(vocab - VOCAB))])
    writer.add_token_types([1] * VOCAB + [4] * (vocab - VOCAB))  # the extra ones as user-defined tokens
    writer.add_token_merges(["Ġ Ġ"])  # llama.cpp's BPE loader wants at least one merge
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    rng = np.random.default_rng(seed)
    made: dict[tuple[int, int], Any] = {}

    def add(name: str, rows: int, cols: int) -> None:
        key = (rows, cols) if reuse_layers and name.startswith("blk.") else None
        if key in made:
            data = made[key]
        else:
            data = (rng.standard_normal((rows, cols)) * 0.02).astype(np.float32)
            if tensor_type == "F16":
                data = data.astype(np.float16)
            elif tensor_type != "F32":
                data = quantize(data, getattr(GGMLQuantizationType, tensor_type))
            if key is not None:
                made[key] = data
        if tensor_type in ("F32", "F16"):
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=getattr(GGMLQuantizationType, tensor_type))

    add("token_embd.weight", vocab, hidden)
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        add(f"blk.{i}.attn_q.weight", hidden, hidden)
        add(f"blk.{i}.attn_k.weight", kv * hd, hidden)
        add(f"blk.{i}.attn_v.weight", kv * hd, hidden)
        add(f"blk.{i}.attn_output.weight", hidden, hidden)
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        add(f"blk.{i}.ffn_gate.weight", inter, hidden)
        add(f"blk.{i}.ffn_up.weight", inter, hidden)
        add(f"blk.{i}.ffn_down.weight", hidden, inter)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def measure_llamacpp_here(workdir: Path, types: tuple[str, ...] = LLAMA_TYPES) -> dict[str, Any]:
    """{tensor type: StepCosts json} for llama.cpp on the CPU. Runs in a child process (see
    `measure_llamacpp`): it loads native code.

    Every probe model is loaded once and they take turns over ROUNDS rounds (`_time_engines`), each figure the
    median of its rounds: the F32 tiny models for the constants, the wide8 model of each tensor type, and the deep
    Q4_0 model for the cost of reading weights from memory. On a VM the host's other tenants slow every kernel for
    seconds at a time: one pass over the types read the Q4_0 rate at 4.6e10 elements/s where the passes before and
    after read 7.5e10 (the AMD EPYC VM, benchmarks/accuracy.py runs 11-13), and one deep-model timing beside other
    work read 4.1e-11 s a byte where quiet ones read 2.8-3.0e-11 (its cost is a difference of two timings, so a
    burst lands in it magnified). Rounds spread over the whole probe put such a moment in one sample of each
    figure, which the median leaves out."""
    from advisor.engines.base import Artifact, LoadOptions
    from advisor.engines.llamacpp import LlamaCppEngine, quantize_here

    def load(path: Path):
        return LlamaCppEngine.load(Artifact("probe", path, "llama.cpp", "probe"),
                                   LoadOptions("gguf-file", context=2048, gpu_layers=0))  # fmt: skip

    workdir.mkdir(parents=True, exist_ok=True)
    tiny = {name: write_probe_gguf(workdir / f"{name}.gguf", *SHAPES[name], "F32") for name in ("tiny2", "tiny8")}
    f16 = None
    paths = {}
    for tensor_type in types:
        path = workdir / f"wide8-{tensor_type}.gguf"
        if tensor_type in LLAMA_DIRECT:
            write_probe_gguf(path, *SHAPES["wide8"], tensor_type)
            if tensor_type == "F16":
                f16 = path
        else:
            if f16 is None:
                f16 = write_probe_gguf(workdir / "wide8-F16.gguf", *SHAPES["wide8"], "F16")
            quantize_here(f16, path, _FTYPE_FOR[tensor_type], pure=True)
        paths[tensor_type] = path
    deep = _deep_probe(workdir) if "Q4_0" in paths else None
    engines: dict[str, tuple[Any, tuple[str, ...]]] = {}
    attention_types = [t for t in types if t in LLAMA_ATTENTION_TYPES] or list(types[:1])
    try:
        for name, path in tiny.items():
            engines[name] = (load(path), (DECODE_LONG,) if name == "tiny2" else ())
        for tensor_type, path in paths.items():
            engines[tensor_type] = (load(path), FULL if tensor_type in attention_types else (PREFILLS,))
        if deep is not None:
            engines[_DEEP] = (load(deep), ())
        timings = _time_engines(engines)
    finally:
        for engine, _figures in engines.values():
            engine.close()
        if deep is not None:
            deep.unlink(missing_ok=True)
    constants = {name: timings[name] for name in tiny}
    full = {t: fit({**constants, "wide8": timings[t]}) for t in attention_types}
    shared = _shared_attention([c for c in full.values() if plausible(c)])
    out: dict[str, Any] = {}
    for tensor_type in paths:
        if tensor_type not in full and shared is None:
            continue  # no attention cost to share: the type borrows its kernel class's costs (costmodel.speed)
        costs = full[tensor_type] if tensor_type in full else fit({**constants, "wide8": timings[tensor_type]}, shared)
        if plausible(costs):
            out[tensor_type] = rounded(costs)
    if "Q4_0" in out and _DEEP in timings:
        stream = _stream_per_byte(timings[_DEEP]["decode_s"], StepCosts.from_json(out["Q4_0"]))
        if stream is not None:
            out["stream"] = {"s_per_byte": float(f"{stream:.6g}"), "cache_resident_bytes": STREAM_PROBE_SMALL}
    return out


_DEEP = "deep-Q4_0"


# NOTE: llama.cpp's attention does not depend on the weights' tensor type: the same kernels read the same F16 cache
# (its default type) and multiply the prompt's queries and keys in F32 whatever the matrices hold, and the speed
# model already prices the cache with one figure for every type (the median: costmodel.speed
# _llama_context_per_element). So only these types are timed at the long depth and the longest prompt, the rest
# take the median of theirs: the 1,024-token prompt and the 512-token one were ~60% of the llama.cpp probe (39 of
# 51 s in its timing rounds on the 2-vCPU AMD EPYC VM, NOTES.md, stop 23). One of each kernel family: F16's plain
# dot product, Q8_0, and Q4_0 (repacked for AVX2/AVX-512).
LLAMA_ATTENTION_TYPES = ("F16", "Q8_0", "Q4_0")


def _shared_attention(fits: list[StepCosts]) -> StepCosts | None:
    """The attention costs of the types timed for them, each figure their median; None when none was plausible."""
    import statistics

    if not fits:
        return None
    return dataclasses.replace(
        fits[0],
        context_s_per_element=statistics.median(c.context_s_per_element for c in fits),
        context_s_per_token=statistics.median(c.context_s_per_token for c in fits),
        prefill_attention_s=statistics.median(c.prefill_attention_s for c in fits),
    )


# NOTE: llama.cpp's CPU kernels do not hide memory reads behind the arithmetic, and the probe's wide8 models (14-48
# MB) run from the cache on most CPUs: a model that does not fit pays its bytes on top. That cost is measured, not
# read off torch's bandwidth figure: a deep Q4_0 model larger than a VM's share of any last-level cache (64 layers
# of wide8's shape, 109 MB) against the wide8 Q4_0 (13.6 MB). Same width, so the same kernels' arithmetic per
# element (a 1024-wide deep model ran its wider rows so much faster that it hid the reading). On the 2-vCPU AMD
# EPYC VM (32 MiB L3) a 30-layer, 51 MB Q4_0 model ran 0.11 ms a layer against 0.07 for the 8-layer one: ~32 GB/s
# of extra reading, where torch's matrix-vector product reads 26 GB/s and llama.cpp's own F32 probe streamed at
# 55 GB/s (arithmetic and reading overlapped there).
STREAM_SHAPE = (64, 512, 1536)
STREAM_PROBE_SMALL = 13_639_680  # bytes of the wide8 Q4_0 probe's matrices (what sat in the cache)


def _deep_probe(workdir: Path) -> Path:
    """The deep Q4_0 probe model (STREAM_SHAPE), written into `workdir`."""
    layers, hidden, inter = STREAM_SHAPE
    return write_probe_gguf(workdir / "deep-Q4_0.gguf", layers, hidden, inter, "Q4_0", reuse_layers=True)


def _stream_per_byte(step: float, q4: StepCosts) -> float | None:
    """Seconds per byte a llama.cpp decode step pays for weights that come from memory, not the cache: the deep
    Q4_0 model's step less what its elements cost at the cache-resident wide8 rate and the constants; None when
    the step shows no such cost."""
    from advisor.precision import gguf_bits_per_weight

    layers, hidden, inter = STREAM_SHAPE
    elements = matmul_elements(layers, hidden, inter)
    extra = step - q4.per_token_s - layers * q4.per_layer_s - elements / q4.elements_per_s
    per_byte = extra / (elements * gguf_bits_per_weight("Q4_0") / 8)
    return per_byte if 0 < per_byte < 1e-8 else None


# The llama.cpp file type that, quantized "pure", gives every probe tensor the type (rows of 512 and 1536 divide
# the 256-weight K-quant super-block).
_FTYPE_FOR = {"Q4_K": "Q4_K_S", "Q6_K": "Q6_K", "Q5_K": "Q5_K_S", "Q3_K": "Q3_K_S", "Q2_K": "Q2_K"}


COSTS_TIMEOUT_S = 300.0


def measure_llamacpp(workdir: Path) -> tuple[dict[str, Any], str | None]:
    """llama.cpp's step costs per tensor type on this CPU ({type: StepCosts json}), timed in a child process on
    probe models written into `workdir`; ({}, why) when llama.cpp cannot run here or the child fails."""
    import json
    import subprocess
    import sys

    from advisor.engines import llamacpp

    if not llamacpp.usable():
        return {}, llamacpp.unavailable_reason()
    cmd = [sys.executable, "-m", "advisor.runtime_costs", "llama.cpp", str(workdir)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=COSTS_TIMEOUT_S, env=llamacpp.child_env())
    except subprocess.TimeoutExpired:
        return {}, f"the llama.cpp timing took over {COSTS_TIMEOUT_S:.0f} s"
    if proc.returncode != 0:
        return {}, llamacpp.crash_reason(proc.returncode, proc.stderr)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1]), None
    except (ValueError, IndexError):
        return {}, "the llama.cpp timing printed no result"


if __name__ == "__main__":  # the child process: `python -m advisor.runtime_costs llama.cpp WORKDIR`
    import json
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "llama.cpp":
        print("usage: python -m advisor.runtime_costs llama.cpp WORKDIR", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(measure_llamacpp_here(Path(sys.argv[2]))))
