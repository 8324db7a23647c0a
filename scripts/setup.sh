#!/usr/bin/env bash
# Installs intellect's build dependencies from Debian packages. Idempotent:
# it calls apt-get only when something is missing.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  nlohmann-json3-dev libgtest-dev   # config/JSON, tests
  libuv1-dev libsodium-dev          # the global mesh (event loop, authentication, checksums)
  libssl-dev                        # the mesh's sealed frames (AES-256-GCM, ChaCha20-Poly1305: frame_cipher.h)
  libxxhash-dev                     # outer-parameter hashes (DiLoCo consistency check)
  libpcre2-dev                      # the tokenizer's pre-tokenizer regex
  zlib1g-dev libzstd-dev            # compressed .jsonl inputs
  libmicrohttpd-dev                 # the status page's HTTP server (mesh.status_listen, train.metrics_listen)
  chromium                          # tests: the status page rendered in a headless browser
  prometheus                        # tests: promtool checks /metrics
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
else
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "setup: CUDA toolkit found: the CUDA backend will be built"
else
  echo "setup: no CUDA toolkit (nvcc): building CPU-only (-DINTELLECT_CUDA=OFF)"
fi
