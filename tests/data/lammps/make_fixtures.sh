#!/bin/sh
# Regenerate the LAMMPS fixtures of tests/ingest with Debian's `lammps` package (lmp,
# 29 Sep 2021). Deterministic: every random number comes from a seed in the inputs.
set -eu
cd "$(dirname "$0")"
LMP=${LMP:-lmp}
# forces, forces-real: dumps with fx fy fz (tests/ingest/test_ingest_forces.py)
for name in metal triclinic real forces forces-real; do
    "$LMP" -nocite -screen none -in "in.$name" -log "log.$name.lammps"
done
ls -l log.*.lammps dump.*.lammpstrj
