#!/usr/bin/env bash
# Seventeenth session, call B (one H200; ~6 min), after call A's FP8 products ran: the 4-layer slice
# (issue 14's ≥ 1.1× goal) with FP8 (forward, dX) against the yardstick (routine bench4 runs both), with FP8
# weight gradients too, and with bf16 products; the kernel table has the FP8 casts against copy bandwidth
# and the FP8 products (dW included) against FP8's peak. Carry devbin.tgz.
source scripts/device/env.sh
# The FP8 tests again first, with the bounds call A's measurements set (the accumulation of FP8 tensor cores,
# the tiny model's logits and loss curve), and the FP8 weight gradients' loss curve, which call A's filter missed.
echo "=== FP8 tests ($(date -u +%T))"
GTEST_FILTER='CudaKernels.Fp8*:CudaModel.Fp8*:CudaTraining.Fp8*' timeout 150 bash scripts/device/routine.sh tests \
  > $OUT/tests-run.log 2>&1
echo "exit $?"; grep -E "^\[  (FAILED|     OK|  PASSED)|tiny config|Failure|actual|fp8.* against" $OUT/tests.log | head -30
echo "=== bench4 fp8 + yardstick ($(date -u +%T))"
BENCH_ARGS="--set precision.matmul=fp8" timeout 200 bash scripts/device/routine.sh bench4 > $OUT/r1.log 2>&1
echo "exit $?"; cp $OUT/bench4.log $OUT/bench4-fp8.log; grep -vE "^ +[a-z_]+ +[0-9]" $OUT/bench4-fp8.log | tail -22
grep -E "fp8" $OUT/bench4-fp8.log | head -20
common=(--config configs/10b.json --set train.batch_size=1 --set train.micro_batch_size=1
  --set precision.master_weights=false --set precision.optim_state_dtype=bf16 --set model.n_layers=4
  --set train.recompute=auto --steps 10 --warmup 3 --no-kernels)
echo "=== bench4 fp8 + FP8 weight gradients ($(date -u +%T))"
timeout 100 devbin/bench_step "${common[@]}" --set precision.matmul=fp8 --set precision.fp8_weight_gradients=true \
  > $OUT/bench4-fp8dw.log 2>&1
echo "exit $?"; grep -E "ms/step|MFU|phases|median" $OUT/bench4-fp8dw.log | head -6
echo "=== bench4 bf16 ($(date -u +%T))"
timeout 100 devbin/bench_step "${common[@]}" > $OUT/bench4-bf16.log 2>&1
echo "exit $?"; grep -E "ms/step|MFU|phases|median" $OUT/bench4-bf16.log | head -6
# Whether PyTorch's own FP8 training (torchao's Float8Linear) is on this machine, for an FP8 yardstick.
python3 -c "import torchao, torch; print('torchao', torchao.__version__, 'torch', torch.__version__)" 2>&1 | tail -1
echo "=== end ($(date -u +%T))"
