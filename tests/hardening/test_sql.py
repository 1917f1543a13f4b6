"""`glassbench sql` hardened (issue 17): a statement timeout on both engines, Ctrl-C stops a
running query at once (exit 130), rows streamed in bounded memory, `--max-rows` says when it
cut, messages that name the real cause, and the superuser warning / analyst role of
docs/reliability.md.

Resource bounds run the real CLI in a child under a memory limit (`gb_limited`); Ctrl-C is a
real SIGINT sent to a child once its query is running (its `-v` log line, and on PostgreSQL the
statement seen active in pg_stat_activity).
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import Cli, _with_search_path, postgres_base_url, require, table_counts
from tests.hardening.conftest import gb_limited

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"

# Hours of work on either engine: only a timeout or Ctrl-C ends them.
SLOW = {
    "sqlite": "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r LIMIT 3000) "
    "SELECT count(*) AS n FROM r a, r b, r c",
    "postgresql": "SELECT count(*) AS n FROM generate_series(1, 3000) a, "
    "generate_series(1, 3000) b, generate_series(1, 3000) c",
}
# A recursive UNION keeps every row it produced to drop duplicates: with strings growing by
# one character per row its state grows quadratically (SQLite: temporary files; PostgreSQL:
# the server's memory, ~180 MB/s measured) until something stops it.
UNBOUNDED_CTE = (
    "WITH RECURSIVE r(s) AS (SELECT 'x' UNION SELECT s || 'x' FROM r) SELECT max(length(s)) FROM r"
)
FIVE = (
    "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < {n}) SELECT x FROM r"
)


def _engine_name(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def _one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if not ln.startswith("warning: ")]
    assert len(lines) == 1, text
    return lines[0]


# --- timeout --------------------------------------------------------------------------------


def test_timeout_stops_a_long_query(engine: Any, db_url: str) -> None:
    """The option, and the variable when the option is absent: exit 2, one line naming both."""
    q = SLOW[_engine_name(db_url)]
    res = gb_limited(db_url, "sql", "--timeout", "1.5", q, env={"GLASSBENCH_SQL_TIMEOUT_S": "600"})
    assert res.returncode == 2, res.stderr
    assert _one_line(res.stderr) == (
        "Error: query stopped after 1.5 s (timeout; --timeout / GLASSBENCH_SQL_TIMEOUT_S)"
    )
    assert res.stdout == ""
    res = gb_limited(db_url, "sql", q, env={"GLASSBENCH_SQL_TIMEOUT_S": "2"})
    assert res.returncode == 2, res.stderr
    assert "query stopped after 2 s (timeout;" in _one_line(res.stderr)


def test_timeout_option_is_checked(gb: Cli) -> None:
    for bad in ("0", "-1", "abc"):
        res = gb("sql", "--timeout", bad, "SELECT 1")
        assert res.exit_code == 2 and "--timeout" in res.output, res.output


def test_stricter_server_statement_timeout_is_kept(pg_url: str) -> None:
    """A role's or server's own statement_timeout lower than --timeout stays in force."""
    Cli(pg_url).ok("db", "upgrade")
    url = f"{pg_url}{'%20' if '?options=' in pg_url else '?options='}-cstatement_timeout%3D1000"
    res = gb_limited(url, "sql", "--timeout", "600", SLOW["postgresql"])
    assert res.returncode == 2, res.stderr
    assert "query stopped after 1 s (the server's statement_timeout" in _one_line(res.stderr)


def test_unbounded_recursive_cte_is_stopped(engine: Any, db_url: str) -> None:
    res = gb_limited(db_url, "sql", "--timeout", "2", UNBOUNDED_CTE)
    assert res.returncode == 2, res.stderr
    assert "query stopped after 2 s (timeout;" in _one_line(res.stderr)
    assert "Traceback" not in res.stderr and "MemoryError" not in res.stderr


def test_sqlite_memory_bound(sqlite_url: str) -> None:
    """A value doubling in size hits SQLite's heap limit long before the process limit (and
    the timeout): a one-line refusal, no MemoryError."""
    Cli(sqlite_url).ok("db", "upgrade")
    doubling = (
        "WITH RECURSIVE r(s) AS (SELECT 'x' UNION ALL SELECT s || s FROM r) SELECT length(s) FROM r"
    )
    res = gb_limited(sqlite_url, "sql", "--timeout", "600", doubling)
    assert res.returncode == 2, res.stderr
    line = _one_line(res.stderr)
    assert "query stopped: it needs more than the 512 MB of memory SQLite may use" in line, line
    assert "Traceback" not in res.stderr and "MemoryError" not in res.stderr


# --- Ctrl-C ---------------------------------------------------------------------------------


def _lines(stream: Any) -> queue.Queue[str]:
    """Lines of a child's pipe, read by a thread, so that a test can wait with a deadline."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put("")  # end of the stream

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_for_line(lines: queue.Queue[str], needle: str, timeout: float) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        seen.append(line)
        if needle in line:
            return seen
        assert line, f"the child ended before {needle!r}: {seen}"


def _activity(app: str) -> list[tuple[str, str]]:
    eng = sa.create_engine(postgres_base_url())
    try:
        with eng.connect() as c:
            return [
                (str(s), str(q))
                for s, q in c.execute(
                    sa.text(
                        "SELECT state, query FROM pg_stat_activity WHERE application_name = :a"
                    ),
                    {"a": app},
                )
            ]
    finally:
        eng.dispose()


def _poll(check: Any, timeout: float, what: str) -> None:
    """Wait until ``check()`` is true (a condition on the server), at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("GLASSBENCH_DATABASE_URL", None)
    env.pop("GLASSBENCH_SQL_TIMEOUT_S", None)
    return env


def test_ctrl_c_stops_a_running_query(engine: Any, db_url: str, child_env: dict[str, str]) -> None:
    name = _engine_name(db_url)
    app = f"gb-sigint-{uuid.uuid4().hex[:10]}"
    url = f"{db_url}&application_name={app}" if name == "postgresql" else db_url
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "glassbench",
            "-v",
            "--db",
            url,
            "sql",
            "--timeout",
            "600",
            SLOW[name],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env,
    )
    try:
        err = _lines(proc.stderr)
        seen = _wait_for_line(err, "running query", timeout=60)
        if name == "postgresql":
            _poll(
                lambda: any(s == "active" and q.startswith("EXECUTE ") for s, q in _activity(app)),
                20,
                "the query to run on the server",
            )
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        # The query alone runs for hours: only Ctrl-C ends it within this (generous) timeout.
        assert proc.wait(timeout=20) == 130
        stopped = time.monotonic() - sent
        rest = []
        while (line := err.get(timeout=10)) != "":
            rest.append(line)
        text = "".join(seen + rest)
        assert "interrupted" in text and "Traceback" not in text, text
        if name == "postgresql":  # the statement does not go on running on the server
            _poll(lambda: not _activity(app), 20, "the backend to go")
        print(f"ctrl-c ({name}): exit 130 {stopped:.2f} s after SIGINT")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


# --- streaming and --max-rows ---------------------------------------------------------------

TEN_MILLION = 10_000_000


@pytest.mark.slow
def test_ten_million_rows_stream_in_bounded_memory(engine: Any, db_url: str) -> None:
    """10^7 rows as CSV under the 1500 MB address-space limit: held whole, they would not fit
    (a list of 10^7 tuples plus their rendered text); streamed, the process stays at its
    start-up size."""
    if _engine_name(db_url) == "sqlite":
        q = FIVE.format(n=TEN_MILLION)
    else:
        q = f"SELECT g AS x FROM generate_series(1, {TEN_MILLION}) g"
    res = gb_limited(db_url, "sql", "--format", "csv", "--timeout", "800", q, timeout=850)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("\n") == TEN_MILLION + 1
    assert res.stdout.startswith("x\n1\n2\n") and res.stdout.endswith(f"\n{TEN_MILLION}\n")
    assert "output cut" not in res.stderr


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_max_rows_says_when_it_cut(gb: Cli, fmt: str) -> None:
    def rows(out: str) -> list[int]:
        if fmt == "json":
            return [r["x"] for r in json.loads(out)]
        lines = out.strip().splitlines()
        body = lines[1:] if fmt == "csv" else lines[2:-1]
        return [int(v) for v in body]

    cut = gb.ok("sql", "--format", fmt, "--max-rows", "3", FIVE.format(n=5))
    assert rows(cut.stdout) == [1, 2, 3]
    assert "output cut at 3 rows (--max-rows)" in cut.stderr.splitlines()
    for n in ("5", "6"):  # exactly as many rows, or fewer: nothing was cut
        whole = gb.ok("sql", "--format", fmt, "--max-rows", n, FIVE.format(n=5))
        assert rows(whole.stdout) == [1, 2, 3, 4, 5]
        assert "output cut" not in whole.stderr


def test_streamed_formats_are_whole(gb: Cli) -> None:
    """Batches of 1000 rows stitched together: one valid JSON array, one CSV header, a table in
    aligned blocks of 1000 rows with the total at the end."""
    q = FIVE.format(n=2500)
    data = json.loads(gb.ok("sql", "--format", "json", q).stdout)
    assert [r["x"] for r in data] == list(range(1, 2501))
    csv = gb.ok("sql", "--format", "csv", q).stdout.splitlines()
    assert csv[0] == "x" and csv[1:] == [str(i) for i in range(1, 2501)]
    table = gb.ok("sql", q).stdout.splitlines()
    assert table[-1] == "(2500 rows)"
    assert table.count("x") == 3  # a header per block of 1000 rows
    assert [int(v) for v in table if v.strip().isdigit()] == list(range(1, 2501))
    empty = gb.ok("sql", "--format", "json", "SELECT name FROM mlip").stdout
    assert json.loads(empty) == []
    assert gb.ok("sql", "SELECT name FROM mlip").stdout.splitlines()[-1] == "(0 rows)"


# --- messages -------------------------------------------------------------------------------

MESSAGES = [
    ("SELEC name FROM mlip", "syntax error"),
    ("SELECT name FROM", "syntax error"),
    ("SELECT * FROM no_such_table", "unknown table"),
    ("SELECT no_such_column FROM mlip", ("no such column", "unknown column")),
    ("DELETE FROM mlip", "write refused (read-only)"),
    ("DELETE FROM no_such_table", "write refused (read-only)"),
    ("UPDATE mlip SET name = 'x'", "write refused (read-only)"),
    (
        "INSERT INTO composition (family, x, formula) VALUES ('f', 9, 'F')",
        "write refused (read-only)",
    ),
    ("CREATE TABLE evil (id INTEGER)", "write refused (read-only)"),
    ("DROP TABLE run", "write refused (read-only)"),
    ("/* comment */ DROP VIEW run_summary", "write refused (read-only)"),
    ("COPY mlip TO STDOUT", "write refused (read-only)"),
    ("WITH d AS (DELETE FROM mlip RETURNING *) SELECT * FROM d", "write refused (read-only)"),
    ("SELECT * INTO evil FROM mlip", "write refused (read-only)"),
    ("BEGIN", "write refused (read-only)"),
    ("SELECT 1; DELETE FROM mlip", "query refused: one statement at a time"),
]


def test_messages_name_the_cause(gb: Cli, engine: Any) -> None:
    gb.ok("mlip", "add", "MP0", "--arch", "chgnet")
    before = table_counts(engine)
    for query, expected in MESSAGES:
        res = gb("sql", query)
        assert res.exit_code == 2, (query, res.output)
        line = _one_line(res.output)
        assert line.startswith("Error: QUERY: "), line
        wanted = expected if isinstance(expected, tuple) else (expected,)
        assert any(w in line for w in wanted), (query, line)
        # never the old catch-all, nor a refusal for what was a mistake
        assert "query refused (read-only)" not in line
        if "refused" not in expected:
            assert "refused" not in line, (query, line)
    assert table_counts(engine) == before


# --- superuser warning and the analyst role -------------------------------------------------

SUPERUSER = "warning: connected as superuser"


def _is_superuser(url: str) -> bool:
    eng = sa.create_engine(url)
    try:
        with eng.connect() as c:
            return c.execute(sa.text("SELECT current_setting('is_superuser')")).scalar() == "on"
    finally:
        eng.dispose()


def test_superuser_connection_is_warned(pg_url: str) -> None:
    require(None if _is_superuser(pg_url) else "the test PostgreSQL role is not a superuser")
    gb = Cli(pg_url)
    gb.ok("db", "upgrade")
    gb.ok("mlip", "add", "MP0", "--arch", "chgnet")
    res = gb.ok("sql", "--format", "json", "SELECT name FROM mlip")
    assert json.loads(res.stdout) == [{"name": "MP0"}]  # stdout stays clean
    warning = [ln for ln in res.stderr.splitlines() if ln.startswith(SUPERUSER)]
    assert len(warning) == 1, res.stderr
    assert "'postgres'" in warning[0] or "superuser '" in warning[0]
    assert "analyst role" in warning[0] and "docs/reliability.md" in warning[0]
    # what the warning is about: the read-only transaction does not stop this
    read = gb.ok("sql", "SELECT length(pg_read_file('/etc/hostname')) > 0 AS readable")
    assert SUPERUSER in read.stderr


def _analyst_statements(role: str, schema: str, database: str) -> list[str]:
    """docs/reliability.md's analyst-role SQL, with this test's names."""
    block = re.search(r"<!-- analyst-role -->\s*```sql\n(.*?)```", DOC.read_text(), re.S)
    assert block, "docs/reliability.md lacks the analyst-role SQL block"
    sql = block.group(1).replace("glassbench_analyst", role)
    sql = sql.replace("SCHEMA public", f'SCHEMA "{schema}"')
    sql = sql.replace("DATABASE glassbench", f'DATABASE "{database}"')
    sql = re.sub(r"--[^\n]*", "", sql)
    return [s.strip() for s in sql.split(";") if s.strip()]


@pytest.fixture
def analyst_url(pg_url: str) -> Iterator[str]:
    """A role made from docs/reliability.md's recipe on the test schema (dropped afterwards)."""
    gb = Cli(pg_url)
    gb.ok("db", "upgrade")
    gb.ok("mlip", "add", "MP0", "--arch", "chgnet")
    m = re.search(r"search_path%3D([A-Za-z0-9_]+)", pg_url)
    assert m, pg_url
    schema = m.group(1)
    base = sa.engine.make_url(postgres_base_url())
    role = f"gb_analyst_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base)
    try:
        with admin.begin() as c:
            c.execute(sa.text(f'SET search_path TO "{schema}"'))
            for stmt in _analyst_statements(role, schema, str(base.database)):
                c.execute(sa.text(stmt))
        yield _with_search_path(
            base.set(username=role, password=None).render_as_string(hide_password=False), schema
        )
    finally:
        with admin.begin() as c:
            c.execute(sa.text(f'DROP OWNED BY "{role}"'))
            c.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()


def test_analyst_role_of_the_docs(analyst_url: str) -> None:
    analyst = Cli(analyst_url)
    ok = analyst.ok("sql", "--format", "csv", "SELECT mlip, status FROM run_summary")
    assert ok.stdout.startswith("mlip,status") and SUPERUSER not in ok.output
    assert SUPERUSER not in analyst.ok("sql", "SELECT * FROM mlip_mae").output
    refused = {
        "SELECT pg_read_file('/etc/hostname')": "permission denied",
        "SELECT * FROM mlip": "permission denied",
        "SELECT lo_import('/etc/hostname')": "permission denied",
        "DELETE FROM mlip": "write refused (read-only)",
        "UPDATE mlip SET name = 'x'": "write refused (read-only)",
        "SELECT nextval('mlip_id_seq')": ("permission denied", "write refused (read-only)"),
    }
    for query, expected in refused.items():
        res = analyst("sql", query)
        assert res.exit_code == 2, (query, res.output)
        line = _one_line(res.output)
        wanted = expected if isinstance(expected, tuple) else (expected,)
        assert any(w in line for w in wanted), (query, line)
        assert SUPERUSER not in res.output
