#!/usr/bin/env bash
# The GPU rows of benchmarks/README.md, on a lent CUDA machine (not CI): mixed-expert batches, routed inference, and
# the TT-LoRA and dense MoE-LoRA layers. MiniLM's architecture with random weights (`--random_base`): that machine has
# no embedded checkpoint, and timings do not depend on weight values. Results: benchmarks/results/*_cuda.json.
#   bash benchmarks/bench_gpu.sh         # wheels for missing packages, if any, in .whl/ (benchmarks/README.md)
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1  # `python3 -m` from the root imports hf_ttmoe from the checkout
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
common=(--device cuda --random_base)
python3 -m benchmarks.bench_moe mixed "${common[@]}" --experts 1 4 16 64 256 --max_peft_experts 256 --reps 30
python3 -m benchmarks.bench_moe e2e "${common[@]}" --reps 30
python3 -m benchmarks.bench_ttlora layer --device cuda --dims 384 2048 --batches 2 32 128 --reps 30
python3 -m benchmarks.bench_moe_lora layer --device cuda --experts 4 8 16 --reps 30
if [ -n "${OUT:-}" ]; then cp benchmarks/results/*_cuda.json "$OUT"/; fi
