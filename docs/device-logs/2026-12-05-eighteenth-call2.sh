#!/usr/bin/env bash
# Eighteenth session, call 2 (one H200; ~8 min): issue 14's FP8 figures against PyTorch's own FP8 training
# (torchao's float8, tensorwise scaling: forward, input- and weight-gradient GEMMs in FP8) instead of its bf16.
# torchao is not on the device image: its wheel (pip download torchao, 0.18.0) is carried in build-wheels/ and
# unpacked onto PYTHONPATH. The 4-layer slice with the classifier in bf16 (as ours) and in FP8; the faster of
# the two on the full 10B; our 10B with FP8 weight gradients in the same call. Carry devbin.tgz and build-wheels.
source scripts/device/env.sh
rm -rf /tmp/pyao && python3 -m zipfile -e build-wheels/torchao-*.whl /tmp/pyao && export PYTHONPATH=/tmp/pyao
Y="python3 scripts/device/torchao_fp8_yardstick.py devbin/shared/bench/torch_llama_bench.py"
best_head=0; best_s=1e9
for head in 0 1; do
  echo "=== torchao 4 layers, fp8 head $head ($(date -u +%T))"
  timeout 150 $Y --fp8-head $head -- --layers 4 --compile 1 > $OUT/yard4-torchao-head$head.log 2>&1
  echo "exit $?"; grep -E '^\{|float8 linears|torchao|Error' $OUT/yard4-torchao-head$head.log | tail -4
  s=$(grep '^{' $OUT/yard4-torchao-head$head.log | python3 -c "import sys,json; print(json.loads(sys.stdin.read())['step_s'])" 2>/dev/null)
  [ -n "$s" ] && python3 -c "import sys; sys.exit(0 if $s < $best_s else 1)" && { best_s=$s; best_head=$head; }
done
echo "=== bench4 fp8dw ($(date -u +%T))"
timeout 80 devbin/bench_step --config configs/10b.json --set train.batch_size=1 --set train.micro_batch_size=1 \
  --set precision.master_weights=false --set precision.optim_state_dtype=bf16 --set model.n_layers=4 \
  --set train.recompute=auto --steps 10 --warmup 3 --no-kernels --set precision.matmul=fp8 \
  --set precision.fp8_weight_gradients=true > $OUT/bench4-fp8dw.log 2>&1
echo "exit $?"; grep -E "ms/step|MFU" $OUT/bench4-fp8dw.log | head -3
echo "=== torchao 10B, fp8 head $best_head ($(date -u +%T))"
timeout 260 $Y --fp8-head $best_head -- --layers 42 --compile 1 --steps 5 > $OUT/yard10b-torchao.log 2>&1
echo "exit $?"; grep -E '^\{|float8 linears|Error|out of memory' $OUT/yard10b-torchao.log | tail -4
echo "=== bench10b fp8dw ($(date -u +%T))"
STEPS10B=5 BENCH_ARGS="--set precision.matmul=fp8 --set precision.fp8_weight_gradients=true" timeout 120 \
  bash scripts/device/routine.sh bench10b > $OUT/r10.log 2>&1
echo "exit $?"; cp $OUT/bench10b.log $OUT/bench10b-fp8dw.log; grep -vE "^ +[a-z_]+ +[0-9]" $OUT/bench10b-fp8dw.log | tail -8
echo "=== end ($(date -u +%T))"
