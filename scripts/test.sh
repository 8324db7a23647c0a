#!/usr/bin/env bash
# Builds and runs the test suite. GPU tests skip with a message where there is
# no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure -j "$(nproc)" --timeout 900
