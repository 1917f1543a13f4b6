#!/usr/bin/env bash
# Development / CI environments, idempotent:
#   .venv         glassbench + tests + MACE + CHGNet (torch 2.13 CPU) + D3 (dftd3)
#   .venv-deepmd  glassbench + DeePMD-kit (TensorFlow backend)
#   .venv-grace   glassbench + GRACE (tensorpotential, TensorFlow 2.20): each its own env, see docs/environments.md
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: any other spelling pulls a multi-GB CUDA build (docs/environments.md).
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test,mace,chgnet,d3]"
bash scripts/make-envs.sh --all
