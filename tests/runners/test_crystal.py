"""Crystal cell relaxation: analytic Lennard-Jones FCC, and c-Na3PS4 with CHGNet."""

from __future__ import annotations

import math

import pytest
from ase.build import bulk
from ase.calculators.lj import LennardJones

from glassbench.runners.crystal import crystal_volume, formula_units_of
from glassbench.runners.structure import build_c_na3ps4
from tests.conftest import require_module

EPS, SIGMA = 0.0104, 3.40
R0 = 2 ** (1 / 6) * SIGMA


def test_lj_fcc_relaxes_to_nearest_neighbour_minimum() -> None:
    # With only nearest neighbours inside the cut-off, zero pressure puts them at the pair
    # minimum r0: a = sqrt(2) r0 and V/atom = a^3 / 4, whatever the strained start.
    a_eq = math.sqrt(2) * R0
    start = bulk("Ar", "fcc", a=0.97 * a_eq, cubic=True)
    start.set_cell(start.cell.array @ [[1, 0.01, 0], [0, 1, 0], [0, 0, 1.02]], scale_atoms=True)
    calc = LennardJones(sigma=SIGMA, epsilon=EPS, rc=0.5 * (R0 + a_eq), smooth=False)
    # BFGS needs a third of FIRE's steps here, and each step pays for the Frechet filter's
    # matrix exponential.
    relaxed, v_fu = crystal_volume(start, calc, fmax=1e-4, steps=200, optimizer="BFGS")
    assert relaxed.info["relax_converged"]
    assert relaxed.info["formula_units"] == 4
    assert v_fu == pytest.approx(a_eq**3 / 4, rel=1e-3)
    assert start.get_volume() == pytest.approx(relaxed.info["volume_initial_a3"])
    assert start.get_volume() != pytest.approx(relaxed.get_volume())  # input untouched


def test_formula_units() -> None:
    assert formula_units_of(build_c_na3ps4()) == 2
    assert formula_units_of(bulk("Ar", "fcc", a=5.0, cubic=True)) == 4


def test_rejects_bad_arguments() -> None:
    atoms = build_c_na3ps4()
    calc = LennardJones()
    with pytest.raises(ValueError, match="optimizer"):
        crystal_volume(atoms, calc, optimizer="CG")
    atoms.pbc = (True, True, False)
    with pytest.raises(ValueError, match="periodic"):
        crystal_volume(atoms, calc)


@pytest.mark.slow
def test_c_na3ps4_relaxes_with_chgnet() -> None:
    require_module("chgnet", "pip install torch==2.13.0 && pip install chgnet")
    from glassbench.runners.calculators import make_calculator

    atoms = build_c_na3ps4()
    v_exp = atoms.get_volume() / 2
    relaxed, v_fu = crystal_volume(
        atoms, make_calculator("chgnet", "0.3.0"), fmax=0.05, steps=4, optimizer="BFGS"
    )
    assert relaxed.info["relax_steps"] >= 1
    # A finite change, within what a universal PBE-level model does to a sulfide (+-15 %).
    assert 0.1 < abs(v_fu - v_exp) < 0.15 * v_exp
    assert len(relaxed) == 16
