#!/usr/bin/env bash
# Configures and builds into build/ (or $BUILD_DIR). The CUDA backend is built
# when nvcc is present; INTELLECT_CUDA=OFF in the environment forces CPU-only.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
cuda=${INTELLECT_CUDA:-}
if [ -z "$cuda" ]; then
  if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then cuda=ON; else cuda=OFF; fi
fi
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DINTELLECT_CUDA="$cuda" >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"
