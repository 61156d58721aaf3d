#!/usr/bin/env bash
# On a machine without internet, with the wheels of `bench/fetch_wheels.sh` in .whl/: installs
# them into .whl/venv (once) and runs `python -m bench` with this script's arguments, e.g.
#   bash bench/offline.sh --device gpu
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .whl/venv/bin/python ]; then
  python3 -m venv .whl/venv
  .whl/venv/bin/pip install -q --no-index --find-links .whl "jaxspeech[parity]" "jax[cuda13]" \
    torch
  .whl/venv/bin/pip install -q --no-index --find-links .whl --no-deps asteroid==0.7.0
fi
exec .whl/venv/bin/python -m bench "$@"
