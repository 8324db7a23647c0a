#!/usr/bin/env bash
# Packs what the lent GPU machine needs into devbin.tgz (git-excluded; name it
# in the device tool's `carry`): the built binaries, stripped; the shared
# libraries they load that the device image may lack (cuBLAS, cuDNN and NCCL
# come from the device's own Python nvidia-* packages instead); the test
# fixtures and the PyTorch yardstick from ../shared.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${BUILD_DIR:-build}
rm -rf devbin devbin.tgz
mkdir -p devbin/lib devbin/shared/data devbin/shared/bench
bins=(intellect_gpu_tests bench_step intellect_train intellect_forward make_corpus bench_allreduce bench_state_transfer
      bench_boundary bench_aead bench_quantize)
for b in "${bins[@]}"; do strip -o "devbin/$b" "$build/$b"; done
# EXTRA_BINS="path:name ...": more binaries, e.g. an older build to compare against.
for e in ${EXTRA_BINS:-}; do strip -o "devbin/${e#*:}" "${e%%:*}"; done
for lib in $(ldd "${bins[@]/#/$build/}" | awk '/=> \//{print $3}' | sort -u); do
  case "$(basename "$lib")" in
    libcublas*|libcudnn*|libnccl*|libc.so*|libm.so*|libpthread*|libdl.so*|librt.so*|libcuda.so*) ;;
    *) cp -L "$lib" devbin/lib/ ;;
  esac
done
cp -r ../shared/data/fixtures devbin/shared/data/
cp ../shared/bench/torch_llama_bench.py devbin/shared/bench/
cp -r scripts/device/*.sh scripts/device/*.py devbin/
# torchao's wheel for the FP8 yardstick (routine.sh yard-fp8), when downloaded into build-wheels/: the
# device image has no torchao and no network.
if ls build-wheels/torchao-*.whl > /dev/null 2>&1; then mkdir -p devbin/wheels && cp build-wheels/torchao-*.whl devbin/wheels/; fi
tar czf devbin.tgz devbin
rm -rf devbin
ls -l devbin.tgz
