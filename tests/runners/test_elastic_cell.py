"""Elastic moduli from a reference whose cell was relaxed at the target pressure.

A real (untrained, tiny) MACE on a 13-atom Na4P2S6O cell. The tiny model is soft (bulk
modulus ~1 GPa), so 1 GPa compresses the cell strongly: a demanding check that the relaxed
reference sits at stress -P. FrechetCellFilter's cell "force" is the virial over the number of
atoms N, so the optimiser's fmax bounds each residual stress component by about fmax N / V.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.calculator import Calculator

from glassbench.runners.elastic import ElasticMD, ElasticResult, elastic_moduli

FMAX = 0.01
MAX_STEPS = 300

# The implementation before cell relaxation existed (runners/elastic.py at commit 3bd3672), on
# this cell and model: diagonal of C (GPa); bulk, shear and Young's moduli (GPa), Poisson ratio.
C_DIAG_OLD = {
    False: [0.7969560647560447, 0.5953983366330109, 0.4348820506878865, 0.11398035922913462,
            0.3014652291852286, 0.33003944225214416],
    True: [2.8346512807066766, 1.7062166954518323, 0.9663995207083805, 0.462052291098055,
           0.7491234069506806, 0.7051349612254898],
}  # fmt: skip
MODULI_OLD = {
    False: [0.19816984585130903, 0.16066776880601585, 0.3794546795629942, 0.18086745830501125],
    True: [0.8802030395638563, 0.5947259785984556, 1.4562066632837598, 0.22426690247791853],
}


@pytest.fixture(scope="module")
def mace_calc(tiny_mace: Path) -> Calculator:
    from glassbench.runners.calculators import make_calculator

    return make_calculator("mace", str(tiny_mace))


@pytest.fixture
def cell() -> Atoms:
    from glassbench.runners.structure import random_glass

    return random_glass(1.0, 1, seed=2)


def _tolerance_gpa(res: ElasticResult) -> float:
    assert res.reference_volume_a3 is not None
    return FMAX * res.n_atoms / res.reference_volume_a3 / units.GPa


@pytest.mark.parametrize("pressure", [0.0, 1.0])
def test_relaxed_reference_stress_is_minus_the_pressure(
    mace_calc: Calculator, cell: Atoms, pressure: float
) -> None:
    res = elastic_moduli(cell, mace_calc, fmax=FMAX, max_steps=MAX_STEPS, pressure_gpa=pressure)
    assert res.converged and res.relax_cell and res.pressure_gpa == pressure
    tol = _tolerance_gpa(res)
    stress = np.asarray(res.reference_stress_gpa)
    np.testing.assert_allclose(stress[:3], -pressure, atol=tol)
    np.testing.assert_allclose(stress[3:], 0.0, atol=tol)
    assert res.reference_volume_a3 != pytest.approx(cell.get_volume(), abs=1.0)  # it moved
    moduli = [res.bulk_modulus_gpa, res.shear_modulus_gpa, res.young_modulus_gpa]
    assert all(np.isfinite(m) and m > 0 for m in moduli)
    assert np.isfinite(res.c_gpa).all()
    assert f"relaxed at {pressure:g} GPa" in res.method and "FrechetCellFilter" in res.method


@pytest.mark.parametrize("relax_positions", [False, True])
def test_without_cell_relaxation_the_old_result_is_reproduced(
    mace_calc: Calculator, cell: Atoms, relax_positions: bool
) -> None:
    res = elastic_moduli(
        cell,
        mace_calc,
        fmax=FMAX,
        max_steps=MAX_STEPS,
        relax_positions=relax_positions,
        relax_cell=False,
    )
    np.testing.assert_allclose(np.diag(res.c_gpa), C_DIAG_OLD[relax_positions], rtol=1e-6)
    moduli = [res.bulk_modulus_gpa, res.shear_modulus_gpa, res.young_modulus_gpa]
    np.testing.assert_allclose([*moduli, res.poisson_ratio], MODULI_OLD[relax_positions], rtol=1e-6)
    assert not res.relax_cell and "FrechetCellFilter" not in res.method
    assert res.reference_volume_a3 == pytest.approx(cell.get_volume())


def test_cell_only_relaxation_keeps_fractional_positions(
    mace_calc: Calculator, cell: Atoms
) -> None:
    res = elastic_moduli(cell, mace_calc, fmax=FMAX, max_steps=MAX_STEPS, relax_positions=False)
    assert res.converged and "fractional positions kept" in res.method
    stress = np.asarray(res.reference_stress_gpa)
    np.testing.assert_allclose(stress, [0, 0, 0, 0, 0, 0], atol=_tolerance_gpa(res))
    assert not cell.constraints  # the caller's atoms are untouched


def test_result_json_round_trips_and_old_json_loads(mace_calc: Calculator, cell: Atoms) -> None:
    res = elastic_moduli(cell, mace_calc, relax_positions=False, max_steps=20, pressure_gpa=0.2)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["relax_cell"] is True and d["pressure_gpa"] == 0.2
    assert len(d["reference_stress_gpa"]) == 6
    back = ElasticResult.from_dict(d)
    np.testing.assert_array_equal(back.c_gpa, res.c_gpa)
    assert back.strains == res.strains and back.reference_stress_gpa == res.reference_stress_gpa
    new_keys = ("relax_cell", "pressure_gpa", "reference_stress_gpa", "reference_volume_a3")
    old = {k: v for k, v in d.items() if k not in new_keys}
    loaded = ElasticResult.from_dict(old)
    assert loaded.relax_cell is False and loaded.pressure_gpa == 0.0
    assert loaded.reference_stress_gpa == () and loaded.reference_volume_a3 is None


def test_finite_temperature_variant_starts_from_the_relaxed_cell(
    mace_calc: Calculator, cell: Atoms
) -> None:
    md = ElasticMD(
        temperature_k=50.0, equilibration_steps=2, production_steps=10, sample_every=5, seed=1
    )

    # Affine strains keep it short; the reference's cell is relaxed just the same.
    def run(md: ElasticMD | None) -> ElasticResult:
        return elastic_moduli(
            cell,
            mace_calc,
            fmax=FMAX,
            max_steps=MAX_STEPS,
            pressure_gpa=0.5,
            relax_positions=False,
            md=md,
        )

    static, res = run(None), run(md)
    assert res.relax_cell and res.md is not None and "md" in res.uncertainty_components
    assert res.reference_volume_a3 == pytest.approx(static.reference_volume_a3, rel=1e-12)
    assert "Langevin" in res.method and "relaxed at 0.5 GPa" in res.method
    assert np.isfinite(res.c_gpa).all()
    # At 50 K the mean reference stress stays near -P (the thermal pressure is small here).
    assert np.mean(res.reference_stress_gpa[:3]) == pytest.approx(-0.5, abs=0.3)
