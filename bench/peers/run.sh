#!/usr/bin/env bash
# Runs the engine and its PyTorch / JAX peers on the same meta-gradient in one call: exports a
# case with build/peer_case, makes every peer check itself against it, then times each at the
# same sizes. Prints one JSON line per (implementation, size) and a table at the end.
#
#   bench/peers/run.sh [--device cpu|cuda] [--sizes C,C,...] [--out FILE] [--threads N]
#                      [--peers ml2o,torch-eager,jax,torch-compile] [--min-s S] [--budget-s S]
#                      [--python PY] [--build DIR] [--tf32]
#
# Defaults: cpu sizes 120,1020,8190,65530; cuda sizes 3840,65530,1048570,4194300 (3840 = the
# paper's 3 tasks x 128 instances x d = 10, run as 384 instances of one task). On the CPU every
# implementation gets the same N threads (default: all cores), pinned to cores 0..N-1 with
# taskset. Python: --python, else bench/peers/.venv/bin/python when present, else python3. A peer
# that cannot run (not importable, failed check, timeout) gets a JSON line saying why; the run
# goes on. Exit status 0 when every implementation ran, 1 otherwise, 2 for bad arguments.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
device=cpu sizes="" out="" threads="" peers="ml2o,torch-eager,jax,torch-compile"
min_s=1.0 budget_s=600 py="" build="$root/build" tf32=""

usage() { sed -n 6,8p "${BASH_SOURCE[0]}" | sed 's/^# \{0,3\}//'; }
die() { echo "run.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || case "$1" in --tf32|-h|--help) ;; *) die "$1 needs a value" ;; esac
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --sizes) sizes="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --peers) peers="$2"; shift 2 ;;
    --min-s) min_s="$2"; shift 2 ;;
    --budget-s) budget_s="$2"; shift 2 ;;
    --python) py="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    --tf32) tf32="--tf32"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
case "$device" in cpu|cuda) ;; *) die "--device must be cpu or cuda, not '$device'" ;; esac
if [ -z "$sizes" ]; then
  [ "$device" = cpu ] && sizes=120,1020,8190,65530 || sizes=3840,65530,1048570,4194300
fi
[[ "$sizes" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--sizes must be integers separated by commas, not '$sizes'"
[[ "$min_s" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--min-s must be a number, not '$min_s'"
[[ "$budget_s" =~ ^[0-9]+$ ]] || die "--budget-s must be whole seconds, not '$budget_s'"
for p in ${peers//,/ }; do
  case "$p" in ml2o|torch-eager|torch-compile|jax) ;;
    *) die "--peers: unknown '$p' (allowed: ml2o, torch-eager, torch-compile, jax)" ;; esac
done
ncpu=$(nproc)
[ -n "$threads" ] || threads=$ncpu
[[ "$threads" =~ ^[1-9][0-9]*$ ]] && [ "$threads" -le "$ncpu" ] \
  || die "--threads must be 1..$ncpu, not '$threads'"
if [ -n "$out" ]; then
  [ -e "$out" ] && die "--out $out exists; not writing over it"
  : > "$out" || die "cannot write --out $out"
fi
if [ -z "$py" ]; then
  if [ -x "$here/.venv/bin/python" ]; then py="$here/.venv/bin/python"; else py=python3; fi
fi
tool="$build/peer_case"
[ -x "$tool" ] || die "$tool not found: build it first (cmake --build $build --target peer_case)"
# A CUDA build carried to a GPU machine may bring shared libraries in build/devlibs (see
# bench/gpu_check.sh); only the engine sees them, not the peers' own CUDA libraries.
engine=("$tool")
if [ -d "$build/devlibs" ]; then
  engine=(env "LD_LIBRARY_PATH=$build/devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$tool")
fi

# Same threads for everyone: OpenMP (engine, PyTorch's intra-op pool, Inductor's C++ kernels),
# and on the CPU the affinity that XLA's thread pool follows.
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
pin=()
if [ "$device" = cpu ] && command -v taskset >/dev/null; then pin=(taskset -c "0-$((threads - 1))"); fi
# JAX preallocates 75% of the GPU by default; the peers run one at a time, so let it use more.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
export PYTHONDONTWRITEBYTECODE=1

case_dir="$(mktemp -d "${TMPDIR:-/tmp}/ml2o-peer-case.XXXXXX")"
lines="$(mktemp "${TMPDIR:-/tmp}/ml2o-peer-lines.XXXXXX")"
trap 'rm -rf "$case_dir" "$lines"' EXIT
"${engine[@]}" export --out "$case_dir/case" --instances 16 >&2 || die "peer_case export failed"

emit() {  # a JSON line to stdout, the --out file and the summary
  echo "$1"
  [ -z "$out" ] || echo "$1" >> "$out"
  echo "$1" >> "$lines"
}
status=0
run_one() {  # name, command...: runs it, forwards its JSON lines, reports a failure as a line
  local name="$1"; shift
  local log err rc n last
  log="$(mktemp "${TMPDIR:-/tmp}/ml2o-peer-out.XXXXXX")"
  err="$(mktemp "${TMPDIR:-/tmp}/ml2o-peer-err.XXXXXX")"
  echo "run.sh: $name ..." >&2
  timeout --signal=INT --kill-after=30 "$((budget_s + 120))" "$@" > "$log" 2> >(tee "$err" >&2)
  rc=$?
  sleep 0.2  # let tee finish
  # the peer's last message, made safe for a JSON string
  last="$(grep -v '^[[:space:]]*$' "$err" | tail -n 1 | tr -d '\000-\037' | sed 's/[\\"]/ /g' | cut -c1-300)"
  rm -f "$err"
  n=0
  while IFS= read -r l; do
    case "$l" in '{'*) emit "$l"; n=$((n + 1)) ;; *) echo "$l" >&2 ;; esac
  done < "$log"
  rm -f "$log"
  if [ "$rc" -ne 0 ]; then
    status=1
    local why="exit status $rc"
    case "$rc" in
      1) why="failed (its check against the engine, or an error)" ;;
      2) why="some sizes failed (see their lines)" ;;
      3) why="not available here (not importable or no such device)" ;;
      124|137) why="timed out after $((budget_s + 120)) s" ;;
    esac
    [ -z "$last" ] || why="$why; last message: $last"
    echo "run.sh: $name: $why" >&2
    # exit 2: the failed sizes have their own lines; otherwise one line says why it stopped
    [ "$rc" -eq 2 ] && [ "$n" -gt 0 ] || emit "{\"bench\": \"peers\", \"peer\": \"$name\", \"device\": \"$device\", \"skipped\": \"$why\"}"
  fi
}

echo "run.sh: device $device, sizes $sizes, $threads thread(s) of $ncpu, python $py" >&2
common=(--case "$case_dir/case" --device "$device" --sizes "$sizes" --min-s "$min_s"
        --budget-s "$budget_s" --threads "$threads" $tf32)
importable() {  # peer name, modules: emits a skipped line unless $py imports them all
  local name="$1"; shift
  local mods="$*"
  if "$py" -c "import ${mods// /, }" 2>/dev/null; then return 0; fi
  echo "run.sh: $name: skipped: $py cannot import ${mods// /, }" >&2
  emit "{\"bench\": \"peers\", \"peer\": \"$name\", \"device\": \"$device\", \"skipped\": \"$py cannot import ${mods// /, }\"}"
  status=1
  return 1
}
for p in ${peers//,/ }; do
  case "$p" in
    torch-*) importable "$p" numpy torch || continue ;;
    jax) importable "$p" numpy jax || continue ;;
  esac
  case "$p" in
    ml2o) run_one ml2o "${pin[@]}" "${engine[@]}" bench --backend "$device" --coordinates "$sizes" \
            --min-s "$min_s" ;;
    torch-eager) run_one "$p" "${pin[@]}" "$py" "$here/torch_peer.py" --mode eager "${common[@]}" ;;
    torch-compile) run_one "$p" "${pin[@]}" "$py" "$here/torch_peer.py" --mode compile "${common[@]}" ;;
    jax) run_one "$p" "${pin[@]}" "$py" "$here/jax_peer.py" "${common[@]}" ;;
  esac
done
"$py" "$here/summarize.py" "$lines" >&2 || python3 "$here/summarize.py" "$lines" >&2
exit $status
