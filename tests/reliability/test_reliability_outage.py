"""Database outage: a PostgreSQL cluster of the test's own (temp dir, own port) is stopped
(``pg_ctl stop -m immediate``: a crash, WAL recovery at restart) while a melt-quench run is in
flight. The runner keeps computing, retries its flush with backoff while the server is down
(``glassbench.service.retry``), keeps its checkpoint, and finishes ``done`` once the server is
back, with the same thermo rows and frames as an uninterrupted run. The URL carries a password
(ignored by trust auth) and no output may show it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from glob import glob
from pathlib import Path

import pytest

from tests.conftest import require
from tests.reliability.conftest import (
    FIGURES,
    RUN_ARGS,
    THERMO_SQL,
    Reference,
    assert_db_check,
    fetch,
    frames_of,
    gb_popen,
    migrate,
    register_tiny,
    scalar,
    wait_for,
)

PASSWORD = "outage-Secret-7781"
MIN_DOWNTIME_S = 5.0


def _pg_bin() -> Path | None:
    for candidate in sorted(glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    bindir: Path
    root: Path
    port: int
    as_user: list[str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, password: str | None = None) -> str:
        auth = f"postgres:{password}" if password else "postgres"
        return f"postgresql+psycopg://{auth}@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        cmd = [*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-o", opts, "-l", str(self.root / "server.log"), "-w", "start")

    def stop(self, mode: str = "immediate") -> None:
        self._ctl("-m", mode, "-w", "stop")


@pytest.fixture
def scratch_cluster() -> Iterator[Cluster]:
    """initdb + pg_ctl start in a temp dir on a free port (as user postgres when run as root)."""
    bindir = _pg_bin()
    require(None if bindir else "PostgreSQL server binaries (initdb, pg_ctl) not found")
    assert bindir is not None
    root = Path(tempfile.mkdtemp(prefix="gb-outage-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    cluster = Cluster(bindir, root, _free_port(), as_user)
    subprocess.run(
        [
            *as_user,
            str(bindir / "initdb"),
            "-D",
            str(cluster.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    cluster.start()
    try:
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.stop("fast")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_runner_survives_a_database_outage(
    scratch_cluster: Cluster, tiny_mace: Path, reference_run: Reference, tmp_path: Path
) -> None:
    url = scratch_cluster.url(PASSWORD)
    migrate(url)
    register_tiny(url, tiny_mace)
    log = tmp_path / "runner.log"
    with open(log, "w") as err:
        proc = gb_popen(
            url,
            "run",
            "meltquench",
            *RUN_ARGS,
            "--checkpoint-dir",
            str(tmp_path / "ck"),
            stderr=err,
        )
        try:
            # MD has started (initial frame and step-0 row stored): take the server down.
            wait_for(
                lambda: (scalar(url, "SELECT COUNT(*) FROM thermo") or 0) >= 1,
                proc,
                600,
                "MD start",
            )
            scratch_cluster.stop("immediate")
            down_at = time.monotonic()
            # The next flush finds no server and retries; keep it down a while longer.
            wait_for(lambda: "database unavailable" in log.read_text(), proc, 600, "a retry")
            time.sleep(max(0.0, MIN_DOWNTIME_S - (time.monotonic() - down_at)) + 2.0)
            assert proc.poll() is None, "the runner gave up while the database was down"
            scratch_cluster.start()
            downtime = time.monotonic() - down_at
            out, _ = proc.communicate(timeout=900)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    errors = log.read_text()
    assert proc.returncode == 0, out + errors
    retries = errors.count("database unavailable")
    assert retries >= 2, errors  # backoff: several attempts, not one
    assert "succeeded after" in errors, errors
    assert PASSWORD not in out + errors, "password leaked into the runner's output"
    assert fetch(url, "SELECT status, attempts FROM run") == [("done", 1)]
    got = fetch(url, THERMO_SQL)
    want, want_frames = reference_run.data()
    assert [r[0] for r in got] == [r[0] for r in want]
    assert got == want
    assert frames_of(url) == want_frames
    assert_db_check(url)
    FIGURES.add(
        f"database outage: server stopped (immediate) for {downtime:.1f} s mid-run; runner "
        f"retried {retries} times with backoff and finished done; {len(got)} thermo rows + "
        f"{len(want_frames)} frames equal to the uninterrupted run; rows lost 0"
    )
