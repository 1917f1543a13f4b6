"""``glassbench compute elastic``: moduli of stored runs with a tiny MACE, on SQLite and
PostgreSQL; one code path with the runner; idempotent, resumable after kill -9."""

from __future__ import annotations

import inspect
import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from tests.conftest import MACE_HINT, Cli, require_module, table_counts
from tests.stored.conftest import MLIP, ingest_lammps_run, scalar

require_module("mace", MACE_HINT)

ELASTIC = ("bulk_modulus_gpa", "poisson_ratio", "shear_modulus_gpa", "young_modulus_gpa")
# Few relaxation steps: these tests are about storage, not converged moduli.
QUICK = ("--max-steps", "2")
# Each modulus' uncertainty field in ElasticResult, and its key in uncertainty_components.
ERR = {
    "bulk_modulus_gpa": "bulk_modulus_stderr_gpa",
    "shear_modulus_gpa": "shear_modulus_stderr_gpa",
    "young_modulus_gpa": "young_modulus_stderr_gpa",
    "poisson_ratio": "poisson_ratio_stderr",
}
ERR_KEY = {name: name.split("_")[0] for name in ERR}


def _moduli(engine: Any, run_id: int) -> dict[str, tuple[float, float, str, dict[str, Any]]]:
    """{name: (value, stderr, method, details)} of a run's elastic properties."""
    stmt = sa.text(
        "SELECT name, value, stderr, method, details_json FROM property "
        "WHERE run_id = :run AND name IN :names ORDER BY name"
    ).bindparams(sa.bindparam("names", expanding=True))
    with engine.connect() as c:
        rows = c.execute(stmt, {"run": run_id, "names": list(ELASTIC)}).all()
    return {r[0]: (float(r[1]), float(r[2]), str(r[3]), json.loads(r[4])) for r in rows}


def test_lammps_run_moduli_stored_with_method_then_noop(
    gb: Cli, engine: Any, lammps_run: int
) -> None:
    out = gb.ok("compute", "elastic", "--mlip", MLIP, *QUICK).output
    assert f"run {lammps_run} (TM" in out and "1 computed, 0 skipped, 0 failed" in out
    got = _moduli(engine, lammps_run)
    assert sorted(got) == list(ELASTIC)
    value, stderr, method, details = got["bulk_modulus_gpa"]
    assert math.isfinite(value) and stderr >= 0
    sha = scalar(engine, "SELECT model_sha256 FROM mlip WHERE name = 'TM'")
    assert f"computed with MLIP 'TM' (sha256 {sha[:12]}, dispersion none)" in method
    # The fixture's final frame is at step 450; an ingested run's protocol is external: 0 GPa.
    assert "final frame (step 450)" in method and "+/-0.005" in method
    assert "relaxed at 0 GPa" in method and "NOT converged" in method  # 2 steps are too few
    assert details["computed_by"]["mlip"] == "TM" and details["frames"]["steps"] == [450]
    assert details["settings"]["max_steps"] == 2 and details["bulk_modulus_gpa"] == value

    counts = table_counts(engine)
    again = gb.ok("compute", "elastic", "--mlip", MLIP, *QUICK).output
    assert "skipped: already has elastic moduli" in again and "0 computed, 1 skipped" in again
    assert _moduli(engine, lammps_run) == got and table_counts(engine) == counts

    # --frames 2 --force: the mean of the last two stored frames replaces the moduli (no rows
    # added), with the documented uncertainty rule.
    out = gb.ok("compute", "elastic", "--mlip", MLIP, "--frames", "2", "--force", *QUICK).output
    assert "1 computed" in out and table_counts(engine) == counts
    for name, (value, stderr, method, details) in _moduli(engine, lammps_run).items():
        frames = details["per_frame"]
        assert details["frames"]["steps"] == [400, 450] and len(frames) == 2
        assert "mean of 2 frames of the last stored frames (steps 400..450)" in method
        values = [f[name] for f in frames]
        errors = [f[ERR[name]] for f in frames]
        sem = abs(values[0] - values[1]) / 2  # std(ddof=1) / sqrt(2) of two values
        method_part = (errors[0] + errors[1]) / 2 / math.sqrt(2)
        assert value == pytest.approx(sum(values) / 2, rel=1e-12)
        assert stderr == pytest.approx(math.hypot(sem, method_part), rel=1e-12)
        assert details["uncertainty_components"]["frames"][ERR_KEY[name]] == pytest.approx(sem)


def test_frames_picked_from_an_ingest(engine: Any, lammps_run: int) -> None:
    from glassbench.stored.elastic import pick_frames

    with engine.connect() as conn:
        final = pick_frames(conn, lammps_run, 1)
        last3 = pick_frames(conn, lammps_run, 3)
        many = pick_frames(conn, lammps_run, 20)
    assert final is not None and last3 is not None and many is not None
    assert [f[1] for f in final.frames] == [450] and final.describe() == "final frame (step 450)"
    # No window statistics (an ingest): the last stored frames, the final one last.
    assert [f[1] for f in last3.frames] == [350, 400, 450]
    assert len(many.frames) == 8 and "20 asked, only 8 stored" in many.describe()


@pytest.mark.slow
def test_moduli_of_a_stored_frame_equal_the_runners(
    gb: Cli, engine: Any, tiny_mace: Path, tmp_path: Path
) -> None:
    """One code path: the runner's --elastic moduli of its final structure, recomputed from
    the stored final frame by `compute elastic`, are the same numbers."""
    from tests.runners.test_meltquench import SHORT

    gb.ok("mlip", "add", "tiny", "--arch", "mace", "--model", str(tiny_mace))
    gb.ok(
        "run", "meltquench", "--mlip", "tiny", "--seed", "1", *SHORT, "--elastic",
        "--checkpoint-dir", str(tmp_path / "ck"),
    )  # fmt: skip
    run_id = int(scalar(engine, "SELECT id FROM run"))
    runner = _moduli(engine, run_id)
    assert sorted(runner) == list(ELASTIC)
    out = gb.ok("compute", "elastic", "--mlip", "tiny", "--run", str(run_id), "--force").output
    assert "1 computed" in out
    computed = _moduli(engine, run_id)
    for name in ELASTIC:
        assert computed[name][0] == pytest.approx(runner[name][0], rel=1e-6), name
        assert computed[name][1] == pytest.approx(runner[name][1], rel=1e-6, abs=1e-9), name
    np.testing.assert_allclose(
        computed["bulk_modulus_gpa"][3]["c_gpa"],
        runner["bulk_modulus_gpa"][3]["c_gpa"],
        rtol=1e-6,
        atol=1e-6,
    )
    # The runner wrote window statistics: N frames are spread over its production window.
    from glassbench.stored.elastic import pick_frames

    with engine.connect() as conn:
        pick = pick_frames(conn, run_id, 3)
        lo = scalar(engine, "SELECT MIN(step_from) FROM window_stat WHERE run_id = :r", r=run_id)
    assert pick is not None and pick.source == "production window" and len(pick.frames) >= 2
    assert pick.frames[-1][2] == "final" and all(f[1] >= lo for f in pick.frames)


def test_defaults_are_the_runners() -> None:
    from glassbench.runners.elastic import ElasticSettings
    from glassbench.runners.meltquench import MeltQuenchParams
    from glassbench.stored.elastic import compute_elastic

    params = MeltQuenchParams(mlip="m", x=0.0, quench_rate_k_ps=1.0, seed=0)
    assert params.elastic_settings(0.0) == ElasticSettings()
    sig = inspect.signature(compute_elastic).parameters
    for name, value in ElasticSettings().to_dict().items():
        if name in sig and name not in ("pressure_gpa",):
            assert sig[name].default == value, name


def test_selector_dry_run_and_other_mlips(
    gb: Cli, engine: Any, lammps_run: int, tiny_mace_factory: Any
) -> None:
    gb.ok("mlip", "add", "B", "--arch", "mace", "--model", str(tiny_mace_factory(5)))
    counts = table_counts(engine)
    listed = gb.ok("compute", "elastic", "--mlip", MLIP, "--dry-run").output
    assert "(1 row)" in listed and "lammps" in listed
    # Without --run-mlip, B works on the runs B made: none.
    none = gb.ok("compute", "elastic", "--mlip", "B")
    assert "no runs match (mlip=B status=done)" in none.output
    nomatch = gb.ok("compute", "elastic", "--mlip", MLIP, "--seed", "99").output
    assert "no runs match" in nomatch and table_counts(engine) == counts
    # B on TM's runs must be asked for; it is said, and the method says so.
    out = gb.ok("compute", "elastic", "--mlip", "B", "--run-mlip", MLIP, *QUICK).output
    assert "warning: MLIP 'B' computes the moduli of runs made with 'TM'" in out
    method = _moduli(engine, lammps_run)["bulk_modulus_gpa"][2]
    assert "computed with MLIP 'B'" in method and "the run was made with 'TM'" in method


def test_bad_input_is_refused_before_anything_is_written(
    gb: Cli, engine: Any, lammps_run: int, tiny_mace: Path, tmp_path: Path
) -> None:
    from tests.ingest.conftest import key_args, lammps_file

    # A run without frames: a LAMMPS log ingested without its dump.
    gb.ok(
        "ingest", "lammps", "--log", str(lammps_file("log.metal.lammps")), *key_args(MLIP, seed=2)
    )
    gb.ok("mlip", "add", "DP", "--arch", "deepmd", "--model", str(tiny_mace))  # no deepmd here
    moved = tmp_path / "gone.model"
    moved.write_bytes(tiny_mace.read_bytes())
    gb.ok("mlip", "add", "GONE", "--arch", "mace", "--model", str(moved))
    moved.unlink()
    counts = table_counts(engine)
    cases = [
        (("--mlip", "nope"), 2, "no MLIP named 'nope'"),
        (("--mlip", MLIP, "--run-mlip", "nope"), 2, "no MLIP named 'nope'"),
        (("--mlip", MLIP), 2, "seed 2, external"),  # the run without frames
        (("--mlip", MLIP, "--frames", "0"), 2, "--frames"),
        (("--mlip", MLIP, "--strain", "0.2"), 2, "--strain"),
        (("--mlip", "GONE", "--run-mlip", MLIP, "--seed", "1"), 2, "MLIP 'GONE'"),
        (("--mlip", "DP", "--run-mlip", MLIP, "--seed", "1"), 1, "MLIP 'DP': architecture"),
    ]
    for args, code, message in cases:
        res = gb("compute", "elastic", *args)
        assert res.exit_code == code, (args, res.output)
        assert message in res.output, (args, res.output)
        assert len(res.output.strip().splitlines()[-1]) > 0
        assert table_counts(engine) == counts, args
    res = gb("compute", "elastic", "--mlip", MLIP)
    assert "has no stored frames" in res.output and res.output.count("Error") == 1


def _wrapper_python(directory: Path, marker: Path) -> Path:
    """An 'other environment': its own bin/python, which records each start and runs ours."""
    py = directory / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text(f'#!/bin/sh\necho started >> "{marker}"\nexec "{sys.executable}" "$@"\n')
    py.chmod(py.stat().st_mode | stat.S_IXUSR)
    return py


def test_mlip_with_its_own_interpreter_computes_there(
    gb: Cli, engine: Any, tiny_mace: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    py = _wrapper_python(tmp_path / "otherenv", marker)
    gb.ok("mlip", "add", "ENV", "--arch", "mace", "--model", str(tiny_mace), "--python", str(py))
    marker.unlink()  # registration started it once, to check that it imports glassbench
    run_id = ingest_lammps_run(gb, "ENV")
    out = gb.ok("compute", "elastic", "--mlip", "ENV", *QUICK).output
    assert "1 computed" in out and marker.read_text().count("started") == 1
    assert "computed with MLIP 'ENV'" in _moduli(engine, run_id)["bulk_modulus_gpa"][2]


def _elastic_count(engine: Any, run_id: int) -> int:
    stmt = sa.text(
        "SELECT COUNT(*) FROM property WHERE run_id = :run AND name IN :names"
    ).bindparams(sa.bindparam("names", expanding=True))
    with engine.connect() as c:
        return int(c.execute(stmt, {"run": run_id, "names": list(ELASTIC)}).scalar_one())


@pytest.mark.slow
def test_kill9_midway_then_rerun_completes_without_duplicates(
    gb: Cli, engine: Any, db_url: str, tiny_mlip: str
) -> None:
    runs = [ingest_lammps_run(gb, tiny_mlip, seed=s) for s in (1, 2, 3)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("GLASSBENCH_DATABASE_URL", None)
    args = ("compute", "elastic", "--mlip", tiny_mlip, "--max-steps", "10")
    proc = subprocess.Popen(
        [sys.executable, "-m", "glassbench", "--db", db_url, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 300
    while _elastic_count(engine, runs[0]) < 4:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "the first run's moduli never arrived"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = _moduli(engine, runs[0])
    done = [_elastic_count(engine, r) for r in runs]
    assert done[0] == 4 and done[2] == 0  # killed mid-way: the last run not reached
    assert all(n in (0, 4) for n in done)  # a run's four properties come together or not at all

    out = gb.ok(*args).output
    assert f"run {runs[0]} (TM" in out
    assert out.splitlines()[0].endswith(
        "skipped: already has elastic moduli (force recomputes them)"
    )
    assert [_elastic_count(engine, r) for r in runs] == [4, 4, 4]
    assert _moduli(engine, runs[0]) == first
    total = scalar(engine, "SELECT COUNT(*) FROM property WHERE name = 'bulk_modulus_gpa'")
    assert total == 3
