"""Fixtures for the tests of work on stored data: a LAMMPS-made run (real ``lmp`` output from
tests/data/lammps, ingested through the CLI) whose MLIP is a tiny MACE, on each database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.ingest.conftest import key_args, lammps_file

# The MLIP the LAMMPS fixture run is registered with: the suite's tiny MACE.
MLIP = "TM"


@pytest.fixture
def tiny_mlip(gb: Cli, tiny_mace: Path) -> str:
    """The suite's tiny MACE registered as ``TM``."""
    gb.ok("mlip", "add", MLIP, "--arch", "mace", "--model", str(tiny_mace))
    return MLIP


def ingest_lammps_run(
    gb: Cli, mlip: str, *, seed: int = 1, name: str = "metal", x: float = 0.0
) -> int:
    """Ingest tests/data/lammps/{log,dump}.<name> as a run of ``mlip``; its run id."""
    gb.ok(
        "ingest",
        "lammps",
        "--log",
        str(lammps_file(f"log.{name}.lammps")),
        "--dump",
        str(lammps_file(f"dump.{name}.lammpstrj")),
        *key_args(mlip, x=x, seed=seed),
    )
    out = gb.ok(
        "sql",
        f"SELECT run_id FROM run_detail WHERE mlip = '{mlip}' AND seed = {seed}",
        "--format",
        "csv",
    ).stdout
    return int(out.strip().splitlines()[1])


@pytest.fixture
def lammps_run(gb: Cli, tiny_mlip: str) -> int:
    """A LAMMPS-made run (x = 0, 52 atoms, 8 frames: 7 'other' and the final one) of ``TM``."""
    return ingest_lammps_run(gb, tiny_mlip)


def scalar(engine: Any, sql: str, **params: Any) -> Any:
    import sqlalchemy as sa

    with engine.connect() as c:
        return c.execute(sa.text(sql), params).scalar()
