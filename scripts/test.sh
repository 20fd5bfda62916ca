#!/usr/bin/env bash
# Command (2) of the README: set up, build and run every test (GPU tests skip without a device),
# the Python package's tests (scripts/test_python.sh), then the CPU tests again under
# AddressSanitizer + UndefinedBehaviorSanitizer.
# ML2O_SANITIZE_STAGE=0 skips the sanitizer stage (for a quick local run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
jobs=$(nproc)
start=$SECONDS

# ML2O_PYTHON=ON: the same build also makes the Python extension (the engine compiles once).
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DML2O_PYTHON=ON -DPython_EXECUTABLE=/usr/bin/python3
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs"
echo "test.sh: release build and tests passed in $((SECONDS - start)) s"
bash scripts/test_python.sh build

if [ "${ML2O_SANITIZE_STAGE:-1}" != 0 ]; then
  # Without MPI: OpenMPI's own allocations would read as leaks; the MPI tests run in the stage above.
  cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DML2O_CUDA=OFF -DML2O_SANITIZE=ON -DML2O_MPI=OFF
  cmake --build build-sanitize -j "$jobs"
  # halt_on_error: any finding fails the test that triggered it.
  ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-sanitize --output-on-failure -j "$jobs"
  echo "test.sh: sanitizer build and tests passed; total $((SECONDS - start)) s"
fi
