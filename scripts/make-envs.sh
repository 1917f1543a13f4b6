#!/usr/bin/env bash
# One environment per model family (their torch / TensorFlow / e3nn pins conflict; see
# docs/environments.md). Idempotent: an environment that already imports its package is only
# refreshed (glassbench re-installed in editable mode), not rebuilt. Use --force to rebuild.
#
#   scripts/make-envs.sh [--deepmd] [--grace] [--all] [--force]
#
#   --deepmd  .venv-deepmd: deepmd-kit[cpu] (TensorFlow backend) + glassbench[d3]   (default)
#   --grace   .venv-grace:  tensorflow-cpu 2.20 + tf_keras 2.20 + tensorpotential + glassbench[d3]
#   --all     both
#   --force   delete and recreate the selected environments
#
# The main environment (.venv: glassbench, MACE, CHGNet on torch 2.13 CPU) is made by
# scripts/setup-dev.sh. PYTHON selects the base interpreter (default python3, >= 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

want_deepmd=0
want_grace=0
force=0
for arg in "$@"; do
  case "$arg" in
    --deepmd) want_deepmd=1 ;;
    --grace) want_grace=1 ;;
    --all) want_deepmd=1; want_grace=1 ;;
    --force) force=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "make-envs.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$want_deepmd" = 0 ] && [ "$want_grace" = 0 ]; then
  want_deepmd=1
fi

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "make-envs.sh: $PY is not Python >= 3.11 (set PYTHON=...)" >&2
  exit 2
fi

log() { printf '[make-envs %(%H:%M:%S)T] %s\n' -1 "$*"; }

# Python code that fails unless every named distribution is installed (metadata only: a
# cheap check, where importing TensorFlow takes seconds).
probe() {
  printf 'import importlib.metadata as m\nfor d in %s: m.version(d)\n' \
    "$(printf '"%s",' "$@")"
}

versions() {
  local dir="$1"; shift
  "$dir/bin/python" -c 'import importlib.metadata as m, sys
print(", ".join(f"{d} {m.version(d)}" for d in sys.argv[1:]))' "$@"
}

# The real import, once: a broken environment fails here, with its error shown.
smoke() {
  local dir="$1" code="$2" out
  if ! out=$(TF_CPP_MIN_LOG_LEVEL=2 "$dir/bin/python" -c \
      "$code; import glassbench.runners.calculators, dftd3.ase" 2>&1); then
    printf '%s\n' "$out" >&2
    echo "make-envs.sh: $dir is broken (see above); rerun with --force" >&2
    exit 1
  fi
}

# new_venv DIR PROBE: (re)create DIR unless --force is off and DIR's python passes PROBE.
# Returns 0 when the heavy packages must be installed, 1 when the environment is usable.
new_venv() {
  local dir="$1" probe="$2"
  if [ "$force" = 1 ]; then
    rm -rf "$dir"
  elif [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "$probe" >/dev/null 2>&1; then
    log "$dir already has its packages: refreshing glassbench only"
    return 1
  fi
  rm -rf "$dir"  # a half-made environment (an interrupted run) is rebuilt, not patched
  log "creating $dir"
  "$PY" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade pip
  return 0
}

if [ "$want_deepmd" = 1 ]; then
  dir=.venv-deepmd
  if new_venv "$dir" "$(probe deepmd-kit tensorflow-cpu)"; then
    log "installing deepmd-kit[cpu] (TensorFlow backend) into $dir"
    "$dir/bin/python" -m pip install -q "deepmd-kit[cpu]"
  fi
  # The runner imports glassbench in this interpreter (make_calculator, structure builders),
  # with D3 dispersion (the d3 extra: numpy + cffi, nothing that touches TensorFlow).
  "$dir/bin/python" -m pip install -q -e "$repo[d3]"
  smoke "$dir" "from deepmd.calculator import DP"
  log "$dir ready: $(versions "$dir" deepmd-kit tensorflow-cpu)"
fi

if [ "$want_grace" = 1 ]; then
  dir=.venv-grace
  if new_venv "$dir" "$(probe tensorpotential tensorflow-cpu tf-keras)"; then
    log "installing TensorFlow 2.20 CPU + tensorpotential into $dir"
    # tensorpotential's metadata asks for tensorflow[and-cuda] (CUDA wheels) and TF 2.21
    # breaks it: pin the CPU build first, then install it without its declared deps.
    "$dir/bin/python" -m pip install -q "tensorflow-cpu==2.20.*" "tf_keras==2.20.*"
    "$dir/bin/python" -m pip install -q --no-deps tensorpotential
    "$dir/bin/python" -m pip install -q scipy matscipy sympy "pandas<3" ase pyyaml tqdm \
      requests questionary rich scikit-learn
  fi
  "$dir/bin/python" -m pip install -q -e "$repo[d3]"
  smoke "$dir" "from tensorpotential.calculator.asecalculator import TPCalculator"
  log "$dir ready: $(versions "$dir" tensorpotential tensorflow-cpu)"
fi
