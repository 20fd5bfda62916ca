#!/usr/bin/env bash
# CPU scaling of a distributed training (docs/distributed.md): `ml2o train --method ml2o` on
# configs/lasso-quick.toml and on a variant with 50 instances per task (two equal chunks of 25, so
# two ranks get equal work), one thread per rank: plain binary, mpirun -np 1, mpirun -np 2. Prints
# the wall and CPU time of each, the load average around it, and whether the params are byte-identical.
# Usage: bash bench/dist_cpu.sh [LOG_DIR]   (needs build-cpu/ml2o built with MPI)
set -euo pipefail
cd "$(dirname "$0")/.."
log_dir=${1:-bench/results/$(date -u +%Y-%m-%d)-cpu-mpi}
mkdir -p "$log_dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bin=build-cpu/ml2o
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
mpi=(mpirun --oversubscribe --bind-to none)

cp configs/lasso-quick.toml "$work/quick.toml"
sed 's/^instances = 32$/instances = 50/' configs/lasso-quick.toml > "$work/quick50.toml"

{
  echo "host: $(nproc) cores; $(uname -sr); $(mpirun --version | head -1)"
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (dirty)')"
  for cfg in quick quick50; do
    for mode in plain np1 np2; do
      case $mode in
        plain) cmd=("$bin") ;;
        np1) cmd=("${mpi[@]}" -np 1 "$bin") ;;
        np2) cmd=("${mpi[@]}" -np 2 "$bin") ;;
      esac
      load0=$(cut -d' ' -f1-3 /proc/loadavg)
      # /usr/bin/time: wall seconds, and CPU seconds (user + system) of every process it waited for.
      /usr/bin/time -f '%e %U %S' -o "$work/time" "${cmd[@]}" --threads 1 train --config "$work/$cfg.toml" \
        --method ml2o --out "$work/$cfg-$mode" 2> "$log_dir/$cfg-$mode.stderr"
      read -r wall user sys < "$work/time"
      load1=$(cut -d' ' -f1-3 /proc/loadavg)
      same=$(cmp -s "$work/$cfg-plain/ml2o.params" "$work/$cfg-$mode/ml2o.params" && echo identical || echo DIFFERENT)
      printf '%s %s wall_s=%s cpu_s=%s params_vs_plain=%s load_before=[%s] load_after=[%s]\n' \
        "$cfg" "$mode" "$wall" "$(echo "$user + $sys" | bc)" "$same" "$load0" "$load1"
    done
  done
} | tee "$log_dir/summary.txt"
