#!/usr/bin/env bash
# Every benchmark behind benchmarks/README.md, one after another (never two at once: the machine has 2 cores).
# Usage: bash benchmarks/bench_all.sh [GLUE_DIR]   (default ../shared/data/glue); logs in benchmarks/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
# glibc hands large freed blocks (the 25 MB activations of the layer benchmarks) back to the OS and maps them again
# at the next step: a third of the wall time went to page faults, and most of the run-to-run spread. Keeping them
# mapped is the same for every variant and makes the ratios repeatable (benchmarks/README.md).
export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-4294967296} MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-68719476736}
export MALLOC_TOP_PAD_=${MALLOC_TOP_PAD_:-1073741824}
GLUE=${1:-../shared/data/glue}
mkdir -p benchmarks/logs
run() {  # module in benchmarks/, then its arguments
    echo "== $*"
    "$PY" -m "benchmarks.$1" "${@:2}" > "benchmarks/logs/$(echo "$*" | tr ' /' '__' | cut -c1-80).log" 2>&1
}
run bench_ttlora layer --dims 384 2048 --batches 2 32 128 --reps 9
run bench_ttlora step --reps 7
run bench_ttlora step --cpu_time --reps 9
run bench_ops
run bench_ttlora merged --reps 25
run bench_quality --task sst2 --glue_dir "$GLUE" --max_train_samples 8000 --max_length 64 --methods tt lora \
    --lrs tt=2e-3,5e-3,1e-2,2e-2 lora=5e-4,1e-3,2e-3,5e-3 --name quality_sst2
run bench_moe_lora layer --reps 15
run bench_moe_lora layer --cpu_time --reps 7
run bench_moe_lora step --reps 7
run bench_quality --task sst2 --glue_dir "$GLUE" --max_train_samples 8000 --max_length 64 --methods moe lora_budget \
    --name quality_sst2_moe
run bench_moe compose
run bench_moe e2e
run bench_moe mixed
run bench_glue_moe --glue_dir "$GLUE"
run bench_distributed
run bench_from_lora --resume
run bench_serve
