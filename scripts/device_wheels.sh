#!/usr/bin/env bash
# Fetch, here (pip reaches PyPI), the wheels the device machine lacks for scripts/device_checks.sh: its image has
# torch, accelerate, huggingface-hub, tokenizers and safetensors, but not trl or datasets, and older transformers
# and peft. Into .whl/ (ignored by git; about 17 MB, under the 64 MiB a device call may carry).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  trl==1.16.0 datasets==5.2.0 transformers==5.24.0 peft==0.21.2 dill==0.4.1 multiprocess==0.70.19
ls -la .whl
