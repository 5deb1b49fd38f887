#!/usr/bin/env bash
# Every benchmark behind BENCHMARKS.md, one after another (never two at once: the machine has 2 cores).
# Usage: bash scripts/bench_all.sh [GLUE_DIR]   (default ../shared/data/glue); logs in benchmarks/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
GLUE=${1:-../shared/data/glue}
mkdir -p benchmarks/logs
run() { echo "== $*"; "$PY" "$@" > "benchmarks/logs/$(echo "$*" | tr ' /' '__' | cut -c1-80).log" 2>&1; }
run scripts/bench_ttlora.py layer --dims 384 2048 --batches 2 32 128 --reps 5
run scripts/bench_ttlora.py step --reps 7
run scripts/bench_ttlora.py merged --reps 15
run scripts/bench_ttlora.py quality --glue_dir "$GLUE"
run scripts/bench_moe_lora.py layer --reps 9
run scripts/bench_moe_lora.py step --reps 7
run scripts/bench_moe_lora.py quality --glue_dir "$GLUE" --max_train_samples 4000 --epochs 2 --moe_alpha 64
run scripts/bench_moe.py compose
run scripts/bench_moe.py e2e
run scripts/bench_moe.py mixed
run scripts/bench_glue_moe.py --glue_dir "$GLUE"
run scripts/bench_distributed.py
