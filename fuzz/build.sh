#!/bin/sh
# Builds the libFuzzer targets into build-fuzz/ (clang, ASan + UBSan). Run from the repo root.
set -e
CXX=clang++ cmake -S . -B build-fuzz -DML2O_CUDA=OFF -DML2O_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer" >/dev/null
cmake --build build-fuzz --target ml2o_core -j"${JOBS:-2}"
for t in config params checkpoint; do
  clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer \
    -DTOML_HEADER_ONLY=1 -Iinclude fuzz/fuzz_$t.cpp build-fuzz/libml2o_core.a -fopenmp \
    -o build-fuzz/fuzz_$t
done
echo "built build-fuzz/fuzz_config build-fuzz/fuzz_params build-fuzz/fuzz_checkpoint"
