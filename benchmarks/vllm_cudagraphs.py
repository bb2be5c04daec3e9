"""How close advisor's CUDA graph memory is to what vLLM logged capturing its graphs.

    python benchmarks/vllm_cudagraphs.py [--csv benchmarks/data/vllm_cudagraph_logs.csv] [--json OUT]

Each row of the CSV is one logged capture ("Graph capturing finished in N secs, took X GiB", per rank) with the
model's layers on that rank, its hidden size, the tensor-parallel size, whether its layers are MoE, and the number
of graphs the log shows (PIECEWISE and FULL), plus vLLM's own estimate where 0.19+ printed one ("Estimated CUDA
graph memory"). The graph counts are the logged ones, so this checks the memory per graph, not advisor's count.
No target: the same model and graphs logged 0.52 and 2.35 GiB on two machines (see NOTES.md), so the figure is
a planning value, +-50%.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from advisor.costmodel import serving as SV  # noqa: E402

GiB = 1024**3


def evaluate(row: dict[str, str]) -> dict[str, object]:
    seqs = int(row["max_num_seqs"])
    largest = min(2 * seqs, 512, int(row["max_num_batched_tokens"]))
    graphs = int(row["piecewise_graphs"]) + int(row["full_graphs"])
    captured = SV.cudagraph_captured_bytes(
        graphs=graphs, layers=int(row["layers_per_rank"]), hidden=int(row["hidden"]), largest=largest,
        tp=int(row["tensor_parallel"]), moe=row["moe"] == "1",
    ) / GiB  # fmt: skip
    logged = float(row["captured_gib"])
    out: dict[str, object] = {"id": row["id"], "graphs": graphs, "logged": logged, "advisor": round(captured, 3),
                              "error": captured / logged - 1}  # fmt: skip
    if row.get("estimated_gib"):
        estimate = captured * SV.CUDAGRAPH_ESTIMATE_FACTOR
        out["logged_estimate"] = float(row["estimated_gib"])
        out["estimate_error"] = estimate / float(row["estimated_gib"]) - 1
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", default=str(ROOT / "benchmarks" / "data" / "vllm_cudagraph_logs.csv"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    with open(args.csv, newline="") as f:
        results = [evaluate(r) for r in csv.DictReader(f)]
    for r in results:
        est = f"  estimate {r['estimate_error']:+.0%}" if "estimate_error" in r else ""
        print(f"{r['id']:42} graphs {r['graphs']:3}  logged {r['logged']:5.2f}  advisor {r['advisor']:5.2f} GiB"
              f"  {r['error']:+.0%}{est}")  # fmt: skip
    errors = [abs(float(r["error"])) for r in results]
    within = sum(e <= 0.25 for e in errors)
    print(f"\ncaptured: median |error| {statistics.median(errors):.0%}; {within}/{len(errors)} within 25%, "
          f"{sum(e <= 0.5 for e in errors)}/{len(errors)} within 50%")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
