#!/usr/bin/env bash
# The GPU check of issue 5 (DPO speed on a LLaVA-1.5-7B shape) in one call of the device tool (fill .whl/ first:
# scripts/device_wheels.sh):
#   run(command="bash scripts/device_checks.sh", carry=[".whl"], timeout_s=540)
# 1. the DPO benchmark's GPU code path on a tiny shape (fails fast if the stack does not import or run);
# 2. benchmarks/dpo_speed_memory.py --gpu: plain TRL (bf16, LoRA, live reference) against our recipe on a
#    LLaVA-1.5-7B-shaped model with random weights (nothing downloaded): s/step, peak GPU memory, tokens/s, MFU.
# Everything goes to $OUT (log.txt, dpo_7b.json). DEVICE=cpu SIZE=tiny WHEELS=0 PYTHON=.venv/bin/python walks the
# same steps on a CPU (slow there: the tiny shape still has 576 image tokens and a 32k vocabulary).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device_out}
mkdir -p "$OUT"
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-7b}
PY=${PYTHON:-python3}
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [ "${WHEELS:-1}" = 1 ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
"$PY" - <<'PY' || exit 1
import importlib
for name in ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "huggingface_hub", "pyarrow"):
    module = importlib.import_module(name)
    print(f"{name} {module.__version__}")
import torch
print("cuda:", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
PY
echo "== tiny shape on $DEVICE"
timeout 180 "$PY" benchmarks/dpo_speed_memory.py --gpu --size tiny --device "$DEVICE" --steps 2 --warmup 1 \
  --answer-words 20 --workdir /tmp/dpo_tiny || exit 1
[ "$SIZE" = tiny ] && exit 0
echo "== LLaVA-1.5-$SIZE shape on $DEVICE"
timeout 420 "$PY" benchmarks/dpo_speed_memory.py --gpu --size "$SIZE" --device "$DEVICE" --steps 4 --warmup 1 \
  --workdir /tmp/dpo_main
cp /tmp/dpo_main/results.json "$OUT/dpo_$SIZE.json" 2>/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
