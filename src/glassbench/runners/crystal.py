"""Crystal cell volumes: full relaxation (positions and cell) with an MLIP. Pure, no DB."""

from __future__ import annotations

import math
from collections import Counter
from functools import reduce

from ase import Atoms
from ase.calculators.calculator import Calculator

_OPTIMIZERS = ("FIRE", "BFGS", "LBFGS")


def formula_units_of(atoms: Atoms) -> int:
    """Formula units in the cell: the gcd of the element counts (Na6P2S8 -> 2)."""
    counts: Counter[str] = Counter(atoms.get_chemical_symbols())
    if not counts:
        raise ValueError("empty structure has no formula units")
    return reduce(math.gcd, counts.values())


def crystal_volume(
    atoms: Atoms,
    calc: Calculator,
    fmax: float = 0.01,
    steps: int = 500,
    *,
    formula_units: int | None = None,
    optimizer: str = "FIRE",
) -> tuple[Atoms, float]:
    """Relax positions and cell of ``atoms`` with ``calc``; return (relaxed copy, A^3 per f.u.).

    The cell relaxes through `ase.filters.FrechetCellFilter` (log-space cell strain, so all
    cell degrees of freedom converge at a comparable rate) to zero external pressure,
    until forces and stress are below ``fmax`` (eV/A, stress scaled per the filter) or
    ``steps`` steps. ``formula_units`` defaults to `formula_units_of` (which is right for
    stoichiometric cells such as Na6P2S8 -> 2, and wrong for formulas whose counts share a
    factor, e.g. P2S6 dimers: pass it then). The input is not modified; the copy's ``info``
    records ``relax_converged``, ``relax_steps``, ``volume_initial_a3`` and ``formula_units``.
    """
    from ase import optimize
    from ase.filters import FrechetCellFilter

    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, not {optimizer!r}")
    if not atoms.pbc.all():
        raise ValueError("a crystal cell must be periodic in all three directions")
    fu = formula_units if formula_units is not None else formula_units_of(atoms)
    if fu < 1:
        raise ValueError(f"formula_units must be >= 1, not {fu}")

    relaxed = atoms.copy()
    relaxed.calc = calc
    volume_initial = relaxed.get_volume()
    opt = getattr(optimize, optimizer)(FrechetCellFilter(relaxed), logfile=None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    relaxed.info.update(
        {
            "relax_converged": converged,
            "relax_steps": int(opt.nsteps),
            "volume_initial_a3": float(volume_initial),
            "formula_units": int(fu),
        }
    )
    return relaxed, float(relaxed.get_volume() / fu)
