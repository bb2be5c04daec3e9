"""advisor's llama.cpp decode estimate for hypothetical hardware (`--device`) against published figures (issue 15).

    python benchmarks/public_accuracy.py [--csv data/measurements.csv] [--holdout] [--json OUT]

Each llama.cpp decode row of data/measurements.csv (llama-bench tgN / tgN@dD, `./main` eval rates; batch 1) whose
model maps to an advisor spec, whose GGUF type advisor prices and whose device is in data/accelerators.csv is priced
with `advisor.recommend.price` on `advisor.accelerators.hardware_from_flags` ('Nx NAME' when split over N devices; a
CPU with the chip's table bandwidth for backend=CPU rows) and its decode tokens/s compared with the row's. A tgN row
decodes from depth n_prompt to n_prompt + n_gen: it is priced at the mean depth, n_prompt + n_gen // 2.

A per-device-class model, seconds/token = bytes read / (bandwidth x eta) + overhead (per token or per layer), is
fitted on rows up to FIT_MAX_DEPTH, bytes from advisor's own basis (`speed.basis["bytes_per_token"]`). --holdout
fits on FIT_SOURCES and reports on the other sources. Exit 0 when advisor's estimate meets the target (median
|est/meas - 1| <= 10%, p90 <= 25%) on the reported rows.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from functools import cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from advisor import accelerators as A  # noqa: E402
from advisor import precision as P  # noqa: E402
from advisor import recommend as R  # noqa: E402
from advisor.errors import DeviceNotFoundError  # noqa: E402
from advisor.sources import catalog, spec_from_label  # noqa: E402
from advisor.sources.config import spec_from_config  # noqa: E402

TARGET_MEDIAN, TARGET_P90 = 0.10, 0.25
GB = 1e9

# Model as the CSV names it -> what advisor prices. Same shape (layers, widths, heads, vocab) as the checkpoint run:
# base and instruct/chat releases, LLaMA-1 7B/13B = Llama-2 7B/13B, the Coder fine-tunes = their base models.
CATALOG = {
    "meta-llama/Meta-Llama-3-8B": "meta-llama/Meta-Llama-3-8B-Instruct",
    "meta-llama/Meta-Llama-3-70B": "meta-llama/Meta-Llama-3-70B-Instruct",
    "meta-llama/Llama-3.1-8B (Q4_K_M; exact GGUF not named)": "meta-llama/Llama-3.1-8B",
    "Llama 3.x 8B (exact checkpoint not stated)": "meta-llama/Llama-3.1-8B",  # llama-bench "llama 8B", 8.03B
    "huggyllama/llama-7b": "meta-llama/Llama-2-7b-chat-hf",
    "huggyllama/llama-13b": "meta-llama/Llama-2-13b-chat-hf",
    "meta-llama/Llama-2-7b-hf": "meta-llama/Llama-2-7b-chat-hf",
    "meta-llama/Llama-2-7b-hf (standard llama-bench 7B Q4_0, 3.56 GiB)": "meta-llama/Llama-2-7b-chat-hf",
    "meta-llama/Llama-2-13b-hf": "meta-llama/Llama-2-13b-chat-hf",
    "LLaMA-2-13B class (exact checkpoint not stated; llama 13B Q6_K 9.95 GiB)": "meta-llama/Llama-2-13b-chat-hf",
    "meta-llama/Llama-2-70b-hf": "meta-llama/Llama-2-70b-chat-hf",
    "Qwen/Qwen2.5-Coder-7B": "Qwen/Qwen2.5-7B",
    "Qwen/Qwen3-Coder-30B-A3B-Instruct": "Qwen/Qwen3-30B-A3B-Instruct-2507",
    "google/gemma-3-4b-it (QAT Q4_0 GGUF: ggml-org/gemma-3-4b-it-qat-GGUF)": "google/gemma-3-4b-it",
    "TheBloke/TinyLlama-1.1B-1T-OpenOrca-GGUF (tinyllama-1.1b-1t-openorca)": "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
}
# LLaMA-1 30B/65B (no catalog entry, no GQA): their config.json fields (huggyllama/llama-30b, -65b).
_LLAMA1 = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_act": "silu",
           "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "tie_word_embeddings": False}  # fmt: skip
_L30 = {"hidden_size": 6656, "intermediate_size": 17920, "num_attention_heads": 52, "num_hidden_layers": 60}
_L65 = {"hidden_size": 8192, "intermediate_size": 22016, "num_attention_heads": 64, "num_hidden_layers": 80}
CONFIGS = {"huggyllama/llama-30b": {**_LLAMA1, **_L30}, "huggyllama/llama-65b": {**_LLAMA1, **_L65}}
FLOAT_TYPES = {"F16": "gguf-f16", "BF16": "gguf-bf16", "F32": "gguf-f32"}

# The split for --holdout: fit on these sources (modern llama-bench runs, llama.cpp's own threads), report on the
# rest (the 2023 `./main` runs of the same repo, other repos, crowd-sourced submissions).
FIT_SOURCES = ("XiongjieDai/GPU-Benchmarks-on-LLM-Inference (LLaMA 3)", "ikawrakow/ik_llama.cpp",
               "ggml-org/llama.cpp PR", "geerlingguy/")  # fmt: skip
# NOTE: until llama.cpp PR #4766 (merged 2024-01-13) several GPUs split every matrix by rows (all GPUs read at once,
# with a synchronisation per matmul); since then layers (one GPU at a time), which is what advisor prices.
ROW_SPLIT_UNTIL = "2024-01-13"
# The fit uses rows decoding at a mean depth up to this: deeper ones (tg4096/8192, flash attention off) add attention
# time the bandwidth and fixed terms should not absorb (advisor's CONTEXT_COST is the place for it).
FIT_MAX_DEPTH = 1024
# The proposal: (eta, seconds per layer per token) by class, fitted with --holdout on FIT_SOURCES (per-layer form);
# cpu left as it is (its rows are Apple CPU cores at 2-4 threads, see the report).
PROPOSED = {"datacentre": (0.62, 0.13e-3), "geforce": (0.92, 0.10e-3), "pro": (0.88, 0.09e-3),
            "apple": (0.78, 0.165e-3), "cpu": (0.70, 0.03e-3), "amd_intel": (0.66, 0.11e-3)}  # fmt: skip
CLASSES = ("datacentre", "geforce", "pro", "apple", "cpu", "amd_intel")


@cache
def memory_type(name: str) -> str:
    """The accelerator table's memory_type column (advisor.accelerators.Accelerator does not load it yet)."""
    with open(ROOT / "data" / "accelerators.csv", newline="", encoding="utf-8") as fh:
        return next((r["memory_type"] for r in csv.DictReader(fh) if r["name"] == name), "")


def device_class(acc: A.Accelerator, backend: str = "") -> str:
    """HBM data-centre GPUs, GeForce, professional GDDR/LPDDR cards (RTX A6000/Ada and their server twins A40,
    L40S, A10G; GB10), Apple GPUs, CPUs, AMD and Intel GPUs."""
    if backend.upper() == "CPU":
        return "cpu"
    if acc.vendor == "Apple":
        return "apple"
    if acc.vendor != "NVIDIA":
        return "amd_intel"
    if memory_type(acc.name).startswith("HBM"):
        return "datacentre"
    return "geforce" if "GeForce" in acc.name else "pro"


def model_spec(name: str, cache: dict):
    if name not in cache:  # an explicit config, a bare size label ('8B'), or a catalog id (mapped or as named)
        if name in CONFIGS:
            cache[name] = spec_from_config(CONFIGS[name], model_id=name, cache=False)
        elif " " not in name and "/" not in name:
            cache[name] = spec_from_label(name)
        else:
            cache[name] = catalog.spec_from_catalog(CATALOG.get(name, name))
    return cache[name]


def precision_of(fmt: str) -> str | None:
    if fmt in FLOAT_TYPES:
        return FLOAT_TYPES[fmt]
    known = P.PRECISIONS.get(fmt.lower())
    return known.name if known is not None and known.kind == "gguf" else None


def hardware(row: dict) -> tuple[A.Accelerator, object]:
    acc = A.lookup(row["device"])
    if row["backend"].upper() == "CPU":  # the chip's CPU cores: a CPU with the table's bandwidth
        return acc, A.hardware_from_flags(None, memory_gb=acc.memory_gb, bandwidth_gbps=acc.bandwidth_gbps)
    count = int(row["device_count"] or 1)
    return acc, A.hardware_from_flags(f"{count}x {acc.name}" if count > 1 else acc.name)


def load(path: Path) -> tuple[list[dict], dict[str, int]]:
    """The priced rows, and why the others were skipped."""
    used, skipped, specs = [], defaultdict(int), {}
    with open(path, newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    for row in table:
        decode = row["test"].startswith("tg") or row["test"] == "decode"
        if row["runtime"] != "llama.cpp" or not decode or row["batch"] != "1" or float(row["n_gen"] or 0) <= 0:
            continue
        n_gen = int(float(row["n_gen"]))
        if "SUSPECT" in row["notes"]:
            skipped["flagged SUSPECT by the collector"] += 1
            continue
        if int(row["device_count"] or 1) > 1 and row["date"] < ROW_SPLIT_UNTIL:
            skipped["multi-GPU before layer split was the default (row split)"] += 1
            continue
        precision = precision_of(row["format"])
        if precision is None:
            skipped[f"format not priced: {row['format']}"] += 1
            continue
        spec = model_spec(row["model"], specs)
        if spec is None:
            skipped[f"model not mapped: {row['model']}"] += 1
            continue
        try:
            acc, hw = hardware(row)
        except DeviceNotFoundError:
            skipped[f"device not in table: {row['device']}"] += 1
            continue
        n_prompt = int(float(row["n_prompt"] or 0))
        depth = n_prompt + n_gen // 2
        span = next(f"depth <= {d}" for d in (1024, 4096, 32768, 10**6) if depth <= d)
        option = R.price(spec, precision, hw, context=n_prompt + n_gen or 512, prompt_tokens=max(depth, 1))
        groups = option.speed.basis["bytes_per_token"]
        devices = option.speed.basis["devices"]
        bw = statistics.fmean(d["bandwidth_gbps"] for d in devices.values()) * GB
        used.append({
            "id": row["id"], "source": row["source"], "device": row["device"], "count": int(row["device_count"] or 1),
            "backend": row["backend"], "class": device_class(acc, row["backend"]), "model": row["model"],
            "spec": spec.source, "format": row["format"], "test": row["test"], "depth": depth, "span": span,
            "measured": float(row["tok_s"]), "advisor": option.speed.decode_tok_s, "fits": option.fits,
            "bytes": sum(groups.values()), "bandwidth": bw, "layers": spec.num_layers or 1,
        })  # fmt: skip
    return used, dict(skipped)


def in_fit(row: dict) -> bool:
    return row["source"].startswith(FIT_SOURCES)


def features(row: dict, overhead: str) -> list[float]:
    """Seconds per token at full bandwidth, and the overhead's unit: one per token, or one per layer."""
    return [row["bytes"] / row["bandwidth"], float(row["layers"] if overhead == "layer" else 1)]


def fit(rows: list[dict], overhead: str) -> tuple[float, float]:
    """(eta, overhead seconds) of t = x / eta + c * z minimising sum((t_est / t - 1)^2), c >= 0."""
    f = np.array([features(r, overhead) for r in rows]) * np.array([[r["measured"]] for r in rows])
    coef = np.linalg.lstsq(f, np.ones(len(rows)), rcond=None)[0] if len(rows) >= 3 else [-1.0]
    if len(coef) < 2 or min(coef) <= 0:  # too few rows, or no overhead the data can see: eta alone
        coef = [float(f[:, 0] @ f[:, 0] / f[:, 0].sum()), 0.0]
    return 1 / coef[0], float(coef[1])


def predict(row: dict, eta: float, c: float, overhead: str) -> float:
    x, z = features(row, overhead)
    return 1 / (x / eta + c * z)


def by(rows: list[dict], key) -> dict[str, list[dict]]:
    groups = defaultdict(list)
    for r in rows:
        groups[key(r)].append(r)
    return groups


def summary(rows: list[dict], key: str) -> dict[str, float]:
    errs = [abs(r[key] / r["measured"] - 1) for r in rows]
    ratio = statistics.median(r[key] / r["measured"] for r in rows) if rows else math.nan
    median, p90 = np.quantile(errs, [0.5, 0.9]) if errs else (math.nan, math.nan)
    return {"n": len(errs), "median": float(median), "p90": float(p90), "median_ratio": ratio}


def table(rows: list[dict], keys: tuple[str, ...], title: str) -> dict:
    """Median / p90 |est/meas - 1| (and the median est/meas) overall and by device class, format and source."""
    out: dict = {}
    print(f"\n== {title} ({len(rows)} rows): median |est/meas-1|, p90, median est/meas ==")
    for name in ("all", "class", "format", "source", "span"):
        groups = by(rows, lambda r, name=name: "all" if name == "all" else r[name])
        print(f"{name:<44}{'n':>5}" + "".join(f"{k:>21}" for k in keys))
        for group in sorted(groups, key=lambda g: -len(groups[g])):
            stats = out.setdefault(name, {})[group] = {k: summary(groups[group], k) for k in keys}
            cells = "".join(f"  {s['median']:5.0%} {s['p90']:5.0%} {s['median_ratio']:5.2f}" for s in stats.values())
            print(f"  {group[:42]:<42}{len(groups[group]):>5}{cells}")
    return out


def per_device_test(rows: list[dict]) -> tuple[int, int]:
    """On each device of each source with models of different depths: does a per-layer or a per-token overhead fit
    better (eta free per device)? (groups where per-layer wins, groups)."""
    wins = total = 0
    for group in by(rows, lambda r: (r["device"], r["count"], r["backend"], r["source"])).values():
        if len(group) < 4 or len({r["layers"] for r in group}) < 2:
            continue
        rms = {}
        for kind in ("token", "layer"):
            eta, c = fit(group, kind)
            rms[kind] = statistics.fmean((predict(r, eta, c, kind) / r["measured"] - 1) ** 2 for r in group)
        wins, total = wins + (rms["layer"] < rms["token"]), total + 1
    return wins, total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", type=Path, default=ROOT / "data" / "measurements.csv")
    ap.add_argument("--holdout", action="store_true", help="fit on FIT_SOURCES, report on the other sources")
    ap.add_argument("--worst", type=int, default=12)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    rows, skipped = load(args.csv)
    fit_rows = [r for r in rows if (in_fit(r) or not args.holdout) and r["depth"] <= FIT_MAX_DEPTH]
    report = [r for r in rows if not in_fit(r)] if args.holdout else rows
    print(f"priced {len(rows)} llama.cpp decode rows; skipped {sum(skipped.values())}:")
    for why, n in sorted(skipped.items(), key=lambda kv: -kv[1]):
        print(f"  {n:4d}  {why}")
    split = "FIT_SOURCES; reported: the other sources" if args.holdout else "all sources; reported: all rows"
    print(f"fit rows {len(fit_rows)} (depth <= {FIT_MAX_DEPTH}, {split}), reported rows {len(report)}")

    consts: dict = {"proposed": PROPOSED}
    fit_groups = by(fit_rows, lambda r: r["class"])
    for kind in ("token", "layer"):
        consts[kind] = {k: fit(fit_groups[k], kind) for k in CLASSES if k in fit_groups}
    for r in rows:
        for kind in ("token", "layer"):
            r[f"per_{kind}"] = predict(r, *consts[kind].get(r["class"], (math.nan, 0.0)), kind)
        r["proposed"] = predict(r, *PROPOSED[r["class"]], "layer")
    print("\nfitted per class: eta, per-token overhead | eta, per-layer overhead (fit-set median error)")
    for k, mine in ((k, fit_groups[k]) for k in CLASSES if k in fit_groups):
        (e1, c1), (e2, c2) = consts["token"][k], consts["layer"][k]
        m1, m2 = summary(mine, "per_token")["median"], summary(mine, "per_layer")["median"]
        print(f"  {k:<11} n={len(mine):<4} {e1:5.2f} {c1 * 1e3:5.2f} ms/token ({m1:4.0%}) | "
              f"{e2:5.2f} {c2 * 1e3:6.3f} ms/layer ({m2:4.0%})")  # fmt: skip
    wins, total = per_device_test(fit_rows)
    print(f"per device and source (eta free): per-layer overhead fits better in {wins} of {total} groups")
    keys = ("advisor", "per_token", "per_layer", "proposed")
    report = [r for r in report if not math.isnan(r["per_layer"])]
    if args.holdout:
        table(fit_rows, keys, "fit sources (in-sample)")
    stats = table(report, keys, "reported rows")

    print(f"\nworst {args.worst} rows for advisor (est/meas; proposed):")
    for r in sorted(report, key=lambda r: -abs(r["advisor"] / r["measured"] - 1))[: args.worst]:
        print(f"  #{r['id']:>5} {r['count']}x {r['device'][:24]:<24} {r['backend'][:6]:<6} {r['model'][:28]:<28} "
              f"{r['format'][:6]:<6} {r['test']:<11} meas {r['measured']:6.1f} advisor {r['advisor']:6.1f} "
              f"({r['advisor'] / r['measured']:.2f}; {r['proposed'] / r['measured']:.2f})")  # fmt: skip

    met = {}
    for key in ("advisor", "proposed"):
        s = stats["all"]["all"][key]
        met[key] = s["median"] <= TARGET_MEDIAN and s["p90"] <= TARGET_P90
        print(f"{key}: median {s['median']:.1%}, p90 {s['p90']:.1%} -> target "
              f"(<= {TARGET_MEDIAN:.0%}, <= {TARGET_P90:.0%}) {'met' if met[key] else 'NOT met'}")  # fmt: skip
    if args.json:
        out = {"holdout": args.holdout, "skipped": skipped, "constants": consts, "stats": stats, "rows": rows,
               "per_layer_wins": [wins, total], "target_met": met}  # fmt: skip
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0 if met["advisor"] else 1


if __name__ == "__main__":
    sys.exit(main())
