"""``glassbench report schedule``: fires, survives a database outage, stops on SIGTERM.

Each test runs the real command in a subprocess with the hidden ``--interval-seconds`` option.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from glassbench.service.db import make_engine
from glassbench.service.migrations import upgrade

SRC = Path(__file__).resolve().parents[2] / "src"


class Scheduler:
    """A ``report schedule`` subprocess whose combined output goes to a log file."""

    def __init__(self, url: str, out: Path, log: Path, *extra: str) -> None:
        self.log = log
        self._fh = log.open("wb")
        env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "glassbench",
                "--db",
                url,
                "report",
                "schedule",
                "--interval-seconds",
                "1",
                "--out",
                str(out),
                "--format",
                "csv,md",
                *extra,
            ],
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, what: Callable[[str], bool], timeout: float, label: str) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if what(text):
                return text
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        pytest.fail(f"timed out waiting for {label}; rc={self.proc.poll()}; log:\n{self.text()}")

    def terminate(self, timeout: float = 15) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._fh.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._fh.close()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Scheduler]]:
    started: list[Scheduler] = []

    def _start(url: str, *extra: str) -> Scheduler:
        s = Scheduler(url, tmp_path / "out", tmp_path / f"log{len(started)}.txt", *extra)
        started.append(s)
        return s

    yield _start
    for s in started:
        s.kill()


def _generations(text: str) -> int:
    return len(re.findall(r"report generation #\d+: (written to|data unchanged)", text))


def _migrated_sqlite(path: Path) -> str:
    url = f"sqlite:///{path}"
    eng = make_engine(url)
    upgrade(eng)
    eng.dispose()
    return url


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_fires_on_interval_and_stops_on_sigterm(
    start: Callable[..., Scheduler], tmp_path: Path
) -> None:
    url = _migrated_sqlite(tmp_path / "gb.db")
    t0 = time.monotonic()
    s = start(url)
    text = s.wait_for(lambda t: _generations(t) >= 3, 20, "three generations")
    assert "report generation #1: written to" in text
    assert "report generation #2: data unchanged" in text
    assert s.terminate() == 0
    text = s.text()
    assert "received SIGTERM" in text and "report scheduler stopped" in text
    assert "Traceback" not in text
    assert (tmp_path / "out" / "report.md").exists()
    assert time.monotonic() - t0 < 25


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_recovers_from_database_outage(start: Callable[..., Scheduler], tmp_path: Path) -> None:
    db_dir = tmp_path / "dbdir"
    db_dir.mkdir()
    url = _migrated_sqlite(db_dir / "gb.db")
    offline = tmp_path / "dbdir-offline"
    db_dir.rename(offline)  # the database is gone: every connection attempt fails
    s = start(url, "--retry-initial", "0.2", "--retry-max", "0.5")
    s.wait_for(lambda t: t.count("unavailable (attempt") >= 2, 20, "two failed attempts")
    offline.rename(db_dir)
    text = s.wait_for(lambda t: "written to" in t, 20, "a generation after recovery")
    assert re.search(r"retrying in 0\.[0-9] s", text)
    assert "is back" in text
    assert text.index("unavailable (attempt") < text.index("written to")
    assert s.terminate() == 0
    assert "Traceback" not in s.text()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(60)
def test_outage_log_masks_password_and_sigterm_cuts_backoff(
    start: Callable[..., Scheduler],
) -> None:
    secret = "s3cret-Pw"
    url = f"postgresql+psycopg://glassbench:{secret}@127.0.0.1:{_free_port()}/results"
    s = start(url, "--retry-initial", "30")
    text = s.wait_for(lambda t: "retrying in 30.0 s" in t, 20, "a failed attempt")
    assert "glassbench:***@127.0.0.1" in text
    t0 = time.monotonic()
    assert s.terminate() == 0
    assert time.monotonic() - t0 < 10  # the 30 s backoff wait was cut short
    text = s.text()
    assert secret not in text
    assert "stopped before it completed" in text
