"""The hostile inputs the fuzzer found, pinned: each must be exit 2 with one line and nothing
written. The two that crashed (SIGFPE in vesin) or hung (hours inside vesin) the whole process
run in a child process, so a regression fails the test instead of killing the test run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Cli, table_counts
from tests.ingest.conftest import ase_images, lammps_file
from tests.reliability.conftest import gb_env

KEY = ["--mlip", "MP0", "--quench-rate", "1", "--seed", "1"]


def _log_without_first_memory_line(tmp: Path) -> list[str]:
    # The minimizer block is skipped, so the first run's times start 29 steps late and the
    # time axis went backwards at the reset_timestep: db check flagged the accepted run.
    lines = lammps_file("log.real.lammps").read_text().splitlines(keepends=True)
    i = next(k for k, ln in enumerate(lines) if ln.startswith("Per MPI rank memory"))
    (tmp / "log").write_text("".join(lines[:i] + lines[i + 1 :]))
    return ["ingest", "lammps", "--log", str(tmp / "log"), "--x", "1", *KEY]


def _dump_with_huge_atom_count(tmp: Path) -> list[str]:
    text = lammps_file("dump.real.lammpstrj").read_text()
    (tmp / "dump").write_text(
        text.replace("NUMBER OF ATOMS\n26", "NUMBER OF ATOMS\n9223372036854775808", 1)
    )
    return [
        "ingest",
        "lammps",
        "--log",
        str(lammps_file("log.real.lammps")),
        "--dump",
        str(tmp / "dump"),
        "--x",
        "1",
        *KEY,
    ]


def _extxyz(tmp: Path, lattice: str) -> list[str]:
    import ase.io

    ase.io.write(tmp / "f.extxyz", ase_images()[:2], format="extxyz")
    text = (tmp / "f.extxyz").read_text()
    (tmp / "f.extxyz").write_text(
        text.replace('Lattice="9.5 0.0 0.0 0.0 9.5 0.0 0.0 0.0 9.5"', f'Lattice="{lattice}"', 1)
    )
    return ["ingest", "traj", str(tmp / "f.extxyz"), "--x", "0", *KEY]


CASES = {
    "time going backwards": (_log_without_first_memory_line, "thermo time"),
    "atom count beyond any index": (_dump_with_huge_atom_count, "atoms"),
    "cell volume overflows (warning next to the message)": (
        lambda t: _extxyz(t, "1e300 0.0 0.0 0.0 1e300 0.0 0.0 0.0 9.5"),
        "cell",
    ),
}
IN_CHILD = {
    "elongated cell (vesin SIGFPE)": (
        lambda t: _extxyz(t, "1e40 0.0 0.0 0.0 9.5 0.0 0.0 0.0 9.5"),
        "elongated",
    ),
    "sheared cell 4e-8 A thin (vesin runs for hours)": (
        lambda t: _extxyz(t, "9.5 0.0 2147483648 0.0 9.5 0.0 0.0 0.0 9.5"),
        "too thin",
    ),
}


@pytest.fixture
def sqlite_gb(sqlite_url: str) -> Cli:
    gb = Cli(sqlite_url)
    gb.ok("db", "upgrade")
    gb.ok("mlip", "add", "MP0", "--arch", "chgnet")
    return gb


@pytest.mark.parametrize("case", sorted(CASES))
def test_found_by_fuzzing_in_process(sqlite_gb: Cli, tmp_path: Path, case: str) -> None:
    from glassbench.service.db import make_engine

    make, expected = CASES[case]
    engine = make_engine(sqlite_gb.url)
    before = table_counts(engine)
    res = sqlite_gb(*make(tmp_path))
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1 and expected in res.output, res.output
    assert table_counts(engine) == before
    engine.dispose()


@pytest.mark.parametrize("case", sorted(IN_CHILD))
def test_found_by_fuzzing_in_a_child(sqlite_gb: Cli, tmp_path: Path, case: str) -> None:
    make, expected = IN_CHILD[case]
    proc = subprocess.run(
        [sys.executable, "-m", "glassbench", "--db", sqlite_gb.url, *make(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=gb_env(),
    )
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and expected in proc.stderr, proc.stderr
