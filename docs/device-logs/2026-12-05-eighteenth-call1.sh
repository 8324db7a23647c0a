#!/usr/bin/env bash
# Eighteenth session, call 1 (one H200; ~8 min): the seventeenth session's call B without the kernel table
# (which took over 3 minutes), with PyTorch's own FP8 (torchao float8, tensorwise) beside the bf16 yardstick.
#   1. the FP8 tests with the bounds call A's measurements set, and the FP8 weight gradients' loss curve;
#   2. the 4-layer slice (issue 14's >= 1.1x goal): ours in FP8, FP8 with FP8 weight gradients, and bf16;
#      torch.compile bf16; torch.compile with torchao float8, the classifier in bf16 (as ours) and in FP8.
# Carry devbin.tgz and build-wheels (torchao's wheel, pip download torchao: 0.18.0; not on the device image).
source scripts/device/env.sh
rm -rf /tmp/pyao && python3 -m zipfile -e build-wheels/torchao-*.whl /tmp/pyao
echo "=== FP8 tests ($(date -u +%T))"
GTEST_FILTER='CudaKernels.Fp8*:CudaModel.Fp8*:CudaTraining.Fp8*' timeout 100 bash scripts/device/routine.sh tests \
  > $OUT/tests-run.log 2>&1
echo "exit $?"; grep -E "^\[  (FAILED|     OK|  PASSED)|Failure|actual|Which is" $OUT/tests.log | head -30
common=(--config configs/10b.json --set train.batch_size=1 --set train.micro_batch_size=1
  --set precision.master_weights=false --set precision.optim_state_dtype=bf16 --set model.n_layers=4
  --set train.recompute=auto --steps 10 --warmup 3 --no-kernels)
for v in fp8 fp8dw bf16; do
  args=(); [ $v != bf16 ] && args=(--set precision.matmul=fp8)
  [ $v = fp8dw ] && args+=(--set precision.fp8_weight_gradients=true)
  echo "=== bench4 $v ($(date -u +%T))"
  timeout 60 devbin/bench_step "${common[@]}" "${args[@]}" > $OUT/bench4-$v.log 2>&1
  echo "exit $?"; grep -E "step:|ms/step|phases" $OUT/bench4-$v.log | head -4
done
echo "=== yardstick 4 layers, torch.compile bf16 ($(date -u +%T))"
timeout 120 python3 devbin/shared/bench/torch_llama_bench.py --layers 4 --compile 1 > $OUT/yard4-bf16.log 2>&1
echo "exit $?"; grep '^{' $OUT/yard4-bf16.log
for head in 0 1; do
  echo "=== yardstick 4 layers, torch.compile + torchao float8, FP8 classifier $head ($(date -u +%T))"
  PYTHONPATH=/tmp/pyao timeout 120 python3 scripts/device/torchao_fp8_yardstick.py \
    devbin/shared/bench/torch_llama_bench.py --fp8-head $head -- --layers 4 --compile 1 > $OUT/yard4-torchao-head$head.log 2>&1
  echo "exit $?"; grep -E '^\{|float8 linears|torchao|Error' $OUT/yard4-torchao-head$head.log | tail -4
done
echo "=== end ($(date -u +%T))"
