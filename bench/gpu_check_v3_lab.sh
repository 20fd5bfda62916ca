#!/usr/bin/env bash
# The v3 lab check on a GPU (docs/kernels.md), run from the repo root on the device machine with the
# prebuilt build/ folder (nothing is rebuilt):
#
#   bash bench/gpu_check.sh --v3-lab      (stage 1 of gpu_check.sh, then this script)
#
# Stages, each under its own timeout (at most 20+240+120+120+150 s = 11 minutes; typically 4 to 6):
#   v3.1 resource usage of the kernels from the binary (registers, shared memory) -> $OUT/v3_resources.txt
#   v3.2 TileMmaOnDevice.* (mma.sync against the software model: layouts bit for bit, 3xTF32
#        accuracy) and V3LabOnDevice.* (the lab forward + v2 backward against the CPU reference,
#        bit-identical repeat)                                                  -> $OUT/v3_tests.log
#   v3.3 compute-sanitizer memcheck on V3LabOnDevice.Small*                     -> $OUT/v3_memcheck.log
#   v3.4 compute-sanitizer racecheck on V3LabOnDevice.Small*                    -> $OUT/v3_racecheck.log
#   v3.5 build/bench_unroll --kernels v2,v3-lab (v2 beside it, same call)      -> $OUT/v3_bench.jsonl
# Nothing here changes the default kernels; a failure says the lab kernel is wrong, not v2.
set -u
cd "$(dirname "$0")/.."
export LD_LIBRARY_PATH="$PWD/build/devlibs:${LD_LIBRARY_PATH:-}"
OUT="${OUT:-$PWD/out/gpu_check}"
mkdir -p "$OUT"
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
status() { if [ "$1" -eq 0 ]; then echo "ok"; elif [ "$1" -eq 124 ]; then echo "TIMEOUT"; else echo "FAIL (rc $1)"; fi; }

echo "== v3.1 resource usage ($(elapsed) s)"
if command -v cuobjdump >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/cuobjdump ]; then
  OBJDUMP=$(command -v cuobjdump || echo /usr/local/cuda/bin/cuobjdump)
  timeout 20 "$OBJDUMP" -res-usage build/ml2o_tests 2>&1 |
    grep -A1 -E 'unroll_(forward|backward)_v[23]|tile_gemm_kernel' >"$OUT/v3_resources.txt"
  cat "$OUT/v3_resources.txt"
else
  echo "cuobjdump not found" | tee "$OUT/v3_resources.txt"
fi

echo "== v3.2 device tests ($(elapsed) s)"
timeout 240 build/ml2o_tests --gtest_filter='TileMmaOnDevice.*:V3LabOnDevice.*' --gtest_color=no 2>&1 |
  tee "$OUT/v3_tests.log"
rc_tests=${PIPESTATUS[0]}

SAN=$(command -v compute-sanitizer || true)
for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
  [ -z "$SAN" ] && [ -x "$c" ] && SAN="$c"
done
rc_mem=127
rc_race=127
for tool in memcheck racecheck; do
  echo "== v3.$([ $tool = memcheck ] && echo 3 || echo 4) $tool ($(elapsed) s)"
  if [ -n "$SAN" ]; then
    timeout 120 "$SAN" --tool $tool --error-exitcode 99 --print-limit 20 \
      build/ml2o_tests --gtest_filter='V3LabOnDevice.Small*' --gtest_color=no >"$OUT/v3_$tool.log" 2>&1
    rc=$?
    tail -n 3 "$OUT/v3_$tool.log"
  else
    echo "compute-sanitizer not found" | tee "$OUT/v3_$tool.log"; rc=127
  fi
  if [ $tool = memcheck ]; then rc_mem=$rc; else rc_race=$rc; fi
done

echo "== v3.5 bench v2 vs v3-lab ($(elapsed) s)"
timeout 150 build/bench_unroll --budget-s 60 --kernels v2,v3-lab >"$OUT/v3_bench.jsonl" 2>"$OUT/v3_bench.err"
rc_bench=$?
cat "$OUT/v3_bench.err"

echo "== v3 summary ($(elapsed) s)"
{
  echo "v3 tests      $(status $rc_tests)   $(grep -E '^\[  (PASSED|FAILED)  \]' "$OUT/v3_tests.log" | tail -n 3 | tr '\n' ' ')"
  echo "v3 memcheck   $(status $rc_mem)   $(grep -h 'ERROR SUMMARY' "$OUT/v3_memcheck.log" | tail -n 1)"
  echo "v3 racecheck  $(status $rc_race)   $(grep -h -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/v3_racecheck.log" | tail -n 1)"
  echo "v3 bench      $(status $rc_bench)   $(wc -l <"$OUT/v3_bench.jsonl") lines"
  grep -E '^\s+\[tile mma' "$OUT/v3_tests.log" || true
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$OUT/v3_bench.jsonl" <<'EOF'
import json, sys
cols = ["config", "kernel", "arch", "family", "mode", "d", "coordinates", "T", "kernel_ms", "kernel_coord_steps_per_s"]
print(" | ".join(cols))
for line in open(sys.argv[1]):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if "kernel" not in r:
        continue
    print(" | ".join(f"{r.get(c):.3g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols))
EOF
  fi
  echo "total $(elapsed) s"
} 2>&1 | tee "$OUT/v3_summary.txt"
