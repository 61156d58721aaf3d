#!/usr/bin/env bash
# Builds .venv-parity for the Asteroid parity test and bench/tasnet_speed.py: jaxspeech with
# its test and parity extras, then Asteroid 0.7.0 installed without its dependency list. That
# list names torchaudio, of which the package registry here has only a CUDA build whose import
# fails on a CPU-only machine; Asteroid's ConvTasNet never imports it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-parity
.venv-parity/bin/pip install -q --upgrade pip
.venv-parity/bin/pip install -q torch==2.13.0
.venv-parity/bin/pip install -q -e ".[test,parity]"
.venv-parity/bin/pip install -q --no-deps asteroid==0.7.0
.venv-parity/bin/python -c "from asteroid.models import ConvTasNet; print('asteroid ready')"
