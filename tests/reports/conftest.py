"""A small SYNTHETIC results database built through the real ingest path.

Every number here is synthetic and exists only to test the arithmetic of the reports: the
"experimental" CSV is labelled SYNTHETIC in its source column, the structures are random
(P2S7-type dimers for one MLIP, random atoms for the other), and Young's moduli are made up.

Runs are ingested with ``glassbench ingest traj`` (frames -> analysis -> speciation, thermo ->
density), experiments with ``glassbench ingest experiment``, moduli and crystal volumes with
the service repositories inside a unit of work. ``Expected`` holds what each run's values must
be, computed here from the structures themselves (masses / cell volume, ``analyze_frame``), so
tests can check the report against an independent computation.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from glassbench.chemistry import MASSES_AMU

SYNTHETIC_SOURCE = "SYNTHETIC test values (not a measurement)"
MLIP_DIMERS = "SYNTH-MLIP-A"
MLIP_RANDOM = "SYNTH-MLIP-B"
MLIP_NO_RUNS = "SYNTH-MLIP-NORUNS"
FORMULA_UNITS = 4
STEPS = (100, 200, 300)
TEMPERATURES = (1500.0, 900.0, 300.0)
AMU_A3_TO_G_CM3 = 1.66053906660

# (mlip, x, quench rate, seed); x = 2 has no experiment; MLIP A also has a second quench rate.
RUNS: tuple[tuple[str, float, float, int], ...] = tuple(
    [(m, x, 1.0, s) for m in (MLIP_DIMERS, MLIP_RANDOM) for x in (0.0, 1.0, 2.0) for s in (1, 2)]
    + [(MLIP_DIMERS, 0.0, 5.0, 1)]
)

# SYNTHETIC reference values: (x, property, value, uncertainty, source suffix).
EXPERIMENT_ROWS: tuple[tuple[float, str, float, float | None, str], ...] = (
    (0.0, "density_g_cm3", 1.45, 0.01, ""),
    (1.0, "density_g_cm3", 1.52, 0.01, ""),
    (1.0, "density_g_cm3", 1.56, None, " #2"),  # two sources: averaged
    (0.0, "young_modulus_gpa", 18.0, 0.5, ""),
    (1.0, "young_modulus_gpa", 21.0, 0.5, ""),
    (0.0, "p1_incl_p1p", 0.80, 0.02, ""),
    (1.0, "p1_incl_p1p", 0.70, 0.02, ""),
    (0.0, "p0", 0.10, 0.02, ""),
    (1.0, "p2", 0.15, 0.02, ""),
    (0.0, "bs", 0.12, None, ""),
    (1.0, "bs", 0.10, None, ""),
    (0.0, "nbs", 0.60, None, ""),
    (1.0, "nbo", 0.09, None, ""),
)
CRYSTAL_ROWS = (("Na3PS4", "volume_per_formula_unit_a3", 150.0, None, ""),)
CRYSTAL_VOLUMES = {(MLIP_DIMERS, "Na3PS4"): 153.0, (MLIP_RANDOM, "Na3PS4"): 146.0}

P_CLASSES = ("P0", "P1", "P2", "P3", "P4", "P1P", "P3c", "P_other")
ANIONS = ("BS", "NBS", "BO", "NBO", "free_S", "free_O", "over_S", "over_O")


@dataclass
class Expected:
    """Per run (mlip, x, q, seed): property -> value, computed from the structures."""

    runs: dict[tuple[str, float, float, int], dict[str, float]] = field(default_factory=dict)
    experiment: dict[tuple[float, str], float] = field(default_factory=dict)
    crystal_experiment: dict[str, float] = field(default_factory=dict)
    run_ids: dict[tuple[str, float, float, int], int] = field(default_factory=dict)


def _density(numbers: np.ndarray, cell: np.ndarray) -> float:
    sym = {11: "Na", 15: "P", 16: "S", 8: "O"}
    mass = sum(MASSES_AMU[sym[int(z)]] for z in numbers)
    return mass * AMU_A3_TO_G_CM3 / abs(float(np.linalg.det(cell)))


def _fractions(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray) -> dict[str, float]:
    from glassbench.analysis import analyze_frame

    c = analyze_frame(numbers, positions, cell, True).unit_counts()
    n_p = sum(c[u] for u in P_CLASSES)
    n_a = sum(c[u] for u in ANIONS)
    out: dict[str, float] = {}
    for name, units, total in (
        ("p0", ("P0",), n_p),
        ("p1_incl_p1p", ("P1", "P1P"), n_p),
        ("p2", ("P2",), n_p),
        ("p3c", ("P3c",), n_p),
        ("bs", ("BS",), n_a),
        ("nbs", ("NBS",), n_a),
        ("nbo", ("NBO",), n_a),
    ):
        if total:
            out[name] = sum(c[u] for u in units) / total
    return out


def _structure(mlip: str, x: float, density: float, seed: int) -> Any:
    """ASE Atoms of one frame: dimers for MLIP A, random atoms for MLIP B."""
    from ase import Atoms

    if mlip == MLIP_DIMERS:
        from glassbench.testing.synthetic import dimer_glass

        f = dimer_glass(x, FORMULA_UNITS, density_g_cm3=density, seed=seed)
        # Same atom order in every frame of a run, as the ingest requires.
        order = np.argsort(f.numbers, kind="stable")
        return Atoms(numbers=f.numbers[order], positions=f.positions[order], cell=f.cell, pbc=True)
    from glassbench.runners.structure import random_glass

    return random_glass(x, FORMULA_UNITS, seed, density_g_cm3=density)


def write_traj(path: Path, mlip: str, x: float, q: float, seed: int) -> tuple[float, dict]:
    """Three frames of one run as extxyz; returns (density, final-frame fractions)."""
    import ase.io

    m = 0 if mlip == MLIP_DIMERS else 1
    density = 1.30 + 0.04 * seed + 0.05 * x + 0.03 * m + (0.02 if q > 1 else 0.0)
    images = []
    for i, (step, temp) in enumerate(zip(STEPS, TEMPERATURES, strict=True)):
        atoms = _structure(mlip, x, density, 1000 * seed + 100 * int(q) + 10 * int(2 * x) + i)
        atoms.info["step"] = step
        atoms.info["temperature_k"] = temp
        images.append(atoms)
    ase.io.write(path, images, format="extxyz")
    last = images[-1]
    return (
        _density(last.numbers, np.asarray(last.cell)),
        _fractions(last.numbers, last.positions, np.asarray(last.cell)),
    )


def young(mlip: str, x: float, q: float, seed: int) -> float:
    """SYNTHETIC Young's modulus in GPa."""
    return 17.0 + 3.5 * x + 0.7 * seed + (1.5 if mlip == MLIP_RANDOM else 0.0) + 0.3 * q


def write_experiment_csv(path: Path, rows: Any = EXPERIMENT_ROWS) -> Path:
    lines = ["x,property,value,uncertainty,source"]
    for x, prop, value, unc, suffix in rows:
        lines.append(
            f'{x:g},{prop},{value!r},{"" if unc is None else unc},"{SYNTHETIC_SOURCE}{suffix}"'
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def populate(gb: Any, engine: Any, tmp_path: Path, *, experiment: bool = True) -> Expected:
    """Fill the database through the ingest commands and the repositories."""
    from glassbench.service.db import unit_of_work
    from glassbench.service.repos import get_mlip, set_crystal_volume, set_property

    exp = Expected()
    for name in (MLIP_DIMERS, MLIP_RANDOM, MLIP_NO_RUNS):
        gb.ok("mlip", "add", name, "--arch", "chgnet")
    files = tmp_path / "traj"
    files.mkdir()
    for key in RUNS:
        mlip, x, q, seed = key
        path = files / f"{mlip}_{x:g}_{q:g}_{seed}.extxyz"
        density, fractions = write_traj(path, mlip, x, q, seed)
        gb.ok(
            "ingest",
            "traj",
            str(path),
            "--mlip",
            mlip,
            "--x",
            f"{x:g}",
            "--quench-rate",
            f"{q:g}",
            "--seed",
            str(seed),
            "--stage",
            "quench",
        )
        exp.runs[key] = {"density_g_cm3": density, **fractions, "young_modulus_gpa": young(*key)}
    with engine.connect() as c:
        for key in RUNS:
            mlip, x, q, seed = key
            exp.run_ids[key] = c.execute(
                sa.text(
                    "SELECT r.id FROM run r JOIN mlip m ON m.id = r.mlip_id "
                    "JOIN composition c ON c.id = r.composition_id "
                    "WHERE m.name = :m AND c.x = :x AND r.quench_rate_k_ps = :q AND r.seed = :s"
                ),
                {"m": mlip, "x": x, "q": q, "s": seed},
            ).scalar_one()
    with unit_of_work(engine) as session:
        for key, rid in exp.run_ids.items():
            set_property(session, rid, "young_modulus_gpa", young(*key), method="SYNTHETIC")
        for (mlip, crystal), vol in CRYSTAL_VOLUMES.items():
            mid = get_mlip(session, mlip).id
            set_crystal_volume(
                session,
                {
                    "mlip_id": mid,
                    "crystal": crystal,
                    "volume_per_fu_a3": vol,
                    "exp_volume_per_fu_a3": None,
                    "deviation_pct": None,
                },
            )
    if experiment:
        gb.ok("ingest", "experiment", str(write_experiment_csv(tmp_path / "exp.csv")))
        crystal_csv = tmp_path / "crystal.csv"
        crystal_csv.write_text(
            "crystal,property,value,uncertainty,source\n"
            + "".join(f'{c},{p},{v!r},,"{SYNTHETIC_SOURCE}"\n' for c, p, v, _, _ in CRYSTAL_ROWS)
        )
        gb.ok("ingest", "experiment", str(crystal_csv))
        by_key: dict[tuple[float, str], list[float]] = defaultdict(list)
        for x, prop, value, _, _ in EXPERIMENT_ROWS:
            by_key[(x, prop)].append(value)
        exp.experiment = {k: statistics.fmean(v) for k, v in by_key.items()}
        exp.crystal_experiment = {c: v for c, _, v, _, _ in CRYSTAL_ROWS}
    return exp


def independent_mae(exp: Expected) -> dict[tuple[str, str], tuple[int, float, float]]:
    """(mlip, property) -> (n, MAE, mean signed error), in plain Python.

    Seeds are averaged per (mlip, x, quench rate) first; experiments per (x, property) were
    averaged over sources in ``populate``.
    """
    seeds: dict[tuple[str, float, float, str], list[float]] = defaultdict(list)
    for (mlip, x, q, _seed), values in exp.runs.items():
        for prop, v in values.items():
            seeds[(mlip, x, q, prop)].append(v)
    errors: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (mlip, x, _q, prop), vals in seeds.items():
        ref = exp.experiment.get((x, prop))
        if ref is not None:
            errors[(mlip, prop)].append(statistics.fmean(vals) - ref)
    for (mlip, crystal), vol in CRYSTAL_VOLUMES.items():
        if crystal in exp.crystal_experiment:
            errors[(mlip, "volume_per_formula_unit_a3")].append(
                vol - exp.crystal_experiment[crystal]
            )
    return {
        k: (len(e), statistics.fmean(abs(v) for v in e), statistics.fmean(e))
        for k, e in errors.items()
    }


@pytest.fixture
def populated(gb: Any, engine: Any, tmp_path: Path) -> Expected:
    return populate(gb, engine, tmp_path)


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)


@pytest.fixture
def sqlite_gb(sqlite_url: str) -> Iterator[tuple[Any, Any]]:
    """(CLI runner, engine) on a migrated SQLite database, for tests that need one engine."""
    from glassbench.service.db import make_engine
    from glassbench.service.migrations import upgrade
    from tests.conftest import Cli

    eng = make_engine(sqlite_url)
    upgrade(eng)
    yield Cli(sqlite_url), eng
    eng.dispose()
