"""Elastic constants against a closed form: FCC with a nearest-neighbour pair potential.

For a pair potential phi whose minimum phi'(r0) = 0 sits at the nearest-neighbour distance,
the static stiffness is the Born lattice sum C_abcd = 1/(2 Omega) sum_n phi''(r0) n_a n_b n_c
n_d r0^2 over the 12 neighbours n (unit vectors), Omega = a^3/4. With k = phi''(r0) and the
FCC neighbours (+-1, +-1, 0) a/2 this gives C11 = 2k/a and C12 = C44 = k/a. For
Lennard-Jones, r0 = 2^(1/6) sigma and k = 72 epsilon / r0^2. The cut-off sits between the
first and second neighbour shells, so only nearest neighbours interact; every FCC atom is a
centre of inversion, so internal relaxation is zero and relaxed = unrelaxed.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.lj import LennardJones

from glassbench.runners.elastic import (
    ElasticMD,
    elastic_moduli,
    moduli_from_stiffness,
    voigt_strain_matrix,
)

EPS, SIGMA = 0.0104, 3.40  # argon-like, eV and A
R0 = 2 ** (1 / 6) * SIGMA
A = R0 * math.sqrt(2)
K_SPRING = 72 * EPS / R0**2  # eV/A^2
C11 = 2 * K_SPRING / A / units.GPa
C12 = C44 = K_SPRING / A / units.GPa


def _fcc() -> tuple[Atoms, LennardJones]:
    atoms = bulk("Ar", "fcc", a=A, cubic=True) * (2, 2, 2)
    calc = LennardJones(sigma=SIGMA, epsilon=EPS, rc=0.5 * (R0 + A), smooth=False)
    return atoms, calc


def _expected_stiffness() -> np.ndarray:
    c = np.zeros((6, 6))
    c[:3, :3] = C12
    np.fill_diagonal(c[:3, :3], C11)
    c[3, 3] = c[4, 4] = c[5, 5] = C44
    return c


@pytest.mark.parametrize("relax", [True, False])
def test_fcc_nearest_neighbour_stiffness_is_exact(relax: bool) -> None:
    atoms, calc = _fcc()
    res = elastic_moduli(atoms, calc, strain=0.002, relax_positions=relax)
    assert res.converged
    np.testing.assert_allclose(res.c_gpa, _expected_stiffness(), rtol=0, atol=2e-3 * C11)


def test_fcc_isotropic_averages_match_closed_forms() -> None:
    atoms, calc = _fcc()
    res = elastic_moduli(atoms, calc, strain=0.002)
    k = K_SPRING / A / units.GPa  # C12 = C44 = k, C11 = 2k
    bulk_mod = 4 * k / 3  # (C11 + 2 C12) / 3
    g_voigt = 4 * k / 5  # (C11 - C12 + 3 C44) / 5
    g_reuss = 5 * k / 7  # 5 C44 (C11 - C12) / (4 C44 + 3 (C11 - C12))
    rel = 2e-3
    assert res.bulk_voigt_gpa == pytest.approx(bulk_mod, rel=rel)
    assert res.bulk_reuss_gpa == pytest.approx(bulk_mod, rel=rel)
    assert res.shear_voigt_gpa == pytest.approx(g_voigt, rel=rel)
    assert res.shear_reuss_gpa == pytest.approx(g_reuss, rel=rel)
    g_hill = (g_voigt + g_reuss) / 2
    assert res.shear_modulus_gpa == pytest.approx(g_hill, rel=rel)
    young = 9 * bulk_mod * g_hill / (3 * bulk_mod + g_hill)
    poisson = (3 * bulk_mod - 2 * g_hill) / (2 * (3 * bulk_mod + g_hill))
    assert res.young_modulus_gpa == pytest.approx(young, rel=rel)
    assert res.poisson_ratio == pytest.approx(poisson, rel=rel)
    # The crystal is anisotropic: the Voigt-Reuss spread is the dominant uncertainty.
    assert res.shear_modulus_stderr_gpa == pytest.approx((g_voigt - g_reuss) / 2, rel=0.05)
    assert res.bulk_modulus_stderr_gpa < 0.05 * bulk_mod


def test_result_records_method_and_serialises() -> None:
    atoms, calc = _fcc()
    res = elastic_moduli(atoms, calc, strain=0.004, relax_positions=False)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["strain"] == 0.004 and len(d["strains"]) == 12
    assert sorted({j for j, _ in d["strains"]}) == [0, 1, 2, 3, 4, 5]
    assert {s for _, s in d["strains"]} == {0.004, -0.004}
    assert "central differences" in d["method"] and "unrelaxed" in d["method"]
    assert set(d["uncertainty_components"]) == {"bounds", "nonlinearity"}
    mod = res.moduli()
    names = {"bulk_modulus_gpa", "shear_modulus_gpa", "young_modulus_gpa", "poisson_ratio"}
    assert set(mod) == names
    assert all(np.isfinite(v) and e >= 0 for v, e in mod.values())


def test_isotropic_stiffness_gives_textbook_moduli() -> None:
    lam, mu = 30.0, 20.0
    c = np.zeros((6, 6))
    c[:3, :3] = lam
    c[np.arange(3), np.arange(3)] = lam + 2 * mu
    c[3, 3] = c[4, 4] = c[5, 5] = mu
    m = moduli_from_stiffness(c)
    assert m.bulk_voigt == pytest.approx(lam + 2 * mu / 3)
    assert m.bulk_reuss == pytest.approx(lam + 2 * mu / 3)
    assert m.shear_voigt == pytest.approx(mu) and m.shear_reuss == pytest.approx(mu)
    assert m.young == pytest.approx(mu * (3 * lam + 2 * mu) / (lam + mu))
    assert m.poisson == pytest.approx(lam / (2 * (lam + mu)))


def test_voigt_strain_uses_engineering_shear() -> None:
    e = voigt_strain_matrix(3, 0.01)
    assert e[1, 2] == e[2, 1] == pytest.approx(0.005)
    assert voigt_strain_matrix(0, 0.01)[0, 0] == 0.01
    with pytest.raises(ValueError):
        voigt_strain_matrix(6, 0.01)


@pytest.mark.slow
def test_md_averaged_stiffness_near_static_at_low_temperature() -> None:
    atoms, calc = _fcc()
    md = ElasticMD(
        temperature_k=2.0, equilibration_steps=20, production_steps=100, sample_every=5, seed=4
    )
    res = elastic_moduli(atoms, calc, strain=0.005, md=md)
    assert res.md is not None and res.md["temperature_k"] == 2.0
    assert "md" in res.uncertainty_components
    assert res.bulk_modulus_gpa == pytest.approx((C11 + 2 * C12) / 3, rel=0.1)
    assert res.c_gpa[0, 0] == pytest.approx(C11, rel=0.1)


def test_rejects_bad_arguments() -> None:
    atoms, calc = _fcc()
    with pytest.raises(ValueError, match="strain"):
        elastic_moduli(atoms, calc, strain=0.5)
    with pytest.raises(ValueError, match="optimizer"):
        elastic_moduli(atoms, calc, optimizer="CG")
    atoms.pbc = (True, True, False)
    with pytest.raises(ValueError, match="periodic"):
        elastic_moduli(atoms, calc)


def test_tiny_mace_glass_gives_finite_symmetric_stiffness(tiny_mace: object) -> None:
    from glassbench.runners.calculators import make_calculator
    from glassbench.runners.structure import random_glass

    atoms = random_glass(1.0, 2, seed=2)
    res = elastic_moduli(atoms, make_calculator("mace", str(tiny_mace)), relax_positions=False)
    assert np.isfinite(res.c_gpa).all()
    np.testing.assert_allclose(res.c_gpa, res.c_gpa.T)
