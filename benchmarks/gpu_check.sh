#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: build every zoo model for cuda, run its forward pass and one
# training step against the NumPy reference, print timings. Needs the project's .venv (make test
# creates it) and nvcc on the PATH. Under 10 minutes on 16 cores; see benchmarks/tvm_gpu_check.py.
#
#   bash benchmarks/gpu_check.sh [--models bert-tiny,gpt2-small] [--workers 8]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=.venv/bin/python
[ -x "$PYTHON" ] || PYTHON=python3
command -v nvcc >/dev/null || echo "warning: nvcc is not on the PATH; TVM will compile CUDA with NVRTC" >&2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: no GPU visible" >&2
# A cache of its own, so the timings are of compiling, not of an earlier run's cache.
export GRAPHDSL_CACHE_DIR="${GRAPHDSL_CACHE_DIR:-$(mktemp -d)}"
export TVM_NUM_THREADS="${TVM_NUM_THREADS:-$(nproc)}"
exec timeout 590 "$PYTHON" benchmarks/tvm_gpu_check.py "$@"
