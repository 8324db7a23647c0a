#!/usr/bin/env bash
# Exports a checkpoint to a HuggingFace directory and checks that transformers
# computes the same logits from it as intellect_forward does.
#
#   bash scripts/check_hf_export.sh CKPT BUILD_DIR [DTYPE...]
#
# CKPT is a step directory or a checkpoint root; DTYPE is fp32 and/or bf16
# (default: both). Needs python3 with torch, transformers and safetensors (the
# GPU machines have them). KEEP=1 keeps the work directory. Exit 0 when every
# export matches.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: bash scripts/check_hf_export.sh CKPT BUILD_DIR [fp32] [bf16]" >&2
  exit 2
fi
ckpt=$1
build=$2
shift 2
dtypes=("$@")
[[ ${#dtypes[@]} -eq 0 ]] && dtypes=(fp32 bf16)
here=$(cd "$(dirname "$0")/.." && pwd)
check="$here/tools/check_hf_export.py"
for tool in ckpt_convert intellect_forward; do
  [[ -x "$build/$tool" ]] || { echo "check_hf_export.sh: no $build/$tool: build first (cmake --build $build)" >&2; exit 1; }
done
python3 -c "import torch, transformers, safetensors" 2>/dev/null || {
  echo "check_hf_export.sh: python3 lacks torch/transformers/safetensors; run this where they are installed" >&2
  exit 1
}

work=$(mktemp -d "${TMPDIR:-/tmp}/check_hf_export.XXXXXX")
if [[ "${KEEP:-0}" == 1 ]]; then echo "work directory: $work"; else trap 'rm -rf "$work"' EXIT; fi

status=0
for dtype in "${dtypes[@]}"; do
  echo "== $dtype export of $ckpt"
  "$build/ckpt_convert" export --ckpt "$ckpt" --out "$work/hf_$dtype" --dtype "$dtype"
  python3 "$check" tokens --model "$work/hf_$dtype" --out "$work/tokens.safetensors"
  "$build/intellect_forward" --model "$work/hf_$dtype" --tokens "$work/tokens.safetensors" \
    --out "$work/forward_$dtype.safetensors"
  python3 "$check" check --model "$work/hf_$dtype" --tokens "$work/tokens.safetensors" \
    --logits "$work/forward_$dtype.safetensors" || status=1
done
exit $status
