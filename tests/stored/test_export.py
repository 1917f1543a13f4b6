"""``glassbench export frames`` and ``glassbench export run`` on runs that went in through the
ingest commands (real LAMMPS output): what is written reads back with ASE to the stored frames,
the filters pick exactly the frames they name, and bad input writes nothing."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from glassbench.stored.export import FRAME_INFO_KEYS, csv_cell
from glassbench.stored.export_io import atomic_output
from glassbench.stored.frames import StoredFrame, frame_index, read_frames
from tests.conftest import Cli, table_counts
from tests.ingest.conftest import key_args, lammps_file
from tests.stored.conftest import ingest_lammps_run, scalar


def _stored(engine: Any, run_id: int) -> list[StoredFrame]:
    with engine.connect() as conn:
        ids = [fid for fid, _, _ in frame_index(conn, run_id)]
        return list(read_frames(conn, ids))


def _read(path: Path) -> list[Any]:
    import ase.io

    return list(ase.io.read(path, index=":", format="extxyz"))


def _rows(engine: Any, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as c:
        return list(c.execute(sa.text(sql), params))


def _same_structure(atoms: Any, frame: StoredFrame) -> None:
    np.testing.assert_array_equal(atoms.numbers, frame.numbers)
    np.testing.assert_allclose(atoms.positions, frame.positions, rtol=0, atol=1e-8)
    np.testing.assert_allclose(np.asarray(atoms.cell), frame.cell, rtol=0, atol=1e-8)
    assert tuple(bool(p) for p in atoms.pbc) == frame.pbc


def _anneal_run(gb: Cli, engine: Any, mlip: str, seed: int) -> int:
    """The metal LAMMPS run ingested with its frames as stage ``anneal`` (the last: final)."""
    gb.ok(
        "ingest", "lammps", "--log", str(lammps_file("log.metal.lammps")),
        "--dump", str(lammps_file("dump.metal.lammpstrj")), *key_args(mlip, seed=seed),
        "--stage", "anneal",
    )  # fmt: skip
    return int(scalar(engine, "SELECT id FROM run WHERE seed = :s", s=seed))


def test_extxyz_reads_back_to_the_stored_frames_with_provenance(
    gb: Cli, engine: Any, lammps_run: int, tiny_mlip: str, tmp_path: Path
) -> None:
    forces_run = ingest_lammps_run(gb, tiny_mlip, seed=2, name="forces")
    out = tmp_path / "frames.extxyz"
    res = gb.ok("export", "frames", str(out))
    stored = _stored(engine, lammps_run) + _stored(engine, forces_run)
    assert f"wrote {len(stored)} frames of 2 runs to {out}" in res.output
    images = _read(out)
    assert len(images) == len(stored) == 8 + 6
    sha = scalar(engine, "SELECT model_sha256 FROM mlip WHERE name = :n", n=tiny_mlip)
    protocol = scalar(engine, "SELECT protocol FROM run_detail WHERE run_id = :r", r=lammps_run)
    for atoms, frame in zip(images, stored, strict=True):
        _same_structure(atoms, frame)
        info = atoms.info
        assert {k for k in FRAME_INFO_KEYS if k != "temperature_k"} <= set(info)
        assert (info["run_id"], info["frame_id"], info["step"]) == (
            frame.run_id, frame.frame_id, frame.step,
        )  # fmt: skip
        assert (info["mlip"], info["mlip_arch"], info["mlip_model_sha256"]) == (
            tiny_mlip, "mace", sha,
        )  # fmt: skip
        assert (info["x"], info["quench_rate_k_ps"], info["formula"]) == (0.0, 1.0, "Na4P2S7")
        assert info["seed"] == (1 if frame.run_id == lammps_run else 2)
        assert info["protocol"] == protocol and info["source"] == "lammps"
        assert info["stage"] == frame.stage and info["time_ps"] == pytest.approx(frame.time_ps)
        # the making MLIP's forces travel where the frame holds them, under a key that says so
        if frame.forces is None:
            assert "mlip_forces" not in atoms.arrays
        else:
            np.testing.assert_allclose(atoms.arrays["mlip_forces"], frame.forces, atol=1e-8)
        assert atoms.calc is None  # nothing ASE would mistake for a calculator's results
    assert sum(f.forces is not None for f in stored) == 6


def test_where_unit_picks_exactly_the_frames_with_the_unit(
    gb: Cli, engine: Any, lammps_run: int, tmp_path: Path
) -> None:
    def exported(*args: str) -> list[int]:
        out = tmp_path / f"f{len(list(tmp_path.iterdir()))}.extxyz"
        gb.ok("export", "frames", *args, str(out))
        return [int(a.info["frame_id"]) for a in _read(out)]

    def expected(sql_condition: str) -> list[int]:
        rows = _rows(
            engine,
            "SELECT f.id FROM frame f WHERE f.run_id = :r AND "
            + sql_condition
            + " ORDER BY f.step",
            r=lammps_run,
        )
        return [int(r[0]) for r in rows]

    def count(unit: str) -> str:
        return (
            "(SELECT s.count FROM speciation s WHERE s.frame_id = f.id AND s.analysis_id = 1 "
            f"AND s.unit = '{unit}')"
        )

    bs3 = expected(f"{count('BS')} >= 3")
    assert 0 < len(bs3) < 8  # the fixture has frames on both sides of the threshold
    assert exported("--where-unit", "BS>=3") == bs3
    p0 = expected(f"{count('P0')} > 0")
    assert len(p0) == 1
    assert exported("--where-unit", "p0 > 0") == p0  # unit names match case-insensitively
    both = expected(f"{count('BS')} >= 3 AND {count('NBS')} != 9")
    assert exported("--where-unit", "BS>=3", "--where-unit", "NBS!=9") == both
    assert both and set(both) < set(bs3)
    # no frame of this fixture holds a P2ES unit: nothing matches, nothing is written
    assert expected(f"{count('P2ES')} > 0") == []
    out = tmp_path / "none.extxyz"
    res = gb.ok("export", "frames", "--where-unit", "P2ES>0", str(out))
    assert "no frames match" in res.output and "P2ES>0" in res.output and not out.exists()
    # a frame without the named analysis does not match, whatever the expression
    with engine.begin() as c:
        c.execute(
            sa.text(
                "INSERT INTO analysis (name, cutoffs_json, created_at) "
                "VALUES ('wide', '{}', CURRENT_TIMESTAMP)"
            )
        )
    res = gb.ok("export", "frames", "--analysis", "wide", "--where-unit", "BS>=0", str(out))
    assert "no frames match" in res.output and not out.exists()


def test_stage_and_every_select_frames_in_step_order(gb: Cli, engine: Any, tmp_path: Path) -> None:
    gb.ok("mlip", "add", "MP0", "--arch", "chgnet")
    run = _anneal_run(gb, engine, "MP0", seed=4)
    with engine.connect() as conn:
        index = frame_index(conn, run)
    steps = [s for _, s, _ in index]
    stages = [g for _, _, g in index]
    assert stages == ["anneal"] * 7 + ["final"]

    def exported(*args: str) -> list[tuple[int, str]]:
        out = tmp_path / f"f{len(list(tmp_path.iterdir()))}.extxyz"
        gb.ok("export", "frames", *args, str(out))
        return [(int(a.info["step"]), str(a.info["stage"])) for a in _read(out)]

    assert exported("--stage", "anneal") == [(s, "anneal") for s in steps[:7]]
    assert exported("--stage", "final") == [(steps[7], "final")]
    assert [s for s, _ in exported("--every", "3")] == steps[::3]
    assert [s for s, _ in exported("--stage", "anneal", "--every", "2")] == steps[:7:2]
    assert len(exported("--stage", "anneal", "--stage", "final")) == 8


def test_lammps_data_files_read_back_with_an_index(gb: Cli, engine: Any, tmp_path: Path) -> None:
    import ase.io

    gb.ok("mlip", "add", "MP0", "--arch", "chgnet")
    runs = [
        ingest_lammps_run(gb, "MP0", seed=1),
        ingest_lammps_run(gb, "MP0", seed=3, name="triclinic", x=0.5),
    ]
    out = tmp_path / "data"
    res = gb.ok("export", "frames", "--format", "lammps-data", "--every", "2", str(out))
    stored = [f for r in runs for f in _stored(engine, r)[::2]]
    assert f"wrote {len(stored)} frames of 2 runs to {out} (lammps-data" in res.output
    with open(out / "index.csv", newline="", encoding="utf-8") as fh:
        index = list(csv.DictReader(fh))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [row["file"] for row in index] + ["index.csv"]
    )
    assert len(index) == len(stored)
    assert any(not np.allclose(f.cell, np.diag(np.diag(f.cell))) for f in stored)  # triclinic
    for row, frame in zip(index, stored, strict=True):
        assert row["file"] == f"run{frame.run_id}_step{frame.step}.data"
        assert (int(row["run_id"]), int(row["step"]), row["stage"]) == (
            frame.run_id, frame.step, frame.stage,
        )  # fmt: skip
        assert row["mlip"] == "MP0" and row["mlip_model_sha256"] == ""
        atoms = ase.io.read(out / row["file"], format="lammps-data", atom_style="atomic")
        _same_structure(atoms, frame)


def test_export_run_writes_frames_thermo_and_record(
    gb: Cli, engine: Any, lammps_run: int, tiny_mlip: str, tmp_path: Path
) -> None:
    out = tmp_path / "run1"
    res = gb.ok("export", "run", f"{tiny_mlip}/0/1/1", str(out))
    assert sorted(p.name for p in out.iterdir()) == ["frames.extxyz", "run.json", "thermo.csv"]
    assert f"run {lammps_run} (" in res.output
    images = _read(out / "frames.extxyz")
    stored = _stored(engine, lammps_run)
    assert len(images) == len(stored) == 8
    for atoms, frame in zip(images, stored, strict=True):
        _same_structure(atoms, frame)
    with open(out / "thermo.csv", newline="", encoding="utf-8") as fh:
        thermo = list(csv.DictReader(fh))
    n_thermo = scalar(engine, "SELECT COUNT(*) FROM thermo WHERE run_id = :r", r=lammps_run)
    assert len(thermo) == n_thermo > 0
    first = _rows(engine, "SELECT step, pressure_gpa FROM thermo WHERE run_id = :r ORDER BY step",
                  r=lammps_run)[0]  # fmt: skip
    assert int(thermo[0]["step"]) == first[0]
    assert float(thermo[0]["pressure_gpa"]) == pytest.approx(first[1], rel=1e-12)
    record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    detail = _rows(
        engine, "SELECT protocol, density_g_cm3 FROM run_detail WHERE run_id = :r", r=lammps_run
    )[0]
    assert record["run"]["run_id"] == lammps_run and record["run"]["source"] == "lammps"
    assert record["protocol"]["name"] == detail[0]
    assert record["protocol"]["record"]["kind"] == "external"
    assert record["mlip"]["name"] == tiny_mlip and record["mlip"]["arch"] == "mace"
    assert "/" not in (record["mlip"]["model"] or "")  # a basename, never a machine path
    density = record["properties"]["density_g_cm3"]
    assert density["value"] == pytest.approx(detail[1]) and density["method"]
    assert isinstance(density["details"], dict)
    assert record["files"] == {
        "frames": "frames.extxyz", "n_frames": 8, "thermo": "thermo.csv",
        "n_thermo_rows": n_thermo,
    }  # fmt: skip
    # by run id too; an existing folder is refused, then replaced with --overwrite
    res = gb("export", "run", str(lammps_run), str(out))
    assert res.exit_code == 2 and "already exists" in res.output
    (out / "stale.txt").write_text("x")
    gb.ok("export", "run", str(lammps_run), str(out), "--overwrite")
    assert not (out / "stale.txt").exists() and (out / "run.json").exists()


def test_ambiguous_and_unknown_run_keys(
    gb: Cli, engine: Any, lammps_run: int, tiny_mlip: str, tmp_path: Path
) -> None:
    import ase.io

    from tests.ingest.conftest import ase_images

    # the same key from an extxyz file: another (external) protocol
    path = tmp_path / "quench.extxyz"
    ase.io.write(path, ase_images(), format="extxyz")
    gb.ok("ingest", "traj", str(path), *key_args(tiny_mlip))
    protocols = [
        r[0] for r in _rows(engine, "SELECT protocol FROM run_detail ORDER BY run_id")
    ]  # fmt: skip
    assert len(set(protocols)) == 2
    before = table_counts(engine)
    out = tmp_path / "out"
    for key, message in [
        (f"{tiny_mlip}/0/1/1", "choose one with --protocol"),
        ("999", "no run '999'"),
        ("NOPE/0/1/1", "no MLIP named 'NOPE'"),
        (f"{tiny_mlip}/0/1", "neither a run id nor MLIP/x/quench_rate/seed"),
        (f"{tiny_mlip}/0/2/1", "no run"),
    ]:
        res = gb("export", "run", key, str(out))
        assert res.exit_code == 2, res.output
        assert message in res.output and len(res.output.strip().splitlines()) == 1
        assert not out.exists()
    res = gb("export", "run", f"{tiny_mlip}/0/1/1", str(out))
    assert all(p in res.output for p in protocols)
    gb.ok("export", "run", f"{tiny_mlip}/0/1/1", str(out), "--protocol", protocols[0])
    record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert record["run"]["run_id"] == lammps_run and record["protocol"]["name"] == protocols[0]
    assert table_counts(engine) == before


def test_bad_input_writes_nothing(
    gb: Cli, engine: Any, lammps_run: int, tiny_mlip: str, tmp_path: Path
) -> None:
    before = table_counts(engine)
    tmp_path = tmp_path / "out"  # beside the SQLite database, which is in tmp_path
    tmp_path.mkdir()
    out = tmp_path / "f.extxyz"
    cases: list[tuple[list[str], str]] = [
        (["--where-unit", "P2ES>>0", str(out)], "not UNIT OP N"),
        (["--where-unit", "P9>0", str(out)], "unknown unit 'P9'"),
        (["--where-unit", "P2ES>lots", str(out)], "not UNIT OP N"),
        (["--analysis", "nope", str(out)], "no analysis named 'nope'"),
        (["--stage", "cooling", str(out)], "'cooling' is not one of"),
        (["--every", "0", str(out)], "--every"),
        ([str(tmp_path / "missing" / "f.extxyz")], "does not exist"),
        ([str(tmp_path / "file.txt" / "f.extxyz")], "does not exist"),
        (["--format", "lammps-data", str(tmp_path / "file.txt")], "not a directory"),
        ([str(tmp_path)], "is a directory"),
    ]
    if Path("/proc/self").is_dir():  # a folder nobody can create files in, root included
        cases.append((["/proc/glassbench-export.extxyz"], "is not writable"))
    (tmp_path / "file.txt").write_text("keep")
    for args, message in cases:
        res = gb("export", "frames", *args)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output, (args, res.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]
    assert (tmp_path / "file.txt").read_text() == "keep"
    # an existing output is kept unless --overwrite
    out.write_text("old")
    res = gb("export", "frames", str(out))
    assert res.exit_code == 2 and "already exists" in res.output and out.read_text() == "old"
    gb.ok("export", "frames", str(out), "--overwrite")
    assert len(_read(out)) == 8
    # a selector matching nothing is not an error; --dry-run lists and writes nothing
    res = gb.ok("export", "frames", "--x", "3", str(tmp_path / "x3.extxyz"))
    assert res.output.strip() == "no runs match (x=3 status=done)"
    res = gb.ok("export", "frames", "--dry-run", str(tmp_path / "dry.extxyz"))
    assert "external" in res.output and "(1 row)" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.extxyz", "file.txt"]
    if Path("/proc/self").is_dir():
        res = gb("export", "run", str(lammps_run), "/proc/glassbench-run")
        assert res.exit_code == 2 and "is not writable" in res.output, res.output
    assert table_counts(engine) == before


def test_run_without_frames_is_bad_input(gb: Cli, engine: Any, tmp_path: Path) -> None:
    tmp_path = tmp_path / "out"  # beside the SQLite database, which is in tmp_path
    tmp_path.mkdir()
    gb.ok("mlip", "add", "MP0", "--arch", "chgnet")
    gb.ok("ingest", "lammps", "--log", str(lammps_file("log.metal.lammps")), *key_args())
    run = int(scalar(engine, "SELECT id FROM run"))
    assert scalar(engine, "SELECT COUNT(*) FROM frame") == 0
    before = table_counts(engine)
    res = gb("export", "run", str(run), str(tmp_path / "r"))
    assert res.exit_code == 2 and "has no stored frames" in res.output
    res = gb("export", "frames", "--run", str(run), str(tmp_path / "f.extxyz"))
    assert res.exit_code == 2 and "no stored frames" in res.output
    assert list(tmp_path.iterdir()) == [] and table_counts(engine) == before


def test_atomic_output_leaves_nothing_on_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_output(out, directory=True) as tmp:
        (tmp / "half.data").write_text("half")
        raise RuntimeError("disk full")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    with atomic_output(out, directory=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["new.txt"]


def test_csv_cells_never_become_formulas() -> None:
    assert [csv_cell(v) for v in ("=1+2", "+x", "-cmd", "@SUM(A1)", "MP0", "")] == [
        "'=1+2", "'+x", "'-cmd", "'@SUM(A1)", "MP0", "",
    ]  # fmt: skip
    assert [csv_cell(v) for v in (-1.5, -3, None)] == [-1.5, -3, ""]
