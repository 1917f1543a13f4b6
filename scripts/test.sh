#!/usr/bin/env bash
# The README's test command: the whole suite on SQLite and PostgreSQL.
# Assumes scripts/setup-dev.sh has been run once (it creates .venv and .venv-deepmd).
set -euo pipefail
cd "$(dirname "$0")/.."
export GLASSBENCH_DEEPMD_PYTHON="${GLASSBENCH_DEEPMD_PYTHON:-$PWD/.venv-deepmd/bin/python}"
exec .venv/bin/python -m pytest "$@"
