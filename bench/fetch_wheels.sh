#!/usr/bin/env bash
# On a machine with internet: downloads into .whl/ every wheel that `bench/offline.sh` needs on
# an offline Linux x86-64 GPU machine with Python 3.12: jaxspeech and its parity extra, JAX with
# its CUDA 13 plugin (the CUDA that torch 2.13.0's PyPI wheels are built for), torch, and
# Asteroid 0.7.0 without its dependency list (see bench/setup_parity.sh). Several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON_VERSION="${PYTHON_VERSION:-3.12}"
target=(--only-binary=:all: --python-version "$PYTHON_VERSION"
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
  --platform manylinux_2_17_x86_64)
python3 -m pip wheel -q --no-deps -w .whl .
project="$(ls .whl/jaxspeech-*.whl)"
python3 -m pip download -q -d .whl "${target[@]}" "$project[parity]" "jax[cuda13]==0.10.2" \
  torch==2.13.0
python3 -m pip download -q -d .whl "${target[@]}" --no-deps asteroid==0.7.0
