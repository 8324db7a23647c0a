#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ with clang (ASan + UBSan) outside the
# CMake build and runs each for a bounded time: scripts/fuzz.sh [seconds per
# target, default 20] [target...] (default: every target). The corpora
# persist in build-fuzz/corpus/ so later runs start where earlier ones stopped. Exits non-zero on the first crash; the
# crashing input is left in build-fuzz/ (crash-*), to be replayed with
# `build-fuzz/<target> build-fuzz/crash-...`.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
only=("${@:2}")  # targets to build and run; none named: all

# clang with libFuzzer's runtime, and libomp's omp.h (the int8 codec includes it).
if ! command -v clang++ >/dev/null 2>&1 || ! dpkg-query -W -f='${Status}' libomp-dev 2>/dev/null | grep -q "ok installed"; then
  echo "fuzz: installing clang and libomp-dev"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends clang libomp-dev
fi

out=build-fuzz
mkdir -p "$out"
# Only the sources the targets reach; libsodium for the handshake's HMAC, libcrypto for frame_cipher.cpp.
lib_sources=(src/dist/frame.cpp src/dist/auth.cpp src/dist/handshake.cpp src/dist/frame_cipher.cpp src/dist/identity.cpp
             src/dist/bytes.cpp src/dist/sealed_frame.cpp src/dist/control.cpp src/dist/quantize.cpp src/dist/quantize_avx2.cpp src/dist/quantize4_avx2.cpp
             src/dist/contribution_check.cpp src/dist/message_buffers.cpp src/dist/round_buffers.cpp src/dist/lane_common.cpp
             src/dist/ring_allreduce.cpp src/dist/round_codec.cpp src/dist/run_settings.cpp src/dist/state_chunk.cpp src/util/file.cpp
             src/dist/codec.cpp src/dist/quantize4.cpp src/dist/quantize2.cpp src/dist/quantize2_avx2.cpp src/dist/sparse.cpp src/dist/sparse_allgather.cpp
             src/dist/ring_evidence.cpp src/dist/sparse_evidence.cpp src/dist/commitment.cpp src/dist/shard_plan.cpp
             src/model/layout.cpp src/train/join_state.cpp)
common=(-std=c++20 -O1 -g -fno-omit-frame-pointer -fno-sanitize-recover=undefined -Isrc -Wno-unknown-pragmas)
# The library once (coverage-instrumented, without libFuzzer's main), two at
# a time, then each target links against the same objects: compiling the
# library again per target took most of CI's fuzz time.
mkdir -p "$out/obj"
echo "fuzz: building the library (${#lib_sources[@]} sources)"
printf '%s\n' "${lib_sources[@]}" | xargs -P 2 -I{} sh -c \
  'clang++ "$@" -c "{}" -o "'"$out"'/obj/$(echo "{}" | tr / _).o"' _ \
  "${common[@]}" -fsanitize=fuzzer-no-link,address,undefined
objs=()
for src in "${lib_sources[@]}"; do objs+=("$out/obj/$(echo "$src" | tr / _).o"); done

targets=(fuzz_frame_decoder fuzz_sealed_frame fuzz_handshake fuzz_handshake_pair fuzz_control fuzz_ring_message fuzz_state_chunk fuzz_round
         fuzz_int4 fuzz_int2 fuzz_sparse_message fuzz_ring_evidence fuzz_join_state)
[ "${#only[@]}" -eq 0 ] || targets=("${only[@]}")
for target in "${targets[@]}"; do
  echo "fuzz: building $target"
  clang++ "${common[@]}" -fsanitize=fuzzer,address,undefined "fuzz/$target.cpp" "${objs[@]}" -lsodium -lcrypto -pthread \
    -o "$out/$target"
done

targets=(fuzz_frame_decoder fuzz_sealed_frame fuzz_handshake fuzz_handshake_pair fuzz_control fuzz_ring_message fuzz_state_chunk fuzz_round
         fuzz_int4 fuzz_int2 fuzz_sparse_message fuzz_ring_evidence fuzz_join_state)
[ "${#only[@]}" -eq 0 ] || targets=("${only[@]}")
for target in "${targets[@]}"; do
  mkdir -p "$out/corpus/$target"
  echo "fuzz: running $target for ${seconds}s"
  # -rss_limit_mb bounds memory: the largest frame the decoder accepts is 64 MiB.
  # libFuzzer's own exit status decides: a crash, a leak, a timeout and an
  # out-of-memory run are all failures (an OOM leaves no crash-* file).
  status=0
  (cd "$out" && "./$target" -max_total_time="$seconds" -rss_limit_mb=1024 -print_final_stats=1 \
     "corpus/$target" > "$target.log" 2>&1) || status=$?
  grep -E "^(#[0-9]+ *DONE|stat::|==[0-9]+==ERROR|SUMMARY|Done)" "$out/$target.log" || true
  if [ "$status" -ne 0 ]; then
    echo "fuzz: $target failed (libFuzzer exit status $status); its log: $out/$target.log"
    tail -n 30 "$out/$target.log"
    ls "$out" | grep -E "^(crash|leak|timeout|oom|slow-unit)-" || true
    exit 1
  fi
done
echo "fuzz: no crashes"
