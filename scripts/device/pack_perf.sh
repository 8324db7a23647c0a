#!/usr/bin/env bash
# Packs this machine's `perf` with the shared libraries it loads (not libc's
# own) and the unstripped bench_allreduce into perfpack.tgz, for profiling
# the ring's CPU on the lent GPU host, whose image has no perf (thirteenth
# session: it samples there as root). Carry perfpack.tgz with devbin.tgz; there:
#   tar xzf perfpack.tgz
#   env LD_LIBRARY_PATH=$PWD/perf/lib:$LD_LIBRARY_PATH perf/perf record -o $OUT/perf.data -F 499 -D 9000 -- \
#     perf/bench_allreduce.dbg --nodes 4 --elems 277000000 --rounds 10 --compression int8
#   ... perf/perf report -i $OUT/perf.data --no-children --sort dso,sym | head -60
# (docs/device-logs/2026-12-04-thirteenth-call2.sh). Needs linux-perf here (apt-get install linux-perf).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${BUILD_DIR:-build}
perf_bin=$(readlink -f "$(command -v perf)") || { echo "pack_perf: no perf here (apt-get install linux-perf)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/perf/lib"
cp "$perf_bin" "$tmp/perf/perf"
for lib in $(ldd "$perf_bin" | awk '/=> \//{print $3}'); do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libpthread*|libdl.so*|librt.so*) ;;
    *) cp -L "$lib" "$tmp/perf/lib/" ;;
  esac
done
cp "$build/bench_allreduce" "$tmp/perf/bench_allreduce.dbg"
tar czf perfpack.tgz.tmp -C "$tmp" perf
mv perfpack.tgz.tmp perfpack.tgz
ls -l perfpack.tgz
