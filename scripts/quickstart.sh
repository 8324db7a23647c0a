#!/usr/bin/env bash
# The main job on a fresh machine: install dependencies, build, generate the
# default corpus, and train the tiny model on the CPU (the embedded default
# config). Extra arguments go to intellect_train, e.g. --set train.steps=50.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
if [ ! -f data/tinytext/manifest.json ]; then
  build/make_corpus --out data/tinytext
fi
exec build/intellect_train "$@"
