"""Melt-quench runner: real tiny MACE through the registry, live ingest, kill -9 and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import MACE_HINT, Cli, require_module

require_module("mace", MACE_HINT)

SHORT = [
    "--x", "1.0", "--quench-rate", "50000", "--formula-units", "2", "--melt-ps", "0.02",
    "--anneal-ps", "0.04", "--timestep-fs", "1.0", "--thermo-every", "5", "--frame-every", "20",
]  # fmt: skip


def _first_row(csv_output: str, header_start: str) -> str:
    """The first data row of `glassbench sql --format csv` output (on PostgreSQL a warning
    about a superuser connection may come before the header, on stderr)."""
    lines = csv_output.strip().splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith(header_start))
    return lines[header + 1]


def _thermo(engine: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as c:
        return [
            tuple(r)
            for r in c.execute(
                sa.text(
                    "SELECT step, time_ps, temperature_k, potential_energy_ev, volume_a3 FROM thermo ORDER BY step"
                )
            )
        ]


@pytest.mark.slow
def test_meltquench_tiny_mace_end_to_end(
    gb: Cli, engine: Any, tiny_mace: Path, tmp_path: Path
) -> None:
    gb.ok("mlip", "add", "tiny", "--arch", "mace", "--model", str(tiny_mace))
    out = gb.ok(
        "run",
        "meltquench",
        "--mlip",
        "tiny",
        "--seed",
        "1",
        *SHORT,
        "--checkpoint-dir",
        str(tmp_path / "ck"),
    ).output
    assert "done" in out
    rows = _thermo(engine)
    # 20 melt + 30 quench (1500 K at 50000 K/ps) + 40 anneal steps; thermo every 5 from 0.
    assert [r[0] for r in rows] == list(range(0, 91, 5))
    assert all(r[3] is not None for r in rows)
    summary = gb.ok(
        "sql",
        "SELECT status, n_atoms, density_g_cm3, p0, bs, na_cn FROM run_summary",
        "--format",
        "csv",
    ).output
    status, n_atoms, dens, *_ = _first_row(summary, "status,").split(",")
    assert status == "done" and n_atoms == "26" and 0.5 < float(dens) < 6
    stages = gb.ok(
        "sql",
        "SELECT stage, COUNT(*) AS n FROM frame GROUP BY stage ORDER BY stage",
        "--format",
        "csv",
    ).output
    assert "final,1" in stages and "initial,1" in stages and "quench," in stages
    # Every stored frame was analysed; the quench frames carry their nominal temperature.
    with engine.connect() as c:
        unanalysed = c.execute(
            sa.text(
                "SELECT COUNT(*) FROM frame f WHERE NOT EXISTS (SELECT 1 FROM speciation s WHERE s.frame_id = f.id)"
            )
        ).scalar()
        temps = [
            r[0]
            for r in c.execute(
                sa.text("SELECT temperature_k FROM frame WHERE stage = 'quench' ORDER BY step")
            )
        ]
    assert unanalysed == 0
    assert temps == sorted(temps, reverse=True) and 300 <= temps[-1] < 1800
    assert "integrity checks passed" in gb.ok("db", "check").output
    # A second invocation does nothing: the run is done.
    again = gb.ok(
        "run",
        "meltquench",
        "--mlip",
        "tiny",
        "--seed",
        "1",
        *SHORT,
        "--checkpoint-dir",
        str(tmp_path / "ck"),
    )
    assert "already done" in again.output
    assert len(_thermo(engine)) == len(rows)


def test_changed_model_file_is_refused(
    gb: Cli, engine: Any, tiny_mace: Path, tmp_path: Path
) -> None:
    model = tmp_path / "m.pt"
    model.write_bytes(tiny_mace.read_bytes())
    gb.ok("mlip", "add", "tiny", "--arch", "mace", "--model", str(model))
    model.write_bytes(tiny_mace.read_bytes() + b"tampered")
    res = gb(
        "run",
        "meltquench",
        "--mlip",
        "tiny",
        "--seed",
        "1",
        *SHORT,
        "--checkpoint-dir",
        str(tmp_path / "ck"),
    )
    assert res.exit_code == 2
    assert "sha256" in res.output and str(model) in res.output
    with engine.connect() as c:
        status, error = c.execute(sa.text("SELECT status, error FROM run")).one()
    assert status == "failed" and "sha256" in error


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--quench-rate", "-5"], "--quench-rate"),
        (["--x", "0.5", "--formula-units", "1"], "whole number"),
        (["--mlip", "nobody"], "no MLIP named"),
    ],
)
def test_bad_arguments(
    gb: Cli, engine: Any, tiny_mace: Path, args: list[str], message: str
) -> None:
    gb.ok("mlip", "add", "tiny", "--arch", "mace", "--model", str(tiny_mace))
    base = {
        "--mlip": "tiny",
        "--x": "1.0",
        "--quench-rate": "50000",
        "--seed": "1",
        "--formula-units": "2",
    }
    for k, v in zip(args[::2], args[1::2], strict=True):
        base[k] = v
    flat = [t for kv in base.items() for t in kv]
    res = gb("run", "meltquench", *flat, "--melt-ps", "0.01", "--anneal-ps", "0.01")
    assert res.exit_code == 2, res.output
    assert message in res.output


def _checkpoints(directory: Path) -> list[Path]:
    """Completed checkpoint files (the atomic writer's temporary file does not count)."""
    return [p for p in directory.glob("run-*.npz") if not p.name.endswith(".tmp.npz")]


def _run_cli(
    db_url: str, ck: Path, *, env: dict[str, str] | None = None, extra: tuple[str, ...] = ()
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "glassbench",
            "--db",
            db_url,
            "run",
            "meltquench",
            "--mlip",
            "tiny",
            "--seed",
            "7",
            *SHORT,
            "--anneal-ps",
            "0.5",
            *extra,
            "--checkpoint-dir",
            str(ck),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


# The study protocol's kill lands in its NPT production stage: the Nose-Hoover chain and MTK
# barostat variables must come back from the checkpoint for the trajectory to be the same.
STUDY = ("--protocol", "study", "--anneal-ps", "0.02", "--production-ps", "0.3")


@pytest.mark.slow
@pytest.mark.parametrize(("extra", "rows"), [((), 111), (STUDY, 75)], ids=["default", "study"])
def test_kill9_then_resume_equals_uninterrupted_run(
    db_url: str, tiny_mace: Path, tmp_path: Path, extra: tuple[str, ...], rows: int
) -> None:
    from glassbench.service.db import make_engine
    from glassbench.service.migrations import upgrade

    # Reference: an uninterrupted run in its own database.
    ref_url = f"sqlite:///{tmp_path / 'ref.db'}"
    for url in (db_url, ref_url):
        eng = make_engine(url)
        upgrade(eng)
        eng.dispose()
        Cli(url).ok("mlip", "add", "tiny", "--arch", "mace", "--model", str(tiny_mace))
    ref = _run_cli(ref_url, tmp_path / "ck-ref", extra=extra)
    assert ref.wait(timeout=600) == 0, ref.stdout.read() if ref.stdout else ""

    engine = make_engine(db_url)
    proc = _run_cli(db_url, tmp_path / "ck", extra=extra)
    # Kill -9 mid-run, once the first flush (steps 0..200, 41 thermo rows) is in *and* its
    # checkpoint is on disk: the checkpoint follows the commit, so a kill between the two is a
    # clean restart (correct, but not the resume this test is about).
    deadline = time.time() + 300
    while time.time() < deadline:
        with engine.connect() as c:
            n = c.execute(sa.text("SELECT COUNT(*) FROM thermo")).scalar_one()
        if n >= 41 and _checkpoints(tmp_path / "ck"):
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with engine.connect() as c:
        status = c.execute(sa.text("SELECT status FROM run")).scalar_one()
        partial = c.execute(sa.text("SELECT COUNT(*) FROM thermo")).scalar_one()
    assert status == "running" and 0 < partial < rows
    resumed = _run_cli(db_url, tmp_path / "ck", extra=extra)
    out = resumed.stdout.read() if resumed.stdout else ""
    assert resumed.wait(timeout=600) == 0, out
    assert "resumed from step" in out
    got = _thermo(engine)
    want = _thermo(make_engine(ref_url))
    assert [r[0] for r in got] == [r[0] for r in want]  # same steps, no duplicates, none missing
    assert got == want  # and the same numbers: the resumed trajectory is the same trajectory
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT status, attempts FROM run")).one() == ("done", 2)
    engine.dispose()


@pytest.mark.slow
def test_meltquench_tiny_deepmd_in_its_own_interpreter(
    gb: Cli, engine: Any, deepmd_python: str, tiny_deepmd_graph: Path, tmp_path: Path
) -> None:
    """DeePMD (TensorFlow) cannot share the torch environment: the registered interpreter runs
    the simulation and the rows land in the same database."""
    gb.ok(
        "mlip",
        "add",
        "tiny-dp",
        "--arch",
        "deepmd",
        "--model",
        str(tiny_deepmd_graph),
        "--python",
        deepmd_python,
    )
    res = gb(
        "run",
        "meltquench",
        "--mlip",
        "tiny-dp",
        "--seed",
        "2",
        *SHORT,
        "--checkpoint-dir",
        str(tmp_path / "ck"),
    )
    assert res.exit_code == 0, res.output
    rows = _thermo(engine)
    assert [r[0] for r in rows] == list(range(0, 91, 5))
    with engine.connect() as c:
        status, software = c.execute(sa.text("SELECT status, software_json FROM run")).one()
    assert status == "done"
    assert "deepmd-kit" in software  # provenance recorded by the worker interpreter
    summary = gb.ok(
        "sql", "SELECT status, density_g_cm3, p0 FROM run_summary", "--format", "csv"
    ).output
    assert _first_row(summary, "status,").startswith("done,")
