"""D3(BJ) dispersion on an MLIP calculator: the chosen implementation (simple-dftd3's
``dftd3``) against an independent one (torch-dftd), against finite differences of its own
energy, and in a crystal relaxation; the settings that are refused."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase import Atoms
from ase.units import Bohr

from glassbench.errors import BadInput
from glassbench.runners.structure import build_c_na3ps4, random_glass
from tests.conftest import MACE_HINT, require_module

D3_HINT = "pip install 'glassbench[d3]' (scripts/setup-dev.sh does)"


@pytest.fixture(scope="module")
def cell() -> Atoms:
    """52-atom Na4P2S6O glass cell, randomly placed (a dense, disordered Na-P-S-O cell)."""
    return random_glass(1.0, 4, seed=11)


def _evaluate(calc: Any, atoms: Atoms) -> tuple[float, np.ndarray, np.ndarray]:
    a = atoms.copy()
    a.calc = calc
    return float(a.get_potential_energy()), a.get_forces(), a.get_stress()


def _d3(functional: str = "PBE") -> Any:
    require_module("dftd3", D3_HINT)
    from glassbench.runners.dispersion import dispersion_calculator

    return dispersion_calculator(functional)


def test_d3_agrees_with_torch_dftd(cell: Atoms) -> None:
    """Same cell, same PBE D3(BJ) parameters, same cutoffs, two-body only: the Fortran
    reference implementation and PFN's torch-dftd (its own code and reference C6 tables,
    what MACE's mace_mp(dispersion=True) uses). With the same sharp cutoff the two differ by
    6e-8 eV/atom, 2e-8 eV/A, 3e-9 eV/A^3; glassbench smooths its cutoff over 2 bohr, which
    torch-dftd does not do the same way, adding ~1e-5 eV/atom and ~1e-5 eV/A^3. Tolerances:
    the issue's 1e-4 eV/atom and 1e-3 eV/A; for the stress 5e-5 eV/A^3 (8 MPa, 0.4 % of the
    D3 stress here; at a ~20 GPa bulk modulus it moves a volume by 0.04 %)."""
    require_module("torch_dftd", "pip install torch-dftd==0.5.3 (the test extra)")
    import torch
    from torch_dftd.torch_dftd3_calculator import TorchDFTD3Calculator

    from glassbench.runners.dispersion import CUTOFF_CN_BOHR, CUTOFF_DISP2_BOHR

    e, f, s = _evaluate(_d3("PBE"), cell)
    other = TorchDFTD3Calculator(
        damping="bj",
        xc="pbe",
        cutoff=CUTOFF_DISP2_BOHR * Bohr,
        cnthr=CUTOFF_CN_BOHR * Bohr,
        abc=False,
        dtype=torch.float64,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch-dftd's slow-tensor notice
        e2, f2, s2 = _evaluate(other, cell)
    n = len(cell)
    # A real correction, not two zeros: D3 binds this sulfide by a few tenths of an eV/atom.
    assert -0.5 < e / n < -0.1
    assert np.abs(f).max() > 0.02
    assert s[:3].min() > 1e-3  # tensile: dispersion pulls the cell together
    assert abs(e - e2) / n < 1e-4
    assert np.abs(f - f2).max() < 1e-3
    assert np.abs(s - s2).max() < 5e-5


def test_r2scan_uses_its_own_parameters(cell: Atoms) -> None:
    e_pbe, _, _ = _evaluate(_d3("PBE"), cell)
    e_r2, _, _ = _evaluate(_d3("r2SCAN"), cell)
    e_up, _, _ = _evaluate(_d3("pbe+u"), cell)
    assert e_up == e_pbe  # +U takes the plain functional's parameters
    # r2SCAN already holds more mid-range correlation: a smaller D3 correction (a2 5.73 vs 4.44).
    assert e_pbe < e_r2 < 0.0
    assert abs(e_r2 - e_pbe) / len(cell) > 1e-2


def _finite_difference_checks(calc: Any, atoms: Atoms, h: float) -> tuple[float, float]:
    """Largest |F - (-dE/dx)| over a few atoms (eV/A), largest |sigma - dE/d(eps)/V| over
    all six stress components (eV/A^3), central differences with step ``h``."""
    a = atoms.copy()
    a.calc = calc
    forces = a.get_forces()
    stress = a.get_stress(voigt=False)
    volume = a.get_volume()

    def energy(positions: np.ndarray, cell: np.ndarray) -> float:
        b = atoms.copy()
        b.set_cell(cell, scale_atoms=False)
        b.positions = positions
        b.calc = calc
        return float(b.get_potential_energy())

    pos0, cell0 = atoms.get_positions(), np.asarray(atoms.get_cell())
    force_err = 0.0
    for i in (0, 9, 20, len(atoms) - 1):  # Na, Na, S, O
        for k in range(3):
            plus, minus = pos0.copy(), pos0.copy()
            plus[i, k] += h
            minus[i, k] -= h
            grad = (energy(plus, cell0) - energy(minus, cell0)) / (2 * h)
            force_err = max(force_err, abs(forces[i, k] + grad))
    stress_err = 0.0
    for i in range(3):
        for j in range(3):
            if j < i:
                continue
            # Deformation F = 1 + h e_i e_j^T of cell and positions: dE = V sigma_ij h (the
            # rotational part of F does not change the energy).
            energies = []
            for sign in (1.0, -1.0):
                deform = np.eye(3)
                deform[i, j] += sign * h
                energies.append(energy(pos0 @ deform.T, cell0 @ deform.T))
            derivative = (energies[0] - energies[1]) / (2 * h) / volume
            stress_err = max(stress_err, abs(stress[i, j] - derivative))
    return force_err, stress_err


def test_d3_forces_and_stress_are_derivatives_of_its_energy(cell: Atoms) -> None:
    """Measured: 2e-9 eV/A and 1e-10 eV/A^3 (with dftd3's default sharp cutoff, pairs
    crossing it made these 4e-4 and 2e-5: see CUTOFF_DISP2_WIDTH_BOHR)."""
    force_err, stress_err = _finite_difference_checks(_d3("PBE"), cell, h=1e-4)
    assert force_err < 1e-6
    assert stress_err < 1e-7


def _tiny_mace_calc(path: Path, dispersion: str, functional: str | None = "PBE") -> Any:
    from glassbench.runners.calculators import make_calculator

    return make_calculator("mace", str(path), dispersion=dispersion, functional=functional)


def test_mlip_plus_d3_is_the_sum_and_consistent(tiny_mace: Path, cell: Atoms) -> None:
    require_module("dftd3", D3_HINT)
    from glassbench.runners.dispersion import DispersionCorrected

    plain = _tiny_mace_calc(tiny_mace, "none")
    summed = _tiny_mace_calc(tiny_mace, "d3")
    assert isinstance(summed, DispersionCorrected)
    assert not isinstance(plain, DispersionCorrected)
    e0, f0, s0 = _evaluate(plain, cell)
    e1, f1, s1 = _evaluate(_d3("PBE"), cell)
    e, f, s = _evaluate(summed, cell)
    assert e == pytest.approx(e0 + e1, abs=1e-9)
    np.testing.assert_allclose(f, f0 + f1, atol=1e-9)
    np.testing.assert_allclose(s, s0 + s1, atol=1e-12)
    a = cell.copy()
    a.calc = summed
    assert a.get_potential_energy(force_consistent=True) == pytest.approx(e, abs=1e-9)
    # The MD runner reads the pressure from `results` after asking for forces only.
    a.positions[0, 0] += 0.01
    a.get_forces()
    assert summed.results["stress"].shape == (6,)
    # The sum as a whole is conservative (tiny MACE runs in float64).
    force_err, stress_err = _finite_difference_checks(summed, cell, h=1e-4)
    assert force_err < 1e-4
    assert stress_err < 1e-5


def _relaxed_volume(calc: Any, steps: int) -> float:
    from glassbench.runners.crystal import crystal_volume

    _, volume = crystal_volume(build_c_na3ps4(), calc, fmax=0.01, steps=steps)
    return volume


def test_crystal_relaxed_with_d3_is_smaller(tiny_mace: Path) -> None:
    """c-Na3PS4 through FIRE on FrechetCellFilter, tiny MACE with and without D3. The
    untrained model has no real repulsion (with D3 the cell would keep shrinking far past
    anything physical), so the relaxation is cut at 30 steps: the direction is the check."""
    without = _relaxed_volume(_tiny_mace_calc(tiny_mace, "none"), steps=30)
    with_d3 = _relaxed_volume(_tiny_mace_calc(tiny_mace, "d3"), steps=30)
    assert with_d3 < 0.95 * without


def test_crystal_relaxed_with_chgnet_and_d3_contracts() -> None:
    """A trained MLIP: CHGNet 0.3.0 (trained on Materials Project GGA/GGA+U, so PBE's D3
    parameters). Measured: 178.7 A^3/f.u. without D3, 152.3 with (experiment 171.2); ~5 s."""
    require_module("chgnet", "scripts/setup-dev.sh, or pip install 'glassbench[chgnet]'")
    require_module("dftd3", D3_HINT)
    from glassbench.runners.calculators import make_calculator

    without = _relaxed_volume(make_calculator("chgnet", None), steps=300)
    with_d3 = _relaxed_volume(
        make_calculator("chgnet", None, dispersion="d3", functional="GGA+U"), steps=300
    )
    assert 165.0 < without < 190.0
    assert 0.75 * without < with_d3 < 0.95 * without


def test_d3_needs_a_known_functional(tiny_mace: Path) -> None:
    require_module("dftd3", D3_HINT)
    from glassbench.runners.calculators import make_calculator
    from glassbench.runners.dispersion import dispersion_provenance

    for functional in (None, "", "B3LYP-ish"):
        with pytest.raises(BadInput) as err:
            make_calculator("mace", str(tiny_mace), dispersion="d3", functional=functional)
        assert err.value.field == "functional"
        assert "functional" in str(err.value)
    with pytest.raises(BadInput) as err:
        dispersion_provenance("d3", None)
    assert err.value.field == "functional"


def test_unknown_dispersion_is_refused(tiny_mace: Path) -> None:
    from glassbench.runners.calculators import make_calculator
    from glassbench.runners.dispersion import dispersion_provenance, with_dispersion

    for call in (
        lambda: make_calculator("mace", str(tiny_mace), dispersion="d4", functional="PBE"),
        lambda: with_dispersion(_tiny_mace_calc(tiny_mace, "none"), "D3", "PBE"),
        lambda: dispersion_provenance("mbd", "PBE"),
    ):
        with pytest.raises(BadInput) as err:
            call()
        assert err.value.field == "dispersion"


def test_none_returns_the_mlip_calculator_itself(
    tiny_mace_factory: Callable[[int], Path],
) -> None:
    require_module("mace", MACE_HINT)
    from mace.calculators import MACECalculator

    from glassbench.runners.dispersion import dispersion_provenance, with_dispersion

    calc = _tiny_mace_calc(tiny_mace_factory(3), "none", functional=None)
    assert type(calc) is MACECalculator
    assert with_dispersion(calc, "none", None) is calc
    assert dispersion_provenance("none", None) == {}


def test_provenance_names_package_parameters_and_cutoffs() -> None:
    require_module("dftd3", D3_HINT)
    from importlib import metadata

    from glassbench.runners.dispersion import dispersion_provenance

    prov = dispersion_provenance("d3", "r2SCAN")
    assert prov["dftd3"] == metadata.version("dftd3")
    assert prov["d3.damping"].startswith("d3bj")
    assert prov["d3.functional"].startswith("r2scan")
    assert prov["d3.parameters"] == "s6=1.0 s8=0.78981345 a1=0.49484001 a2=5.73083694 s9=0.0"
    assert prov["d3.three_body"] == "off"
    assert prov["d3.cutoff_disp2"] == "60 bohr (31.75 A), smooth over 2 bohr"
    assert prov["d3.cutoff_cn"] == "40 bohr (21.17 A)"
    assert dispersion_provenance("d3", "PBE")["d3.parameters"] == (
        "s6=1.0 s8=0.7875 a1=0.4289 a2=4.4407 s9=0.0"
    )
