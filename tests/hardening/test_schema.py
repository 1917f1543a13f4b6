"""Schema checks (issue 17): read-only commands never create a database file, a database of a
newer glassbench is named as such, and `db check` checks the views (`db upgrade` restores
them)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from glassbench.service.migrations import head_revision
from tests.conftest import Cli, table_counts

ROOT = Path(__file__).resolve().parents[2]

# --- read-only commands never create a database file --------------------------------------------

READ_ONLY = [
    ["sql", "SELECT 1"],
    ["report", "generate", "--out", "{tmp}/report"],
    ["db", "current"],
    ["db", "check"],
    ["db", "downgrade", "base"],
    ["mlip", "list"],
    ["mlip", "add", "MP0", "--arch", "chgnet"],
    ["campaign", "status", str(ROOT / "examples" / "campaign.toml")],
    ["export", "run", "1", "{tmp}/out"],
    ["analysis", "list"],
    ["ingest", "experiment", str(ROOT / "examples" / "experiment-example.csv")],
]


def _invoke(args: list[str], env: Mapping[str, str | None] | None = None) -> Result:
    from glassbench.cli import cli

    return CliRunner().invoke(
        cli, args, env={"GLASSBENCH_DATABASE_URL": None, **(env or {})}, catch_exceptions=False
    )


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.mark.parametrize("command", READ_ONLY, ids=lambda c: " ".join(c[:2]))
def test_command_on_a_missing_file_creates_nothing(in_tmp: Path, command: list[str]) -> None:
    args = [a.format(tmp=in_tmp) for a in command]
    for db, env, label in (
        (["--db", "new.db"], {}, "--db: "),
        (["--db", f"sqlite:///{in_tmp / 'new.sqlite3'}"], {}, "--db: "),
        ([], {"GLASSBENCH_DATABASE_URL": "env.db"}, "GLASSBENCH_DATABASE_URL: "),
        ([], {}, ""),  # the default, ./glassbench.db
    ):
        res = _invoke([*db, *args], env)
        assert res.exit_code == 2, (db, env, res.output)
        line = res.output.strip()
        assert len(line.splitlines()) == 1, res.output
        assert line.startswith(f"Error: {label}database file "), line
        assert line.endswith("does not exist (create it with `glassbench db upgrade`)"), line
        made = [p.name for p in in_tmp.iterdir() if p.suffix in {".db", ".sqlite3", ""}]
        assert not [m for m in made if m.startswith(("new", "env", "glassbench"))], made


def test_db_upgrade_and_the_api_create_the_file(in_tmp: Path) -> None:
    from glassbench import api

    res = _invoke(["--db", "made.db", "db", "upgrade"])
    assert res.exit_code == 0 and (in_tmp / "made.db").is_file(), res.output
    assert "up to date" in _invoke(["--db", "made.db", "db", "current"]).output
    # A bare path naming an existing file is SQLite whatever its name.
    shutil.copy(in_tmp / "made.db", in_tmp / "results")
    assert "up to date" in _invoke(["--db", "results", "db", "current"]).output
    with pytest.raises(api.Failure, match="glassbench db upgrade"):
        api.connect(str(in_tmp / "api.db"), upgrade=False)
    assert not (in_tmp / "api.db").exists()
    engine = api.connect(str(in_tmp / "api.db"))
    assert (in_tmp / "api.db").is_file()
    engine.dispose()


def test_file_removed_after_the_check_is_not_recreated(in_tmp: Path) -> None:
    from glassbench.service.db import make_engine

    assert _invoke(["--db", "gone.db", "db", "upgrade"]).exit_code == 0
    engine = make_engine("sqlite:///gone.db", create=False)
    (in_tmp / "gone.db").unlink()
    with (
        pytest.raises(sa.exc.OperationalError, match="unable to open database file"),
        engine.connect(),
    ):
        pass
    engine.dispose()
    assert not (in_tmp / "gone.db").exists()


# --- a database of a newer glassbench --------------------------------------------------------


def _set_revision(engine: Any, rev: str) -> None:
    with engine.begin() as c:
        c.execute(sa.text("UPDATE alembic_version SET version_num = :r"), {"r": rev})


def _revision(engine: Any) -> str:
    with engine.connect() as c:
        return str(c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one())


def test_newer_schema_says_upgrade_glassbench(
    gb: Cli, engine: Any, db_url: str, tmp_path: Path
) -> None:
    from glassbench import api

    gb.ok("mlip", "add", "MP0", "--arch", "chgnet")
    head = head_revision(engine)
    _set_revision(engine, "9999_future")
    before = table_counts(engine)
    newer = (
        f"is at revision 9999_future, newer than this glassbench (head {head}): upgrade glassbench"
    )
    for args in (
        ["db", "upgrade"],
        ["db", "upgrade", head],
        ["db", "check"],
        ["db", "downgrade", "base", "--yes"],
        ["mlip", "list"],
        ["report", "generate", "--out", str(tmp_path / "r")],
    ):
        res = gb(*args)
        assert res.exit_code == 1, (args, res.output)
        line = res.output.strip()
        assert len(line.splitlines()) == 1 and newer in line, (args, line)
        assert "run `glassbench db upgrade`" not in line
    current = gb.ok("db", "current").output
    assert f"9999_future (newer than this glassbench, head {head}: upgrade glassbench)" in current
    for upgrade in (True, False):
        with pytest.raises(api.Failure, match="newer than this glassbench"):
            api.connect(db_url, upgrade=upgrade).dispose()
    assert table_counts(engine) == before
    assert _revision(engine) == "9999_future"


def test_older_schema_still_says_db_upgrade(gb: Cli, engine: Any) -> None:
    gb.ok("db", "downgrade", "0002")
    res = gb("mlip", "list")
    assert res.exit_code == 1 and "run `glassbench db upgrade`" in res.output
    assert "newer" not in res.output
    assert "head is" in gb.ok("db", "current").output


# --- db check covers the views ----------------------------------------------------------------


def _views(engine: Any) -> set[str]:
    return set(sa.inspect(engine).get_view_names())


def test_db_check_finds_a_dropped_view_and_upgrade_restores_it(gb: Cli, engine: Any) -> None:
    from glassbench.schema.views import CURRENT_VIEWS

    gb.ok("mlip", "add", "MP0", "--arch", "chgnet")
    assert "tables and views match" in gb.ok("db", "check").output
    expected = {name for name, _ in CURRENT_VIEWS}
    assert expected <= _views(engine)
    with engine.begin() as c:
        c.execute(sa.text("DROP VIEW run_summary"))
    before = table_counts(engine)
    res = gb("db", "check")
    assert res.exit_code == 1, res.output
    assert "view run_summary is missing (restore it with `glassbench db upgrade`)" in res.output
    assert "integrity check failed with 1 problem(s)" in res.output
    out = gb.ok("db", "upgrade").output
    assert "re-created views: run_summary" in out
    assert expected <= _views(engine)
    assert "tables and views match" in gb.ok("db", "check").output
    assert "MP0" not in gb.ok("sql", "SELECT * FROM run_summary").output  # no runs, but it works
    assert table_counts(engine) == before
    # Nothing to restore: upgrade says nothing about views.
    assert "re-created" not in gb.ok("db", "upgrade").output


def test_db_check_finds_a_changed_view(gb: Cli, engine: Any) -> None:
    from glassbench.schema.views import RUN_SUMMARY_COLUMNS

    cols = ", ".join(RUN_SUMMARY_COLUMNS)
    with engine.begin() as c:
        c.execute(sa.text("DROP VIEW mlip_mae"))
        c.execute(sa.text("CREATE VIEW mlip_mae AS SELECT name AS mlip FROM mlip"))
        # same columns, different rows: only the definition tells
        c.execute(sa.text("DROP VIEW run_summary"))
        c.execute(sa.text(f"CREATE VIEW run_summary AS SELECT {cols} FROM run_detail WHERE 1 = 0"))
    res = gb("db", "check")
    assert res.exit_code == 1, res.output
    assert "view mlip_mae differs from this glassbench's" in res.output
    assert "view run_summary differs from this glassbench's" in res.output
    assert "re-created views: run_summary, mlip_mae" in gb.ok("db", "upgrade").output
    assert "tables and views match" in gb.ok("db", "check").output


@pytest.mark.timeout(90)
def test_report_schedule_waits_for_a_missing_file_without_creating_it(tmp_path: Path) -> None:
    """The scheduler is a service that waits out outages: it starts on a missing file, never
    creates it, and writes its report once `db upgrade` made the database."""
    from tests.reports.test_schedule import Scheduler

    db = tmp_path / "later.db"
    s = Scheduler(f"sqlite:///{db}", tmp_path / "out", tmp_path / "log.txt", "--retry-max", "0.5")
    try:
        s.wait_for(lambda t: t.count("unavailable (attempt") >= 2, 30, "two failed attempts")
        assert not db.exists()
        assert _invoke(["--db", f"sqlite:///{db}", "db", "upgrade"]).exit_code == 0
        s.wait_for(lambda t: "written to" in t, 30, "a generation once the file exists")
    finally:
        assert s.terminate() == 0
