"""``report generate --out`` to a place that cannot be written fails first: exit 2, one line
naming ``--out``, no query run, no ``report`` row added, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.hardening.conftest import gb_limited, table_counts


def _bad_outs(tmp_path: Path) -> dict[str, Path]:
    afile = tmp_path / "a-file"
    afile.write_text("not a folder\n")
    out = tmp_path / "with-file-tables"
    out.mkdir()
    (out / "tables").write_text("a file where the CSV folder goes\n")
    return {
        "/proc": Path("/proc/glassbench-test"),  # cannot be created, whoever runs the test
        "/proc/self": Path("/proc/self"),  # exists, and no file can be created in it
        "under a regular file": afile / "report",
        "a regular file": afile,
        "tables is a file": out,
    }


def _one_line_naming_out(res: Any) -> str:
    lines = [ln for ln in res.output.splitlines() if ln.strip() and "warning" not in ln]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and "--out" in lines[0], res.output
    return str(lines[0])


def test_unwritable_out_fails_before_anything(gb: Any, engine: Any, tmp_path: Path) -> None:
    gb.ok("mlip", "add", "SYNTH-A", "--arch", "chgnet")
    before = table_counts(engine)
    for what, out in _bad_outs(tmp_path).items():
        res = gb("report", "generate", "--out", str(out), "--format", "csv")
        line = _one_line_naming_out(res)
        assert str(out) in line or "/proc/" in line, (what, line)
        assert table_counts(engine) == before, what
    assert not Path("/proc/glassbench-test").exists()
    assert (tmp_path / "a-file").read_text() == "not a folder\n"
    # A good folder is created on demand and keeps no probe file.
    out = tmp_path / "new" / "nested"
    gb.ok("report", "generate", "--out", str(out), "--format", "csv")
    assert table_counts(engine)["report"] == before["report"] + 1
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_out_is_checked_before_any_query(tmp_path: Path) -> None:
    # An unmigrated database fails with exit 1 ("db upgrade") once it is queried; a bad --out
    # must be reported instead, so it was checked before the first query.
    db = tmp_path / "unmigrated.db"
    db.touch()  # an empty SQLite database: no glassbench schema
    gb = Cli(f"sqlite:///{db}")
    res = gb("report", "generate", "--out", str(tmp_path / "report"))
    assert res.exit_code == 1 and "db upgrade" in res.output  # the control case
    res = gb("report", "generate", "--out", "/proc/glassbench-test")
    assert "db upgrade" not in _one_line_naming_out(res)


@pytest.mark.slow
def test_schedule_refuses_unwritable_out_at_start(db_url: str, engine: Any) -> None:
    # In a child with a timeout: a regression would start the scheduler and never return.
    before = table_counts(engine)
    res = gb_limited(
        db_url, "report", "schedule", "--cron", "0 6 * * *", "--out", "/proc/glassbench-test"
    )
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and "warning" not in ln]
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and "--out" in lines[0], res.stderr
    assert table_counts(engine) == before
