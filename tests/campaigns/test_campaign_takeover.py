"""Taking over runs whose worker is gone: one conditional UPDATE on the exact claim, on both
databases (no MD here: the runs are claimed by hand)."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from glassbench.campaigns import load_spec
from glassbench.runners.meltquench import ensure_run
from glassbench.service.runs import claim as claim_run
from glassbench.service.runs import release
from glassbench.service.runs import release_dead_local_workers as _reap_dead_local_workers
from glassbench.service.runs import release_stale as _reap_stale
from tests.campaigns.conftest import write_spec
from tests.conftest import Cli


def _runs(gb: Cli, engine: Any, tmp_path: Path, n: int) -> list[int]:
    gb.ok("mlip", "add", "chgnet-pbe", "--arch", "chgnet")
    spec = load_spec(write_spec(tmp_path / "s.toml", mlips=["chgnet-pbe"]))
    return [ensure_run(engine, p)[0] for p in spec.params()[:n]]


def _row(engine: Any, rid: int) -> dict[str, Any]:
    with engine.connect() as c:
        return dict(
            c.execute(sa.text("SELECT status, attempts, error FROM run WHERE id = :i"), {"i": rid})
            .mappings()
            .one()
        )


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_runs_of_dead_local_processes_are_released(gb: Cli, engine: Any, tmp_path: Path) -> None:
    dead, alive, other = _runs(gb, engine, tmp_path, 3)
    host = socket.gethostname()
    assert claim_run(engine, dead, worker=f"{host}:{_dead_pid()}")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert claim_run(engine, alive, worker=f"{host}:{live.pid}")
        assert claim_run(engine, other, worker="elsewhere:1")  # another host: not ours to judge
        assert _reap_dead_local_workers(engine, [dead, alive, other]) == 1
    finally:
        live.kill()
        live.wait()
    assert _row(engine, dead)["status"] == "failed"
    assert "is gone" in _row(engine, dead)["error"]
    assert _row(engine, alive)["status"] == "running"
    assert _row(engine, other)["status"] == "running"
    # Released runs are claimable again by an ordinary (non-forced) claim.
    assert claim_run(engine, dead, worker="me:1", max_attempts=2)
    assert _row(engine, dead)["attempts"] == 2


def test_stale_runs_are_released_only_when_silent(gb: Cli, engine: Any, tmp_path: Path) -> None:
    silent, beating = _runs(gb, engine, tmp_path, 2)
    assert claim_run(engine, silent, worker="far:7")
    assert claim_run(engine, beating, worker="far:8")
    old = datetime.now(UTC) - timedelta(hours=1)
    with engine.begin() as c:
        c.execute(
            sa.text("UPDATE run SET heartbeat_at = :t WHERE id = :i"), {"t": old, "i": silent}
        )
    assert _reap_stale(engine, [silent, beating], stale_after_s=600) == 1
    assert _row(engine, silent)["status"] == "failed"
    assert "no heartbeat" in _row(engine, silent)["error"]
    assert _row(engine, beating)["status"] == "running"


def test_release_is_a_no_op_once_the_run_was_claimed_again(
    gb: Cli, engine: Any, tmp_path: Path
) -> None:
    (rid,) = _runs(gb, engine, tmp_path, 1)
    assert claim_run(engine, rid, worker="a:1")  # attempt 1, seen by a campaign as stale...
    with engine.begin() as c:  # ...but meanwhile taken over (attempt 2)
        c.execute(sa.text("UPDATE run SET status = 'failed' WHERE id = :i"), {"i": rid})
    assert claim_run(engine, rid, worker="a:1")
    assert release(engine, rid, owner="a:1", attempts=1, error="stale") == 0
    assert _row(engine, rid) == {"status": "running", "attempts": 2, "error": None}
