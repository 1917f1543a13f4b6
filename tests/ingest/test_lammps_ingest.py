"""``glassbench ingest lammps`` on real LAMMPS output, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from glassbench.ingest.lammps_log import KCAL_PER_MOL_EV
from tests.conftest import table_counts
from tests.ingest.conftest import key_args, lammps_file

MASS_NA4P2S7_4FU = 16 * 22.98976928 + 8 * 30.973762 + 28 * 32.06  # amu, 52 atoms


def _rows(engine: Any, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as c:
        return list(c.execute(sa.text(sql), params))


def _ingest_args(name: str, *, dump: bool = True) -> list[str]:
    args = ["ingest", "lammps", "--log", str(lammps_file(f"log.{name}.lammps"))]
    if dump:
        args += ["--dump", str(lammps_file(f"dump.{name}.lammpstrj"))]
    return args


def test_lammps_metal_two_runs_norm_and_frames(gb: Any, engine: Any, mlip: str) -> None:
    res = gb.ok(*_ingest_args("metal"), *key_args(x=0), "--stage", "anneal")
    assert "24 thermo rows, 8 frames" in res.output

    (run,) = _rows(engine, "SELECT id, status, source, n_atoms, software_json FROM run")
    assert (run.status, run.source, run.n_atoms) == ("done", "lammps", 52)
    assert '"units":"metal"' in run.software_json and "29 Sep 2021" in run.software_json
    thermo = {r.step: r for r in _rows(engine, "SELECT * FROM thermo ORDER BY step")}
    assert len(thermo) == 24
    steps = sorted(thermo)
    assert steps[:3] == [0, 73, 80] and steps[-1] == 473
    # run 1 (custom columns incl. Time, Volume, Density):
    #   100 0.054 415.99953 46716.414 0.81123804 2.7423801 3.5536182 857.375 2.9309278
    r = thermo[100]
    assert r.time_ps == pytest.approx(0.054)
    assert r.temperature_k == pytest.approx(415.99953)
    assert r.pressure_gpa == pytest.approx(4.6716414)  # bar -> GPa
    assert r.potential_energy_ev == pytest.approx(0.81123804)
    assert r.kinetic_energy_ev == pytest.approx(2.7423801)
    assert r.total_energy_ev == pytest.approx(3.5536182)
    assert (r.volume_a3, r.density_g_cm3) == (pytest.approx(857.375), pytest.approx(2.9309278))
    # run 2 (thermo_modify norm yes: per-atom energies; no Time/Volume/Density columns):
    #   300 531.16993 -0.0074953801 0.067338735 0.059843355 32921.159 9.6031413 (x3)
    r = thermo[300]
    assert r.potential_energy_ev == pytest.approx(-0.0074953801 * 52)
    assert r.kinetic_energy_ev == pytest.approx(0.067338735 * 52)
    assert r.total_energy_ev == pytest.approx(0.059843355 * 52)
    assert r.volume_a3 == pytest.approx(9.6031413**3)
    assert r.density_g_cm3 == pytest.approx(MASS_NA4P2S7_4FU * 1.66053906660 / 9.6031413**3)
    assert r.time_ps == pytest.approx(0.4 + (300 - 273) * 0.002)  # timestep 0.002 ps
    # step 73 ends the minimization and starts run 1 after `velocity create`: one row, the
    # later values (600 K, run 1's columns) winning
    assert thermo[73].temperature_k == 600.0
    assert thermo[73].kinetic_energy_ev == pytest.approx(3.9553604)
    # the minimizer's block (thermo_style one) has no KinEng column: NULL, not 0
    assert thermo[0].kinetic_energy_ev is None and thermo[0].volume_a3 is None

    frames = _rows(engine, "SELECT stage, step, time_ps, n_atoms FROM frame ORDER BY step")
    assert [f.step for f in frames] == list(range(100, 451, 50))
    assert [f.stage for f in frames] == ["anneal"] * 7 + ["final"]
    assert frames[0].time_ps == pytest.approx(0.054)
    assert _rows(engine, "SELECT COUNT(DISTINCT frame_id) AS n FROM speciation")[0].n == 8

    (prop,) = _rows(engine, "SELECT value, stderr, method, details_json FROM property")
    tail = [thermo[s].density_g_cm3 for s in steps if s >= 473 - math.floor(400 * 0.2)]
    assert prop.value == pytest.approx(np.mean(tail))
    assert prop.stderr is not None and prop.stderr > 0
    (summary,) = _rows(engine, "SELECT n_atoms, density_g_cm3, status FROM run_summary")
    assert (summary.n_atoms, summary.status) == (52, "done")
    assert summary.density_g_cm3 == pytest.approx(prop.value)


def test_lammps_real_units_reset_timestep(gb: Any, engine: Any, mlip: str) -> None:
    gb.ok(*_ingest_args("real"), *key_args(x=1))
    thermo = {r.step: r for r in _rows(engine, "SELECT * FROM thermo ORDER BY step")}
    # after `reset_timestep 0` the steps continue from the end of run 1 (step 149):
    #   0 120 600.33152 11017.12 -9.8799997 44.736855 34.856856 614.125 1.9590674
    r = thermo[149]
    assert r.time_ps == pytest.approx(0.120)  # fs -> ps
    assert r.temperature_k == pytest.approx(600.33152)
    assert r.pressure_gpa == pytest.approx(11017.12 * 1.01325e-4)  # atm -> GPa
    assert r.potential_energy_ev == pytest.approx(-9.8799997 * KCAL_PER_MOL_EV)
    assert r.kinetic_energy_ev == pytest.approx(44.736855 * KCAL_PER_MOL_EV)
    assert r.density_g_cm3 == pytest.approx(1.9590674)
    # run 1 uses thermo_style one: PotEng = E_pair + E_mol, time from the default 1 fs step
    r = thermo[100]
    assert r.potential_energy_ev == pytest.approx(-6.3354584 * KCAL_PER_MOL_EV)
    assert r.time_ps == pytest.approx((100 - 29) * 1e-3)
    assert max(thermo) == 269
    frames = _rows(engine, "SELECT step, time_ps FROM frame ORDER BY step")
    assert [f.step for f in frames] == [40, 80, 120, 149, 189, 229, 269]
    for f in frames:
        assert f.time_ps == pytest.approx(
            thermo[f.step].time_ps if f.step in thermo else (f.step - 29) * 1e-3
        )


def test_lammps_triclinic_multi_style(gb: Any, engine: Any, mlip: str) -> None:
    import ase.io

    gb.ok(*_ingest_args("triclinic"), *key_args(x=0.5))
    from glassbench.schema import unpack_array

    frames = _rows(engine, "SELECT step, cell_json, positions, numbers FROM frame ORDER BY step")
    ref = ase.io.read(lammps_file("dump.triclinic.lammpstrj"), format="lammps-dump-text", index=":")
    assert len(frames) == len(ref) == 5
    import json

    for f, atoms in zip(frames, ref, strict=True):
        cell = np.array(json.loads(f.cell_json))
        np.testing.assert_allclose(cell, atoms.cell.array, atol=1e-9)
        pos = unpack_array(f.positions)
        frac = np.linalg.solve(cell.T, (pos - atoms.positions).T).T
        np.testing.assert_allclose(frac - np.round(frac), 0, atol=1e-9)
        assert unpack_array(f.numbers).tolist() == atoms.numbers.tolist()
    # the multi-style block: "Volume = 1200.9505" at step 300, same as the frame's cell
    (t,) = _rows(
        engine, "SELECT volume_a3, density_g_cm3, pressure_gpa FROM thermo WHERE step = 300"
    )
    assert t.volume_a3 == pytest.approx(1200.9505)
    assert t.pressure_gpa == pytest.approx(9689.2777e-4)
    assert t.density_g_cm3 is not None
    cell300 = np.array(json.loads(frames[-1].cell_json))
    assert abs(np.linalg.det(cell300)) == pytest.approx(1200.9505, rel=1e-6)


def test_lammps_log_only_and_idempotency(gb: Any, engine: Any, mlip: str) -> None:
    args = [*_ingest_args("metal", dump=False), *key_args(x=0)]
    res = gb.ok(*args)
    assert "24 thermo rows, 0 frames" in res.output
    assert _rows(engine, "SELECT COUNT(*) AS n FROM property")[0].n == 1
    before = table_counts(engine)
    res = gb.ok(*args)
    assert "nothing to do" in res.output
    assert table_counts(engine) == before
    # other content (log + dump) for the same key: refused, then replaced
    full = [*_ingest_args("metal"), *key_args(x=0)]
    res = gb(*full)
    assert res.exit_code == 2 and "--replace" in res.output
    assert table_counts(engine) == before
    res = gb.ok(*full, "--replace")
    assert "replaced" in res.output
    after = table_counts(engine)
    assert (after["run"], after["thermo"], after["frame"]) == (1, 24, 8)
