#!/usr/bin/env bash
# The AdapterFusion baseline's own virtual environment: AdapterHub's `adapters` 1.3.0 pins transformers ~=4.57.6,
# which the project's transformers 5 cannot share. Idempotent: a finished environment (marker file) is left as is.
#
#     bash benchmarks/multitask/setup_adapters_env.sh [ENV_DIR]     # default runs/multitask/.venv-adapters
#
# torch goes first and alone (the CPU build from the package index; a plain `pip install torch` alongside the others
# could resolve to the CUDA build), then the pinned rest from requirements-adapters.txt.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
env_dir="${1:-$here/../../runs/multitask/.venv-adapters}"
python="${PYTHON:-python3}"
marker="$env_dir/.ready"
if [[ -f "$marker" ]] && cmp -s "$marker" "$here/requirements-adapters.txt"; then
    echo "adapters environment ready at $env_dir"
    exit 0
fi
echo "creating the adapters environment at $env_dir (torch first, then requirements-adapters.txt)"
"$python" -m venv "$env_dir"
"$env_dir/bin/python" -m pip install --quiet --upgrade "pip>=23"
"$env_dir/bin/python" -m pip install --quiet "torch==2.13.0"
"$env_dir/bin/python" -m pip install --quiet -r "$here/requirements-adapters.txt"
"$env_dir/bin/python" -c "import adapters, torch, transformers; print('adapters', adapters.__version__, \
'transformers', transformers.__version__, 'torch', torch.__version__)"
cp "$here/requirements-adapters.txt" "$marker"
