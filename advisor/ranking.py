"""Questions over many models or many devices: which catalog models run here, what fits in the
HF cache, what an assistant model buys, and how many GPUs a model too big for one needs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from advisor import quality as Q
from advisor.costmodel import memory as M
from advisor.costmodel import speed as S
from advisor.recommend import recommend
from advisor.spec import ModelSpec, Option, Recommendation

GB = 1e9


@dataclass(frozen=True)
class RankRow:
    model: str
    total_params: int
    active_params: int
    best: Option | None
    reason: str
    error: str | None = None
    quality: float | None = None  # for the purpose, on the anchor's scale, after the precision's cost
    quality_basis: str = ""  # "coding" | "general quality (no coding score)" | "no score"
    quality_sources: tuple[str, ...] = ()
    quality_urls: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    license: str = ""
    release_date: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "total_params": self.total_params,
            "active_params": self.active_params,
            "best": self.best.to_json() if self.best else None,
            "reason": self.reason,
            "error": self.error,
            "quality": self.quality,
            "quality_basis": self.quality_basis,
            "quality_sources": list(self.quality_sources),
            "quality_urls": list(self.quality_urls),
            "tags": list(self.tags),
            "license": self.license,
            "release_date": self.release_date,
        }


def _row(spec: ModelSpec, hw, **kwargs) -> RankRow:
    rec = recommend(spec, hw, **kwargs)
    return RankRow(spec.id, spec.total_params, spec.active_params, rec.recommended, rec.reason)


# Variants that share their base model's evaluations: the same weights stored another way.
_STORAGE_SUFFIXES = ("-nvfp4", "-fp8", "-awq", "-gptq-int4", "-gptq-int8", "-gptq", "-gguf", "-bf16", "-mlx")


def _storage_base(model_id: str) -> str | None:
    """The id without its storage suffix (…-FP8 -> …), None when it has none."""
    lowered = model_id.lower()
    for suffix in _STORAGE_SUFFIXES:
        if lowered.endswith(suffix):
            return model_id[: -len(suffix)]
    return None


def _base_id(model_id: str) -> str:
    return (_storage_base(model_id) or model_id).lower()


def model_quality(model_id: str, use: str) -> tuple[Q.Score | None, str]:
    """The model's score for `use`, else its general score (said so), else none; a checkpoint stored in another
    format (…-FP8, …-AWQ) takes its base model's scores."""
    base = _storage_base(model_id)
    candidates = [model_id] if base is None else [model_id, base]
    for mid in candidates:
        found = Q.score(mid, use)
        if found is not None:
            return found, use
    if Q.USE_ALIASES.get(use, use) != "chat":
        for mid in candidates:
            found = Q.score(mid, "chat")
            if found is not None:
                return found, f"general quality (no {use} score)"
    return None, "no score"


def _best_for_quality(rec: Recommendation, min_tok_s: float) -> Option | None:
    """Among the options that fit and reach `min_tok_s`: the fastest of those whose quantization costs no more than
    the anchor's own uncertainty (Q.ANCHOR_SD) beyond the least costly one. A difference smaller than what the
    ratings can tell apart is not worth a slower answer (q4_k_m fully on a GPU beats q8_0 spilling to the CPU);
    else recommend's own pick."""
    fast = [o for o in rec.options if o.fits and o.speed and o.speed.decode_tok_s >= min_tok_s]
    if not fast:
        return rec.recommended
    least = min(Q.precision_penalty(o.precision) for o in fast)
    close = [o for o in fast if Q.precision_penalty(o.precision) <= least + Q.ANCHOR_SD]
    return max(close, key=lambda o: (o.speed.decode_tok_s, -Q.precision_penalty(o.precision)))


def rank_catalog(
    hw,
    *,
    top: int = 10,
    min_tok_s: float = 5.0,
    use: str = "chat",
    lang: str | None = None,
    license: str | None = None,
    min_context: int | None = None,
    **kwargs,
) -> list[RankRow]:
    """Catalog models this hardware runs at `min_tok_s` or more, best for `use` first: quality on one scale
    (advisor.quality) less what the chosen precision costs; models without a score follow, biggest first."""
    from advisor.sources import catalog

    rows = []
    for model_id in catalog.known_ids():
        spec = catalog.spec_from_catalog(model_id)
        meta = Q.meta(model_id)
        if lang and lang.lower() not in {x.lower() for x in meta.languages}:
            continue
        if license == "permissive" and meta.permissive is not True:
            continue
        if min_context and (spec.max_context or 0) < min_context:
            continue
        rec = recommend(spec, hw, min_tok_s=min_tok_s, **kwargs)
        found, basis = model_quality(model_id, "ko" if lang and lang.lower() == "ko" and use == "chat" else use)
        best = _best_for_quality(rec, min_tok_s)
        if best is None or not best.speed or best.speed.decode_tok_s < min_tok_s:
            continue
        value = found.value - Q.precision_penalty(best.precision) if found else None
        rows.append(
            RankRow(
                spec.id, spec.total_params, spec.active_params, best, rec.reason, quality=value,
                quality_basis=basis, quality_sources=found.sources if found else (),
                quality_urls=found.urls if found else (), tags=meta.tags, license=meta.license,
                release_date=meta.release_date,
            )
        )  # fmt: skip
    rows.sort(
        key=lambda r: (r.quality is not None, r.quality or 0.0, r.active_params, r.best.speed.decode_tok_s),
        reverse=True,
    )
    # One row per model: a checkpoint stored another way (…-FP8) shares its base model's scores; keep the better.
    seen: set[str] = set()
    unique = []
    for r in rows:
        base = _base_id(r.model)
        if base not in seen:
            seen.add(base)
            unique.append(r)
    rows = unique[:top]
    return [dataclasses.replace(r, reason=_why(r, rows[i + 1] if i + 1 < len(rows) else None, use))
            for i, r in enumerate(rows)]  # fmt: skip


def _why(row: RankRow, nxt: RankRow | None, use: str) -> str:
    """Why this row ranks above the next one."""
    b = row.best
    mine = f"{row.model.split('/')[-1]} {b.precision}" if b else row.model
    speed = f"{b.speed.decode_tok_s:.0f} tok/s" if b and b.speed else "-"
    if nxt is None:
        return f"{mine}: {speed}"
    nb = nxt.best
    theirs = f"{nxt.model.split('/')[-1]} {nb.precision}" if nb else nxt.model
    their_speed = f"{nb.speed.decode_tok_s:.0f}" if nb and nb.speed else "-"
    what = "coding" if use == "coding" else use if use in Q.USES else "quality"
    if row.quality is not None and nxt.quality is not None:
        return (
            f"{mine}: higher {what} score than {theirs} ({row.quality:.0f} vs {nxt.quality:.0f}), "
            f"{speed} vs {their_speed}"
        )
    if row.quality is not None:
        return f"{mine}: has a {what} score, {theirs} has none; {speed} vs {their_speed}"
    return (
        f"{mine}: no score for either; more active parameters ({row.active_params / 1e9:.1f}B vs "
        f"{nxt.active_params / 1e9:.1f}B), {speed} vs {their_speed}"
    )


def cached_fits(hw, **kwargs) -> list[RankRow]:
    """Every model in the Hugging Face cache with its best option here (or why it could not be read)."""
    from advisor.sources.local import list_cached_models

    rows = []
    for repo_id, spec in list_cached_models():
        if isinstance(spec, Exception):
            rows.append(RankRow(repo_id, 0, 0, None, "", error=str(spec)))
        else:
            rows.append(_row(spec, hw, **kwargs))
    return rows


def price_assistant(
    rec: Recommendation,
    draft: ModelSpec,
    hw,
    *,
    calibration=S.NO_CALIBRATION,
    context: int = 4096,
    acceptance: float = 0.7,
    lookahead: int = 5,
) -> dict[str, Any]:
    """Assisted generation for the recommended option: the draft in the same precision and place."""
    best = rec.recommended
    if best is None:
        return {"error": "the target model does not fit, so there is nothing to assist"}
    spec = rec.model
    if draft.vocab_size and spec.vocab_size and draft.vocab_size != spec.vocab_size:
        warn = (
            f"the draft's vocabulary ({draft.vocab_size}) differs from the target's ({spec.vocab_size}): "
            "transformers then needs universal assisted decoding, which costs more"
        )
    else:
        warn = None
    precision = best.precision if best.runtime == "transformers" else "bf16"
    target_place = S.plan(spec, best.precision, hw, context=context)
    draft_place = S.plan(draft, precision, hw, context=context)
    out = S.assisted_speedup(
        spec,
        best.precision,
        hw,
        target_place,
        draft,
        precision,
        draft_place,
        depth=min(context, 512),
        acceptance=acceptance,
        lookahead=lookahead,
        calibration=calibration,
    )
    draft_mem = M.estimate(draft, precision, context=context).total_bytes
    out.update(draft=draft.id, draft_precision=precision, draft_bytes=draft_mem, helps=out["speedup"] > 1.05)
    if warn:
        out["warning"] = warn
    return out
