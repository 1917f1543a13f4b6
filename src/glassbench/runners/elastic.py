"""Elastic constants and isotropic moduli from stress-strain finite differences.

Method (recorded in every result): first the reference. With ``relax_cell`` (the default) its
cell and positions are relaxed together at the target pressure P (ASE's FrechetCellFilter,
enthalpy E + PV), so that its stress is -P (isotropic) up to the optimiser's tolerance; without
it only the positions are relaxed, in the cell given (an MD cell carries the thermal and
residual stress of its run). Then the cell is deformed by F = I + eps for each of the six
Voigt strain components at +strain and -strain (shear strains are engineering strains,
gamma = 2 eps_ij), atoms follow affinely and are then relaxed at fixed cell (or, with ``md``,
the stress is time-averaged over an NVT run at each strain). The stiffness column j is the
central difference C[:, j] = (sigma(+) - sigma(-)) / (2 strain) of the Voigt stress (ASE sign
convention: tensile positive, so C is positive definite for a stable solid), symmetrised.
Only stress differences enter, so the reference stress -P cancels; at P != 0 the result is the
stress-strain coefficients B = C - P (d_ik d_jl + d_il d_jk - d_ij d_kl) (Wallace), the ones
that give K = -V dP/dV, sound speeds and the stability criteria under pressure.
Voigt and Reuss bounds of the bulk and shear moduli, their Hill average, Young's modulus
E = 9KG / (3K + G) and Poisson's ratio nu = (3K - 2G) / (2 (3K + G)) follow (GPa).

Uncertainty of each modulus (one standard uncertainty, combined in quadrature):
- ``bounds``: half the Voigt-Reuss spread. A glass is isotropic only on average; in a finite
  cell the spread measures the residual anisotropy (zero for an isotropic C).
- ``nonlinearity``: half the difference between moduli from the forward (+strain vs
  unstrained) and backward (unstrained vs -strain) one-sided differences; an upper bound of
  the finite-strain bias of the central difference.
- ``md``: only with ``md``: the standard error of the time-averaged stresses (block
  averages), propagated to the moduli by a seeded Monte Carlo over C.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

_OPTIMIZERS = ("FIRE", "BFGS", "LBFGS")


@dataclass(frozen=True)
class ElasticMD:
    """Finite-temperature variant: time-average the stress over NVT Langevin MD per strain."""

    temperature_k: float = 300.0
    timestep_fs: float = 1.0
    equilibration_steps: int = 200
    production_steps: int = 1000
    sample_every: int = 5
    friction_per_fs: float = 0.01
    n_blocks: int = 5
    seed: int = 0


@dataclass(frozen=True)
class Moduli:
    """Isotropic moduli (GPa) from one stiffness matrix."""

    bulk_voigt: float
    bulk_reuss: float
    shear_voigt: float
    shear_reuss: float
    bulk: float
    shear: float
    young: float
    poisson: float


@dataclass(frozen=True)
class ElasticResult:
    """Elastic constants (GPa), Hill moduli with uncertainties, and how they were obtained."""

    c_gpa: FloatArray
    bulk_modulus_gpa: float
    shear_modulus_gpa: float
    young_modulus_gpa: float
    poisson_ratio: float
    bulk_modulus_stderr_gpa: float
    shear_modulus_stderr_gpa: float
    young_modulus_stderr_gpa: float
    poisson_ratio_stderr: float
    bulk_voigt_gpa: float
    bulk_reuss_gpa: float
    shear_voigt_gpa: float
    shear_reuss_gpa: float
    method: str
    strain: float
    strains: tuple[tuple[int, float], ...]
    relax_positions: bool
    fmax: float
    converged: bool
    n_atoms: int
    uncertainty_components: dict[str, dict[str, float]] = field(default_factory=dict)
    md: dict[str, Any] | None = None
    # Defaults describe results stored before the cell was relaxed, so their JSON still loads.
    relax_cell: bool = False
    pressure_gpa: float = 0.0
    reference_stress_gpa: tuple[float, ...] = ()
    reference_volume_a3: float | None = None

    def moduli(self) -> dict[str, tuple[float, float]]:
        """{property name: (value, standard uncertainty)}, names as in the property table."""
        return {
            "bulk_modulus_gpa": (self.bulk_modulus_gpa, self.bulk_modulus_stderr_gpa),
            "shear_modulus_gpa": (self.shear_modulus_gpa, self.shear_modulus_stderr_gpa),
            "young_modulus_gpa": (self.young_modulus_gpa, self.young_modulus_stderr_gpa),
            "poisson_ratio": (self.poisson_ratio, self.poisson_ratio_stderr),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the stiffness matrix as nested lists)."""
        out = asdict(self)
        out["c_gpa"] = np.asarray(self.c_gpa).tolist()
        out["strains"] = [list(s) for s in self.strains]
        out["reference_stress_gpa"] = list(self.reference_stress_gpa)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ElasticResult:
        """The result `to_dict` wrote, also from before a field existed (it takes its default)."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["c_gpa"] = np.asarray(d["c_gpa"], dtype=float)
        kw["strains"] = tuple((int(j), float(s)) for j, s in d["strains"])
        kw["reference_stress_gpa"] = tuple(float(v) for v in d.get("reference_stress_gpa", ()))
        return cls(**kw)


@dataclass(frozen=True)
class ElasticSettings:
    """How moduli are computed: the one recipe of the runner (``--elastic``) and of
    ``glassbench compute elastic`` (``glassbench.stored.elastic``).

    The defaults are the runner's (``MeltQuenchParams.elastic_*``). ``temperature_k`` None:
    static stresses; else the stress is averaged over NVT MD at that temperature, seeded by
    ``seed`` (the run's seed). Invalid values are ``BadInput`` on the field's name.
    """

    strain: float = 0.005
    fmax: float = 0.01
    max_steps: int = 300
    relax_positions: bool = True
    relax_cell: bool = True
    pressure_gpa: float = 0.0
    temperature_k: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        from glassbench.errors import BadInput

        if not 0 < self.strain < 0.1:
            raise BadInput(f"must be in (0, 0.1), not {self.strain:g}", field="strain")
        if not (self.fmax > 0 and math.isfinite(self.fmax)):
            raise BadInput(f"must be > 0 eV/A, not {self.fmax:g}", field="fmax")
        if self.max_steps < 1:
            raise BadInput(f"must be at least 1, not {self.max_steps}", field="max_steps")
        if not math.isfinite(self.pressure_gpa):
            raise BadInput("must be finite", field="pressure_gpa")
        if self.temperature_k is not None and not 0 < self.temperature_k < 5000:
            raise BadInput(
                f"must be in (0, 5000) K, not {self.temperature_k:g}", field="temperature_k"
            )

    def compute(self, atoms: Atoms, calc: Calculator) -> ElasticResult:
        """Moduli of ``atoms`` (not modified) with ``calc``.

        Only the structure counts: constraints and momenta of a live MD system are dropped,
        so a runner's final atoms and the same structure read back from the database give
        the same numbers.
        """
        clean = Atoms(
            numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc
        )
        md = None
        if self.temperature_k is not None:
            md = ElasticMD(temperature_k=self.temperature_k, seed=self.seed)
        return elastic_moduli(
            clean,
            calc,
            strain=self.strain,
            fmax=self.fmax,
            max_steps=self.max_steps,
            relax_positions=self.relax_positions,
            relax_cell=self.relax_cell,
            pressure_gpa=self.pressure_gpa,
            md=md,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def voigt_strain_matrix(component: int, magnitude: float) -> FloatArray:
    """Symmetric strain tensor for one Voigt component (0..5 = xx, yy, zz, yz, xz, xy).

    Shear components are engineering strains: gamma = magnitude = 2 eps_ij.
    """
    if not 0 <= component <= 5:
        raise ValueError(f"Voigt component must be 0..5, not {component}")
    eps = np.zeros((3, 3))
    if component < 3:
        eps[component, component] = magnitude
    else:
        i, j = {3: (1, 2), 4: (0, 2), 5: (0, 1)}[component]
        eps[i, j] = eps[j, i] = magnitude / 2.0
    return eps


def moduli_from_stiffness(c: FloatArray) -> Moduli:
    """Voigt, Reuss and Hill bulk / shear moduli, Young's modulus and Poisson ratio.

    Units follow ``c``. Reuss bounds are NaN when C is singular.
    """
    c = np.asarray(c, dtype=float)
    kv = (c[0, 0] + c[1, 1] + c[2, 2] + 2.0 * (c[0, 1] + c[1, 2] + c[0, 2])) / 9.0
    gv = (
        c[0, 0]
        + c[1, 1]
        + c[2, 2]
        - (c[0, 1] + c[1, 2] + c[0, 2])
        + 3.0 * (c[3, 3] + c[4, 4] + c[5, 5])
    ) / 15.0
    try:
        s = np.linalg.inv(c)
        kr = 1.0 / (s[0, 0] + s[1, 1] + s[2, 2] + 2.0 * (s[0, 1] + s[1, 2] + s[0, 2]))
        gr = 15.0 / (
            4.0 * (s[0, 0] + s[1, 1] + s[2, 2])
            - 4.0 * (s[0, 1] + s[1, 2] + s[0, 2])
            + 3.0 * (s[3, 3] + s[4, 4] + s[5, 5])
        )
    except np.linalg.LinAlgError:
        kr = gr = math.nan
    k = 0.5 * (kv + kr)
    g = 0.5 * (gv + gr)
    young, poisson = _young_poisson(k, g)
    return Moduli(kv, kr, gv, gr, k, g, young, poisson)


def _young_poisson(k: float, g: float) -> tuple[float, float]:
    denom = 3.0 * k + g
    if denom == 0:
        return math.nan, math.nan
    return 9.0 * k * g / denom, (3.0 * k - 2.0 * g) / (2.0 * denom)


def _relax(atoms: Atoms, fmax: float, max_steps: int, optimizer: str) -> bool:
    from ase import optimize

    opt = getattr(optimize, optimizer)(atoms, logfile=None)
    return bool(opt.run(fmax=fmax, steps=max_steps))


def _relax_cell(
    atoms: Atoms,
    pressure_gpa: float,
    fmax: float,
    max_steps: int,
    optimizer: str,
    *,
    positions: bool,
) -> bool:
    """Relax the cell (and the positions when ``positions``) at ``pressure_gpa``; converged?"""
    from ase import optimize
    from ase.constraints import FixAtoms
    from ase.filters import FrechetCellFilter

    saved = list(atoms.constraints)
    if not positions:
        # The filter scales fixed atoms with the cell: they stay at their fractional positions.
        atoms.set_constraint([*saved, FixAtoms(indices=list(range(len(atoms))))])
    try:
        cell_filter = FrechetCellFilter(atoms, scalar_pressure=pressure_gpa * units.GPa)
        opt = getattr(optimize, optimizer)(cell_filter, logfile=None)
        return bool(opt.run(fmax=fmax, steps=max_steps))
    finally:
        atoms.set_constraint(saved)


def _md_stress(atoms: Atoms, md: ElasticMD, seed: int) -> tuple[FloatArray, FloatArray]:
    """Time-averaged Voigt stress (eV/A^3) and its standard error from block averages."""
    from ase.md import velocitydistribution
    from ase.md.langevin import Langevin

    rng = np.random.default_rng(seed)
    # ase >= 3.29 deprecates MaxwellBoltzmannDistribution for thermalize_momenta.
    thermalize = getattr(velocitydistribution, "thermalize_momenta", None)
    if thermalize is not None:
        thermalize(atoms, md.temperature_k, rng=rng)
    else:
        velocitydistribution.MaxwellBoltzmannDistribution(
            atoms, temperature_K=md.temperature_k, rng=rng
        )
    velocitydistribution.Stationary(atoms)
    dyn = Langevin(
        atoms,
        timestep=md.timestep_fs * units.fs,
        temperature_K=md.temperature_k,
        friction=md.friction_per_fs / units.fs,
        # fixcm=True is deprecated (biased NVT sampling); the drift it would remove only
        # adds a negligible kinetic term to the stress.
        fixcm=False,
        rng=rng,
    )
    dyn.run(md.equilibration_steps)
    samples = []
    for _ in range(max(1, md.production_steps // md.sample_every)):
        dyn.run(md.sample_every)
        # The kinetic term belongs to the stress at temperature (it changes with volume).
        samples.append(atoms.get_stress(voigt=True, include_ideal_gas=True))
    arr = np.asarray(samples)
    n_blocks = max(2, min(md.n_blocks, len(arr)))
    blocks = np.array([b.mean(axis=0) for b in np.array_split(arr, n_blocks)])
    return arr.mean(axis=0), blocks.std(axis=0, ddof=1) / math.sqrt(n_blocks)


def elastic_moduli(
    atoms: Atoms,
    calc: Calculator,
    *,
    strain: float = 0.005,
    relax_positions: bool = True,
    fmax: float = 1e-3,
    max_steps: int = 2000,
    optimizer: str = "FIRE",
    md: ElasticMD | None = None,
    relax_cell: bool = True,
    pressure_gpa: float = 0.0,
) -> ElasticResult:
    """Elastic constants and isotropic moduli of ``atoms`` with ``calc`` (see module doc).

    ``atoms`` is not modified. With ``relax_cell`` the reference's cell is first relaxed at
    ``pressure_gpa`` (recorded either way, used only here), together with its positions when
    ``relax_positions`` (else the atoms keep their fractional positions); without it,
    positions are relaxed at fixed cell when ``relax_positions``. Positions are relaxed again at each strain when
    ``relax_positions``. Every relaxation uses ``optimizer`` (FIRE, BFGS or LBFGS), at most
    ``max_steps`` steps and ``fmax`` (eV/A); for the cell this bounds each residual stress
    component |sigma_ij + P delta_ij| by about fmax * N / V (FrechetCellFilter's cell force
    is the virial over the number of atoms N). With ``md`` the stress at each strain (and of
    the reference) is a time average over NVT MD instead of a static value; the reference
    cell is still relaxed statically, so its mean stress also holds the thermal pressure.
    """
    if not 0 < strain < 0.1:
        raise ValueError(f"strain must be in (0, 0.1), not {strain}")
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, not {optimizer!r}")
    if not atoms.pbc.all():
        raise ValueError("elastic constants need a cell periodic in all three directions")
    if not math.isfinite(pressure_gpa):
        raise ValueError(f"pressure_gpa must be finite, not {pressure_gpa}")

    ref = atoms.copy()
    ref.calc = calc
    converged = True
    if relax_cell:
        converged &= _relax_cell(
            ref, pressure_gpa, fmax, max_steps, optimizer, positions=relax_positions
        )
    elif relax_positions:
        converged &= _relax(ref, fmax, max_steps, optimizer)
    cell0 = ref.cell.array.copy()
    pos0 = ref.get_positions()

    md_seed = 0 if md is None else md.seed

    def stress_at(eps: FloatArray, k: int) -> tuple[FloatArray, FloatArray, bool]:
        strained = ref.copy()
        strained.calc = calc
        deform = np.eye(3) + eps
        # Row-vector cells: new = old @ F^T; atoms follow the same affine map.
        strained.set_cell(cell0 @ deform.T, scale_atoms=False)
        strained.set_positions(pos0 @ deform.T)
        ok = True
        if relax_positions and k != 0:
            ok = _relax(strained, fmax, max_steps, optimizer)
        if md is None:
            return strained.get_stress(voigt=True), np.zeros(6), ok
        mean, err = _md_stress(strained, md, md_seed + k)
        return mean, err, ok

    # The reference stress enters only the one-sided (nonlinearity) estimates.
    s0, _, ok0 = stress_at(np.zeros((3, 3)), 0)
    converged &= ok0
    s_plus = np.zeros((6, 6))
    s_minus = np.zeros((6, 6))
    e_plus = np.zeros((6, 6))
    e_minus = np.zeros((6, 6))
    strains: list[tuple[int, float]] = []
    for j in range(6):
        for sign, s_out, e_out in ((1.0, s_plus, e_plus), (-1.0, s_minus, e_minus)):
            s, e, ok = stress_at(voigt_strain_matrix(j, sign * strain), 1 + 2 * j + (sign < 0))
            converged &= ok
            s_out[:, j] = s
            e_out[:, j] = e
            strains.append((j, sign * strain))

    to_gpa = 1.0 / units.GPa

    def sym(m: FloatArray) -> FloatArray:
        return 0.5 * (m + m.T)

    c = sym((s_plus - s_minus) / (2.0 * strain)) * to_gpa
    c_fwd = sym((s_plus - s0[:, None]) / strain) * to_gpa
    c_bwd = sym((s0[:, None] - s_minus) / strain) * to_gpa

    central = moduli_from_stiffness(c)
    fwd = moduli_from_stiffness(c_fwd)
    bwd = moduli_from_stiffness(c_bwd)
    ev, gv = central.bulk_voigt, central.shear_voigt
    er, gr = central.bulk_reuss, central.shear_reuss
    yv, pv = _young_poisson(ev, gv)
    yr, pr = _young_poisson(er, gr)

    names = ("bulk", "shear", "young", "poisson")
    bounds = {
        "bulk": abs(ev - er) / 2,
        "shear": abs(gv - gr) / 2,
        "young": abs(yv - yr) / 2,
        "poisson": abs(pv - pr) / 2,
    }
    nonlin = {n: abs(getattr(fwd, n) - getattr(bwd, n)) / 2 for n in names}
    components: dict[str, dict[str, float]] = {"bounds": bounds, "nonlinearity": nonlin}
    if md is not None:
        # C_ij error from the two stresses of its column; Monte Carlo over C to the moduli.
        c_err = np.sqrt(e_plus**2 + e_minus**2) / (2.0 * strain) * to_gpa
        c_err = 0.5 * np.sqrt(c_err**2 + c_err.T**2)
        mc_rng = np.random.default_rng(md.seed)
        draws = []
        for _ in range(200):
            noise = mc_rng.normal(size=(6, 6)) * c_err
            m = moduli_from_stiffness(c + 0.5 * (noise + noise.T))
            draws.append([getattr(m, n) for n in names])
        spread = np.nanstd(np.asarray(draws), axis=0, ddof=1)
        components["md"] = {n: float(v) for n, v in zip(names, spread, strict=True)}
    total = {n: float(math.sqrt(sum(comp[n] ** 2 for comp in components.values()))) for n in names}

    relax_txt = (
        f"positions relaxed at fixed cell ({optimizer}, fmax={fmax:g} eV/A)"
        if relax_positions
        else "affine (unrelaxed) positions"
    )
    if relax_cell:
        moved = "cell and positions" if relax_positions else "cell (fractional positions kept)"
        relax_txt = (
            f"reference {moved} relaxed at {pressure_gpa:g} GPa (FrechetCellFilter, "
            f"{optimizer}, fmax={fmax:g} eV/A), {relax_txt}"
        )
    stress_txt = (
        "static stress"
        if md is None
        else f"stress averaged over NVT Langevin MD at {md.temperature_k:g} K"
    )
    method = (
        f"stress-strain: central differences over +/-{strain:g} for the 6 Voigt strains, "
        f"{relax_txt}, {stress_txt}; Voigt-Reuss-Hill averages"
    )
    return ElasticResult(
        c_gpa=c,
        bulk_modulus_gpa=float(central.bulk),
        shear_modulus_gpa=float(central.shear),
        young_modulus_gpa=float(central.young),
        poisson_ratio=float(central.poisson),
        bulk_modulus_stderr_gpa=total["bulk"],
        shear_modulus_stderr_gpa=total["shear"],
        young_modulus_stderr_gpa=total["young"],
        poisson_ratio_stderr=total["poisson"],
        bulk_voigt_gpa=float(ev),
        bulk_reuss_gpa=float(er),
        shear_voigt_gpa=float(gv),
        shear_reuss_gpa=float(gr),
        method=method,
        strain=float(strain),
        strains=tuple(strains),
        relax_positions=relax_positions,
        fmax=float(fmax),
        converged=bool(converged),
        n_atoms=len(atoms),
        uncertainty_components={
            k: {n: float(v) for n, v in d.items()} for k, d in components.items()
        },
        md=None if md is None else asdict(md),
        relax_cell=relax_cell,
        pressure_gpa=float(pressure_gpa),
        reference_stress_gpa=tuple(float(v) for v in s0 * to_gpa),
        reference_volume_a3=float(ref.get_volume()),
    )
