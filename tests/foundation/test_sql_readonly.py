from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Cli, table_counts


@pytest.fixture
def populated(gb: Cli, tmp_path: Any) -> Cli:
    gb.ok("mlip", "add", "chgnet-pbe", "--arch", "chgnet")
    csv = tmp_path / "exp.csv"
    csv.write_text(
        "x,property,value,uncertainty,source\n0,density_g_cm3,2.0,,SYNTHETIC test value\n"
    )
    gb.ok("ingest", "experiment", str(csv))
    return gb


@pytest.mark.parametrize(
    "query",
    [
        "DROP TABLE run",
        "DELETE FROM mlip",
        "UPDATE mlip SET name = 'x'",
        "INSERT INTO mlip (name, arch, dispersion, created_at) VALUES ('y', 'mace', 'none', '2020-01-01')",
        "CREATE TABLE evil (id INTEGER)",
        "SELECT 1; DROP TABLE run",
        "SELECT 1; COMMIT; DROP TABLE mlip",
        "ALTER TABLE mlip ADD COLUMN z INTEGER",
    ],
)
def test_writes_are_refused(populated: Cli, engine: Any, query: str) -> None:
    before = table_counts(engine)
    res = populated("sql", query)
    assert res.exit_code == 2, res.output
    # a write says so (not "syntax error", which PREPARE reports on PostgreSQL); several
    # statements are refused as such
    expected = "one statement at a time" if ";" in query else "write refused (read-only)"
    assert expected in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    assert table_counts(engine) == before
    # The table still works and holds its row.
    assert "chgnet-pbe" in populated.ok("sql", "SELECT name FROM mlip").output


def test_sqlite_specific_escapes_refused(sqlite_url: str, tmp_path: Any) -> None:
    gb = Cli(sqlite_url)
    gb.ok("db", "upgrade")
    for query in (
        f"ATTACH DATABASE '{tmp_path / 'other.db'}' AS o",
        "PRAGMA journal_mode=DELETE",
        "PRAGMA query_only=0",
        "CREATE TEMP TABLE t (x)",
    ):
        res = gb("sql", query)
        assert res.exit_code == 2, (query, res.output)
        assert "write refused (read-only)" in res.output, (query, res.output)
    assert not (tmp_path / "other.db").exists()


def test_postgres_side_effect_functions_refused(pg_url: str) -> None:
    gb = Cli(pg_url)
    gb.ok("db", "upgrade")
    for query in (
        "SELECT nextval('mlip_id_seq')",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
    ):
        res = gb("sql", query)
        if "nextval" in query:
            assert res.exit_code == 2, res.output
    # After a refused query the session is not left writable for the next one.
    assert gb("sql", "DELETE FROM mlip").exit_code == 2


def test_select_formats(populated: Cli) -> None:
    # stdout only: a superuser connection (the PostgreSQL of the tests) adds a warning on stderr
    out = populated.ok("sql", "SELECT name, arch FROM mlip", "--format", "json").stdout
    assert json.loads(out) == [{"name": "chgnet-pbe", "arch": "chgnet"}]
    out = populated.ok("sql", "SELECT name, arch FROM mlip", "--format", "csv").stdout
    assert out.strip().splitlines() == ["name,arch", "chgnet-pbe,chgnet"]
    out = populated.ok("sql", "SELECT property, value FROM experiment").stdout
    assert "density_g_cm3" in out and "(1 row)" in out


def test_bad_sql_is_exit_2(populated: Cli) -> None:
    res = populated("sql", "SELEC nonsense")
    assert res.exit_code == 2 and "syntax error" in res.output, res.output
    res = populated("sql", "SELECT * FROM no_such_table")
    assert res.exit_code == 2 and "unknown table" in res.output, res.output
    res = populated("sql", "   ")
    assert res.exit_code == 2 and "empty query" in res.output, res.output


def test_sql_does_not_import_ml_stacks(sqlite_url: str, tmp_path: Any) -> None:
    import subprocess
    import sys

    Cli(sqlite_url).ok("db", "upgrade")
    code = (
        "import sys\n"
        "from glassbench.cli import main\n"
        "try:\n"
        f"    main(['--db', {sqlite_url!r}, 'sql', 'SELECT * FROM run_summary'])\n"
        "finally:\n"
        "    heavy = sorted(m for m in ('torch', 'tensorflow', 'mace', 'deepmd', 'chgnet') if m in sys.modules)\n"
        "    print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
