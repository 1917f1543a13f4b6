"""A small SYNTHETIC results database built through the real ingest path.

Every number here is synthetic and exists only to test the arithmetic of the reports: the
"experimental" CSV is labelled SYNTHETIC in its source column, the structures are random
(P2S7-type dimers for one MLIP, random atoms for the other), and Young's moduli are made up.

Runs are ingested with ``glassbench ingest traj`` (frames -> analysis -> speciation, thermo ->
density; the runs of a D3 protocol through ``glassbench.api.ingest_traj``, which that command
calls, since only the API takes a protocol), experiments with ``glassbench ingest experiment``,
moduli and crystal volumes with the service repositories inside a unit of work. ``Expected``
holds what each run's values must be, computed here from the structures themselves (masses /
cell volume, the unit counts of ``analyze_frame``, the Na-S share by brute force), so tests can
check the report against an independent computation.
"""

from __future__ import annotations

import json
import math
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

# A run: (mlip, x, quench rate, seed, dispersion). "none": the file-ingest protocol
# ({"source": "traj"}) of an MLIP registered without dispersion; "d3": the same files' protocol
# with {"dispersion": "d3"} added (ingested through glassbench.api with that protocol).
RunTuple = tuple[str, float, float, int, str]

# x = 2 has no experiment. MLIP A at x = 0 has three quench rates (0.5, 1, 5: extrapolated)
# and D3 runs at two rates (the dispersion x rate section); MLIP B has three seeds at x = 1.
RUNS: tuple[tuple[str, float, float, int], ...] = tuple(
    [(m, x, 1.0, s) for m in (MLIP_DIMERS, MLIP_RANDOM) for x in (0.0, 1.0, 2.0) for s in (1, 2)]
    + [(MLIP_DIMERS, 0.0, 5.0, 1), (MLIP_DIMERS, 0.0, 5.0, 2)]
    + [(MLIP_DIMERS, 0.0, 0.5, 1), (MLIP_DIMERS, 0.0, 0.5, 2)]
    + [(MLIP_RANDOM, 1.0, 1.0, 3)]
)
D3_RUNS: tuple[tuple[str, float, float, int], ...] = (
    (MLIP_DIMERS, 0.0, 1.0, 1),
    (MLIP_DIMERS, 0.0, 5.0, 1),
)
D3_PROTOCOL = {"source": "traj", "dispersion": "d3"}
D3_DENSITY_SHIFT = 0.03  # SYNTHETIC: the D3 runs are made a little denser
ALL_RUNS: tuple[RunTuple, ...] = (
    *((*r, "none") for r in RUNS),
    *((*r, "d3") for r in D3_RUNS),
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

P_CLASSES = ("P0", "P1", "P2", "P3", "P4", "P1P", "PPend", "P3c", "P_other")
ANIONS = ("BS", "NBS", "BO", "NBO", "free_S", "free_O", "over_S", "over_O")
# Report column -> (units, denominator) for every fraction the report shows.
FRACTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "p0": (("P0",), "P"), "p1": (("P1",), "P"), "p1_incl_p1p": (("P1", "P1P"), "P"),
    "p2": (("P2",), "P"), "p3": (("P3",), "P"), "p4": (("P4",), "P"), "p1p": (("P1P",), "P"),
    "ppend": (("PPend",), "P"), "p3c": (("P3c",), "P"), "p_other": (("P_other",), "P"),
    "p2es": (("P2ES",), "P"), "ppchain": (("PPchain",), "P"),
    "bs": (("BS",), "A"), "nbs": (("NBS",), "A"), "bo": (("BO",), "A"), "nbo": (("NBO",), "A"),
    "free_s": (("free_S",), "A"), "free_o": (("free_O",), "A"), "over_s": (("over_S",), "A"),
    "over_o": (("over_O",), "A"),
}  # fmt: skip
NA_S_CUTOFF, NA_O_CUTOFF = 3.6, 3.1  # docs/speciation.md defaults


@dataclass
class Expected:
    """Per run (mlip, x, q, seed, dispersion): property -> value, from the structures."""

    runs: dict[RunTuple, dict[str, float]] = field(default_factory=dict)
    experiment: dict[tuple[float, str], float] = field(default_factory=dict)
    experiment_uncertainty: dict[tuple[float, str], float] = field(default_factory=dict)
    crystal_experiment: dict[str, float] = field(default_factory=dict)
    run_ids: dict[RunTuple, int] = field(default_factory=dict)
    files: dict[RunTuple, Path] = field(default_factory=dict)


def _density(numbers: np.ndarray, cell: np.ndarray) -> float:
    sym = {11: "Na", 15: "P", 16: "S", 8: "O"}
    mass = sum(MASSES_AMU[sym[int(z)]] for z in numbers)
    return mass * AMU_A3_TO_G_CM3 / abs(float(np.linalg.det(cell)))


def na_s_share_brute(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray) -> float | None:
    """Na-S contacts / (Na-S + Na-O contacts) by brute force: every Na-anion pair under the
    minimum image (the cells here are more than twice the cutoffs wide)."""
    frac = positions @ np.linalg.inv(cell)
    na = frac[numbers == 11]
    counts = []
    for z, cut in ((16, NA_S_CUTOFF), (8, NA_O_CUTOFF)):
        d = na[:, None, :] - frac[numbers == z][None, :, :]
        d -= np.round(d)
        r = np.linalg.norm(d @ cell, axis=-1)
        counts.append(int(np.count_nonzero(r <= cut)))
    total = sum(counts)
    return counts[0] / total if total else None


def frame_values(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray) -> dict[str, float]:
    """Every fraction and coordination quantity of one frame, as the report must show it.

    Fractions from the unit counts of ``analyze_frame`` (numerator / sum of the disjoint
    classes, as docs/speciation.md defines them); coordination and S-S chain quantities from its
    result; the Na-S share by brute force (:func:`na_s_share_brute`). Undefined values are
    left out (missing, as in the database).
    """
    from glassbench.analysis import analyze_frame

    a = analyze_frame(numbers, positions, cell, True)
    c = a.unit_counts()
    totals = {"P": sum(c[u] for u in P_CLASSES), "A": sum(c[u] for u in ANIONS)}
    out: dict[str, float] = {}
    for name, (units, denom) in FRACTIONS.items():
        if totals[denom]:
            out[name] = sum(c[u] for u in units) / totals[denom]
    if a.na.n:
        out.update(na_cn=a.na.cn_mean, na_cn_s=a.na.cn_S_mean, na_cn_o=a.na.cn_O_mean)
    optional = {
        "na_s_share": na_s_share_brute(numbers, positions, cell),
        "na_s_peak": a.na.peak_S,
        "na_o_peak": a.na.peak_O,
        "ss_fraction": a.ss.fraction,
        "ss_mean_length": a.ss.mean_length,
        "ss_long_share": a.ss.long_share,
    }
    out.update({k: float(v) for k, v in optional.items() if v is not None})
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


def write_traj(
    path: Path, mlip: str, x: float, q: float, seed: int, *, density_shift: float = 0.0
) -> tuple[float, dict]:
    """Three frames of one run as extxyz; returns (density, final-frame values)."""
    import ase.io

    m = 0 if mlip == MLIP_DIMERS else 1
    density = 1.30 + 0.04 * seed + 0.05 * x + 0.03 * m + (0.02 if q > 1 else 0.0)
    density += density_shift
    images = []
    for i, (step, temp) in enumerate(zip(STEPS, TEMPERATURES, strict=True)):
        structure_seed = 1000 * seed + 100 * int(q) + 10 * int(2 * x) + i
        atoms = _structure(mlip, x, density, structure_seed)
        atoms.info["step"] = step
        atoms.info["temperature_k"] = temp
        images.append(atoms)
    ase.io.write(path, images, format="extxyz")
    last = images[-1]
    return (
        _density(last.numbers, np.asarray(last.cell)),
        frame_values(last.numbers, last.positions, np.asarray(last.cell)),
    )


def young(mlip: str, x: float, q: float, seed: int, dispersion: str = "none") -> float:
    """SYNTHETIC Young's modulus in GPa."""
    return (
        17.0
        + 3.5 * x
        + 0.7 * seed
        + (1.5 if mlip == MLIP_RANDOM else 0.0)
        + 0.3 * q
        + (0.8 if dispersion == "d3" else 0.0)
    )


def write_experiment_csv(path: Path, rows: Any = EXPERIMENT_ROWS) -> Path:
    lines = ["x,property,value,uncertainty,source"]
    for x, prop, value, unc, suffix in rows:
        lines.append(
            f'{x:g},{prop},{value!r},{"" if unc is None else unc},"{SYNTHETIC_SOURCE}{suffix}"'
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def populate(gb: Any, engine: Any, tmp_path: Path, *, experiment: bool = True) -> Expected:
    """Fill the database through the ingest commands (and, for the D3 protocol, the API
    function those commands call) and the repositories."""
    from glassbench import api
    from glassbench.service.db import unit_of_work
    from glassbench.service.repos import get_mlip, set_crystal_volume, set_property

    exp = Expected()
    for name in (MLIP_DIMERS, MLIP_RANDOM, MLIP_NO_RUNS):
        gb.ok("mlip", "add", name, "--arch", "chgnet")
    files = tmp_path / "traj"
    files.mkdir()
    for key in ALL_RUNS:
        mlip, x, q, seed, disp = key
        path = files / f"{mlip}_{x:g}_{q:g}_{seed}_{disp}.extxyz"
        shift = D3_DENSITY_SHIFT if disp == "d3" else 0.0
        density, values = write_traj(path, mlip, x, q, seed, density_shift=shift)
        if disp == "none":
            gb.ok(
                "ingest", "traj", str(path), "--mlip", mlip, "--x", f"{x:g}",
                "--quench-rate", f"{q:g}", "--seed", str(seed), "--stage", "quench",
            )  # fmt: skip
        else:
            rk = api.RunKey(mlip, x=x, quench_rate_k_ps=q, seed=seed, protocol=D3_PROTOCOL)
            api.ingest_traj(engine, rk, path, stage="quench", progress=False)
        exp.files[key] = path
        exp.runs[key] = {
            "density_g_cm3": density,
            **values,
            "young_modulus_gpa": young(mlip, x, q, seed, disp),
        }
    with engine.connect() as c:
        rows = c.execute(
            sa.text(
                "SELECT r.id, m.name, c.x, r.quench_rate_k_ps, r.seed, p.params_json "
                "FROM run r JOIN mlip m ON m.id = r.mlip_id "
                "JOIN composition c ON c.id = r.composition_id "
                "JOIN protocol p ON p.id = r.protocol_id"
            )
        ).all()
    for rid, mlip, x, q, seed, params in rows:
        disp = json.loads(params).get("dispersion") or "none"
        exp.run_ids[(mlip, float(x), float(q), int(seed), disp)] = int(rid)
    assert set(exp.run_ids) == set(ALL_RUNS)
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
        unc: dict[tuple[float, str], list[float]] = defaultdict(list)
        for x, prop, value, u, _ in EXPERIMENT_ROWS:
            by_key[(x, prop)].append(value)
            if u is not None:
                unc[(x, prop)].append(u)
        exp.experiment = {k: statistics.fmean(v) for k, v in by_key.items()}
        exp.experiment_uncertainty = {k: statistics.fmean(v) for k, v in unc.items()}
        exp.crystal_experiment = {c: v for c, _, v, _, _ in CRYSTAL_ROWS}
    return exp


def independent_mae(exp: Expected) -> dict[tuple[str, str], tuple[int, float, float]]:
    """(mlip, property) -> (n, MAE, mean signed error) pooled over rates and protocols, in
    plain Python: what the ``mlip_mae`` view computes (the report itself never pools).

    Seeds are averaged per (mlip, x, quench rate, protocol) first; experiments per
    (x, property) were averaged over sources in ``populate``.
    """
    seeds: dict[tuple[str, float, float, str, str], list[float]] = defaultdict(list)
    for (mlip, x, q, _seed, disp), values in exp.runs.items():
        for prop, v in values.items():
            seeds[(mlip, x, q, disp, prop)].append(v)
    errors: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (mlip, x, _q, _disp, prop), vals in seeds.items():
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


def protocol_ids(engine: Any, exp: Expected) -> dict[str, int]:
    """Dispersion ("none"/"d3") -> the id of the protocol its runs were stored under."""
    with engine.connect() as c:
        rows = c.execute(sa.text("SELECT id, protocol_id FROM run")).all()
    by_run = {int(r): int(p) for r, p in rows}
    out: dict[str, int] = {}
    for key, rid in exp.run_ids.items():
        out.setdefault(key[4], by_run[rid])
        assert out[key[4]] == by_run[rid]
    return out


def seeds_per_point(exp: Expected) -> dict[tuple[str, str, float, float, str], list[float]]:
    """(mlip, dispersion, quench rate, x, property) -> the run values of that point's seeds."""
    out: dict[tuple[str, str, float, float, str], list[float]] = defaultdict(list)
    for (mlip, x, q, _seed, disp), values in sorted(exp.runs.items()):
        for prop, v in values.items():
            out[(mlip, disp, q, x, prop)].append(v)
    return out


def independent_mae_per_rate(
    exp: Expected,
) -> dict[tuple[str, str, float, str], dict[str, float]]:
    """(mlip, dispersion, quench rate, property) -> n, n_seeds, mae, mean_error, seed_sd and
    mean_abs_z over the points with experiment, in plain Python (docs/reports.md)."""
    groups: dict[tuple[str, str, float, str], list[tuple[list[float], float, float]]] = defaultdict(
        list
    )
    for (mlip, disp, q, x, prop), vals in seeds_per_point(exp).items():
        ref = exp.experiment.get((x, prop))
        if ref is not None:
            # An experimental value without a stated uncertainty enters z as exact.
            u = exp.experiment_uncertainty.get((x, prop), 0.0)
            groups[(mlip, disp, q, prop)].append((vals, ref, u))
    out = {}
    for key, points in groups.items():
        errors = [statistics.fmean(v) - ref for v, ref, _ in points]
        variances = [statistics.variance(v) for v, _, _ in points if len(v) >= 2]
        zs = [
            abs(statistics.fmean(v) - ref) / math.sqrt(statistics.variance(v) + u**2)
            for v, ref, u in points
            if len(v) >= 2 and statistics.variance(v) + u**2 > 0
        ]
        out[key] = {
            "n": len(points),
            "n_seeds": sum(len(v) for v, _, _ in points),
            "mae": statistics.fmean(abs(e) for e in errors),
            "mean_error": statistics.fmean(errors),
            "seed_sd": math.sqrt(statistics.fmean(variances)) if variances else math.nan,
            "mean_abs_z": statistics.fmean(zs) if zs else math.nan,
        }
    return out


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
