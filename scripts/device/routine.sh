#!/usr/bin/env bash
# The device routine: run on the lent H200 from the repository root, with the
# sections to run as arguments; each section's output goes to $OUT/<name>.log
# and to stdout.
#   tests            the GPU test suite (ctest label gpu's binary)
#   sanitize         compute-sanitizer memcheck, initcheck, racecheck (one test per process) over the GPU tests, our kernels
#   bench4           bench_step on the 4-layer INTELLECT-1 slice, and the yardstick (torch.compile)
#   bench10b         bench_step on the full 10B (1 micro-batch per step), and the yardstick
#   bench10b-accum8  bench_step on the full 10B, 8 micro-batches per step
#   yard10b          the yardstick alone on the full 10B (torch.compile, nothing checkpointed)
#   yard-fp8         the yardstick with PyTorch's own FP8 training (torchao float8, tensorwise; its wheel packed
#                    from build-wheels/, see pack.sh): LAYERS (4 or 42), FP8_HEAD (1: the classifier in FP8 too,
#                    the faster variant; 0: bf16, as ours), STEPS10B; issue 14's FP8 comparison
#   bench4docs       the 4-layer slice masked per document (lengths around 1500 tokens) against causal per row
#   sdpa-configs     the 4-layer slice with each of cuDNN's ranked attention engine configs
#   overlap150m      issue 15: 4 nodes of 150m, DiLoCo none vs eager over an emulated link (LINK_MBIT, LINK_DELAY;
#                    EXTRA_SETS="--set k=v ..." adds settings, e.g. diloco.compression)
#   boundary-alone   issue 15: one node of 150m alone (DiLoCo, no mesh, the GPU to itself): each outer
#                    boundary's parts (download, pseudo-gradient, Nesterov, upload), eager and none
#   overlap-quality  issue 15: 4 nodes of 150m, none vs eager, the same tokens; H (default 25), STEPS
#                    (default 300), EVAL_BATCHES (16): final validation loss. DATA (default data/shakespeare,
#                    carried) picks the token shards (scripts/quality_data.sh); the English corpus of
#                    scripts/prepare_english_corpus.sh (carry data/english.tgz, unpacked here) is large enough
#                    for 1200 steps without repeating a token. Issue 15's comparison at H = 100, ~4 min
#                    (estimate: 100-135 s per mode at 1200 steps on tinyshakespeare, 2026-12-03):
#                      DATA=data/english EVAL_BATCHES=64 H=100 STEPS=1200 \
#                        EXTRA_SETS="--set diloco.compression=none" bash scripts/device/routine.sh overlap-quality
#   ring-crypto      issue 16: bench_allreduce (4 nodes, 8 and 1 rings, int8) sealed vs the same build's
#                    --plaintext (benchmark-only unsealed frames), alternating, 2 repeats, at --auth secret
#                    and --auth keys (signed first hops, commitment audit); ELEMS (67108864) values; OPENERS
#                    (unset: from the cores) sets --openers, the threads per process that open sealed frames
#                    (0: the loop thread opens them, the design before the opener pool); each repeat also
#                    runs sealed with --aead libsodium (the AEAD library before OpenSSL) unless LIBSODIUM=0;
#                    first bench_aead (one core's seal/open GB/s per library and suite)
#   ring-link        issue 15: the int8 ring at 1 Gbit/s and 50 ms one way (4 nodes, 277M and 16.8M values,
#                    1 and 8 rings) and on loopback (2 and 4 nodes, 67M and 277M values), this build against
#                    devbin/bench_allreduce_base (the build before the codec pool, packed with EXTRA_BINS)
#   state-transfer   issue 15: a joiner's download of the 150m's 4.36 GB of state on loopback with 1, 2, 4 and 8
#                    lanes (and devbin/bench_state_transfer_base, the single-connection build, if packed with
#                    EXTRA_BINS), then over an emulated LINK_MBIT (1000) Mbit/s, LINK_DELAY (50) ms link
#   join-wan         issue 15: a running swarm of 2 nodes of 150m (JOIN_NODES) on the GPU, every node's links
#                    emulated at LINK_MBIT (1000) Mbit/s and LINK_DELAY (50) ms one way, and a third node that
#                    joins at outer step JOIN_AT (2): its `joined` seconds against 1.2 x state bytes / link
#                    (scripts/join_wan.sh); H (20) inner steps of BATCH (16) x 1024 tokens, STEPS (600: the run must outlast the join)
#   boundary-host    issue 15: bench_boundary (a sparse boundary's host work for 150m's 277M values, no GPU:
#                    error-feedback commit, the two passes, hash, RMS), all cores and 4 threads (a node's share
#                    when 4 nodes share the host)
#   profile          ncu's per-kernel durations (and SM/DRAM throughput) of one step of a 2-layer slice of
#                    the 10B, every kernel in launch order, as CSV ($OUT/profile.csv)
# Extra bench_step flags can be given in BENCH_ARGS.
source "$(dirname "$0")/env.sh" 2>/dev/null || source scripts/device/env.sh
B=devbin
common=(--config configs/10b.json --set train.batch_size=1 --set train.micro_batch_size=1
        --set precision.master_weights=false --set precision.optim_state_dtype=bf16)
section() { echo "=== $1 ($(date -u +%H:%M:%S))"; }
# SM clock, power and temperature every 200 ms while a benchmark runs ($OUT/clocks-<name>.csv),
# and their medians: sustained GEMM load lowers the clock below what a short test sees.
clocks_start() { nvidia-smi --query-gpu=clocks.sm,power.draw,temperature.gpu --format=csv,noheader,nounits -lms 200 \
                   > "$OUT/clocks-$1.csv" 2>/dev/null & CLOCKS_PID=$!; }
clocks_stop() { kill $CLOCKS_PID 2>/dev/null; wait $CLOCKS_PID 2>/dev/null
  python3 -c "import sys,statistics as s; r=[l.split(',') for l in open(sys.argv[1]) if l.count(',')==2]; r=[x for x in r if float(x[1])>300];
print('  under load (>300 W, %d samples): SM clock median %.0f MHz (min %.0f), power median %.0f W, temperature max %.0f C' % (len(r), s.median(float(x[0]) for x in r), min(float(x[0]) for x in r), s.median(float(x[1]) for x in r), max(float(x[2]) for x in r)) if r else '  no samples above 300 W')" "$OUT/clocks-$1.csv"; }
for s in "$@"; do
  case "$s" in
    tests)
      section tests
      nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv,noheader
      $B/intellect_gpu_tests --gtest_filter="${GTEST_FILTER:-*}" 2>&1 | tee "$OUT/tests.log" | grep -v "^\[ *RUN\|^\[ *OK" ;;
    sanitize)
      # Only our kernels are instrumented (names containing "intellect"); cuBLAS's and cuDNN's run as they
      # are. memcheck and initcheck over the suite in one process; racecheck one test per process, because
      # compute-sanitizer's racecheck crashes at cuBLAS's Hopper GEMMs (RELIABILITY.md) and a crash must
      # not take the other tests with it. SAN_TOOLS picks the tools, SAN_FILTER the tests, SAN_TIMEOUT
      # bounds each tool (racecheck: the whole loop).
      filter="${SAN_FILTER:-CudaKernels.*:CudaModel.*:CudaTraining.*:Packed/*:Precision/*:Fsdp.*:-*NvlinkMulticast*}"
      for tool in ${SAN_TOOLS:-memcheck initcheck racecheck}; do
        section "sanitize $tool"
        if [ $tool != racecheck ]; then
          timeout ${SAN_TIMEOUT:-900} compute-sanitizer --tool $tool --print-limit 20 --kernel-name kns=intellect \
            $B/intellect_gpu_tests --gtest_filter="$filter" > "$OUT/sanitize-$tool.log" 2>&1
          echo "exit $?"; grep -E "ERROR SUMMARY|PASSED|FAILED" "$OUT/sanitize-$tool.log" | tail -5
          continue
        fi
        t0=$(date +%s); : > "$OUT/sanitize-racecheck.log"
        for t in $($B/intellect_gpu_tests --gtest_list_tests --gtest_filter="$filter" | awk '/^[^ ]/{s=$1} /^  /{print s $1}'); do
          [ $(( $(date +%s) - t0 )) -gt ${SAN_TIMEOUT:-900} ] && { echo "time bound reached before $t"; break; }
          timeout 300 compute-sanitizer --tool racecheck --print-limit 20 --kernel-name kns=intellect \
            $B/intellect_gpu_tests --gtest_filter="$t" > /tmp/racecheck-one.log 2>&1
          echo "$t exit=$? $(grep -h 'RACECHECK SUMMARY' /tmp/racecheck-one.log | sed 's/=* *//')" \
               "$(grep -c 'Internal Sanitizer Error' /tmp/racecheck-one.log) sanitizer crash(es)" | tee -a "$OUT/sanitize-racecheck.log"
          # No race reported is the good case: grep's status 1 must not become the routine's.
          grep -A12 "Race reported" /tmp/racecheck-one.log >> "$OUT/sanitize-racecheck.log" || true
        done
      done ;;
    bench4)
      section bench4
      $B/bench_step "${common[@]}" --set model.n_layers=4 --set train.recompute=auto --steps 10 --warmup 3 \
        ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench4.log"
      python3 devbin/shared/bench/torch_llama_bench.py --layers 4 --compile 1 2>&1 | grep '^{' | tee -a "$OUT/bench4.log" ;;
    bench10b)
      section bench10b
      clocks_start bench10b
      $B/bench_step "${common[@]}" --steps ${STEPS10B:-6} --warmup 2 --no-kernels ${BENCH_ARGS:-} 2>&1 \
        | tee "$OUT/bench10b.log"
      clocks_stop bench10b | tee -a "$OUT/bench10b.log" ;;
    bench10b-accum8)
      section bench10b-accum8
      $B/bench_step "${common[@]}" --set train.batch_size=8 --steps 3 --warmup 1 --no-kernels ${BENCH_ARGS:-} \
        2>&1 | tee "$OUT/bench10b-accum8.log" ;;
    yard10b)
      section yard10b
      clocks_start yard10b
      python3 devbin/shared/bench/torch_llama_bench.py --layers 42 --compile 1 --steps ${STEPS10B:-6} 2>&1 | grep '^{' \
        | tee "$OUT/yard10b.log"
      clocks_stop yard10b | tee -a "$OUT/yard10b.log" ;;
    yard-fp8)
      section "yard-fp8 (${LAYERS:-4} layers, FP8 classifier ${FP8_HEAD:-1})"
      if ! python3 -c "import torchao" 2>/dev/null; then
        whl=$(ls devbin/wheels/torchao-*.whl 2>/dev/null | head -1)
        [ -n "$whl" ] || { echo "routine.sh yard-fp8: torchao is not on this machine and no wheel was packed:" \
          "run 'pip download torchao --no-deps -d build-wheels' on the dev machine, then scripts/device/pack.sh"; exit 2; }
        rm -rf /tmp/pyao && python3 -m zipfile -e "$whl" /tmp/pyao && export PYTHONPATH=/tmp/pyao${PYTHONPATH:+:$PYTHONPATH}
      fi
      clocks_start yard-fp8
      python3 devbin/torchao_fp8_yardstick.py devbin/shared/bench/torch_llama_bench.py --fp8-head ${FP8_HEAD:-1} -- \
        --layers ${LAYERS:-4} --compile 1 --steps ${STEPS10B:-8} 2>&1 | grep -E '^\{|float8 linears|Error' \
        | tee "$OUT/yard-fp8.log"
      clocks_stop yard-fp8 | tee -a "$OUT/yard-fp8.log" ;;
    bench4docs)
      section bench4docs
      $B/bench_step "${common[@]}" --set model.n_layers=4 --steps 10 --warmup 3 --doc-len ${DOC_LEN:-1500} \
        --no-kernels 2>&1 | tee "$OUT/bench4docs.log" ;;
    sdpa-configs)
      # The 4-layer slice with each of cuDNN's ranked engine configs for attention's forward,
      # then backward (the other at its default); the phases line shows what each costs.
      section sdpa-configs
      for f in ${SDPA_FWD:-0 1 2 3}; do echo "--- forward config $f"
        INTELLECT_SDPA_FWD_CONFIG=$f $B/bench_step "${common[@]}" --set model.n_layers=4 --steps 8 --warmup 2 --no-kernels \
          2>&1 | grep -E "plain forward:|median|phases" ; done | tee "$OUT/sdpa-configs.log"
      for b in ${SDPA_BWD:-1 2}; do echo "--- backward config $b"
        INTELLECT_SDPA_BWD_CONFIG=$b $B/bench_step "${common[@]}" --set model.n_layers=4 --steps 8 --warmup 2 --no-kernels \
          2>&1 | grep -E "plain backward:|median|phases" ; done | tee -a "$OUT/sdpa-configs.log" ;;
    profile)
      section profile
      ncu --clock-control none --csv --page raw \
        --metrics gpu__time_duration.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,dram__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size \
        $B/bench_step "${common[@]}" --set model.n_layers=${PROFILE_LAYERS:-2} --steps 1 --warmup 1 --no-kernels \
        > "$OUT/profile.csv" 2> "$OUT/profile.err"
      echo "exit $?"; wc -l "$OUT/profile.csv"; tail -3 "$OUT/profile.err" ;;
    overlap150m)
      # Issue 15's benchmark: 4 nodes of the 150m config share the GPU, each a process of its own;
      # DiLoCo blocking (none) against overlapped (eager), the same tokens, over an emulated link of
      # LINK_MBIT Mbit/s and LINK_DELAY ms one way. A generated corpus (byte tokens; the GPU machine
      # has no text to spare) so that no node repeats a token. Each node's metrics.jsonl comes back.
      section "overlap150m ${LINK_MBIT:-1000} Mbit/s ${LINK_DELAY:-50} ms"
      [ -d /tmp/corpus ] || $B/make_corpus --out /tmp/corpus --docs ${CORPUS_DOCS:-40000} --val-docs 300 | tail -1
      ov=/tmp/ov150-${LINK_MBIT:-1000}
      bash scripts/overlap_bench.sh -b $B -n 4 -c configs/150m.json -m "${MODES:-none eager}" -o $ov \
        --set train.device=cuda --set train.steps=${STEPS:-200} --set diloco.inner_steps=${H:-50} \
        --set train.batch_size=${BATCH:-8} --set train.micro_batch_size=${MICRO:-8} --set train.seq_len=${SEQ:-1024} \
        --set train.eval_every=0 --set train.eval_batches=8 --set train.log_every=10 --set ckpt.save_final=false \
        --set optim.schedule.warmup_steps=20 --set optim.schedule.decay_steps=40 \
        --set diloco.rings=${RINGS:-8} --set "data.train=/tmp/corpus/train_*.bin" --set "data.val=/tmp/corpus/val_*.bin" \
        --set mesh.emulate_link_mbit=${LINK_MBIT:-1000} --set mesh.emulate_link_delay_ms=${LINK_DELAY:-50} \
        ${EXTRA_SETS:-} 2>&1 | tee "$OUT/overlap150m-${LINK_MBIT:-1000}.log"
      for m in ${MODES:-none eager}; do for i in 0 1 2 3; do
        cp $ov/$m/node-$i/metrics.jsonl "$OUT/overlap150m-${LINK_MBIT:-1000}-$m-node$i.jsonl" 2>/dev/null
        grep -E "outer step|utilization|error|Error" $ov/$m/node-$i/train.log | tail -4; done
        tail -5 $ov/$m/swarm.log; done ;;
    boundary-alone)
      section boundary-alone
      for m in none eager; do
        d=/tmp/ba-$m; rm -rf $d
        $B/intellect_train --config configs/150m.json --set train.device=cuda --set diloco.enabled=true \
          --set diloco.overlap=$m --set diloco.inner_steps=${H:-10} --set train.steps=${STEPS:-50} \
          --set train.batch_size=${BATCH:-16} --set train.micro_batch_size=${MICRO:-16} --set train.seq_len=1024 \
          --set train.eval_every=0 --set ckpt.save_final=false --set train.out_dir=$d \
          --set optim.schedule.warmup_steps=10 --set optim.schedule.decay_steps=0 \
          --set "data.train=data/shakespeare/shard_000000.bin" --set "data.val=data/shakespeare/shard_000001.bin" \
          --set data.tokenizer=byte > $d.log 2>&1; echo "$m: exit $?"
        grep -E "host memory|utilization|error" $d.log | tail -3
        python3 -c "
import json,sys
for l in open('$d/metrics.jsonl'):
    j=json.loads(l)
    for k in ('outer','outer_launched','outer_final'):
        if k in j: print(j['step'], k, 'blocked', round(j[k].get('outer_blocked_s', -1), 3), {a: round(b, 3) for a, b in j[k].get('parts', {}).items()})
" | tee -a "$OUT/boundary-alone.log"
      done ;;
    overlap-quality)
      section "overlap-quality H=${H:-25} steps=${STEPS:-300} data=${DATA:-data/shakespeare}"
      source scripts/quality_data.sh
      oq=/tmp/oq-H${H:-25}${OQ_TAG:-}  # OQ_TAG: cells run side by side (parallel_cells.sh) apart
      bash scripts/overlap_bench.sh -b $B -n 4 -c configs/150m.json -m "${MODES:-none eager}" -o $oq \
        --set train.device=cuda --set train.steps=${STEPS:-300} --set diloco.inner_steps=${H:-25} \
        --set train.batch_size=8 --set train.micro_batch_size=8 --set train.seq_len=256 --set train.log_every=50 \
        --set train.eval_every=0 --set train.eval_batches=${EVAL_BATCHES:-16} --set optim.schedule.type=cosine \
        --set optim.schedule.warmup_steps=30 --set optim.schedule.decay_steps=0 --set optim.schedule.min_lr_ratio=0.1 \
        --set "data.train=$QUALITY_TRAIN" --set "data.val=$QUALITY_VAL" \
        --set data.tokenizer=byte --set diloco.rings=4 --set mesh.round_timeout_ms=1200000 --set ckpt.save_final=false \
        ${EXTRA_SETS:-} 2>&1 | tee "$OUT/overlap-quality-H${H:-25}.log"
      for m in ${MODES:-none eager}; do
        python3 -c "
import json
for l in open('$oq/$m/node-0/metrics.jsonl'):
    j=json.loads(l)
    if 'val_loss' in j or j['step'] % 50 == 0: print('$m', j['step'], round(j['loss'],4), j.get('val_loss',''))
" | tee -a "$OUT/overlap-quality-H${H:-25}.log"
        tail -3 $oq/$m/swarm.log; done ;;
    ring-crypto)
      # Issue 16: the int8 ring's throughput with every frame sealed against the same build with frames
      # unsealed (bench_allreduce --plaintext, benchmark only), alternating, same machine, same binary.
      section ring-crypto
      { nproc; lscpu | grep "Model name"; $B/bench_aead; } 2>&1 | tee "$OUT/aead.log"
      variants=(--plaintext ""); [ "${LIBSODIUM:-1}" = 0 ] || variants+=("--aead libsodium")
      for auth in secret keys; do for rep in 1 2; do for k in 8 1; do for p in "${variants[@]}"; do
        echo "--- auth $auth, ${p:-sealed (openssl)}, $k ring(s), repeat $rep"
        $B/bench_allreduce --nodes 4 --rings $k --compression int8 --elems ${ELEMS:-67108864} --rounds 3 \
          --auth $auth $p ${OPENERS:+--openers $OPENERS} 2>&1 | grep -vE "^ *$"
      done; done; done; done | tee "$OUT/ring-crypto.log" ;;
    ring-link)
      section ring-link
      nproc; lscpu | grep "Model name"
      bins="bench_allreduce"; [ -x $B/bench_allreduce_base ] && bins="bench_allreduce_base bench_allreduce"
      {
        for k in 1 8; do for b in $bins; do
          echo "--- $b, WAN, 277M values, $k ring(s)"
          $B/$b --nodes 4 --elems 277000000 --rounds 2 --compression int8 --rate-mbit 1000 --delay-ms 50 --rings $k
        done; done
        for b in $bins; do
          echo "--- $b, WAN, 16.8M values, 1 ring"
          $B/$b --nodes 4 --elems 16777216 --rounds 2 --compression int8 --rate-mbit 1000 --delay-ms 50 --rings 1
        done
        for n in 2 4; do for e in 67108864 277000000; do for k in 1 8; do for b in $bins; do
          echo "--- $b, loopback, $n nodes, $e values, $k ring(s)"
          $B/$b --nodes $n --elems $e --rounds 3 --compression int8 --rings $k
        done; done; done; done
      } 2>&1 | grep -vE "^ *$" | tee "$OUT/ring-link.log" ;;
    state-transfer)
      # Issue 15: the state a joiner receives, alone: >= 1 GB/s on loopback, >= 90% of an emulated link.
      section state-transfer
      { nproc; grep -m1 "model name" /proc/cpuinfo
        if [ -x $B/bench_state_transfer_base ]; then echo "--- before: one connection"
          $B/bench_state_transfer_base --mb ${STATE_MB:-4360} --repeats 2; fi
        for l in ${LANES:-1 2 4 8}; do echo "--- $l lane(s)"
          $B/bench_state_transfer --mb ${STATE_MB:-4360} --lanes $l --repeats 2; done
        echo "--- emulated link"
        $B/bench_state_transfer --mb ${LINK_STATE_MB:-1000} --lanes ${LINK_LANES:-4} --repeats 2 \
          --rate-mbit ${LINK_MBIT:-1000} --delay-ms ${LINK_DELAY:-50}
      } 2>&1 | grep -v "^\[donor\]" | tee "$OUT/state-transfer.log" ;;
    boundary-host)
      section boundary-host
      { nproc; for t in 0 4; do echo "--- threads ${t/#0/all}"; $B/bench_boundary --config configs/150m.json --repeat 5 \
          $([ $t -gt 0 ] && echo --threads $t); done; } 2>&1 | tee "$OUT/boundary-host.log" ;;
    join-wan)
      # Issue 15: a joiner in the ring within 1.2 x state bytes / link bandwidth, measured in a run.
      section "join-wan ${LINK_MBIT:-1000} Mbit/s ${LINK_DELAY:-50} ms"
      [ -d /tmp/corpus ] || $B/make_corpus --out /tmp/corpus --docs ${CORPUS_DOCS:-40000} --val-docs 300 | tail -1
      jw=/tmp/join-wan-${LINK_MBIT:-1000}
      RUN_DEADLINE_S=${RUN_DEADLINE_S:-200} bash scripts/join_wan.sh -b $B -n ${JOIN_NODES:-2} -c configs/150m.json -o $jw -j ${JOIN_AT:-2} \
        -r ${LINK_MBIT:-1000} -d ${LINK_DELAY:-50} \
        --set train.device=cuda --set train.steps=${STEPS:-600} --set diloco.inner_steps=${H:-20} \
        --set train.batch_size=${BATCH:-16} --set train.micro_batch_size=${MICRO:-16} --set train.seq_len=1024 \
        --set train.eval_every=0 --set train.log_every=10 --set ckpt.save_final=false \
        --set optim.schedule.warmup_steps=20 --set optim.schedule.decay_steps=40 --set diloco.rings=${RINGS:-8} \
        --set "data.train=/tmp/corpus/train_*.bin" --set "data.val=/tmp/corpus/val_*.bin" \
        --set mesh.round_timeout_ms=1200000 ${EXTRA_SETS:-} 2>&1 | tee "$OUT/join-wan-${LINK_MBIT:-1000}.log"
      for n in $(ls $jw | grep -E "^(node-|joiner)"); do
        cp $jw/$n/metrics.jsonl "$OUT/join-wan-${LINK_MBIT:-1000}-$n.jsonl" 2>/dev/null
        grep -E "joining|joined|snapshot|utilization|rror" $jw/$n/train.log | tail -6; done ;;
    *) echo "routine.sh: unknown section $s"; exit 2 ;;
  esac
done
