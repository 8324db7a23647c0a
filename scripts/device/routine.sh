#!/usr/bin/env bash
# The device routine: run on the lent H200 from the repository root, with the
# sections to run as arguments; each section's output goes to $OUT/<name>.log
# and to stdout.
#   tests            the GPU test suite (ctest label gpu's binary)
#   sanitize         compute-sanitizer memcheck, initcheck, racecheck over the GPU tests
#   bench4           bench_step on the 4-layer INTELLECT-1 slice, and the yardstick (torch.compile)
#   bench10b         bench_step on the full 10B (1 micro-batch per step), and the yardstick
#   bench10b-accum8  bench_step on the full 10B, 8 micro-batches per step
#   yard10b          the yardstick alone on the full 10B (torch.compile, nothing checkpointed)
#   bench4docs       the 4-layer slice masked per document (lengths around 1500 tokens) against causal per row
# Extra bench_step flags can be given in BENCH_ARGS.
source "$(dirname "$0")/env.sh" 2>/dev/null || source scripts/device/env.sh
B=devbin
common=(--config configs/10b.json --set train.batch_size=1 --set train.micro_batch_size=1
        --set precision.master_weights=false --set precision.optim_state_dtype=bf16)
section() { echo "=== $1 ($(date -u +%H:%M:%S))"; }
for s in "$@"; do
  case "$s" in
    tests)
      section tests
      nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv,noheader
      $B/intellect_gpu_tests --gtest_filter="${GTEST_FILTER:-*}" 2>&1 | tee "$OUT/tests.log" | grep -v "^\[ *RUN\|^\[ *OK" ;;
    sanitize)
      for tool in memcheck initcheck racecheck; do
        section "sanitize $tool"
        timeout ${SAN_TIMEOUT:-900} compute-sanitizer --tool $tool --print-limit 20 \
          $B/intellect_gpu_tests --gtest_filter="${SAN_FILTER:-CudaKernels.*:CudaModel.*:-*Fsdp*}" \
          > "$OUT/sanitize-$tool.log" 2>&1
        echo "exit $?"; grep -E "ERROR SUMMARY|PASSED|FAILED" "$OUT/sanitize-$tool.log" | tail -5
      done ;;
    bench4)
      section bench4
      $B/bench_step "${common[@]}" --set model.n_layers=4 --set train.recompute=auto --steps 10 --warmup 3 \
        ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench4.log"
      python3 devbin/shared/bench/torch_llama_bench.py --layers 4 --compile 1 2>&1 | grep '^{' | tee -a "$OUT/bench4.log" ;;
    bench10b)
      section bench10b
      $B/bench_step "${common[@]}" --steps ${STEPS10B:-6} --warmup 2 --no-kernels ${BENCH_ARGS:-} 2>&1 \
        | tee "$OUT/bench10b.log" ;;
    bench10b-accum8)
      section bench10b-accum8
      $B/bench_step "${common[@]}" --set train.batch_size=8 --steps 3 --warmup 1 --no-kernels ${BENCH_ARGS:-} \
        2>&1 | tee "$OUT/bench10b-accum8.log" ;;
    yard10b)
      section yard10b
      python3 devbin/shared/bench/torch_llama_bench.py --layers 42 --compile 1 --steps ${STEPS10B:-6} 2>&1 | grep '^{' \
        | tee "$OUT/yard10b.log" ;;
    bench4docs)
      section bench4docs
      $B/bench_step "${common[@]}" --set model.n_layers=4 --steps 10 --warmup 3 --doc-len ${DOC_LEN:-1500} \
        --no-kernels 2>&1 | tee "$OUT/bench4docs.log" ;;
    *) echo "routine.sh: unknown section $s"; exit 2 ;;
  esac
done
