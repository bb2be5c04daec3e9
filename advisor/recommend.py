"""Candidate options for a (ModelSpec, Hardware), priced, ranked, with the reason for the pick."""

from __future__ import annotations

import math
from collections.abc import Iterable

from advisor import precision as P
from advisor.costmodel import memory as M
from advisor.costmodel import speed as S
from advisor.spec import Hardware, ModelSpec, Option, Recommendation

GB = 1e9


def candidate_precisions(spec: ModelSpec, requested: Iterable[str] | None = None) -> list[str]:
    """The precisions worth pricing for this model (all, or those asked for, or those the checkpoint allows)."""
    if requested:
        return [p.lower() for p in requested]
    names = list(P.PRECISIONS)
    if spec.loadable_precisions:
        allowed = set(spec.loadable_precisions)
        names = [n for n in names if n in allowed or P.get(n).runtime == "llama.cpp"]
        if allowed - set(P.PRECISIONS):  # the checkpoint's own format (gptq-int4, fp8, ...)
            names.insert(0, P.CHECKPOINT)
    groups = M.gguf_groups(spec.files)
    if spec.quantization and spec.quantization.startswith("gguf"):
        # The file whose header was read, then every other quantization the repo or folder holds; the table's
        # type that is the file's own (q4_1 of a Q4_1 file) would only remake the same file.
        own = P.get(P.GGUF_FILE, spec)
        names = [n for n in names if not (P.get(n).kind == "gguf" and M.gguf_file_type(P.get(n)) == _own_ftype(own))]
        names.insert(0, P.GGUF_FILE)
        read = M.gguf_read_file(spec)
        others = [n for n in groups if n != read]
        names[1:1] = [P.GGUF_PREFIX + n for n in sorted(others, key=groups.get)]
    return names


def _own_ftype(prec: P.Precision) -> str:
    base = (prec.gguf_type or "").upper()
    return f"{base}_{prec.gguf_mix}" if prec.gguf_mix else base


def price(
    spec: ModelSpec,
    precision: str,
    hw: Hardware,
    *,
    context: int = 4096,
    batch: int = 1,
    prompt_tokens: int = 512,
    headroom: float = 0.10,
    calibration: S.Calibration = S.NO_CALIBRATION,
    llama: M.LlamaCppSettings = M.DEFAULT_LLAMA,
) -> Option:
    """One option: placement, memory, longest context and speed for `precision` on `hw`."""
    prec = P.get(precision, spec)
    knobs = dict(batch=batch, prompt_tokens=prompt_tokens, llama=llama)
    placement = S.plan(spec, precision, hw, context=context, headroom=headroom, **knobs)
    main_kind = next((d.kind for d in hw.devices if d.kind != "cpu"), "cpu")
    mem = M.estimate(spec, precision, context=context, device_kind=main_kind, **knobs)
    max_ctx = _max_context(spec, precision, hw, headroom=headroom, keep=placement, **knobs)
    offload = _offload_reach(spec, precision, hw, max_ctx, headroom=headroom, calibration=calibration, **knobs)
    speed = S.estimate_speed(
        spec,
        precision,
        hw,
        placement,
        context=context,
        prompt_tokens=min(prompt_tokens, context),
        batch=batch,
        calibration=calibration,
        llama=llama,
    )
    notes = []
    quality = prec.quality_rank
    from_file = precision == P.GGUF_FILE or precision.lower().startswith(P.GGUF_PREFIX)
    if (spec.quantization or "").startswith("gguf") and not from_file:
        # Dequantizing (transformers) cannot restore what the file's quantization rounded away; requantizing
        # (llama.cpp's other types, made here from this file) rounds again on top of it.
        file_rank = P.get(P.GGUF_FILE, spec).quality_rank
        requantized = prec.runtime == "llama.cpp" and quality < 100
        quality = min(quality, file_rank - 1 if requantized else file_rank)
        how = "requantized" if requantized else "dequantized" if prec.runtime == "transformers" else "rewritten"
        notes.append(f"weights {how} from the {spec.quantization} file: quality no better than the file")
    w = M.weight_bytes(spec, precision)
    if w.note:
        notes.append(w.note)
    if placement.offloaded_layers and prec.runtime == "transformers":
        notes.append("offloaded layers cross PCIe on every token")
    if spec.max_context and context > spec.max_context:
        notes.append(f"context {context} exceeds the model's {spec.max_context}")
    return Option(
        precision=precision,
        runtime=prec.runtime,
        placement=placement.label,
        memory=mem,
        fits=placement.fits and not (spec.max_context and context > spec.max_context),
        max_context=max_ctx,
        quality_rank=quality,
        speed=speed,
        per_device_bytes=placement.bytes,
        notes=tuple(notes),
        **offload,
    )


def _max_context(
    spec: ModelSpec,
    precision: str,
    hw: Hardware,
    *,
    batch: int,
    prompt_tokens: int,
    headroom: float,
    llama: M.LlamaCppSettings = M.DEFAULT_LLAMA,
    keep: S.Placement | None = None,
) -> int:
    """Longest context whose plan still fits (bisection over the placement); with `keep`, the longest that still
    fits in that same placement (the same layers on each device), so the figure shown beside a placement holds
    for it: past it the plan would move layers to the CPU and run at another speed."""
    same = {k: v for k, v in keep.layers.items() if v} if keep is not None and keep.fits else None

    def fits(ctx: int) -> bool:
        plan = S.plan(
            spec, precision, hw, context=ctx, batch=batch, prompt_tokens=prompt_tokens, headroom=headroom, llama=llama
        )
        return plan.fits and (same is None or {k: v for k, v in plan.layers.items() if v} == same)

    return M.longest_fitting(spec.max_context or M.DEFAULT_CONTEXT_LIMIT, fits)


def _offload_reach(
    spec: ModelSpec,
    precision: str,
    hw: Hardware,
    max_ctx: int,
    *,
    batch: int,
    prompt_tokens: int,
    headroom: float,
    calibration: S.Calibration,
    llama: M.LlamaCppSettings = M.DEFAULT_LLAMA,
) -> dict:
    """The longer context reachable by offloading layers to the CPU, its placement and its speed there: {} when
    offloading reaches no further (or there is no GPU)."""
    if not hw.accelerators:
        return {}
    longest = _max_context(spec, precision, hw, batch=batch, prompt_tokens=prompt_tokens, headroom=headroom,
                           llama=llama)  # fmt: skip
    if longest <= max_ctx:
        return {}
    place = S.plan(spec, precision, hw, context=longest, batch=batch, prompt_tokens=prompt_tokens, headroom=headroom,
                   llama=llama)  # fmt: skip
    seconds, _ = S.decode_seconds(spec, precision, hw, place, depth=longest, calibration=calibration, llama=llama)
    return {
        "max_context_offload": longest,
        "offload_placement": place.label,
        "offload_decode_tok_s": 1 / seconds if seconds > 0 else None,
    }


def choose(
    options: Iterable[Option], *, min_tok_s: float = 5.0, runtime: str | None = None
) -> tuple[Option | None, str]:
    """The pick and why: best quality that fits and reaches `min_tok_s`, else the fastest that fits."""
    pool = [o for o in options if runtime in (None, o.runtime)]
    fitting = [o for o in pool if o.fits]
    if not fitting:
        return None, "nothing fits in this memory, even at 4-bit"
    fast = [o for o in fitting if o.speed and o.speed.decode_tok_s >= min_tok_s]
    if fast:
        # Equal quality: the faster one; equal speed too: transformers (what bench and chat run).
        best = max(fast, key=lambda o: (o.quality_rank, o.speed.decode_tok_s, o.runtime == "transformers"))
        why = (
            f"{best.precision} is the highest-quality option that fits and reaches {min_tok_s:g} tok/s "
            f"(~{best.speed.decode_tok_s:.1f} tok/s on {best.placement})"
        )
        better = [o for o in fitting if o.quality_rank > best.quality_rank]
        if better:
            top = max(better, key=lambda o: o.quality_rank)
            why += f"; {top.precision} also fits but runs at only ~{top.speed.decode_tok_s:.1f} tok/s"
        return best, why
    best = max(fitting, key=lambda o: (o.speed.decode_tok_s if o.speed else 0.0, o.quality_rank))
    speed = best.speed.decode_tok_s if best.speed else 0.0
    return (
        best,
        f"no option reaches {min_tok_s:g} tok/s; {best.precision} is the fastest that fits (~{speed:.1f} tok/s)",
    )


def recommend(
    spec: ModelSpec,
    hw: Hardware,
    *,
    precisions: Iterable[str] | None = None,
    context: int = 4096,
    batch: int = 1,
    prompt_tokens: int = 512,
    headroom: float = 0.10,
    min_tok_s: float = 5.0,
    runtime: str | None = None,
    calibration: S.Calibration = S.NO_CALIBRATION,
    llama: M.LlamaCppSettings = M.DEFAULT_LLAMA,
) -> Recommendation:
    """Price every candidate precision on `hw` and pick one, with the reason."""
    options = tuple(
        price(
            spec,
            p,
            hw,
            context=context,
            batch=batch,
            prompt_tokens=prompt_tokens,
            headroom=headroom,
            calibration=calibration,
            llama=llama,
        )
        for p in candidate_precisions(spec, precisions)
    )
    best, reason = choose(options, min_tok_s=min_tok_s, runtime=runtime)
    warnings = list(spec.warnings)
    if best is not None:
        mem = best.memory
        reason += (
            f". It needs {mem.total_bytes / GB:.1f} GB ({mem.weights_bytes / GB:.1f} weights + "
            f"{mem.kv_cache_bytes / GB:.2f} KV cache for {context} tokens + {mem.overhead_bytes / GB:.2f} overhead)"
        )
        if best.max_context and math.isfinite(best.max_context):
            reason += f" and fits up to {best.max_context} tokens of context"
    if not spec.exact:
        warnings.append(f"'{spec.id}' was not read from metadata: the counts are guessed from its size label")
    return Recommendation(
        model=spec, hardware=hw, options=options, recommended=best, reason=reason, warnings=tuple(warnings)
    )
