"""Security: read-only SQL on both engines, no password in any output, model files hash-checked
before unpickling, report output confined to its folder, and the analyst role of
docs/reliability.md (created from the doc's own SQL, used, dropped).
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import Cli, _with_search_path, postgres_base_url, table_counts
from tests.reliability.conftest import FIGURES, fetch, gb_env, migrate

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"

# --- glassbench sql cannot write ----------------------------------------------------------

WRITES = [
    "DROP TABLE run",
    "DELETE FROM mlip",
    "UPDATE mlip SET name = 'x'",
    "INSERT INTO composition (family, x, formula) VALUES ('f', 9, 'F')",
    "CREATE TABLE evil (id INTEGER)",
    "CREATE VIEW evil AS SELECT 1",
    "DROP VIEW run_summary",
    "ALTER TABLE mlip ADD COLUMN z INTEGER",
    "CREATE INDEX evil ON mlip (name)",
    "SELECT 1; DROP TABLE run",
    "SELECT 1; COMMIT; DROP TABLE mlip",
    "SELECT * FROM mlip; DELETE FROM mlip",
    "/* comment */ DELETE FROM mlip",
    "WITH d AS (DELETE FROM mlip RETURNING *) SELECT * FROM d",
    "SELECT * INTO evil FROM mlip",
    "COMMIT",
    "BEGIN",
    "VACUUM",
    "REINDEX TABLE mlip",
]


def _schema(engine: Any) -> list[tuple[str, str]]:
    insp = sa.inspect(engine)
    return sorted(
        [("table", t) for t in insp.get_table_names()]
        + [("view", v) for v in insp.get_view_names()]
    )


def test_sql_refuses_writes_and_ddl(gb: Cli, engine: Any, tmp_path: Path) -> None:
    gb.ok("mlip", "add", "MP0", "--arch", "chgnet")
    csv = tmp_path / "exp.csv"
    csv.write_text("x,property,value,uncertainty,source\n0,density_g_cm3,2.0,,SYNTHETIC\n")
    gb.ok("ingest", "experiment", str(csv))
    before, schema = table_counts(engine), _schema(engine)
    for query in WRITES:
        res = gb("sql", query)
        assert res.exit_code == 2, (query, res.output)
        assert "refused" in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert table_counts(engine) == before and _schema(engine) == schema
    # Reads still work, including a trailing semicolon and comments.
    assert "MP0" in gb.ok("sql", "SELECT name FROM mlip; -- trailing").output
    FIGURES.add(
        f"sql write/DDL refusals ({engine.dialect.name}): {len(WRITES)} statements, all exit 2, 0 rows changed"
    )


# PostgreSQL functions with side effects: (query, refused?) as PostgreSQL 15 behaves for a
# superuser connection inside glassbench's read-only transaction. Allowed ones are documented
# in docs/reliability.md and closed by the analyst role.
PG_FUNCTIONS = [
    ("SELECT nextval('mlip_id_seq')", True),
    ("SELECT setval('mlip_id_seq', 1000)", True),
    ("SELECT set_config('transaction_read_only', 'off', true)", True),
    ("COPY (SELECT 1) TO PROGRAM 'touch {marker}'", True),
    ("COPY mlip TO '{marker}'", True),
    ("DO $$ BEGIN EXECUTE 'DELETE FROM mlip'; END $$", True),
    ("SELECT set_config('default_transaction_read_only', 'off', false)", False),
    ("SELECT pg_advisory_lock(4242)", False),
    ("SELECT lo_import('/etc/hostname')", False),  # rolled back with the transaction
    ("SELECT length(pg_read_file('/etc/hostname')) > 0 AS readable", False),
    ("SELECT pg_sleep(0.01)", False),
    ("SELECT txid_current() > 0 AS xid", False),  # consumes a transaction id, nothing else
]


def test_postgres_side_effect_functions(pg_url: str, tmp_path: Path) -> None:
    migrate(pg_url)
    gb = Cli(pg_url)
    gb.ok("mlip", "add", "MP0", "--arch", "chgnet")
    marker = tmp_path / "marker"
    os.chmod(tmp_path, 0o777)  # the server (user postgres) could write here if it ran COPY
    seq_before = fetch(pg_url, "SELECT last_value FROM mlip_id_seq")
    lo_before = fetch(pg_url, "SELECT COUNT(*) FROM pg_largeobject_metadata")
    got = []
    for query, refused in PG_FUNCTIONS:
        res = gb("sql", query.format(marker=marker))
        got.append((query, res.exit_code == 2))
        assert (res.exit_code == 2) == refused, (query, res.output)
    assert not marker.exists(), "COPY ran on the server"
    assert fetch(pg_url, "SELECT last_value FROM mlip_id_seq") == seq_before
    assert fetch(pg_url, "SELECT COUNT(*) FROM pg_largeobject_metadata") == lo_before
    # A session setting changed by set_config does not make the next query writable.
    assert gb("sql", "DELETE FROM mlip").exit_code == 2
    assert fetch(pg_url, "SELECT name FROM mlip") == [("MP0",)]
    n_ref = sum(r for _, r in got)
    FIGURES.add(
        f"sql side-effect functions (postgresql superuser): {n_ref} refused, "
        f"{len(got) - n_ref} allowed by a read-only transaction (documented; analyst role)"
    )


# --- passwords ------------------------------------------------------------------------------

SECRET = "Pw-" + uuid.uuid4().hex[:10]


def _bad_urls() -> dict[str, str]:
    base = postgres_base_url()
    # postgresql+psycopg://user@host:port/db -> with a password, closed port / bad database
    m = re.match(
        r"(?P<scheme>[^:]+)://(?P<user>[^:@/]+)(?::[^@]*)?@(?P<host>[^:/]+)(?::(?P<port>\d+))?/(?P<db>[^?]+)",
        base,
    )
    assert m, base
    auth = f"{m['user']}:{SECRET}"
    return {
        "closed port": f"{m['scheme']}://{auth}@127.0.0.1:1/{m['db']}",
        "bad database": f"{m['scheme']}://{auth}@{m['host']}:{m['port'] or 5432}/gb_missing_{uuid.uuid4().hex[:8]}",
    }


COMMANDS = [
    ["db", "upgrade"],
    ["db", "current"],
    ["db", "check"],
    ["sql", "SELECT 1"],
    ["mlip", "list"],
    ["mlip", "add", "x", "--arch", "chgnet"],
    ["report", "generate", "--out", "{tmp}/r"],
    ["run", "meltquench", "--mlip", "x", "--x", "0", "--quench-rate", "1", "--seed", "1"],
]


@pytest.mark.slow
def test_passwords_never_appear_in_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Unreachable server and missing database: every command (URL in --db and in the
    environment) fails without showing the password, in its output or its log records; real
    processes with -v (tracebacks) too."""
    from click.testing import CliRunner

    from glassbench.cli import cli
    from tests.conftest import require_postgres

    require_postgres()
    checked = 0
    runner = CliRunner()
    for label, url in _bad_urls().items():
        for args in COMMANDS:
            argv = [a.format(tmp=tmp_path) for a in args]
            for cli_args, env in (
                (["--db", url, *argv], {}),
                (argv, {"GLASSBENCH_DATABASE_URL": url}),
            ):
                caplog.clear()
                res = runner.invoke(cli, cli_args, env=env)
                text = res.output + repr(res.exception) + caplog.text
                assert res.exit_code != 0, (label, args, text)
                assert SECRET not in text, f"password leaked ({label}, {args}): {text}"
                checked += 1
        for args in (["-v", "db", "upgrade"], ["-v", "sql", "SELECT 1"]):
            proc = subprocess.run(
                [sys.executable, "-m", "glassbench", *args],
                capture_output=True,
                text=True,
                timeout=120,
                env=gb_env(GLASSBENCH_DATABASE_URL=url),
            )
            text = proc.stdout + proc.stderr
            assert proc.returncode != 0 and SECRET not in text, (label, args, text)
            checked += 1
    FIGURES.add(
        f"password masking: {checked} failing invocations (closed port, missing database; "
        "--db, environment, -v), password shown 0 times"
    )


def test_password_absent_from_working_database_outputs(pg_url: str, tmp_path: Path) -> None:
    """A URL with a password (trust auth ignores it) through a whole session: no output, stored
    row or report file contains it."""
    url = pg_url.replace("://postgres@", f"://postgres:{SECRET}@", 1)
    assert SECRET in url
    gb = Cli(url)
    outputs = [
        gb.ok("db", "upgrade").output,
        gb.ok("db", "current").output,
        gb.ok("mlip", "add", "MP0", "--arch", "chgnet").output,
        gb.ok("db", "check").output,
        gb.ok("report", "generate", "--out", str(tmp_path / "r")).output,
        gb("sql", "SELECT nope FROM nothing").output,
    ]
    for out in outputs:
        assert SECRET not in out, out
    files = [p for p in (tmp_path / "r").rglob("*") if p.is_file()]
    assert files
    for p in files:
        assert SECRET.encode() not in p.read_bytes(), p
    dump = fetch(url, "SELECT out_dir || coalesce(params_json, '') FROM report")
    dump += fetch(url, "SELECT coalesce(host, '') || coalesce(software_json, '') FROM run")
    assert SECRET not in repr(dump)


# --- model files ----------------------------------------------------------------------------


class _Payload:
    """Unpickling this creates the marker file (what a malicious model file would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.marker),))


def test_tampered_model_is_refused_before_unpickling(gb: Cli, engine: Any, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    evil = pickle.dumps(_Payload(marker))
    # The payload is live: plain unpickling (what torch.load(weights_only=False) does for a
    # whole-model MACE file) creates the marker.
    probe = tmp_path / "probe"
    subprocess.run(
        [sys.executable, "-c", f"import pickle; pickle.loads({pickle.dumps(_Payload(probe))!r})"],
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert probe.exists()

    model = tmp_path / "tiny.model"
    model.write_bytes(b"a registered model file")
    gb.ok("mlip", "add", "tiny", "--arch", "mace", "--model", str(model))
    model.write_bytes(evil)  # swapped after registration
    res = gb(
        "run",
        "meltquench",
        "--mlip",
        "tiny",
        "--x",
        "1.0",
        "--quench-rate",
        "50000",
        "--seed",
        "1",
        "--formula-units",
        "2",
        "--melt-ps",
        "0.01",
        "--anneal-ps",
        "0.01",
        "--checkpoint-dir",
        str(tmp_path / "ck"),
    )
    assert res.exit_code == 2, res.output
    assert "sha256" in res.output and str(model) in res.output
    assert not marker.exists(), "the tampered model was unpickled"
    # Registering a file only hashes it.
    gb.ok("mlip", "add", "evil", "--arch", "mace", "--model", str(model))
    assert not marker.exists()
    FIGURES.add("tampered model file: refused by sha256 before loading; payload executed 0 times")


# --- report output folder -------------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out


def test_report_output_stays_in_its_folder(sqlite_url: str, tmp_path: Path) -> None:
    gb = Cli(sqlite_url)
    gb.ok("db", "upgrade")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.html").write_text("victim")
    (outside / "victim.md").write_text("victim")
    (outside / "tables").mkdir()

    # `..` in --out: the files land in the folder it names, nowhere else.
    before = _tree(tmp_path)
    gb.ok("report", "generate", "--out", str(tmp_path / "a" / ".." / "chosen"))
    new = {k for k in _tree(tmp_path) if k not in before}
    assert new and all(k.startswith("chosen/") for k in new), new
    assert not (tmp_path / "a").exists()

    # Links planted in the folder: a link at a report name is replaced, not written through;
    # a link at the temporary name is never followed; a linked sub-folder is refused.
    out = tmp_path / "planted"
    out.mkdir()
    (out / "report.html").symlink_to(outside / "victim.html")
    (out / ".report.md.tmp").symlink_to(outside / "victim.md")
    snapshot = _tree(outside)
    gb.ok("report", "generate", "--out", str(out))
    assert _tree(outside) == snapshot
    assert not (out / "report.html").is_symlink() and not (out / "report.md").is_symlink()
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "tables").symlink_to(outside / "tables")
    res = gb("report", "generate", "--out", str(linked), "--force")
    assert res.exit_code != 0 and "symbolic link" in res.output, res.output
    assert _tree(outside) == snapshot
    FIGURES.add(
        "report output: '..' and planted symlinks (file, temp name, sub-folder) wrote 0 files outside --out"
    )


# --- analyst role ---------------------------------------------------------------------------


def analyst_sql(role: str, schema: str, database: str) -> list[str]:
    """The role setup of docs/reliability.md, with this test's names."""
    text = DOC.read_text()
    block = re.search(r"<!-- analyst-role -->\s*```sql\n(.*?)```", text, re.S)
    assert block, "docs/reliability.md lacks the analyst-role SQL block"
    sql = block.group(1)
    sql = sql.replace("glassbench_analyst", role).replace("SCHEMA public", f'SCHEMA "{schema}"')
    sql = sql.replace("DATABASE glassbench", f'DATABASE "{database}"')
    sql = re.sub(r"--[^\n]*", "", sql)
    return [s.strip() for s in sql.split(";") if s.strip()]


def test_analyst_role_reads_views_only(pg_url: str, tmp_path: Path) -> None:
    migrate(pg_url)
    gb = Cli(pg_url)
    gb.ok("mlip", "add", "MP0", "--arch", "chgnet")
    schema = re.search(r"search_path%3D([A-Za-z0-9_]+)", pg_url)
    assert schema, pg_url
    base = postgres_base_url()
    database = sa.engine.make_url(base).database
    role = f"gb_analyst_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base)
    statements = analyst_sql(role, schema.group(1), str(database))
    try:
        with admin.begin() as c:
            c.execute(sa.text(f'SET search_path TO "{schema.group(1)}"'))
            for stmt in statements:
                c.execute(sa.text(stmt))
        url = _with_search_path(
            str(
                sa.engine.make_url(base)
                .set(username=role, password=None)
                .render_as_string(hide_password=False)
            ),
            schema.group(1),
        )
        analyst = Cli(url)
        ok = analyst.ok("sql", "SELECT mlip, status FROM run_summary", "--format", "csv")
        assert ok.output.startswith("mlip,status")
        analyst.ok("sql", "SELECT * FROM mlip_mae")
        refused = {
            q: analyst("sql", q)
            for q in (
                "SELECT * FROM mlip",
                "SELECT * FROM thermo",
                "DELETE FROM mlip",
                "SELECT pg_read_file('/etc/hostname')",
                "SELECT lo_import('/etc/hostname')",
                "SELECT nextval('mlip_id_seq')",
            )
        }
        for q, res in refused.items():
            assert res.exit_code == 2, (q, res.output)
            assert "permission denied" in res.output or "read-only" in res.output, res.output
        # Not even outside glassbench, read-write session: the role has no write privilege.
        eng = sa.create_engine(url)
        try:
            with (
                pytest.raises(sa.exc.ProgrammingError, match="permission denied"),
                eng.begin() as c,
            ):
                c.execute(sa.text("SET default_transaction_read_only = off"))
                c.execute(sa.text("SET transaction_read_only = off"))
                c.execute(
                    sa.text("INSERT INTO composition (family, x, formula) VALUES ('f', 9, 'F')")
                )
        finally:
            eng.dispose()
        FIGURES.add(
            f"analyst role (docs/reliability.md SQL, {len(statements)} statements): views readable, "
            f"{len(refused)} table/write/file queries refused"
        )
    finally:
        with admin.begin() as c:
            c.execute(sa.text(f'DROP OWNED BY "{role}"'))
            c.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()
