"""``glassbench compute energy``: cross-evaluation of stored frames by another MLIP.

A frame evaluated by the MLIP that made it disagrees by nothing; by another MLIP, by what the
test computes itself with ASE and MACE on the frames read back. LAMMPS-made frames without
forces get their energy reference from the log and their force reference once their own MLIP
has evaluated them. Everything on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from glassbench.schema.arrays import unpack_array
from glassbench.stored.frames import read_frames
from tests.conftest import MACE_HINT, Cli, require_module, table_counts
from tests.ingest.conftest import key_args, lammps_file
from tests.runners.test_meltquench import SHORT
from tests.stored.conftest import scalar

require_module("mace", MACE_HINT)


def _rows(engine: Any, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as c:
        return list(c.execute(sa.text(sql), params))


def _frames(engine: Any, run_id: int) -> dict[int, Any]:
    with engine.connect() as c:
        ids = [
            int(i)
            for i in c.execute(
                sa.text("SELECT id FROM frame WHERE run_id = :r ORDER BY step"), {"r": run_id}
            ).scalars()
        ]
        return {f.frame_id: f for f in read_frames(c, ids)}


def _evals(engine: Any, mlip: str) -> dict[int, Any]:
    rows = _rows(
        engine,
        "SELECT fe.frame_id, fe.energy_ev, fe.forces, fe.energy_diff_per_atom_ev, "
        "fe.force_rmse_ev_a, fe.force_max_ev_a, fe.ref_source, fe.ref_energy_per_atom_ev, "
        "fe.stress_gpa_json, fe.created_at "
        "FROM frame_eval fe JOIN mlip m ON m.id = fe.mlip_id WHERE m.name = :m",
        m=mlip,
    )
    return {int(r[0]): r for r in rows}


def _calc(model: Path) -> Any:
    from glassbench.runners.calculators import make_calculator

    return make_calculator("mace", str(model))


def _expected(calc: Any, frame: Any, ref_forces: Any, ref_energy: Any) -> dict[str, Any]:
    """Disagreement computed here, directly with ASE and MACE."""
    atoms = frame.atoms()
    atoms.calc = calc
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    n = len(atoms)
    out: dict[str, Any] = {"energy": e, "forces": f}
    out["ediff"] = None if ref_energy is None else e / n - ref_energy / n
    if ref_forces is not None:
        d = f - ref_forces
        out["rmse"] = float(np.sqrt((d**2).mean()))
        out["max"] = float(np.linalg.norm(d, axis=1).max())
    else:
        out["rmse"] = out["max"] = None
    return out


def _check(row: Any, want: dict[str, Any]) -> None:
    for col, key in ((3, "ediff"), (4, "rmse"), (5, "max")):
        if want[key] is None:
            assert row[col] is None
        else:
            assert row[col] == pytest.approx(want[key], rel=1e-6, abs=1e-9)


@pytest.fixture
def runner_run(gb: Cli, tiny_mace: Path, tmp_path: Path) -> int:
    """A short melt-quench run of the tiny MACE ``tiny`` (frames with their forces)."""
    gb.ok("mlip", "add", "tiny", "--arch", "mace", "--model", str(tiny_mace))
    gb.ok(
        "run", "meltquench", "--mlip", "tiny", "--seed", "1", *SHORT,
        "--checkpoint-dir", str(tmp_path / "ck"),
    )  # fmt: skip
    return 1


# A melt-quench run first: seconds alone, minutes on two busy cores.
@pytest.mark.slow
def test_cross_evaluation_of_a_runner_run(
    gb: Cli,
    engine: Any,
    runner_run: int,
    tiny_mace: Path,
    tiny_mace_factory: Callable[[int], Path],
) -> None:
    frames = _frames(engine, runner_run)
    assert all(f.forces is not None and f.energy_ev is not None for f in frames.values())

    # its own MLIP: no disagreement at all
    out = gb.ok("compute", "energy", "--mlip", "tiny").output
    assert f"{len(frames)} evaluated" in out and "cross_eval" in out
    own = _evals(engine, "tiny")
    assert set(own) == set(frames)
    for row in own.values():
        assert row[6] == "frame"
        assert abs(row[3]) <= 1e-6 and row[4] <= 1e-6 and row[5] <= 1e-6
        assert len(json.loads(row[8])) == 6  # Voigt stress in GPa

    # another MLIP: the stored disagreement is the one computed here
    gb.ok("mlip", "add", "tiny2", "--arch", "mace", "--model", str(tiny_mace_factory(5)))
    gb.ok("compute", "energy", "--mlip", "tiny2", "--run-mlip", "tiny")
    calc = _calc(tiny_mace_factory(5))
    other = _evals(engine, "tiny2")
    assert set(other) == set(frames)
    for fid, frame in frames.items():
        want = _expected(calc, frame, frame.forces, frame.energy_ev)
        assert want["rmse"] > 1e-4  # the two models really differ
        _check(other[fid], want)
        assert other[fid][6] == "frame"
        np.testing.assert_allclose(unpack_array(bytes(other[fid][2])), want["forces"], rtol=1e-6)

    # the view
    view = _rows(
        engine,
        "SELECT frame_id, mlip, force_rmse_ev_a, energy_diff_per_atom_ev FROM cross_eval "
        "WHERE evaluator = 'tiny2'",
    )
    assert {int(r[0]) for r in view} == set(frames)
    assert all(r[1] == "tiny" for r in view)
    assert {int(r[0]): r[2] for r in view} == {fid: r[4] for fid, r in other.items()}

    # a second call evaluates nothing new; --force re-evaluates in place
    before = table_counts(engine)
    out = gb.ok("compute", "energy", "--mlip", "tiny2").output
    assert "0 evaluated" in out and f"{len(frames)} skipped" in out
    assert table_counts(engine) == before
    assert {k: v[9] for k, v in _evals(engine, "tiny2").items()} == {
        k: v[9] for k, v in other.items()
    }
    gb.ok("compute", "energy", "--mlip", "tiny2", "--force", "--stage", "final")
    assert table_counts(engine) == before
    again = _evals(engine, "tiny2")
    changed = {k for k in again if again[k][9] != other[k][9]}
    assert [frames[k].stage for k in changed] == ["final"]
    assert again[next(iter(changed))][4] == pytest.approx(other[next(iter(changed))][4])


def test_lammps_run_thermo_energy_then_own_mlip_forces(
    gb: Cli, engine: Any, lammps_run: int, tiny_mace: Path, tiny_mace_factory: Callable[[int], Path]
) -> None:
    frames = _frames(engine, lammps_run)
    assert all(f.forces is None for f in frames.values())
    thermo = dict(
        _rows(
            engine,
            "SELECT step, potential_energy_ev FROM thermo WHERE run_id = :r",
            r=lammps_run,
        )
    )
    with_thermo = {fid for fid, f in frames.items() if thermo.get(f.step) is not None}
    assert with_thermo and len(with_thermo) < len(frames)  # the fixture has both kinds

    gb.ok("mlip", "add", "tiny2", "--arch", "mace", "--model", str(tiny_mace_factory(5)))
    gb.ok("compute", "energy", "--mlip", "tiny2")
    calc2 = _calc(tiny_mace_factory(5))
    rows = _evals(engine, "tiny2")
    assert set(rows) == set(frames)
    for fid, frame in frames.items():
        ref = thermo.get(frame.step)
        _check(rows[fid], _expected(calc2, frame, None, ref))
        assert rows[fid][6] == ("thermo" if fid in with_thermo else None)

    # The run's own MLIP (TM) evaluates the frames: its forces become tiny2's reference, its
    # energies replace the log's.
    out = gb.ok("compute", "energy", "--mlip", "TM").output
    assert "other evaluations given this reference" in out
    own = _evals(engine, "TM")
    assert all(r[4] is None and r[5] is None for r in own.values())  # no forces to compare
    assert {fid for fid, r in own.items() if r[6] == "thermo"} == with_thermo
    rows = _evals(engine, "tiny2")
    for fid, frame in frames.items():
        tm_forces = unpack_array(bytes(own[fid][2]))
        want = _expected(calc2, frame, tm_forces, float(own[fid][1]))
        _check(rows[fid], want)
        assert rows[fid][6] == "mlip"
        assert rows[fid][7] == pytest.approx(float(own[fid][1]) / frame.n_atoms)


def test_lammps_dump_forces_are_the_reference(
    gb: Cli, engine: Any, tiny_mlip: str, tiny_mace_factory: Callable[[int], Path]
) -> None:
    gb.ok(
        "ingest", "lammps",
        "--log", str(lammps_file("log.forces.lammps")),
        "--dump", str(lammps_file("dump.forces.lammpstrj")),
        *key_args(tiny_mlip, x=0.0, seed=7),
    )  # fmt: skip
    run_id = int(scalar(engine, "SELECT id FROM run WHERE seed = 7"))
    frames = _frames(engine, run_id)
    thermo = dict(
        _rows(engine, "SELECT step, potential_energy_ev FROM thermo WHERE run_id = :r", r=run_id)
    )
    gb.ok("mlip", "add", "tiny2", "--arch", "mace", "--model", str(tiny_mace_factory(5)))
    gb.ok("compute", "energy", "--mlip", "tiny2", "--seed", "7")
    calc2 = _calc(tiny_mace_factory(5))
    rows = _evals(engine, "tiny2")
    assert set(rows) == set(frames)
    for fid, frame in frames.items():
        assert frame.forces is not None and frame.step in thermo  # dump and thermo coincide
        _check(rows[fid], _expected(calc2, frame, frame.forces, thermo[frame.step]))
        assert rows[fid][6] == "frame+thermo"


def test_every_and_stage_choose_frames(gb: Cli, engine: Any, lammps_run: int) -> None:
    frames = _frames(engine, lammps_run)
    ids = list(frames)  # step order
    gb.ok("compute", "energy", "--mlip", "TM", "--every", "3", "--stage", "other")
    others = [fid for fid in ids if frames[fid].stage == "other"]
    assert set(_evals(engine, "TM")) == {*others[::3], others[-1]}
    out = gb.ok("compute", "energy", "--mlip", "TM", "--stage", "final").output
    assert "1 frames: 1 evaluated" in out
    assert ids[-1] in _evals(engine, "TM")


def test_dry_run_and_no_match(gb: Cli, engine: Any, lammps_run: int) -> None:
    before = table_counts(engine)
    out = gb.ok("compute", "energy", "--mlip", "TM", "--dry-run").output
    assert "TM" in out and "lammps" in out and "(1 row)" in out
    out = gb.ok("compute", "energy", "--mlip", "TM", "--x", "5").output
    assert out.strip() == "no runs match (x=5 status=done)"
    assert table_counts(engine) == before


def _refused(res: Any, engine: Any, before: dict[str, int], code: int, *texts: str) -> None:
    assert res.exit_code == code, res.output
    msg = res.output.strip()
    assert len(msg.splitlines()) == 1 and "Traceback" not in msg, msg
    for text in texts:
        assert text in msg, msg
    assert table_counts(engine) == before


def test_bad_input_writes_nothing(gb: Cli, engine: Any, lammps_run: int) -> None:
    before = table_counts(engine)
    _refused(gb("compute", "energy", "--mlip", "nope"), engine, before, 2, "--mlip", "'nope'")
    _refused(
        gb("compute", "energy", "--mlip", "TM", "--run-mlip", "nope"), engine, before, 2, "'nope'"
    )
    res = gb("compute", "energy", "--mlip", "TM", "--every", "0")  # click's own usage error
    assert res.exit_code == 2 and "'--every': 0" in res.output and table_counts(engine) == before
    # a run without frames (a log ingested without its dump), among runs with frames
    gb.ok(
        "ingest", "lammps", "--log", str(lammps_file("log.metal.lammps")),
        *key_args("TM", x=0.0, seed=2),
    )  # fmt: skip
    before = table_counts(engine)
    _refused(
        gb("compute", "energy", "--mlip", "TM"), engine, before, 2, "seed 2", "no stored frames"
    )


def test_mlip_without_its_package_is_a_failure(gb: Cli, engine: Any, lammps_run: int) -> None:
    if find_spec("sevenn") is not None:
        pytest.skip("sevenn is installed here; the missing-package path is not reachable")
    gb.ok("mlip", "add", "S7", "--arch", "sevenn")
    before = table_counts(engine)
    _refused(gb("compute", "energy", "--mlip", "S7"), engine, before, 1, "MLIP 'S7'")


def test_delegated_call_round_trips(gb: Cli, engine: Any, lammps_run: int) -> None:
    """The request and report an MLIP's own interpreter gets and sends back (here a child
    process of this interpreter: the path `compute_energy` takes for `mlip.python`)."""
    import sys

    from glassbench.runners.delegation import call_in_interpreter
    from glassbench.service.selection import RunSelector
    from glassbench.stored.energy import EnergyReport

    request = {
        "mlip": "TM",
        "selector": RunSelector(run_ids=(lammps_run,)).as_dict(),
        "stages": ["final"],
        "every": 1,
        "force": False,
        "progress": False,
        "threads": 1,
    }
    target = "glassbench.stored.energy:serve_compute_energy"
    report = EnergyReport.from_dict(
        call_in_interpreter(sys.executable, target, request, engine=engine)
    )
    assert [(r.run_id, r.frames, r.evaluated) for r in report.runs] == [(lammps_run, 1, 1)]
    assert len(_evals(engine, "TM")) == 1
    # errors come back as errors
    from glassbench.errors import BadInput

    with pytest.raises(BadInput, match="no stored frames of stage quench"):
        call_in_interpreter(
            sys.executable, target, {**request, "stages": ["quench"]}, engine=engine
        )
