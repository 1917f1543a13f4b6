"""Grimme D3 dispersion added to an MLIP calculator (see docs/dispersion.md).

The implementation is simple-dftd3's ``dftd3`` package (the reference implementation: Fortran
behind cffi, no torch or TensorFlow), so the same code runs in every model family's
environment. It was chosen over torch-dftd (two orders of magnitude slower here) and tad-dftd3
(no periodic cells in 0.7.0); the measurements are in benchmarks/README.md.

``dftd3`` is imported only inside the functions: importing this module loads ASE, nothing heavy.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata
from typing import Any

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress
from ase.units import Bohr

from glassbench.errors import BadInput, Failure
from glassbench.schema.models import DISPERSION

DISPERSIONS = DISPERSION  # the mlip table's CHECK list
DAMPINGS = ("d3bj", "d3zero")

# The MLIP's `functional` label (its training data's functional, as users type it; matched
# case-insensitively, spaces ignored) -> the D3 parameter set of that functional in dftd3.
# D3 is fitted to the semi-local exchange-correlation functional; a Hubbard U changes
# on-site d/f energies, not the dispersion, so "+U" labels take the plain functional's
# parameters (this is also what MACE's mace_mp(dispersion=True) applies to its GGA/GGA+U
# training data). "GGA" is the Materials Project's label for its PBE calculations.
D3_FUNCTIONALS: dict[str, str] = {
    "pbe": "pbe",
    "pbe+u": "pbe",
    "gga": "pbe",
    "gga+u": "pbe",
    "pbesol": "pbesol",
    "revpbe": "revpbe",
    "rpbe": "rpbe",
    "pbe0": "pbe0",
    "scan": "scan",
    "r2scan": "r2scan",
}

# Real-space cutoffs, written out so that provenance records what was used: dftd3's own
# defaults (s-dftd3 ASE calculator docstring). The pair sum beyond 60 bohr changes the
# energy of a 104-atom Na4P2S6O cell by 1.8e-4 eV/atom (measured against 95 bohr, the
# original dftd3 program's and torch-dftd's default); 40 bohr (MACE's choice) by 6e-4.
CUTOFF_DISP2_BOHR = 60.0
CUTOFF_CN_BOHR = 40.0
# dftd3 cuts the pair sum off sharply by default, so the energy jumps (by ~1e-7 eV) whenever
# a pair crosses 60 bohr: the forces and above all the stress are then not the derivatives
# of the energy (finite strain missed the stress by 1-4e-5 eV/A^3 on a 52-atom cell). A
# 2 bohr smooth cutoff (dftd3's width2) makes them exact (1e-10) and moves the energy by
# 1.2e-5 eV/atom and the stress by 1.1e-5 eV/A^3.
CUTOFF_DISP2_WIDTH_BOHR = 2.0

# Two-body only (s9 = 0): D3(BJ) as fitted and as VASP, the original dftd3 program and
# torch-dftd apply it by default; dftd3's ASE calculator does the same when given a method
# name (it loads the parameters with atm=False).
THREE_BODY = False

_INSTALL_HINT = "pip install 'glassbench[d3]' (the dftd3 wheel: numpy and cffi, no torch)"


def d3_parameter_set(functional: str | None) -> str:
    """dftd3's parameter-set name for an MLIP's ``functional`` label.

    Raises `BadInput` (field ``functional``) when the label is missing or not in
    `D3_FUNCTIONALS`: D3's damping parameters belong to a functional, and guessing one would
    put a wrong correction on every run.
    """
    if functional is None or not functional.strip():
        raise BadInput(
            "D3 dispersion needs the functional of the MLIP's training data "
            f"(one of: {', '.join(D3_FUNCTIONALS)}); register the MLIP with --functional",
            field="functional",
        )
    key = "".join(functional.split()).lower()
    if key not in D3_FUNCTIONALS:
        raise BadInput(
            f"no D3 parameters for functional {functional!r} "
            f"(known: {', '.join(D3_FUNCTIONALS)}; case-insensitive)",
            field="functional",
        )
    return D3_FUNCTIONALS[key]


def _check_damping(damping: str) -> str:
    if damping not in DAMPINGS:
        raise BadInput(
            f"unknown D3 damping {damping!r} (known: {', '.join(DAMPINGS)})", field="damping"
        )
    return damping


def _import_dftd3_ase() -> Any:
    try:
        from dftd3 import ase as dftd3_ase
    except ImportError as err:
        raise Failure(
            f"D3 dispersion needs the dftd3 package, which this interpreter cannot import "
            f"({err}); install it: {_INSTALL_HINT}"
        ) from err
    return dftd3_ase


def dispersion_calculator(functional: str | None, *, damping: str = "d3bj") -> Calculator:
    """The D3 calculator alone (energy, free_energy, forces, stress) for ``functional``.

    Raises `BadInput` for a missing or unknown functional (field ``functional``) or damping,
    and `Failure` with the install hint when dftd3 is not importable.
    """
    method = d3_parameter_set(functional)
    _check_damping(damping)
    dftd3_ase = _import_dftd3_ase()
    calc: Calculator = dftd3_ase.DFTD3(
        method=method,
        damping=damping,
        realspace_cutoff={
            "disp2": CUTOFF_DISP2_BOHR * Bohr,
            "width2": CUTOFF_DISP2_WIDTH_BOHR * Bohr,
            "cn": CUTOFF_CN_BOHR * Bohr,
        },
    )
    return calc


def _check_dispersion(dispersion: str) -> str:
    if dispersion not in DISPERSIONS:
        raise BadInput(
            f"must be one of {', '.join(DISPERSIONS)}, not {dispersion!r}", field="dispersion"
        )
    return dispersion


def check_dispersion(dispersion: str, functional: str | None) -> None:
    """Raise what `with_dispersion` would raise for these settings, without a calculator:
    `BadInput` for an unknown dispersion or, with D3, a missing or unknown functional;
    `Failure` when dftd3 is not importable."""
    if _check_dispersion(dispersion) == "d3":
        d3_parameter_set(functional)
        _import_dftd3_ase()


class DispersionCorrected(Calculator):
    """An MLIP's calculator plus a dispersion calculator: energies, forces, stresses summed.

    Not ASE's SumCalculator: that one offers only the properties common to both calculators,
    which drops ``free_energy`` (dftd3 does not list it), and it keeps a copy of every
    contribution in ``results``. Here every evaluation computes energy, free energy and
    forces, plus the stress for a 3D-periodic cell, whatever was asked: the MD runner reads the
    pressure from ``results`` after asking only for forces, as the MLIP calculators allow.
    """

    def __init__(self, mlip: Calculator, dispersion: Calculator) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.implemented_properties = ["energy", "free_energy", "forces", "stress"]
        self.mlip = mlip
        self.dispersion = dispersion

    def calculate(
        self,
        atoms: Any = None,
        properties: Sequence[str] | None = None,
        system_changes: Sequence[str] = tuple(all_changes),
    ) -> None:
        properties = list(properties or ["energy"])
        super().calculate(atoms, properties, system_changes)  # type: ignore[no-untyped-call]
        current = self.atoms  # the copy that Calculator.calculate keeps for its cache
        assert current is not None
        periodic = bool(current.pbc.all())
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress needs a cell periodic in 3 dimensions")
        # Forces first: each calculator then computes everything in one evaluation and
        # answers the other properties from its cache.
        names = ["forces", "energy", *(["stress"] if periodic else [])]
        parts = [
            {n: c.get_property(n, current) for n in names} for c in (self.mlip, self.dispersion)
        ]
        mlip, disp = parts
        free = self.mlip.results.get("free_energy", mlip["energy"])
        self.results = {
            "energy": float(mlip["energy"] + disp["energy"]),
            "free_energy": float(free + disp["energy"]),
            "forces": np.asarray(mlip["forces"]) + np.asarray(disp["forces"]),
        }
        if periodic:
            self.results["stress"] = _voigt(mlip["stress"]) + _voigt(disp["stress"])

    def __str__(self) -> str:
        return f"{type(self.mlip).__name__} + {type(self.dispersion).__name__}"


def _voigt(stress: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
    s = np.asarray(stress, dtype=float)
    out: np.ndarray[Any, np.dtype[np.float64]] = (
        full_3x3_to_voigt_6_stress(s) if s.shape == (3, 3) else s.reshape(6)
    )
    return out


def with_dispersion(calc: Calculator, dispersion: str, functional: str | None) -> Calculator:
    """``calc`` itself for ``dispersion="none"``; for ``"d3"``, ``calc`` plus D3(BJ) with the
    parameters of ``functional`` (a `DispersionCorrected`).

    Raises `BadInput` for an unknown ``dispersion`` (field ``dispersion``) or, with D3, a
    missing or unknown ``functional``; `Failure` when dftd3 is not importable.
    """
    if _check_dispersion(dispersion) == "none":
        return calc
    return DispersionCorrected(calc, dispersion_calculator(functional))


def _table_parameters(method: str) -> dict[str, Any]:
    """The D3(BJ) parameters of ``method`` from the parameters.toml inside the dftd3 wheel.

    Read with the standard library: dftd3.parameters wants tomli, tomlkit or toml, which the
    DeePMD and GRACE environments do not have.
    """
    import tomllib
    from importlib import resources

    table = tomllib.loads(
        resources.files("dftd3").joinpath("parameters.toml").read_text(encoding="utf-8")
    )
    params = {
        **table["default"]["parameter"]["d3"]["bj"],
        **table["parameter"][method]["d3"]["bj"],
    }
    return {k: v for k, v in params.items() if k not in ("damping", "doi", "mbd")}


def dispersion_provenance(dispersion: str, functional: str | None) -> dict[str, str]:
    """What a run with this dispersion setting depends on, to merge into its software
    provenance: package and version, damping, parameter set and its values, three-body term,
    cutoffs. Empty for ``"none"`` (runs without dispersion record what they always did).

    Reads metadata and the parameter table in dftd3's wheel (no evaluation, no TOML package);
    raises as `with_dispersion` does.
    """
    if _check_dispersion(dispersion) == "none":
        return {}
    method = d3_parameter_set(functional)
    try:
        version = metadata.version("dftd3")
    except metadata.PackageNotFoundError as err:
        raise Failure(f"D3 dispersion needs the dftd3 package ({err}); {_INSTALL_HINT}") from err
    params = _table_parameters(method)
    # The table's default s9 = 1 is not what runs: see THREE_BODY.
    params["s9"] = 1.0 if THREE_BODY else 0.0
    values = " ".join(f"{k}={params[k]}" for k in ("s6", "s8", "a1", "a2", "s9"))
    return {
        "dispersion": "d3",
        "dftd3": version,
        "d3.damping": "d3bj (rational, Becke-Johnson)",
        "d3.functional": f"{method} (MLIP functional {functional!r})",
        "d3.parameters": values,
        "d3.three_body": "on" if THREE_BODY else "off",
        "d3.cutoff_disp2": (
            f"{CUTOFF_DISP2_BOHR:g} bohr ({CUTOFF_DISP2_BOHR * Bohr:.2f} A), "
            f"smooth over {CUTOFF_DISP2_WIDTH_BOHR:g} bohr"
        ),
        "d3.cutoff_cn": f"{CUTOFF_CN_BOHR:g} bohr ({CUTOFF_CN_BOHR * Bohr:.2f} A)",
    }
