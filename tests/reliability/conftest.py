"""Shared pieces of the reliability suite: CLI subprocesses, the tiny MACE run and its
uninterrupted reference, database checks.

The melt-quench runs are real (tiny untrained MACE through the registry, 26 atoms): 20 melt +
30 quench + 110 anneal steps, thermo every 70 steps, so that the CLI flushes (and checkpoints)
at step 140 and at the end (160): a run can be killed before any checkpoint, after one, or
while finishing. Runs are compared by thermo rows *and* stored frames (positions as bytes).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import Cli

RUN_ARGS = [
    "--mlip", "tiny", "--seed", "7", "--x", "1.0", "--quench-rate", "50000",
    "--formula-units", "2", "--melt-ps", "0.02", "--anneal-ps", "0.11", "--timestep-fs", "1.0",
    "--thermo-every", "70", "--frame-every", "70",
]  # fmt: skip
# 20 melt + 30 quench + 110 anneal steps; the CLI flushes every 140 steps at thermo-every 70.
RUN_TOTAL_STEPS = 160
RUN_THERMO_STEPS = [0, 70, 140, 160]
RUN_FIRST_FLUSH = 140
FRAMES_SQL = "SELECT step, stage, n_atoms, positions, cell_json FROM frame ORDER BY run_id, step"
THERMO_SQL = (
    "SELECT step, time_ps, temperature_k, pressure_gpa, potential_energy_ev, kinetic_energy_ev, "
    "total_energy_ev, volume_a3, density_g_cm3 FROM thermo ORDER BY run_id, step"
)


@dataclass
class Figures:
    """What the suite did, printed at the end (docs/reliability.md quotes these lines)."""

    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)
        print(f"\nRELIABILITY: {line}")


FIGURES = Figures()


def gb_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("GLASSBENCH_DATABASE_URL", None)
    env.update(extra)
    return env


def gb_popen(
    url: str, *args: str, stderr: Any = subprocess.STDOUT, **kw: Any
) -> subprocess.Popen[str]:
    """``python -m glassbench --db URL ARGS`` as a child process (stdout piped)."""
    return subprocess.Popen(
        [sys.executable, "-m", "glassbench", "--db", url, *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=gb_env(),
        **kw,
    )


def gb_run(
    url: str, *args: str, timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "glassbench", "--db", url, *args],
        capture_output=True,
        text=True,
        env=gb_env(),
        timeout=timeout,
        cwd=cwd,
    )


def fetch(url_or_engine: Any, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` through a short-lived engine (or the one given)."""
    from glassbench.service.db import make_engine

    own = isinstance(url_or_engine, str)
    engine = make_engine(url_or_engine) if own else url_or_engine
    try:
        with engine.connect() as c:
            return [tuple(r) for r in c.execute(sa.text(sql), params)]
    finally:
        if own:
            engine.dispose()


def scalar(url_or_engine: Any, sql: str, **params: Any) -> Any:
    rows = fetch(url_or_engine, sql, **params)
    return rows[0][0] if rows else None


def assert_db_check(url: str) -> str:
    """``glassbench db check`` passes (foreign keys, final frames, thermo order ...)."""
    out = Cli(url).ok("db", "check").output
    assert "integrity checks passed" in out, out
    return out


def migrate(url: str) -> None:
    from glassbench.service.db import make_engine
    from glassbench.service.migrations import upgrade

    eng = make_engine(url)
    try:
        upgrade(eng)
    finally:
        eng.dispose()


def wait_for(
    cond: Callable[[], bool], proc: subprocess.Popen[str] | None, timeout: float, what: str
) -> None:
    """Poll ``cond`` until true; fail if ``proc`` exits first or time runs out."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"process exited ({proc.returncode}) before {what}: {out[-2000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def register_tiny(url: str, model: Path) -> None:
    Cli(url).ok("mlip", "add", "tiny", "--arch", "mace", "--model", str(model))


class Reference:
    """An uninterrupted run of RUN_ARGS on its own SQLite database, started in the background
    when first asked for (it runs while the test that needs it sets up its own run)."""

    def __init__(self, folder: Path, model: Path) -> None:
        self.url = f"sqlite:///{folder / 'reference.db'}"
        migrate(self.url)
        register_tiny(self.url, model)
        self.proc = gb_popen(
            self.url, "run", "meltquench", *RUN_ARGS, "--checkpoint-dir", str(folder / "ck")
        )
        self._rows: tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]] | None = None

    def data(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """(thermo rows, frame rows) of the finished reference run."""
        if self._rows is None:
            out, _ = self.proc.communicate(timeout=900)
            assert self.proc.returncode == 0, out
            self._rows = (fetch(self.url, THERMO_SQL), frames_of(self.url))
            assert [r[0] for r in self._rows[0]] == RUN_THERMO_STEPS
        return self._rows


def frames_of(url: str) -> list[tuple[Any, ...]]:
    return [(r[0], r[1], r[2], bytes(r[3]), r[4]) for r in fetch(url, FRAMES_SQL)]


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory: pytest.TempPathFactory, tiny_mace: Path) -> Iterator[Reference]:
    ref = Reference(tmp_path_factory.mktemp("rel-reference"), tiny_mace)
    yield ref
    if ref.proc.poll() is None:
        ref.proc.kill()
        ref.proc.wait()
