"""``glassbench ingest traj``: extxyz and .traj written by ASE, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import table_counts
from tests.ingest.conftest import ase_images, key_args


def _rows(engine: Any, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as c:
        return list(c.execute(sa.text(sql), params))


@pytest.mark.parametrize("fmt", ["extxyz", "traj"])
def test_ingest_traj_stores_frames_thermo_speciation(
    gb: Any, engine: Any, mlip: str, ase_files: dict[str, Path], fmt: str
) -> None:
    from ase.units import GPa

    res = gb.ok("ingest", "traj", str(ase_files[fmt]), *key_args(), "--stage", "quench")
    assert "run 1 ingested" in res.output and "8 thermo rows, 8 frames" in res.output

    (run,) = _rows(engine, "SELECT status, source, n_atoms, content_hash FROM run")
    assert (run.status, run.source, run.n_atoms) == ("done", fmt, 52)
    assert len(run.content_hash) == 64
    frames = _rows(engine, "SELECT id, stage, step FROM frame ORDER BY step")
    assert [f.stage for f in frames] == ["quench"] * 7 + ["final"]
    assert [f.step for f in frames] == [100 * (i + 1) for i in range(8)]
    # every frame analysed: speciation counts and coordination stored
    n_spec = _rows(engine, "SELECT COUNT(DISTINCT frame_id) AS n FROM speciation")[0].n
    n_coord = _rows(engine, "SELECT COUNT(*) AS n FROM coordination")[0].n
    assert n_spec == n_coord == 8
    na = _rows(engine, "SELECT count FROM speciation WHERE unit = 'n_Na'")
    assert {r.count for r in na} == {16}

    images = ase_images()
    thermo = _rows(engine, "SELECT * FROM thermo ORDER BY step")
    assert len(thermo) == 8
    for row, atoms in zip(thermo, images, strict=True):
        s = atoms.calc.results["stress"]
        assert row.pressure_gpa == pytest.approx(-s[:3].sum() / 3 / GPa, rel=1e-6)
        assert row.temperature_k == pytest.approx(atoms.get_temperature(), rel=1e-6)
        assert row.potential_energy_ev == pytest.approx(atoms.get_potential_energy())
        assert row.kinetic_energy_ev == pytest.approx(atoms.get_kinetic_energy(), rel=1e-6)
        assert row.total_energy_ev == pytest.approx(
            atoms.get_potential_energy() + atoms.get_kinetic_energy(), rel=1e-6
        )
        assert row.volume_a3 == pytest.approx(atoms.get_volume(), rel=1e-9)
        mass_g = atoms.get_masses().sum() * 1.66053906660e-24
        assert row.density_g_cm3 == pytest.approx(mass_g / (atoms.get_volume() * 1e-24), rel=1e-3)

    (summary,) = _rows(engine, "SELECT n_atoms, density_g_cm3, nbs, na_cn FROM run_summary")
    assert summary.n_atoms == 52 and summary.density_g_cm3 is not None
    (prop,) = _rows(engine, "SELECT value, stderr, method FROM property")
    assert prop.value == pytest.approx(summary.density_g_cm3)
    assert "last 20%" in prop.method
    # the final frame of the summary is the last frame
    (final,) = _rows(
        engine, "SELECT f.step FROM run_final_frame r JOIN frame f ON f.id = r.frame_id"
    )
    assert final.step == 800


def test_ingest_traj_is_idempotent_and_refuses_other_content(
    gb: Any, engine: Any, mlip: str, ase_files: dict[str, Path], tmp_path: Path
) -> None:
    import ase.io

    path = ase_files["extxyz"]
    gb.ok("ingest", "traj", str(path), *key_args())
    before = table_counts(engine)
    res = gb.ok("ingest", "traj", str(path), *key_args())
    assert "nothing to do" in res.output
    assert table_counts(engine) == before

    # another file for the same key: refused, then replaced with --replace
    other = tmp_path / "other.extxyz"
    ase.io.write(other, ase_images()[:3], format="extxyz")
    res = gb("ingest", "traj", str(other), *key_args())
    assert res.exit_code == 2, res.output
    assert "--replace" in res.output and str(other) in res.output
    assert table_counts(engine) == before
    res = gb.ok("ingest", "traj", str(other), *key_args(), "--replace")
    assert "replaced" in res.output
    after = table_counts(engine)
    assert (after["run"], after["frame"], after["thermo"]) == (1, 3, 3)
    assert _rows(engine, "SELECT stage FROM frame ORDER BY step")[-1].stage == "final"


def test_ingest_traj_failed_replace_keeps_old_data(
    gb: Any, engine: Any, mlip: str, ase_files: dict[str, Path], tmp_path: Path
) -> None:
    gb.ok("ingest", "traj", str(ase_files["extxyz"]), *key_args())
    before = table_counts(engine)
    text = ase_files["extxyz"].read_text()
    bad = tmp_path / "bad.extxyz"
    bad.write_text(text[: len(text) - 200])  # truncated in the last frame
    res = gb("ingest", "traj", str(bad), *key_args(), "--replace")
    assert res.exit_code == 2
    assert table_counts(engine) == before
    assert _rows(engine, "SELECT status FROM run")[0].status == "done"
