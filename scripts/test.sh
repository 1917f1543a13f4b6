#!/usr/bin/env bash
# The README's test command: the whole suite on SQLite and PostgreSQL.
# Assumes scripts/setup-dev.sh has been run once (it creates .venv and .venv-deepmd).
set -euo pipefail
cd "$(dirname "$0")/.."
# One thread per process: the suite runs several processes at once on 2 cores, and torch
# spin-waits when oversubscribed (a tiny MACE step took 5x longer with 2 threads under load).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export GLASSBENCH_DEEPMD_PYTHON="${GLASSBENCH_DEEPMD_PYTHON:-$PWD/.venv-deepmd/bin/python}"
exec .venv/bin/python -m pytest "$@"
