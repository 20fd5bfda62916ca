#!/usr/bin/env bash
# The Python package's tests: installs ml2o (pip install .) into BUILD/python-venv, a venv of
# Debian's Python that sees Debian's numpy, torch and sklearn, from the extension built in BUILD
# (configured with -DML2O_PYTHON=ON), then runs pytest on python/tests against BUILD/ml2o.
# Usage: bash scripts/test_python.sh [BUILD]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
venv="$build/python-venv"
start=$SECONDS
if [ ! -x "$venv/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
ML2O_CMAKE_BUILD_DIR="$build" "$venv/bin/pip" install --quiet --no-build-isolation --no-deps .
(cd python/tests && ML2O_CLI="$PWD/../../$build/ml2o" "../../$venv/bin/python" -m pytest -q -p no:cacheprovider .)
echo "test_python.sh: Python package installed and tested in $((SECONDS - start)) s"
