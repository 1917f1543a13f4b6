"""Starting structures: random Na4P2S7-xOx glass cells and crystalline references.

Pure functions (numpy / ASE in, ASE `Atoms` out); no database, no MLIP packages.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from importlib import resources
from typing import Any

import numpy as np
from ase import Atoms

from glassbench.chemistry import (
    AMU_PER_A3_TO_G_CM3,
    ATOMIC_NUMBERS,
    ELEMENTS,
    MASSES_AMU,
    counts_for,
)

# End points of the starting-density estimate (see `estimate_density_g_cm3`).
_DENSITY_X0_G_CM3 = 2.2
_DENSITY_X7_G_CM3 = 2.5

# Minimum distances (A) for random placement. They sit well below the bond lengths of the
# glass (P-S 2.0-2.15, P-O 1.5-1.65, Na-S ~2.9) so no pair starts deep inside the repulsive
# wall of a potential, while P-P and S-S are kept at or above their bond lengths so the random
# cell does not start with spurious P-P or S-S bonds. They must stay well below the
# random-sequential-addition jamming limit at the estimated density: 10 % larger values
# already fail to place ~5000 atoms at x = 7 (the densest end in atoms per volume).
DEFAULT_MIN_DIST_A: dict[tuple[str, str], float] = {
    ("Na", "Na"): 2.3,
    ("Na", "P"): 2.4,
    ("Na", "S"): 2.1,
    ("Na", "O"): 1.8,
    ("P", "P"): 2.5,
    ("P", "S"): 1.7,
    ("P", "O"): 1.3,
    ("S", "S"): 2.2,
    ("S", "O"): 2.0,
    ("O", "O"): 1.8,
}


def composition_counts(x: float, formula_units: int) -> dict[str, int]:
    """Atom counts of ``formula_units`` formula units of Na4P2S(7-x)O(x).

    Raises ValueError when ``x * formula_units`` is not a whole number (the cell would need a
    fractional number of O atoms) or when x is outside 0..7.
    """
    if isinstance(formula_units, bool) or not isinstance(formula_units, int | np.integer):
        raise ValueError(f"formula_units must be an integer, not {formula_units!r}")
    if formula_units < 1:
        raise ValueError(f"formula_units must be >= 1, not {formula_units}")
    return counts_for(float(x), int(formula_units))


def estimate_density_g_cm3(x: float) -> float:
    """Estimated glass density (g/cm^3) used only to size the *starting* cell.

    Linear interpolation in x between 2.2 g/cm^3 at x = 0 (Na4P2S7 glass) and 2.5 g/cm^3 at
    x = 7 (Na4P2O7-rich end). This is a rough estimate for building a random initial cell
    that the NPT stages then relax; it is NOT experimental reference data and must never be
    compared with simulated densities.
    """
    composition_counts(x, 2)  # validates the x range with the family's own message
    return _DENSITY_X0_G_CM3 + (_DENSITY_X7_G_CM3 - _DENSITY_X0_G_CM3) * float(x) / 7.0


def cubic_cell_length(counts: Mapping[str, int], density_g_cm3: float) -> float:
    """Edge (A) of the cube that holds ``counts`` atoms ({element: n}) at ``density_g_cm3``.

    Shared by every builder of synthetic cells (`random_glass` here, the dimer glass of
    `glassbench.testing.synthetic`), so they agree on masses and units. Raises ValueError
    unless the density is a positive finite number.
    """
    if not (density_g_cm3 > 0 and math.isfinite(density_g_cm3)):
        raise ValueError(f"density must be a positive number, not {density_g_cm3}")
    mass_amu = sum(MASSES_AMU[el] * n for el, n in counts.items())
    return float((mass_amu * AMU_PER_A3_TO_G_CM3 / density_g_cm3) ** (1.0 / 3.0))


def _min_dist_matrix(min_dist: Mapping[tuple[str, str], float] | float | None) -> np.ndarray:
    """Symmetric (n_elements x n_elements) matrix of minimum distances, ELEMENTS order."""
    n = len(ELEMENTS)
    if min_dist is None:
        min_dist = DEFAULT_MIN_DIST_A
    if isinstance(min_dist, int | float):
        if min_dist < 0:
            raise ValueError(f"min_dist must be >= 0, not {min_dist}")
        return np.full((n, n), float(min_dist))
    table = dict(DEFAULT_MIN_DIST_A)
    for (a, b), d in min_dist.items():
        if a not in ELEMENTS or b not in ELEMENTS:
            raise ValueError(f"min_dist pair {a}-{b}: elements must be among {ELEMENTS}")
        if d < 0:
            raise ValueError(f"min_dist {a}-{b} must be >= 0, not {d}")
        table.pop((b, a), None)
        table[(a, b)] = float(d)
    out = np.zeros((n, n))
    for (a, b), d in table.items():
        i, j = ELEMENTS.index(a), ELEMENTS.index(b)
        out[i, j] = out[j, i] = d
    return out


def random_glass(
    x: float,
    formula_units: int,
    seed: int,
    density_g_cm3: float | None = None,
    min_dist: Mapping[tuple[str, str], float] | float | None = None,
    *,
    max_trials_per_atom: int = 10_000,
) -> Atoms:
    """Random Na4P2S(7-x)O(x) configuration in a cubic periodic cell.

    Atoms are placed one at a time at uniformly random positions, rejecting any candidate
    closer than the per-pair minimum distance (``min_dist``: a {(el, el): A} mapping that
    overrides `DEFAULT_MIN_DIST_A`, or one number for every pair) to an atom already placed.
    Candidates are checked against a cell list, so the cost grows linearly with the number of
    atoms. The result depends only on the arguments: the same seed gives the same positions.

    ``density_g_cm3`` defaults to `estimate_density_g_cm3(x)`. Atoms come out grouped by
    element in the order Na, P, S, O. Raises ValueError with the cause if the composition is
    not whole or an atom cannot be placed (minimum distances too large for the density).
    """
    counts = composition_counts(x, formula_units)
    if density_g_cm3 is None:
        density_g_cm3 = estimate_density_g_cm3(x)
    length = cubic_cell_length(counts, density_g_cm3)
    dmat = _min_dist_matrix(min_dist)

    species = np.concatenate(
        [np.full(counts[el], i, dtype=np.int64) for i, el in enumerate(ELEMENTS)]
    )
    n_atoms = len(species)
    rng = np.random.default_rng(seed)
    # Insertion order is shuffled so no element systematically gets the emptiest cell.
    order = rng.permutation(n_atoms)

    dmax = float(dmat.max())
    nbin = max(1, int(length // dmax)) if dmax > 0 else 1
    bins: dict[tuple[int, int, int], list[int]] = {}
    positions = np.empty((n_atoms, 3))
    placed_species = np.empty(n_atoms, dtype=np.int64)
    # With fewer than 3 bins per side the 27 neighbouring bins wrap onto each other;
    # checking every placed atom is then both correct and cheap (the cell is tiny).
    use_bins = nbin >= 3
    offsets = [(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]

    for n_placed, atom in enumerate(order):
        sp = species[atom]
        dmin_row = dmat[sp]
        for _ in range(max_trials_per_atom):
            cand = rng.random(3) * length
            if n_placed == 0:
                break
            if use_bins:
                bx, by, bz = (int(v) for v in (cand * nbin / length).astype(np.int64) % nbin)
                idx: list[int] = []
                for ox, oy, oz in offsets:
                    idx.extend(bins.get(((bx + ox) % nbin, (by + oy) % nbin, (bz + oz) % nbin), ()))
                if not idx:
                    break
                near = np.fromiter(idx, dtype=np.int64, count=len(idx))
            else:
                near = np.arange(n_placed)
            delta = positions[near] - cand
            delta -= length * np.round(delta / length)
            d2 = np.einsum("ij,ij->i", delta, delta)
            if np.all(d2 >= dmin_row[placed_species[near]] ** 2):
                break
        else:
            raise ValueError(
                f"could not place atom {n_placed + 1}/{n_atoms} ({ELEMENTS[sp]}) after "
                f"{max_trials_per_atom} trials: minimum distances too large for "
                f"{density_g_cm3:g} g/cm3 (cell {length:.2f} A)"
            )
        positions[n_placed] = cand
        placed_species[n_placed] = sp
        if use_bins:
            bx, by, bz = (int(v) for v in (cand * nbin / length).astype(np.int64) % nbin)
            bins.setdefault((bx, by, bz), []).append(n_placed)

    # Group by element (stable, so the result is still a function of the seed only).
    grouped = np.argsort(placed_species, kind="stable")
    numbers = [ATOMIC_NUMBERS[ELEMENTS[s]] for s in placed_species[grouped]]
    atoms = Atoms(
        numbers=numbers,
        positions=positions[grouped],
        cell=np.eye(3) * length,
        pbc=True,
    )
    atoms.info.update(
        {
            "x": float(x),
            "formula_units": int(formula_units),
            "seed": int(seed),
            "density_g_cm3": float(density_g_cm3),
        }
    )
    return atoms


def build_c_na3ps4(a: float = 6.9965, x_s: float = 0.17) -> Atoms:
    """Cubic Na3PS4 (I-43m, No. 217), conventional cell with two formula units.

    Wyckoff positions: P 2a (0,0,0), Na 6b (0,1/2,1/2), S 8c (x,x,x). The default lattice
    parameter is the experimental one in `read_crystal_reference` (c-Na3PS4).
    """
    from ase.spacegroup import crystal

    atoms = crystal(
        ["P", "Na", "S"],
        basis=[(0.0, 0.0, 0.0), (0.0, 0.5, 0.5), (x_s, x_s, x_s)],
        spacegroup=217,
        cellpar=[a, a, a, 90.0, 90.0, 90.0],
    )
    atoms.info["crystal"] = "c-Na3PS4"
    atoms.info["formula_units"] = 2
    return atoms


_INT_COLUMNS = {"formula_units_per_cell"}
_FLOAT_COLUMNS = {"a_angstrom", "b_angstrom", "c_angstrom", "volume_per_formula_unit_a3"}


def read_crystal_reference() -> list[dict[str, Any]]:
    """Experimental lattices of the crystalline references (packaged ``data/crystals.csv``).

    One dict per crystal with the CSV's columns; numbers converted, ``source`` kept verbatim.
    """
    # One joinpath per level: zip-backed Traversables take a single name on Python 3.11.
    data = resources.files("glassbench").joinpath("data").joinpath("crystals.csv")
    text = data.read_text(encoding="utf-8")
    rows: list[dict[str, Any]] = []
    for raw in csv.DictReader(io.StringIO(text)):
        row: dict[str, Any] = dict(raw)
        for col in _INT_COLUMNS & row.keys():
            row[col] = int(row[col])
        for col in _FLOAT_COLUMNS & row.keys():
            row[col] = float(row[col])
        rows.append(row)
    return rows
