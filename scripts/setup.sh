#!/usr/bin/env bash
# Installs the Debian packages ml2o builds with, only those missing (one apt-get update, then install).
set -euo pipefail
packages=(cmake g++ make pkg-config libgtest-dev libcli11-dev libtomlplusplus-dev nlohmann-json3-dev
          libomp-dev gnuplot-nox zlib1g-dev python3-sklearn openmpi-bin libopenmpi-dev
          pybind11-dev python3-dev python3-venv python3-numpy python3-torch python3-pytest)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all packages present"
  exit 0
fi
echo "setup: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
