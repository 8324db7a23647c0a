#!/usr/bin/env bash
# Eighteenth session, call 2 (one H200; ~8 min): issue 14's 10B figures against PyTorch's own FP8 training
# (torchao float8, tensorwise: forward, input- and weight-gradient GEMMs in FP8) instead of its bf16, in the
# same call: torch.compile + torchao on the full 10B (nothing checkpointed), the classifier in FP8 when
# HEAD=1 (call 1 picks the faster variant on the 4-layer slice), then ours with FP8 weight gradients and
# with FP8 forward and input gradients only. Carry devbin.tgz and build-wheels.
source scripts/device/env.sh
rm -rf /tmp/pyao && python3 -m zipfile -e build-wheels/torchao-*.whl /tmp/pyao
echo "=== yardstick 10B, torch.compile + torchao float8, FP8 classifier ${HEAD:-0} ($(date -u +%T))"
PYTHONPATH=/tmp/pyao timeout 300 python3 scripts/device/torchao_fp8_yardstick.py devbin/shared/bench/torch_llama_bench.py \
  --fp8-head ${HEAD:-0} -- --layers 42 --compile 1 --steps 5 > $OUT/yard10b-torchao.log 2>&1
echo "exit $?"; grep -E '^\{|float8 linears|Error|out of memory' $OUT/yard10b-torchao.log | tail -4
for v in fp8dw fp8; do
  args="--set precision.matmul=fp8"; [ $v = fp8dw ] && args="$args --set precision.fp8_weight_gradients=true"
  echo "=== bench10b $v ($(date -u +%T))"
  STEPS10B=5 BENCH_ARGS="$args" timeout 120 bash scripts/device/routine.sh bench10b > $OUT/r-$v.log 2>&1
  echo "exit $?"; cp $OUT/bench10b.log $OUT/bench10b-$v.log; grep -vE "^ +[a-z_]+ +[0-9]" $OUT/bench10b-$v.log | tail -5
done
echo "=== end ($(date -u +%T))"
