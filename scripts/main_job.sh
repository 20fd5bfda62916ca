#!/usr/bin/env bash
# Command (1) of the README: set up, build, and run the small M-L2O experiment end to end
# (configs/lasso-quick.toml; CUDA when a device is present, else the CPU). Each run gets a new
# directory under runs/, so earlier results are never overwritten.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)" --target ml2o
config=${1:-configs/lasso-quick.toml}
out=runs/$(basename "$config" .toml)-$(date +%Y%m%d-%H%M%S)
./build/ml2o run "$config" --out "$out"
echo "outputs: $out/curves.csv $out/summary.json $out/plot.png"
