"""How good a model is for a purpose, on one scale, with its sources; and what each precision costs of it.

Scores come from named public evaluations (`data/quality.csv`, every row with its date and link; sources in
`data/SOURCES.md`). They live on different scales, so each purpose has an anchor (LMArena's style-controlled
rating for that category: crowd votes over many prompts) and every other evaluation is mapped onto it by a
straight line fitted on the models both rated, kept only where they agree (at least 10 shared models and a rank
correlation of 0.7 or more). A model's quality is the weighted mean of its anchor rating and its mapped scores,
weighted by how well each map fits; a model with no score has none, and is ranked after those with one, visibly.

Quantization costs quality as llama.cpp's KL divergence against the 16-bit model measures it
(`data/quant_quality.csv`); see `precision_penalty`. No I/O beyond reading the package's data files, no torch.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache, lru_cache

from advisor.paths import data_dir

QUALITY_FILE = "quality.csv"
QUANT_FILE = "quant_quality.csv"
META_FILE = "catalog_meta.csv"

# Purpose -> (anchor (benchmark, metric), secondary sources in order of trust). A `*` benchmark matches every
# release of it (LiveBench publishes one question set per release); a model's latest release counts.
USES: dict[str, tuple[tuple[str, str], tuple[tuple[str, str], ...]]] = {
    "chat": (
        ("lmarena_text", "elo_overall_style_control"),
        (("livebench*", "global_average"), ("open_llm_leaderboard_v2", "average"),
         ("artificial_analysis", "intelligence_index"), ("vendor_reported", "mmlu_pro"),
         ("qwen3_tech_report", "livebench_2024_11_25"), ("qwen3_tech_report", "arena_hard"),
         ("vendor_reported", "arena_hard"), ("vendor_reported", "mmlu")),
    ),
    "coding": (
        ("lmarena_text", "elo_coding_style_control"),
        (("bigcodebench", "hard_instruct_pass@1"), ("evalplus", "humaneval_plus_pass@1"),
         ("aider_polyglot", "pass_rate_2"), ("livebench*", "coding"), ("bigcodebench", "hard_complete_pass@1"),
         ("qwen3_tech_report", "livecodebench_v5"), ("vendor_reported", "livecodebench"),
         ("vendor_reported", "humaneval"), ("aider_code_editing", "pass_rate_2")),
    ),
    "reasoning": (
        ("lmarena_text", "elo_hard_prompts_style_control"),
        (("livebench*", "reasoning"), ("open_llm_leaderboard_v2", "bbh"), ("open_llm_leaderboard_v2", "musr"),
         ("artificial_analysis", "intelligence_index"), ("vendor_reported", "gpqa"),
         ("qwen3_tech_report", "gpqa_diamond"), ("qwen3_tech_report", "zebralogic")),
    ),
    "math": (
        ("lmarena_text", "elo_math_style_control"),
        (("open_llm_leaderboard_v2", "math_lvl5"), ("livebench*", "mathematics"), ("open_llm_leaderboard_v2", "gpqa"),
         ("vendor_reported", "math"), ("vendor_reported", "aime_2024"), ("qwen3_tech_report", "aime_2024")),
    ),
    "ko": (("lmarena_text", "elo_korean_style_control"), (("lmarena_text", "elo_overall_style_control"),)),
}  # fmt: skip
USE_ALIASES = {"general": "chat", "tool-use": "chat", "tool use": "chat", "long-context": "chat",
               "multilingual": "chat", "korean": "ko"}  # fmt: skip
MIN_OVERLAP = 10
MIN_SPEARMAN = 0.7
# NOTE: weight of the anchor itself: LMArena ratings carry 95% intervals of about +-5 to +-15 points for open models
# with many votes (arena-catalog JSON, `notes` column); 10 points is taken as its standard deviation.
ANCHOR_SD = 10.0


@dataclass(frozen=True)
class Score:
    """A model's quality for one purpose, on the anchor's scale (LMArena points), and where it comes from."""

    use: str
    value: float
    sd: float
    sources: tuple[str, ...]  # "LMArena coding (style control) 2025-12-11: 1203" ...
    anchored: bool  # the anchor itself rated this model
    urls: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.value:.0f}" + ("" if self.anchored else "*")


@dataclass
class _Table:
    by_key: dict[tuple[str, str], dict[str, tuple[float, str, str, str]]] = field(default_factory=dict)


def _data_rows(name: str) -> Iterator[dict[str, str]]:
    """The rows of one of advisor's bundled CSV files (none when it is missing)."""
    path = data_dir() / name
    if not path.exists():
        return
    with open(path, newline="", encoding="utf-8") as fh:
        yield from csv.DictReader(fh)


def _norm(model_id: str) -> str:
    return model_id.strip().lower()


@lru_cache(maxsize=1)
def _scores() -> dict[tuple[str, str], dict[str, tuple[float, str, str, str]]]:
    """(benchmark, metric) -> model -> (score, date, source name, url); LiveBench releases pooled under
    'livebench*' keeping each model's latest; several modes of one model keep the best (what it can reach)."""
    out: dict[tuple[str, str], dict[str, tuple[float, str, str, str]]] = {}
    for row in _data_rows(QUALITY_FILE):
        try:
            value = float(row["score"])
        except (TypeError, ValueError):
            continue
        bench = row["benchmark"]
        key_bench = "livebench*" if bench.startswith("livebench_") else bench
        table = out.setdefault((key_bench, row["metric"]), {})
        model = _norm(row["model_id"])
        entry = (value, row.get("date") or "", row.get("source_name") or bench, row.get("url") or "")
        old = table.get(model)
        if (
            old is None
            or (key_bench == "livebench*" and entry[1] > old[1])
            or (key_bench != "livebench*" and value > old[0])
        ):
            table[model] = entry
    return out


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 3:
        return 0.0
    rx, ry = _ranks(xs), _ranks(ys)
    try:
        return statistics.correlation(rx, ry)
    except statistics.StatisticsError:
        return 0.0


@dataclass(frozen=True)
class Mapping:
    """A secondary source mapped onto the anchor: anchor ~ slope x score + intercept, residual sd, fit size."""

    source: tuple[str, str]
    slope: float
    intercept: float
    sd: float
    overlap: int
    rho: float


@cache
def mappings(use: str) -> tuple[Mapping, ...]:
    """The secondary sources of `use` that agree with its anchor well enough to be mapped onto it."""
    anchor_key, secondaries = USES[use]
    table = _scores()
    anchor = table.get(anchor_key, {})
    out = []
    for key in secondaries:
        scores = table.get(key, {})
        shared = [m for m in scores if m in anchor]
        if len(shared) < MIN_OVERLAP:
            continue
        xs = [scores[m][0] for m in shared]
        ys = [anchor[m][0] for m in shared]
        rho = spearman(xs, ys)
        if rho < MIN_SPEARMAN:
            continue
        slope, intercept = statistics.linear_regression(xs, ys)
        residuals = [y - (slope * x + intercept) for x, y in zip(xs, ys, strict=True)]
        sd = math.sqrt(sum(r * r for r in residuals) / max(len(residuals) - 2, 1))
        out.append(Mapping(key, slope, intercept, max(sd, 1.0), len(shared), rho))
    return tuple(out)


def _describe(key: tuple[str, str], entry: tuple[float, str, str, str]) -> str:
    value, date, name, _url = entry
    short = name.split(" (")[0].split(",")[0]
    return f"{short} {key[1]} {value:g} ({date})" if date else f"{short} {key[1]} {value:g}"


def score(model_id: str, use: str = "chat") -> Score | None:
    """The model's quality for `use` on the anchor's scale, or None when no mapped source rated it."""
    use = USE_ALIASES.get(use, use)
    if use not in USES:
        raise ValueError(f"unknown use '{use}': choose from {', '.join(sorted(USES))}")
    table = _scores()
    model = _norm(model_id)
    anchor_key, _ = USES[use]
    parts: list[tuple[float, float]] = []  # (value on the anchor scale, sd)
    sources: list[str] = []
    urls: list[str] = []
    anchored = False
    anchor = table.get(anchor_key, {}).get(model)
    if anchor is not None:
        parts.append((anchor[0], ANCHOR_SD))
        sources.append(_describe(anchor_key, anchor))
        urls.append(anchor[3])
        anchored = True
    for m in mappings(use):
        entry = table.get(m.source, {}).get(model)
        if entry is None:
            continue
        parts.append((m.slope * entry[0] + m.intercept, m.sd))
        sources.append(_describe(m.source, entry))
        urls.append(entry[3])
    if not parts:
        return None
    weights = [1 / (sd * sd) for _, sd in parts]
    value = sum(w * v for w, (v, _) in zip(weights, parts, strict=True)) / sum(weights)
    sd = 1 / math.sqrt(sum(weights))
    return Score(use, value, sd, tuple(sources), anchored, tuple(u for u in urls if u))


# ---------------------------------------------------------------------------------------------------------------
# What a precision costs


# NOTE: mean KL divergence of each llama.cpp type against the 16-bit model, llama.cpp's LLaMA 3 8B scoreboard
# (tools/perplexity/README.md, revision f364eb6f, Wikitext-2; data/quant_quality.csv): the typical cost of a type.
# bitsandbytes: LLM.int8 is lossless within noise (Open LLM v1 average deltas -0.6..+0.2 points over 7 pairs,
# Dettmers et al. 2022), nf4 costs about what Q4_0 does (Open LLM v1 -1.0..-4.5 points for 7B-104B; QLoRA paper).
DEFAULT_KLD = {
    "fp32": 0.0, "bf16": 0.0, "fp16": 0.0005, "int8": 0.001, "int4": 0.072, "int4-dq": 0.072,
    "gguf-f32": 0.0, "gguf-bf16": 0.0, "gguf-f16": 0.0005, "q8_0": 0.0014, "q6_k": 0.0055, "q5_k_m": 0.011,
    "q5_1": 0.016, "q5_0": 0.02, "q4_k_m": 0.031, "iq4_xs": 0.04, "q4_1": 0.06, "q4_0": 0.072, "q3_k_m": 0.10,
    "q2_k": 0.45, "fp8": 0.002, "awq": 0.03, "gptq": 0.035, "mxfp4": 0.0,
}  # fmt: skip
# NOTE: points of the anchor scale lost per unit of mean KLD. An assumption, stated: 200 points per nat puts Q4_K_M
# (KLD 0.031) at -6 points, within the LMArena interval of one model, Q4_0 at -14 and Q2_K (0.45) at -90, about the
# gap between a model and the next size down of its family (Llama-3.1-70B vs 8B: ~1250 vs ~1180 style-controlled),
# which matches the llama.cpp community's "Q2_K is worse than the smaller model at Q8" rule of thumb.
POINTS_PER_KLD = 200.0


@lru_cache(maxsize=1)
def _measured_kld() -> dict[str, float]:
    """llama.cpp types' mean KLD from data/quant_quality.csv (the LLaMA 3 8B scoreboard rows)."""
    out: dict[str, float] = {}
    for row in _data_rows(QUANT_FILE):
        if row.get("metric") != "mean_kld" or "Meta-Llama-3-8B" not in (row.get("model") or ""):
            continue
        if "imatrix=None" not in (row.get("notes") or ""):
            continue
        try:
            out.setdefault(row["precision"].lower(), float(row["value"]))
        except (TypeError, ValueError):
            continue
    return out


def precision_penalty(precision: str) -> float:
    """Anchor-scale points `precision` costs against the 16-bit model (0 for 16/32-bit)."""
    name = precision.lower()
    kld = _measured_kld().get(name.removeprefix("gguf-"), DEFAULT_KLD.get(name))
    if kld is None:
        kld = DEFAULT_KLD["q4_0"]  # an unknown quantization: priced like a plain 4-bit type
    return POINTS_PER_KLD * kld


# ---------------------------------------------------------------------------------------------------------------
# Catalog metadata: date, license, languages, tags


@dataclass(frozen=True)
class Meta:
    model_id: str
    release_date: str = ""
    license: str = ""
    permissive: bool | None = None
    context_length: int | None = None
    languages: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    gguf_repos: tuple[str, ...] = ()


@lru_cache(maxsize=1)
def _meta() -> dict[str, Meta]:
    out: dict[str, Meta] = {}
    for row in _data_rows(META_FILE):
        ctx = row.get("context_length") or ""
        out[_norm(row["model_id"])] = Meta(
            model_id=row["model_id"],
            release_date=row.get("release_date") or "",
            license=row.get("license") or "",
            permissive={"true": True, "false": False}.get((row.get("permissive") or "").lower()),
            context_length=int(ctx) if ctx.isdigit() else None,
            languages=tuple(x for x in (row.get("languages") or "").split(";") if x),
            tags=tuple(x for x in (row.get("tags") or "").split(";") if x),
            gguf_repos=tuple(x for x in (row.get("gguf_repos") or "").split(";") if x),
        )
    return out


def meta(model_id: str) -> Meta:
    return _meta().get(_norm(model_id), Meta(model_id))
