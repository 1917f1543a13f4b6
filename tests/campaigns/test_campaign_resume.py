"""Interrupting a campaign (SIGKILL of the whole process group, workers included) and running
it again finishes only the missing runs; two campaigns started at once on one PostgreSQL
execute every run exactly once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.campaigns.conftest import (
    TINY_THERMO_ROWS,
    assert_all_done_once,
    register,
    runs,
    write_spec,
)
from tests.conftest import Cli


def _campaign(url: str, spec: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "glassbench", "--db", url, "campaign", "run", str(spec), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the test can kill workers with it
    )


def _one_done_one_running(engine: Any) -> bool:
    # Killing while the next run is held (a whole run's time: no race with its completion).
    rs = runs(engine).values()
    return any(r["status"] == "done" for r in rs) and any(r["status"] == "running" for r in rs)


def _wait_until(engine: Any, proc: subprocess.Popen[str], timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if _one_done_one_running(engine):
            return
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.1)
    raise AssertionError(f"no run done and another running after {timeout} s")


@pytest.mark.slow
def test_killed_campaign_rerun_finishes_only_missing_runs(
    gb: Cli, engine: Any, db_url: str, tiny_maces: tuple[Path, Path], tmp_path: Path
) -> None:
    register(gb, tiny_maces)
    spec = write_spec(tmp_path / "tiny.toml", mlips=["tiny-a"], x=[0.0, 1.0], seeds=[1, 2])
    proc = _campaign(db_url, spec, "--workers", "1")
    try:
        _wait_until(engine, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the campaign and its worker, mid-way
        proc.wait()
    before = runs(engine)
    done = {
        i: (r["finished_at"], r["attempts"]) for i, r in before.items() if r["status"] == "done"
    }
    assert 1 <= len(done) < 4
    # The worker was running the next run when it died: the database still says so.
    assert any(r["status"] == "running" for r in before.values())
    # Any run that got past its first flush left a checkpoint to resume from.
    flushed = [i for i, r in before.items() if r["status"] == "running" and r["n_thermo"] > 1]
    ckpts = list((tmp_path / ".glassbench" / "checkpoints").rglob("run-*.npz"))
    assert {int(p.name.split("-")[1]) for p in ckpts} >= set(flushed)

    res = gb("campaign", "run", str(spec), "--workers", "2")
    assert res.exit_code == 0, res.output
    assert f"({4 - len(done)} run now, {len(done)} done before" in res.output
    after = runs(engine)
    assert len(after) == 4
    for i, r in after.items():
        assert r["status"] == "done", r
        assert r["n_thermo"] == r["n_steps"] == TINY_THERMO_ROWS, r
        if i in done:  # not executed again
            assert (r["finished_at"], r["attempts"]) == done[i]
        else:  # the interrupted run was claimed twice, the untouched ones once
            assert r["attempts"] == (2 if before[i]["status"] == "running" else 1), r


@pytest.mark.slow
def test_two_campaigns_at_once_run_every_run_once(
    pg_url: str, tiny_maces: tuple[Path, Path], tmp_path: Path
) -> None:
    from glassbench.service.db import make_engine
    from glassbench.service.migrations import upgrade

    engine = make_engine(pg_url)
    try:
        upgrade(engine)
        register(Cli(pg_url), tiny_maces)
        spec = write_spec(tmp_path / "tiny.toml", mlips=["tiny-a", "tiny-b"])
        procs = [_campaign(pg_url, spec, "--workers", "1") for _ in range(2)]
        outs = [p.communicate(timeout=600)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        assert_all_done_once(engine, 8)
        # Each run was executed by exactly one of the two campaigns.
        ran = [int(re.search(r"\((\d+) run now", o).group(1)) for o in outs]  # type: ignore[union-attr]
        assert sum(ran) == 8, outs
    finally:
        engine.dispose()
