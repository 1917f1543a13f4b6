"""Crash consistency: ``kill -9`` at seeded random points of an ingest and of the melt-quench
runner; afterwards ``glassbench db check`` passes and rerunning completes the work exactly once.

- ingest (SQLite and PostgreSQL): a generated 60 000-row log + 200-frame dump. An uninterrupted
  ingest of the same files under another key gives the duration and the expected rows; three
  ingests of the real key are killed at seeded fractions of that duration. The ingest is one
  transaction, so after each kill the database holds exactly what it held before; the rerun
  stores the run once, identical to the uninterrupted one.
- runner (PostgreSQL): one run killed three times -- at a random moment after launch, at a
  random moment after MD started (no checkpoint yet), at a random moment after the first
  checkpointed flush -- then resumed; its thermo and frames equal the uninterrupted reference
  run's.
- campaign (PostgreSQL): ``glassbench campaign run`` and its worker killed (process group) at a
  seeded moment after MD began; the rerun finishes every run exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli, table_counts
from tests.reliability.big_lammps import make_big_lammps
from tests.reliability.conftest import (
    FIGURES,
    RUN_ARGS,
    RUN_FIRST_FLUSH,
    RUN_THERMO_STEPS,
    THERMO_SQL,
    Reference,
    assert_db_check,
    fetch,
    frames_of,
    gb_popen,
    gb_run,
    register_tiny,
    scalar,
    wait_for,
)

SEED = 20261126
N_KILLS = 3


def _kill9(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc.stdout:
        proc.stdout.close()


@pytest.fixture(scope="module")
def big_lammps(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_big_lammps(tmp_path_factory.mktemp("big"), n_rows=60_000, n_frames=200)


def _key(seed: int) -> list[str]:
    return ["--mlip", "MP0", "--x", "0", "--quench-rate", "1", "--seed", str(seed)]


def _run_data(engine: Any, seed: int) -> tuple[list[Any], list[Any], list[Any]]:
    rid = scalar(engine, "SELECT id FROM run WHERE seed = :s", s=seed)
    thermo = fetch(
        engine,
        "SELECT step, time_ps, temperature_k, pressure_gpa, potential_energy_ev, volume_a3 "
        "FROM thermo WHERE run_id = :r ORDER BY step",
        r=rid,
    )
    frames = fetch(
        engine, "SELECT step, stage, n_atoms FROM frame WHERE run_id = :r ORDER BY step", r=rid
    )
    spec = fetch(
        engine,
        "SELECT f.step, s.unit, s.count FROM speciation s JOIN frame f ON f.id = s.frame_id "
        "WHERE f.run_id = :r ORDER BY f.step, s.unit",
        r=rid,
    )
    return thermo, frames, spec


@pytest.mark.slow
def test_kill9_ingest_then_rerun_stores_the_run_once(
    engine: Any, db_url: str, big_lammps: tuple[Path, Path]
) -> None:
    log, dump = big_lammps
    Cli(db_url).ok("mlip", "add", "MP0", "--arch", "chgnet")
    files = ["ingest", "lammps", "--log", str(log), "--dump", str(dump)]

    # Uninterrupted ingest under another key: the expected data and the duration to aim at.
    t0 = time.monotonic()
    ref = gb_run(db_url, *files, *_key(99))
    duration = time.monotonic() - t0
    assert ref.returncode == 0, ref.stdout + ref.stderr
    expected = _run_data(engine, 99)
    assert len(expected[0]) > 60_000 and len(expected[1]) == 200

    before = table_counts(engine)
    rng = random.Random(f"{SEED}-ingest-{engine.dialect.name}")
    # The transaction spans about 0.3-0.85 of a run (start-up before, interpreter exit after).
    fractions = sorted(rng.uniform(0.3, 0.8) for _ in range(N_KILLS))
    outcomes = []
    for f in fractions:
        proc = gb_popen(db_url, *files, *_key(1))
        time.sleep(f * duration)
        alive = proc.poll() is None
        _kill9(proc)
        # One transaction: a killed ingest leaves nothing behind or the whole run, never a
        # partial one.
        if table_counts(engine) == before:
            outcomes.append("nothing stored" if alive else "ended before the kill?")
        else:
            assert _run_data(engine, 1) == expected
            outcomes.append("complete run (killed after commit)")
        assert_db_check(db_url)
    assert "nothing stored" in outcomes, outcomes

    res = gb_run(db_url, *files, *_key(1))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ingested" in res.stdout, res.stdout
    assert "already ingested" in Cli(db_url).ok(*files, *_key(1)).output
    assert scalar(engine, "SELECT COUNT(*) FROM run WHERE seed = 1 AND status = 'done'") == 1
    assert _run_data(engine, 1) == expected
    assert_db_check(db_url)
    FIGURES.add(
        f"ingest kill -9 ({engine.dialect.name}): {N_KILLS} kills at "
        f"{', '.join(f'{f:.2f}' for f in fractions)} of {duration:.1f} s ({'; '.join(outcomes)}); "
        f"rerun stored "
        f"{len(expected[0])} thermo rows + {len(expected[1])} frames once; rows lost 0"
    )


@pytest.mark.slow
def test_kill9_runner_three_times_then_resume_equals_uninterrupted(
    pg_url: str, tiny_mace: Path, reference_run: Reference, tmp_path: Path
) -> None:
    from tests.reliability.conftest import migrate

    migrate(pg_url)
    register_tiny(pg_url, tiny_mace)
    ck = tmp_path / "ck"
    args = ["run", "meltquench", *RUN_ARGS, "--checkpoint-dir", str(ck)]
    rng = random.Random(f"{SEED}-runner")

    def n_thermo() -> int:
        return int(scalar(pg_url, "SELECT COUNT(*) FROM thermo") or 0)

    def initial_frame() -> int:
        return int(scalar(pg_url, "SELECT MAX(id) FROM frame WHERE stage = 'initial'") or 0)

    def md_started() -> bool:  # this attempt stored its initial frame (and the step-0 row)
        return initial_frame() > previous_initial

    # (what to wait for, seeded delay after it)
    phases: list[tuple[str, Any, float]] = [
        ("launch", lambda: True, rng.uniform(1.0, 5.0)),
        ("MD started, no checkpoint", md_started, rng.uniform(0.0, 2.0)),
        ("first checkpoint written", lambda: n_thermo() > 1, rng.uniform(0.0, 1.0)),
    ]
    log: list[str] = []
    for name, ready, delay in phases:
        previous_initial = initial_frame()
        proc = gb_popen(pg_url, *args)
        wait_for(ready, proc, 600, name)
        time.sleep(delay)
        assert proc.poll() is None, f"run ended before the kill ({name})"
        _kill9(proc)
        status = scalar(pg_url, "SELECT status FROM run")
        log.append(
            f"{name} +{delay:.2f} s: {n_thermo()} thermo rows, checkpoint {any(ck.glob('*.npz'))}"
        )
        assert status in (None, "running"), status
        assert_db_check(pg_url)
        # Whatever was stored is a prefix of the uninterrupted run, never a duplicate step.
        steps = [r[0] for r in fetch(pg_url, "SELECT step FROM thermo ORDER BY step")]
        assert steps == RUN_THERMO_STEPS[: len(steps)]
        assert len(steps) in (
            0,
            1,
            RUN_THERMO_STEPS.index(RUN_FIRST_FLUSH) + 1,
            len(RUN_THERMO_STEPS),
        )

    final = gb_popen(pg_url, *args)
    out, _ = final.communicate(timeout=900)
    assert final.returncode == 0, out
    assert "resumed from step" in out, out  # from RUN_FIRST_FLUSH or the end
    assert fetch(pg_url, "SELECT status, attempts FROM run") == [("done", N_KILLS + 1)]
    got = fetch(pg_url, THERMO_SQL)
    want, want_frames = reference_run.data()
    assert [r[0] for r in got] == [r[0] for r in want]  # no duplicate, no missing step
    assert got == want  # the same trajectory
    assert frames_of(pg_url) == want_frames
    assert_db_check(pg_url)
    FIGURES.add(
        f"runner kill -9 (postgresql): {N_KILLS} kills ({'; '.join(log)}); resumed run equals "
        f"the uninterrupted one ({len(got)} thermo rows); rows lost 0"
    )


@pytest.mark.slow
def test_kill9_campaign_process_group_then_rerun(
    pg_url: str, tiny_mace: Path, tmp_path: Path
) -> None:
    """A campaign (and its worker) killed at a seeded moment after work began; the rerun
    finishes every run exactly once and the database passes ``db check``."""
    from tests.campaigns.conftest import TINY_THERMO_ROWS, runs, write_spec
    from tests.reliability.conftest import migrate

    migrate(pg_url)
    register_tiny(pg_url, tiny_mace)
    spec = write_spec(tmp_path / "tiny.toml", mlips=["tiny"], x=[0.0, 1.0], seeds=[1])
    delay = random.Random(f"{SEED}-campaign").uniform(0.0, 4.0)
    from glassbench.service.db import make_engine

    engine = make_engine(pg_url)
    try:
        proc = gb_popen(
            pg_url,
            "campaign",
            "run",
            str(spec),
            "--workers",
            "1",
            start_new_session=True,
            cwd=tmp_path,
        )
        wait_for(lambda: any(r["n_thermo"] > 0 for r in runs(engine).values()), proc, 600, "MD")
        time.sleep(delay)
        assert proc.poll() is None, "the campaign ended before the kill"
        os.killpg(proc.pid, signal.SIGKILL)  # the campaign and its workers
        proc.wait()
        before = {i: (r["status"], r["n_thermo"]) for i, r in runs(engine).items()}
        assert_db_check(pg_url)
        res = gb_run(
            pg_url, "campaign", "run", str(spec), "--workers", "1", timeout=900, cwd=tmp_path
        )
        assert res.returncode == 0, res.stdout + res.stderr
        after = runs(engine)
        assert len(after) == 2
        for r in after.values():
            assert r["status"] == "done", r
            assert r["n_thermo"] == r["n_steps"] == TINY_THERMO_ROWS, r  # none missing or twice
        assert_db_check(pg_url)
    finally:
        engine.dispose()
    FIGURES.add(
        f"campaign kill -9 (postgresql, process group): killed {delay:.2f} s after MD began "
        f"(runs then {sorted(before.values())}); rerun finished 2/2 runs once; rows lost 0"
    )
