#!/usr/bin/env bash
# Installs the peers' Python packages (PyTorch, JAX, NumPy) from PyPI into bench/peers/.venv.
# Optional: the peers run with any python that imports torch / jax (a GPU machine with them
# installed system-wide needs no setup). Not part of the engine's setup (scripts/setup.sh).
#
#   bench/peers/setup.sh [--jax-cuda] [--torch-cpu]
#     --jax-cuda:  jax[cuda12] instead of the CPU jaxlib
#     --torch-cpu: PyTorch's CPU-only wheel from download.pytorch.org (~200 MB instead of GBs)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
jax_pkg="jax"
torch_index=()
for a in "$@"; do
  case "$a" in
    --jax-cuda) jax_pkg="jax[cuda12]" ;;
    --torch-cpu) torch_index=(--index-url https://download.pytorch.org/whl/cpu) ;;
    -h|--help) sed -n 2,9p "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "setup.sh: unknown argument '$a' (allowed: --jax-cuda, --torch-cpu)" >&2; exit 2 ;;
  esac
done
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --upgrade pip >/dev/null
# PyPI's Linux torch wheel brings its CUDA runtime libraries (several GB); it runs on the CPU too.
# --torch-cpu takes torch alone from PyTorch's CPU index (its dependencies still come from PyPI).
if [ ${#torch_index[@]} -gt 0 ]; then
  "$venv/bin/python" -m pip install "${torch_index[@]}" --extra-index-url https://pypi.org/simple torch
fi
"$venv/bin/python" -m pip install numpy torch "$jax_pkg"
"$venv/bin/python" - <<'PY'
import platform, numpy, torch, jax
print(f"python {platform.python_version()}  numpy {numpy.__version__}  torch {torch.__version__}"
      f"  jax {jax.__version__}  jax devices {jax.devices()}")
PY
