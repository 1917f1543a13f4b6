"""Composition families: formulas and atom counts (pure, no database)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

FAMILY = "Na4P2S7-xOx"
ELEMENTS = ("Na", "P", "S", "O")
ATOMIC_NUMBERS = {"Na": 11, "P": 15, "S": 16, "O": 8}
MASSES_AMU = {"Na": 22.98976928, "P": 30.973762, "S": 32.06, "O": 15.999}
X_RANGE = (0.0, 7.0)
# 1 amu/A^3 in g/cm^3 (CODATA 2018 atomic mass constant, 1.66053906660e-24 g, over 1e-24 cm^3).
AMU_PER_A3_TO_G_CM3 = 1.66053906660


def per_formula_unit(x: float, family: str = FAMILY) -> dict[str, float]:
    """Atoms per formula unit of Na4P2S(7-x)O(x)."""
    if family != FAMILY:
        raise ValueError(f"unknown composition family {family!r} (known: {FAMILY})")
    if not (X_RANGE[0] <= x <= X_RANGE[1]) or not np.isfinite(x):
        raise ValueError(f"x={x} outside {X_RANGE[0]}..{X_RANGE[1]} for {FAMILY}")
    return {"Na": 4.0, "P": 2.0, "S": 7.0 - x, "O": float(x)}


def formula(x: float, family: str = FAMILY) -> str:
    """Formula per formula unit, e.g. ``Na4P2S6.5O0.5``."""
    n = per_formula_unit(x, family)
    return "".join(f"{el}{n[el]:g}" for el in ELEMENTS if n[el] > 0)


def counts_for(x: float, formula_units: int, family: str = FAMILY) -> dict[str, int]:
    """Integer atom counts for ``formula_units`` formula units; x*formula_units must be whole."""
    n = per_formula_unit(x, family)
    out: dict[str, int] = {}
    for el, v in n.items():
        total = v * formula_units
        if abs(total - round(total)) > 1e-6:
            raise ValueError(
                f"x={x:g} with {formula_units} formula units gives {total:g} {el} atoms: "
                "choose formula units so that x * formula_units is a whole number"
            )
        out[el] = round(total)
    return out


def check_counts(counts: Mapping[str, int], x: float, family: str = FAMILY) -> int:
    """Return the number of formula units if ``counts`` match the family at ``x``.

    Raises ValueError naming the mismatch otherwise (foreign elements included).
    """
    foreign = {el: c for el, c in counts.items() if el not in ELEMENTS and c}
    if foreign:
        raise ValueError(f"elements outside {'/'.join(ELEMENTS)}: {foreign}")
    n_p = counts.get("P", 0)
    if n_p <= 0 or n_p % 2:
        raise ValueError(f"{n_p} P atoms is not a whole number of {family} formula units")
    fu = n_p // 2
    try:
        expected = counts_for(x, fu, family)
    except ValueError as exc:
        raise ValueError(f"atom counts do not fit x={x:g}: {exc}") from None
    got = {el: int(counts.get(el, 0)) for el in ELEMENTS}
    if got != expected:
        raise ValueError(
            f"atom counts {got} do not match {family} at x={x:g} "
            f"({fu} formula units need {expected})"
        )
    return fu


def density_g_cm3(symbol_counts: Mapping[str, int], volume_a3: float) -> float:
    """Mass density of ``symbol_counts`` atoms in ``volume_a3`` cubic angstrom."""
    mass_amu = sum(MASSES_AMU[el] * c for el, c in symbol_counts.items())
    return mass_density_g_cm3(mass_amu, volume_a3)


def mass_density_g_cm3(mass_amu: float, volume_a3: float) -> float:
    """Mass density of ``mass_amu`` in ``volume_a3`` cubic angstrom."""
    return mass_amu * AMU_PER_A3_TO_G_CM3 / volume_a3
