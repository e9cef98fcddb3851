#!/usr/bin/env bash
# The main job: set up the environment if needed, then run the notebook series headless (toy profile).
# Extra arguments go to `mmalign reproduce` (e.g. --smoke, --seed 1, --artifacts-dir DIR, --profile paper).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export TOKENIZERS_PARALLELISM=false
exec .venv/bin/mmalign reproduce "$@"
