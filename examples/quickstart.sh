#!/usr/bin/env bash
# `kdeval compare` alone (the README's first command is `kdeval demo`, which also trains the
# models): three tiny random-init models (built here, no network), then `kdeval compare` on the
# first 50 examples of every offline task. It shows the machinery; random models score near
# zero, so the numbers say nothing about distillation.
set -euo pipefail
cd "$(dirname "$0")/.."
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
models=runs/quickstart-models
python - "$models" <<'PY'
import sys
from pathlib import Path
from kdeval.tinymodels import build_tiny_model
root = Path(sys.argv[1])
for name, seed in (("teacher", 0), ("baseline", 1), ("distilled", 2)):
    if not (root / name / "config.json").exists():
        build_tiny_model(root / name, seed=seed)
print(f"tiny models in {root}/")
PY
kdeval compare --teacher "$models/teacher" --baseline "$models/baseline" --distilled "$models/distilled" \
    --limit 50 --out runs/quickstart "$@"
