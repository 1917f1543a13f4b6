"""Composition counts, random glass cells, c-Na3PS4 and the packaged crystal references."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from ase import Atoms

from glassbench.runners.structure import (
    DEFAULT_MIN_DIST_A,
    build_c_na3ps4,
    composition_counts,
    estimate_density_g_cm3,
    random_glass,
    read_crystal_reference,
)

AMU_A3_TO_G_CM3 = 1.66053906660


def test_composition_counts() -> None:
    assert composition_counts(0.0, 2) == {"Na": 8, "P": 4, "S": 14, "O": 0}
    assert composition_counts(1.0, 4) == {"Na": 16, "P": 8, "S": 24, "O": 4}
    assert composition_counts(3.5, 2) == {"Na": 8, "P": 4, "S": 7, "O": 7}
    assert composition_counts(0.25, 8)["O"] == 2


@pytest.mark.parametrize(
    ("x", "fu", "message"),
    [
        (0.5, 3, "whole number"),
        (3.5, 1, "whole number"),
        (8.0, 2, "outside"),
        (-1.0, 2, "outside"),
        (1.0, 0, ">= 1"),
        (1.0, 2.0, "integer"),
    ],
)
def test_composition_counts_rejects(x: float, fu: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        composition_counts(x, fu)


def test_density_estimate_endpoints_and_trend() -> None:
    assert estimate_density_g_cm3(0.0) == pytest.approx(2.2)
    assert estimate_density_g_cm3(7.0) == pytest.approx(2.5)
    values = [estimate_density_g_cm3(x) for x in (0.0, 1.0, 2.0, 3.5)]
    assert values == sorted(values)
    with pytest.raises(ValueError):
        estimate_density_g_cm3(9.0)


def _density(atoms: Atoms) -> float:
    return float(atoms.get_masses().sum() / atoms.get_volume() * AMU_A3_TO_G_CM3)


def _min_pair_distances(atoms: Atoms) -> dict[tuple[str, str], float]:
    d = atoms.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    sym = np.array(atoms.get_chemical_symbols())
    out = {}
    for a, b in itertools.combinations_with_replacement(("Na", "P", "S", "O"), 2):
        block = d[np.ix_(sym == a, sym == b)]
        if block.size:
            out[(a, b)] = float(block.min())
    return out


@pytest.mark.parametrize("x", [0.0, 1.0, 3.5])
def test_random_glass_composition_density_and_distances(x: float) -> None:
    atoms = random_glass(x, 4, seed=7)
    counts = composition_counts(x, 4)
    symbols = atoms.get_chemical_symbols()
    assert {el: symbols.count(el) for el in counts} == counts
    assert atoms.pbc.all()
    lengths, angles = atoms.cell.cellpar()[:3], atoms.cell.cellpar()[3:]
    assert np.allclose(lengths, lengths[0]) and np.allclose(angles, 90.0)
    assert _density(atoms) == pytest.approx(estimate_density_g_cm3(x), rel=1e-9)
    for (a, b), dmin in _min_pair_distances(atoms).items():
        limit = DEFAULT_MIN_DIST_A.get((a, b), DEFAULT_MIN_DIST_A.get((b, a)))
        assert limit is not None
        assert dmin >= limit - 1e-9, (a, b, dmin, limit)


def test_random_glass_is_reproducible() -> None:
    a = random_glass(2.0, 4, seed=11)
    b = random_glass(2.0, 4, seed=11)
    c = random_glass(2.0, 4, seed=12)
    assert np.array_equal(a.numbers, b.numbers)
    assert np.array_equal(a.positions, b.positions)
    assert not np.allclose(a.positions, c.positions)


def test_random_glass_options() -> None:
    atoms = random_glass(1.0, 2, seed=1, density_g_cm3=2.0, min_dist=1.5)
    assert _density(atoms) == pytest.approx(2.0)
    d = atoms.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    assert d.min() >= 1.5
    custom = random_glass(1.0, 4, seed=1, min_dist={("S", "S"): 2.6})
    assert _min_pair_distances(custom)[("S", "S")] >= 2.6
    with pytest.raises(ValueError, match="could not place"):
        random_glass(0.0, 4, seed=1, min_dist=4.0, max_trials_per_atom=200)
    with pytest.raises(ValueError, match="whole number"):
        random_glass(0.5, 3, seed=1)


def test_random_glass_scales_to_thousands_of_atoms() -> None:
    t0 = time.perf_counter()
    atoms = random_glass(2.0, 160, seed=2)  # 2080 atoms
    elapsed = time.perf_counter() - t0
    assert len(atoms) == 2080
    # A cell list keeps this around 0.3 s here; all-pairs checks would take far longer.
    assert elapsed < 10.0
    # Spot-check the distance guarantee on a subset (all pairs would be slow to compute).
    sub = atoms.get_distances(0, range(1, len(atoms)), mic=True)
    assert sub.min() >= min(DEFAULT_MIN_DIST_A.values())


def test_c_na3ps4_at_experimental_lattice() -> None:
    atoms = build_c_na3ps4()
    symbols = atoms.get_chemical_symbols()
    assert (symbols.count("Na"), symbols.count("P"), symbols.count("S")) == (6, 2, 8)
    assert atoms.get_volume() / 2 == pytest.approx(171.2, abs=0.05)
    # PS4 tetrahedra: four S at sqrt(3) * x * a = 2.06 A around each P.
    d = atoms.get_all_distances(mic=True)
    sym = np.array(symbols)
    p_s = np.sort(d[np.ix_(sym == "P", sym == "S")], axis=1)[:, :4]
    assert np.allclose(p_s, math.sqrt(3) * 0.17 * 6.9965, atol=1e-6)


def test_crystal_reference_is_packaged_with_sources() -> None:
    rows = read_crystal_reference()
    by_name = {r["crystal"]: r for r in rows}
    assert {"c-Na3PS4", "t-Na3PS4", "Na3PS3O", "Na3PO3S", "Na4P2O7"} <= set(by_name)
    c = by_name["c-Na3PS4"]
    assert c["space_group"] == "I-43m" and c["formula_units_per_cell"] == 2
    assert c["volume_per_formula_unit_a3"] == pytest.approx(171.2)
    for r in rows:
        assert r["source"].strip()
        a, b, cc = r["a_angstrom"], r["b_angstrom"], r["c_angstrom"]
        # R3c is given in its hexagonal setting (gamma = 120 deg); the others are orthogonal.
        v = a * b * cc * (math.sin(math.radians(120)) if r["space_group"] == "R3c" else 1.0)
        assert v / r["formula_units_per_cell"] == pytest.approx(
            r["volume_per_formula_unit_a3"], rel=5e-3
        ), r["crystal"]
