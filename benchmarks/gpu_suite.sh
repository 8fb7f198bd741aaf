#!/usr/bin/env bash
# One prepared command for a bare H100/H200 (torch + Triton preinstalled, no network): builds the CUDA extension,
# runs the CUDA tests and the Triton kernel tests compiled for real, every benchmark at Qwen2.5-3B/7B sizes in bf16,
# engine vs HF generate with its roofline, and 3 toy GRPO steps; one markdown + JSON report. benchmarks/gpu_suite.py
# says what each step does. Usage (from anywhere):
#   benchmarks/gpu_suite.sh [--cpu-dry-run] [--out DIR] [--budget S] [--only STEP ...] [--list]
#   benchmarks/gpu_suite.sh --fetch-wheels   # where a package index is reachable: fill .wheels/ for the GPU image
# PYTHON picks the interpreter (default python3); WHEEL_PYTHON the GPU image's Python version for --fetch-wheels.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ "${1:-}" = "--fetch-wheels" ]; then
  # Packages the GPU image lacks (zerosearch imports bm25s; bench_masked_pg_loss compares against liger-kernel), as
  # wheels for its Python; --no-deps: their own needs (numpy, torch, triton) are in the image.
  mkdir -p .wheels
  exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version "${WHEEL_PYTHON:-3.12}" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .wheels bm25s liger-kernel
fi
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
exec "$PY" benchmarks/gpu_suite.py "$@"
