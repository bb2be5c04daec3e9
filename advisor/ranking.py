"""Questions over many models or many devices: which catalog models run here, what fits in the
HF cache, what an assistant model buys, and how many GPUs a model too big for one needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "total_params": self.total_params,
            "active_params": self.active_params,
            "best": self.best.to_json() if self.best else None,
            "reason": self.reason,
            "error": self.error,
        }


def _row(spec: ModelSpec, hw, **kwargs) -> RankRow:
    rec = recommend(spec, hw, **kwargs)
    return RankRow(spec.id, spec.total_params, spec.active_params, rec.recommended, rec.reason)


def rank_catalog(hw, *, top: int = 10, min_tok_s: float = 5.0, **kwargs) -> list[RankRow]:
    """Catalog models this hardware runs at `min_tok_s` or more, biggest (by active params) first."""
    from advisor.sources import catalog

    rows = [_row(catalog.spec_from_catalog(m), hw, min_tok_s=min_tok_s, **kwargs) for m in catalog.known_ids()]
    fast = [r for r in rows if r.best and r.best.speed and r.best.speed.decode_tok_s >= min_tok_s]
    # Bigger active models answer better; among equals, better precision, then speed.
    fast.sort(key=lambda r: (r.active_params, r.best.quality_rank, r.best.speed.decode_tok_s), reverse=True)
    return fast[:top]


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
