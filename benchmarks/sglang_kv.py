"""How close advisor's SGLang KV pool is to what SGLang printed at start-up, on logs users posted.

    python benchmarks/sglang_kv.py [--csv benchmarks/data/sglang_kv_logs.csv] [--verbose] [--json OUT]

Each row of the CSV is one start-up log (`benchmarks/data/sglang_kv_logs.md` quotes the lines) with its
configuration: model (`config`: the config.json advisor reads), GPU (`accelerator`: a name in advisor's table;
`total_gpu_gib` where the log gives it), TP size, `mem_fraction_static` where the log printed or passed it,
context, quantization, KV dtype, SGLang version. SGLang sizes its pool from the memory free after the CUDA
context (`Load weight begin. avail mem=...`, or `avail + mem usage` of `Load weight end`): where the log gives it,
`pre_load_free_gib` becomes the GPU's free memory (plus advisor's CUDA-context allowance, which
`sglang_memory` takes off again).

Three checks against `max_total_num_tokens` / `#tokens`:
- full: `advisor.costmodel.serving.sglang_memory` predicts everything (fraction, weights, cell).
  Target: within 10% for at least 80% of the rows.
- pool: from the logged free memory after the weights (`avail mem`) and before them, only the fraction and the
  cell are advisor's: (avail - pre x (1 - f)) / cell. Should be exact up to rounding (1%).
- cell: the logged K + V (or MLA 'KV size') bytes / tokens against advisor's `kv_bytes_per_token`.
A row whose start-up failed (`max_total_num_tokens` = FAILED) passes when advisor also finds no room.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from advisor.costmodel import serving as SV  # noqa: E402

GiB = 1024**3
TARGET_WITHIN = 0.10
TARGET_SHARE = 0.80
POOL_WITHIN = 0.01
CELL_WITHIN = 0.01


def _num(text: str | None) -> float | None:
    match = re.search(r"-?\d+(?:\.\d+)?", (text or "").replace(",", ""))
    return float(match.group()) if match else None


def _version(text: str | None) -> tuple[int, ...]:
    """'~0.4.3 (...)', '0.4.6.post2 (...)' -> (0, 4, 3); a date or an image tag -> the newest read."""
    match = re.search(r"(?<![\d.])0\.\d+(?:\.\d+)?", text or "")
    return SV.parse_version(match.group() if match else None, "sglang")


def _precision(row: dict) -> str:
    q = (row.get("quantization") or "").lower()
    for name in ("awq", "gptq", "fp8"):
        if name in q:
            return name
    return "int8" if "w8a8" in q or "int8" in q else "bf16"


def _spec(row: dict):
    from advisor.sources.config import load_config_file, spec_from_config

    path = row.get("config") or ""
    if not path:
        return None
    return spec_from_config(load_config_file(ROOT / path), model_id=row["model"].split(" ")[0], source="config")


def _gpu(row: dict) -> SV.ServeGpu | None:
    """The GPU as SGLang saw it: the table's card (or the logged total), free = the logged pre-load free memory."""
    from advisor.accelerators import lookup
    from advisor.serve import gpu_from_accelerator

    total, pre = _num(row.get("total_gpu_gib")), _num(row.get("pre_load_free_gib"))
    name = (row.get("accelerator") or "").strip()
    if name:
        gpu = gpu_from_accelerator(lookup(name))
        if total:
            gpu = dataclasses.replace(gpu, total_bytes=int(total * GiB), source="log")
    elif total or pre:
        # Card not in the log: its total is only known as at least what was free.
        least = int(total * GiB) if total else int(pre * GiB) + SV.SGLANG_CUDA_CONTEXT  # type: ignore[operator]
        gpu = SV.ServeGpu(name=row.get("gpu") or "?", total_bytes=least, source="log")
    else:
        return None
    if pre:
        # The log's free memory is after SGLang's CUDA context; ServeGpu.free_bytes is before the engine starts.
        gpu = dataclasses.replace(gpu, free_bytes=int(pre * GiB) + SV.SGLANG_CUDA_CONTEXT)
    return gpu


def check_row(row: dict) -> dict:
    out: dict = {"id": row["id"], "model": row["model"]}
    logged_text = (row.get("max_total_num_tokens") or "").strip()
    failed = logged_text.upper().startswith("FAILED")
    logged = None if failed else _num(logged_text)
    if not (failed or logged):
        return {**out, "skip": "no token count in the log"}
    try:
        spec = _spec(row)
    except Exception as exc:  # a config advisor cannot read offline
        return {**out, "skip": f"no config: {str(exc).splitlines()[0][:100]}"}
    if spec is None:
        return {**out, "skip": "model not named in the log: no config"}
    tp = int(_num(row.get("tp")) or 1)
    version = _version(row.get("sglang_version"))
    precision = _precision(row)
    kv = "fp8_e4m3" if "fp8" in (row.get("kv_cache_dtype") or "").lower() else "auto"
    context = int(_num(row.get("context_length")) or spec.max_context or 4096)
    frac = _num(row.get("mem_fraction_static"))
    opts = SV.ServeOptions(
        engine="sglang", precision=precision, kv_cache_dtype=kv, gpu_memory_utilization=frac, context=context,
        version=version,
    )  # fmt: skip
    gpu = _gpu(row)
    # The cell and the default fraction do not need the card's memory; a stand-in GPU prices them where it is unknown.
    mem = SV.sglang_memory(
        spec, gpu or SV.ServeGpu(name="?", total_bytes=80 * GiB), opts, precision=precision, tp=tp, pp=1,
        context=context,
    )  # fmt: skip
    cell = float(mem["kv_bytes_per_token"])
    out.update(version=".".join(map(str, version)), tp=tp, precision=precision, kv=kv, cell=cell)
    out.update(frac=mem["mem_fraction_static"], frac_logged=frac is not None)
    if failed:
        out.update(failed=True, predicted=mem["kv_cache_tokens"] if gpu else None)
        out.update(weights_gib=round(mem["weights_bytes"] / GiB, 2), logged_weights_gib=_num(row.get("weights_gib")))
        return out
    out["logged"] = int(logged)
    size = _num(row.get("kv_size_gib"))
    if size:
        out["logged_cell"] = size * GiB / logged
        out["cell_error"] = cell / out["logged_cell"] - 1
    avail, pre = _num(row.get("avail_mem_gib")), _num(row.get("pre_load_free_gib"))
    if avail and cell:
        approx = pre is None
        pre = pre if pre is not None else avail + mem["weights_bytes"] / GiB  # no pre-load line: avail + est. weights
        budget = (avail - pre * (1 - mem["mem_fraction_static"])) * GiB
        out.update(pool=max(int(budget // cell), 0), pool_pre_estimated=approx)
        out["pool_error"] = out["pool"] / logged - 1
    if gpu is None:
        out["full_skip"] = "GPU and its free memory not in the log"
        return out
    out.update(
        predicted=mem["kv_cache_tokens"],
        error=mem["kv_cache_tokens"] / logged - 1,
        weights_gib=round(mem["weights_bytes"] / GiB, 2),
        logged_weights_gib=_num(row.get("weights_gib")),
        pre_gib=round(mem["pre_load_free_bytes"] / GiB, 2),
    )
    return out


def _line(r: dict) -> str:
    head = f"{r['id'][:36]:36} "
    if "skip" in r:
        return head + "skip: " + r["skip"]
    if r.get("failed"):
        verdict = "consistent" if r.get("predicted") == 0 else f"MISS (advisor fits {r.get('predicted')} tokens)"
        return head + (f"log FAILED (no room)   advisor {verdict}; f {r['frac']}, w {r['weights_gib']} vs "
                       f"{r['logged_weights_gib'] or '-'}")  # fmt: skip
    text = f"log {r['logged']:>9,} "
    text += f"full {r['predicted']:>9,} {r['error']:+6.1%} " if "predicted" in r else f"full {'-':>9} {'':>6} "
    if "pool" in r:
        text += f"pool{'~' if r['pool_pre_estimated'] else ' '}{r['pool']:>9,} {r['pool_error']:+6.1%} "
    else:
        text += f"pool  {'-':>9} {'':>6} "
    if "logged_cell" in r:
        text += f"cell {r['cell']:>7,.0f} vs {r['logged_cell']:>7,.0f} {r['cell_error']:+6.1%} "
    else:
        text += f"cell {r['cell']:>7,.0f} vs {'-':>7} {'':>6} "
    text += f"f {r['frac']}{'' if r['frac_logged'] else '*'} v{r['version']}"
    if "weights_gib" in r:
        text += f" w {r['weights_gib']} vs {r['logged_weights_gib'] or '-'}"
    return head + text


def _summary(results: list[dict]) -> float:
    full = [r for r in results if "error" in r]
    pool = [r for r in results if "pool_error" in r]
    cells = [r for r in results if "cell_error" in r]
    fails = [r for r in results if r.get("failed")]
    within = [r for r in full if abs(r["error"]) <= TARGET_WITHIN]
    share = len(within) / len(full) if full else 0.0
    print()
    if full:
        median = statistics.median(abs(r["error"]) for r in full)
        print(f"full prediction: {len(within)}/{len(full)} rows within {TARGET_WITHIN:.0%} ({share:.0%}; target "
              f"{TARGET_SHARE:.0%}); median |error| {median:.1%}")  # fmt: skip
    else:
        print("full prediction: no complete rows")
    if pool:
        ok = sum(abs(r["pool_error"]) <= POOL_WITHIN for r in pool)
        median = statistics.median(abs(r["pool_error"]) for r in pool)
        print(f"pool arithmetic from the logged free memory: {ok}/{len(pool)} within {POOL_WITHIN:.0%}; median |error| "
              f"{median:.2%} (pool~: pre-load free taken as avail + advisor's weights)")  # fmt: skip
    if cells:
        ok = sum(abs(r["cell_error"]) <= CELL_WITHIN for r in cells)
        print(f"cell (logged K+V bytes / tokens vs kv_bytes_per_token): {ok}/{len(cells)} within {CELL_WITHIN:.0%}")
    if fails:
        ok = sum(r.get("predicted") == 0 for r in fails)
        print(f"failed start-ups advisor also finds no room for: {ok}/{len(fails)}")
    print("f*: advisor's default mem_fraction_static (the log did not print one)")
    return share


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", default=str(ROOT / "benchmarks/data/sglang_kv_logs.csv"))
    parser.add_argument("--verbose", action="store_true", help="Also print skipped rows.")
    parser.add_argument("--json", default=None, help="Write every row's result here.")
    args = parser.parse_args()
    with open(args.csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    results = [check_row(r) for r in rows]
    for r in results:
        if "skip" not in r or args.verbose:
            print(_line(r))
    _summary(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
