# Sourced on the lent GPU machine, in the repository root: unpacks devbin.tgz
# (made here by scripts/device/pack.sh) and points the loader at the carried
# libraries and at the device's own CUDA libraries from its Python nvidia-*
# packages. Keeps NVLink multicast off, as the device README requires.
set -uo pipefail
# Unpacked again whenever devbin.tgz changed: a warm machine keeps the last
# call's devbin/, which once ran a stale binary (tenth session, call 8).
packed=$(md5sum devbin.tgz | cut -d' ' -f1)
if [ "$(cat devbin/.packed 2>/dev/null)" != "$packed" ]; then
  rm -rf devbin && tar xzf devbin.tgz && echo "$packed" > devbin/.packed
fi
nvlibs=$(python3 - <<'PY'
import os, nvidia
roots = list(nvidia.__path__)
print(":".join(os.path.join(r, d, "lib") for r in roots for d in sorted(os.listdir(r))
               if os.path.isdir(os.path.join(r, d, "lib"))))
PY
)
export LD_LIBRARY_PATH="$PWD/devbin/lib:$nvlibs:${LD_LIBRARY_PATH:-}"
export INTELLECT_SHARED_DATA="$PWD/devbin/shared/data" INTELLECT_BINARY_DIR="$PWD/devbin"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
