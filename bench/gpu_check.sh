#!/usr/bin/env bash
# One-shot GPU check of the CUDA backend, run from the repo root on the device machine with the
# prebuilt build/ folder (nothing is rebuilt):
#
#   bash bench/gpu_check.sh
#
# Stages, each under its own timeout (at most 20+180+90+90+110+60 s = 9.2 minutes; typically 3 to 5):
#   1. nvidia-smi -L and the binaries' missing shared libraries, if any
#   2. build/ml2o_tests --gtest_filter='*Cuda*'                   -> $OUT/cuda_tests.log
#      (unroll/HVP parity, batches vs items alone, graph replays, launch counts, training runs)
#   3. compute-sanitizer memcheck on the small GPU tests           -> $OUT/memcheck.log
#   4. compute-sanitizer racecheck on the small GPU tests          -> $OUT/racecheck.log
#   5. build/bench_unroll (about 1.5 minutes)                      -> $OUT/bench.jsonl (+ bench.err)
#   6. configs/lasso-quick.toml on the GPU, its results compared with the committed run of
#      2026-11-28 (bench/results/2026-11-28-h200-final): "identical" is evidence that the batched
#      launches reproduce the per-item kernels bit for bit end to end -> $OUT/lasso-quick/, protocol.txt
#   7. a summary table                                             -> $OUT/summary.txt
# $OUT defaults to out/gpu_check when the caller does not set it.
#
#   bash bench/gpu_check.sh --v3-lab
#
# runs stage 1, then only the v3 lab check (bench/gpu_check_v3_lab.sh: the unverified tensor-core
# kernel of kernels/lab/, docs/kernels.md) instead of stages 2 to 7.
set -u
V3_LAB=0
if [ "${1:-}" = "--v3-lab" ]; then V3_LAB=1; elif [ -n "${1:-}" ]; then echo "gpu_check.sh: unknown argument '$1' (only --v3-lab)"; exit 2; fi
cd "$(dirname "$0")/.."
export LD_LIBRARY_PATH="$PWD/build/devlibs:${LD_LIBRARY_PATH:-}"
OUT="${OUT:-$PWD/out/gpu_check}"
mkdir -p "$OUT"
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }

SMALL_FILTER='*CudaSmall*'

echo "== 1. device ($(elapsed) s)"
timeout 20 nvidia-smi -L || echo "nvidia-smi failed"
timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
# The tests read their data from the source path compiled into the binary: point it here.
SRC=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' build/CMakeCache.txt 2>/dev/null)
if [ -n "$SRC" ] && [ "$SRC" != "$PWD" ] && [ ! -e "$SRC/tests/data" ]; then
  mkdir -p "$SRC/tests" && ln -s "$PWD/tests/data" "$SRC/tests/data" &&
    echo "linked $SRC/tests/data -> $PWD/tests/data (the test data path compiled into the binary)"
fi
for b in build/ml2o_tests build/bench_unroll build/ml2o; do
  if [ ! -x "$b" ]; then echo "MISSING: $b (carry the prebuilt build/ folder)"; continue; fi
  missing=$(ldd "$b" 2>/dev/null | grep "not found" || true)
  [ -n "$missing" ] && echo "$b: missing shared libraries (put them in build/devlibs):" && echo "$missing"
done

if [ "$V3_LAB" = 1 ]; then
  OUT="$OUT" bash bench/gpu_check_v3_lab.sh
  exit $?
fi

echo "== 2. GPU tests ($(elapsed) s)"
timeout 180 build/ml2o_tests --gtest_filter='*Cuda*' --gtest_color=no 2>&1 | tee "$OUT/cuda_tests.log"
rc_tests=${PIPESTATUS[0]}

SAN=$(command -v compute-sanitizer || true)
for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
  [ -z "$SAN" ] && [ -x "$c" ] && SAN="$c"
done

echo "== 3. memcheck on $SMALL_FILTER ($(elapsed) s)"
if [ -n "$SAN" ]; then
  timeout 90 "$SAN" --tool memcheck --error-exitcode 99 --print-limit 20 \
    build/ml2o_tests --gtest_filter="$SMALL_FILTER" --gtest_color=no >"$OUT/memcheck.log" 2>&1
  rc_mem=$?
  tail -n 4 "$OUT/memcheck.log"
else
  echo "compute-sanitizer not found" | tee "$OUT/memcheck.log"; rc_mem=127
fi

echo "== 4. racecheck on $SMALL_FILTER ($(elapsed) s)"
if [ -n "$SAN" ]; then
  timeout 90 "$SAN" --tool racecheck --error-exitcode 99 --print-limit 20 \
    build/ml2o_tests --gtest_filter="$SMALL_FILTER" --gtest_color=no >"$OUT/racecheck.log" 2>&1
  rc_race=$?
  tail -n 4 "$OUT/racecheck.log"
else
  echo "compute-sanitizer not found" | tee "$OUT/racecheck.log"; rc_race=127
fi

echo "== 5. bench ($(elapsed) s)"
timeout 110 build/bench_unroll --budget-s 45 >"$OUT/bench.jsonl" 2>"$OUT/bench.err"
rc_bench=$?
cat "$OUT/bench.err"

echo "== 6. lasso-quick protocol vs the committed 2026-11-28 run ($(elapsed) s)"
REF=bench/results/2026-11-28-h200-final/lasso_quick_cuda_summary.json
rm -rf "$OUT/lasso-quick"
timeout 60 build/ml2o run configs/lasso-quick.toml --out "$OUT/lasso-quick" --backend cuda >"$OUT/lasso-quick.log" 2>&1
rc_proto=$?
tail -n 3 "$OUT/lasso-quick.log"
if [ $rc_proto -eq 0 ] && command -v python3 >/dev/null 2>&1; then
  python3 - "$REF" "$OUT/lasso-quick/summary.json" <<'EOF' | tee "$OUT/protocol.txt"
import json, sys
ref, new = (json.load(open(p)) for p in sys.argv[1:3])
worst, differ, total = 0.0, 0, 0
def walk(a, b):
    global worst, differ, total
    if isinstance(a, dict) and isinstance(b, dict):
        for k in a:
            if k in b: walk(a[k], b[k])
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for x, y in zip(a, b): walk(x, y)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        total += 1
        if a != b:
            differ += 1
            worst = max(worst, abs(a - b) / max(abs(a), 1e-30))
for key in ("arms", "training"):
    walk(ref.get(key), new.get(key))
print("lasso-quick vs %s: %d numbers, %s" % (sys.argv[1], total,
      "identical" if differ == 0 else "%d differ (largest relative difference %.3g)" % (differ, worst)))
print("wall_seconds: committed %s, now %s" % (ref.get("wall_seconds"), new.get("wall_seconds")))
EOF
fi

echo "== 7. summary ($(elapsed) s)"
{
  status() { if [ "$1" -eq 0 ]; then echo "ok"; elif [ "$1" -eq 124 ]; then echo "TIMEOUT"; else echo "FAIL (rc $1)"; fi; }
  passed=$(grep -E '^\[  PASSED  \]' "$OUT/cuda_tests.log" | tail -n 1)
  failed=$(grep -cE '^\[  FAILED  \] .*\([0-9]+ ms\)$' "$OUT/cuda_tests.log")
  skipped=$(grep -cE '^\[  SKIPPED \] .*\([0-9]+ ms\)$' "$OUT/cuda_tests.log")
  echo "stage        status"
  echo "gpu tests    $(status "$rc_tests")   ${passed:-no PASSED line}; failed tests: $failed; skipped: $skipped"
  echo "memcheck     $(status "$rc_mem")   $(grep -h 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -n 1)"
  echo "racecheck    $(status "$rc_race")   $(grep -h -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/racecheck.log" | tail -n 1)"
  echo "bench        $(status "$rc_bench")   $(wc -l <"$OUT/bench.jsonl") lines"
  echo "lasso-quick  $(status "$rc_proto")   $(head -n 1 "$OUT/protocol.txt" 2>/dev/null)"
  grep -E '^\[  FAILED  \] .*\([0-9]+ ms\)$' "$OUT/cuda_tests.log" | head -n 30
  echo
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$OUT/bench.jsonl" <<'EOF'
import json, sys
rows = []
for line in open(sys.argv[1]):
    try:
        rows.append(json.loads(line))
    except ValueError:
        pass
cols = ["config", "method", "kernel", "graphs", "arch", "family", "mode", "d", "coordinates", "T", "ms_per_iter",
        "kernel_ms", "unroll_kernel_ms", "coord_steps_per_s", "kernel_coord_steps_per_s", "launches_per_iter",
        "graph_launches_per_iter", "memcpys_per_iter", "peak_device_mb"]
def fmt(v):
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)
print(" | ".join(cols))
for r in rows:
    if "skipped" in r:
        print("bench skipped:", r["skipped"])
        continue
    if "error" in r:
        print(r.get("config"), "d=%s instances=%s" % (r.get("d"), r.get("instances")), "ERROR:", r["error"])
        continue
    print(" | ".join(fmt(r.get(c, "")) for c in cols))
EOF
  else
    cat "$OUT/bench.jsonl"
  fi
  echo "total $(elapsed) s"
} 2>&1 | tee "$OUT/summary.txt"
