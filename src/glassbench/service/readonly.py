"""Read-only execution of user SQL: refused writes, a deadline, Ctrl-C, rows streamed.

SQLite: a separate connection opened with ``mode=ro`` plus an authorizer that allows reads
only (so ATTACH, PRAGMA writes or temp tables are refused too). PostgreSQL: a transaction set
READ ONLY, and the query sent as one prepared statement, which the server refuses to split into
several commands (``SELECT 1; COMMIT; DROP ...`` cannot escape the transaction), wrapped in
``PREPARE``, which takes only SELECT/VALUES/DML (so ``COPY ... TO PROGRAM`` never runs).
Functions with side effects that a read-only transaction allows (``pg_read_file``,
``lo_import``, ``pg_advisory_lock``, ``pg_terminate_backend``) are limited by the connecting
role's privileges only: give analysts a read-only role (docs/reliability.md); a superuser
connection is reported (:attr:`QueryStream.superuser`) so that the command can warn.

Bounds (docs/reliability.md, "Read-only SQL"):

- time: a deadline of ``timeout_s`` wall-clock seconds from the start of the statement to its
  last row (PostgreSQL ``statement_timeout``; SQLite a progress handler), then
  :class:`QueryTimeout`;
- Ctrl-C: ``KeyboardInterrupt`` at once (PostgreSQL: psycopg cancels the statement on the
  server; SQLite: a SIGINT handler sets a flag that the progress handler turns into an
  interrupt, since Python signal handlers cannot run inside ``sqlite3_step``);
- memory: rows arrive in batches of ``batch_rows`` (PostgreSQL: libpq chunked mode, not the
  whole result in the client); SQLite's own heap is capped at :data:`SQLITE_HEAP_LIMIT_MB`
  (``PRAGMA hard_heap_limit``), beyond which the query stops with :class:`QueryTooLarge`
  instead of growing (a PostgreSQL server bounds its side with ``work_mem`` and spills to
  disk).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from sqlalchemy.engine import Engine, make_url

from glassbench.errors import BadInput, Failure

log = logging.getLogger(__name__)

BATCH_ROWS = 1000
"""Rows fetched from the database at a time (what the client holds of a result)."""

SQLITE_HEAP_LIMIT_MB = 512
"""Cap on SQLite's heap while a query runs (sorts and temporary tables spill to disk first)."""

# Progress-handler period in SQLite virtual-machine instructions: about every 10-100 us,
# often enough for an immediate Ctrl-C, rare enough to cost ~1 % of a query's time.
_SQLITE_PROGRESS_OPS = 1000

_T = TypeVar("_T")
Row = tuple[Any, ...]


class QueryTimeout(BadInput):
    """The query ran past its deadline and was stopped (nothing was changed).

    ``by_server``: the deadline was the PostgreSQL role's or server's own
    ``statement_timeout``, stricter than the one asked for.
    """

    def __init__(self, seconds: float, *, by_server: bool = False) -> None:
        self.seconds = seconds
        self.by_server = by_server
        why = (
            "the server's statement_timeout for this role"
            if by_server
            else "timeout_s / GLASSBENCH_SQL_TIMEOUT_S"
        )
        super().__init__(f"query stopped after {seconds:g} s ({why})", field="query")


@dataclass
class _Deadline:
    seconds: float
    by_server: bool = False


class QueryTooLarge(BadInput):
    """The query needed more memory (or temporary space) than the bound allows."""


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[Row]


# --- messages that name the real cause ------------------------------------------------------

# Statements that are not queries: refused as writes whatever the engine's own error says
# (PostgreSQL's PREPARE reports most of them as a syntax error, SQLite's authorizer as "not
# authorized", and a write to a missing table as a missing table).
# fmt: off
_NOT_QUERIES = frozenset({
    "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "REPLACE", "CREATE", "DROP", "ALTER",
    "TRUNCATE", "RENAME", "COPY", "GRANT", "REVOKE", "COMMENT", "SECURITY", "VACUUM", "ANALYZE",
    "ANALYSE", "REINDEX", "CLUSTER", "REFRESH", "CHECKPOINT", "BEGIN", "START", "COMMIT", "END",
    "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE", "PREPARE", "EXECUTE", "DEALLOCATE", "DECLARE",
    "FETCH", "MOVE", "CLOSE", "SET", "RESET", "SHOW", "LOCK", "DO", "CALL", "LISTEN", "NOTIFY",
    "UNLISTEN", "LOAD", "DISCARD", "IMPORT", "REASSIGN", "ATTACH", "DETACH", "PRAGMA",
})
# fmt: on
# Words after which a syntax error means "a write inside a query" (SQLite has no
# `WITH ... AS (DELETE ...)` nor `SELECT ... INTO`, so it reports them as syntax errors).
_WRITE_WORDS = frozenset(
    {"INSERT", "UPDATE", "DELETE", "REPLACE", "INTO", "CREATE", "DROP", "ALTER"}
)
_ONLY_QUERIES = "only queries run (SELECT, WITH, VALUES)"
_LEADING = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*", re.S)


def first_keyword(sql: str) -> str:
    """The statement's first word in upper case, after comments and opening parentheses."""
    lead = _LEADING.match(sql)
    m = re.match(r"[A-Za-z_]+", sql[lead.end() if lead else 0 :])
    return m.group().upper() if m else ""


def _refused_write(word: str, detail: str | None = None) -> BadInput:
    what = f"{word} is not a query; {_ONLY_QUERIES}" if word else _ONLY_QUERIES
    return BadInput(f"write refused (read-only): {detail or what}", field="query")


def _classify(sql: str, message: str, sqlstate: str | None = None) -> BadInput:
    """The one-line ``BadInput`` for an engine's refusal of ``sql``."""
    word = first_keyword(sql)
    if word in _NOT_QUERIES:
        return _refused_write(word)
    if word in ("EXPLAIN", "SHOW") and sqlstate == "42601":  # PREPARE takes neither
        return BadInput(f"query refused: {word} is not run here; {_ONLY_QUERIES}", field="query")
    low = message.lower()
    if sqlstate == "25006" or message == "not authorized" or "read-only transaction" in low:
        # SQLite's authorizer, or PostgreSQL's read-only transaction (a data-modifying CTE,
        # nextval, set_config on a transaction setting)
        return _refused_write(word, None if message == "not authorized" else message)
    if "one statement at a time" in low or "multiple commands" in low:
        return BadInput("query refused: one statement at a time", field="query")
    if sqlstate == "42601" or "syntax error" in low or low == "incomplete input":
        near = re.match(r'near "([^"]*)": syntax error', message)
        if near:  # SQLite: 'near "SELEC": syntax error'
            if near.group(1).upper() in _WRITE_WORDS:
                return _refused_write(word, f"{near.group(1)} inside a query ({message})")
            message = f'syntax error near "{near.group(1)}"'
        if "INTO is not allowed" in message:  # PostgreSQL: SELECT ... INTO creates a table
            return _refused_write(word, message)
        if not message.lower().startswith("syntax error"):
            message = f"syntax error: {message}"
        return BadInput(message, field="query")
    if sqlstate == "42P01" or low.startswith("no such table"):
        return BadInput(f"unknown table: {message}", field="query")
    if sqlstate == "42703" or low.startswith("no such column"):
        return BadInput(
            message if low.startswith("no such column") else f"unknown column: {message}",
            field="query",
        )
    if sqlstate == "42883" or low.startswith("no such function"):
        return BadInput(f"unknown function: {message}", field="query")
    if sqlstate == "42501" or "permission denied" in low:
        return BadInput(f"query refused (permission denied): {message}", field="query")
    return BadInput(f"query failed: {message}", field="query")


# --- the stream -----------------------------------------------------------------------------


class QueryStream:
    """A running query: its columns, then its rows batch by batch.

    ``cut`` is True once :meth:`batches` stopped at ``max_rows`` while more rows existed
    (it fetches one row more to know). ``superuser`` names the PostgreSQL role when the
    connection is a superuser's (a read-only transaction does not stop it reading server files).
    """

    def __init__(
        self,
        columns: list[str],
        fetch: Callable[[int], list[Row]],
        *,
        max_rows: int | None,
        batch_rows: int,
        superuser: str | None = None,
    ) -> None:
        self.columns = columns
        self.superuser = superuser
        self.cut = False
        self._fetch = fetch
        self._max_rows = max_rows
        self._batch_rows = batch_rows

    def batches(self) -> Iterator[list[Row]]:
        left = self._max_rows
        while True:
            want = self._batch_rows if left is None else min(self._batch_rows, left + 1)
            rows = self._fetch(want)
            if left is not None and len(rows) > left:
                self.cut = True
                if left:
                    yield rows[:left]
                return
            if not rows:
                return
            if left is not None:
                left -= len(rows)
            yield rows


def _resolve_timeout(timeout_s: float | None) -> float:
    if timeout_s is None:
        from glassbench.settings import settings_or_defaults

        timeout_s = settings_or_defaults().sql_timeout_s
    if not timeout_s > 0:
        raise BadInput(f"timeout must be > 0 s, got {timeout_s}", field="timeout")
    return float(timeout_s)


@contextlib.contextmanager
def open_query(
    engine: Engine,
    sql: str,
    *,
    timeout_s: float | None = None,
    max_rows: int | None = None,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[QueryStream]:
    """Run ``sql`` read-only and stream its rows (``with open_query(...) as q: q.batches()``).

    ``timeout_s`` (default: ``Settings.sql_timeout_s``) bounds the wall time from the start of
    the statement to its last row. Errors: :class:`BadInput` on the field ``query`` for a
    refused or invalid statement (``write refused (read-only): ...``, ``syntax error ...``,
    ``unknown table: ...``), :class:`QueryTimeout`, :class:`QueryTooLarge`; ``Failure`` when
    the database cannot be reached; ``KeyboardInterrupt`` on Ctrl-C (the statement is stopped
    before it propagates). Leaving the block stops a query whose rows were not all read.
    """
    if not sql.strip():
        raise BadInput("empty query", field="query")
    if max_rows is not None and max_rows < 1:
        raise BadInput(f"max_rows must be >= 1, got {max_rows}", field="max_rows")
    timeout = _resolve_timeout(timeout_s)
    if engine.dialect.name == "sqlite":
        with _sqlite(engine, sql, timeout, max_rows, batch_rows) as stream:
            yield stream
    elif engine.dialect.name == "postgresql":
        with _postgres(engine, sql, timeout, max_rows, batch_rows) as stream:
            yield stream
    else:
        raise BadInput(f"unsupported database {engine.dialect.name}", field="database_url")


def query(
    engine: Engine, sql: str, *, max_rows: int | None = None, timeout_s: float | None = None
) -> QueryResult:
    """All rows of a read-only query in memory (the Python API's ``read_sql``); see
    :func:`open_query` for the guarantees and errors."""
    with open_query(engine, sql, timeout_s=timeout_s, max_rows=max_rows) as q:
        rows = [r for batch in q.batches() for r in batch]
        return QueryResult(q.columns, rows)


# --- SQLite ---------------------------------------------------------------------------------


_SQLITE_ALLOWED = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}


def _sqlite_authorizer(action: int, arg1: Any, arg2: Any, dbname: Any, source: Any) -> int:
    if action in _SQLITE_ALLOWED:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


class _SqliteGuard:
    """Deadline and Ctrl-C for one SQLite statement.

    sqlite3 holds the GIL-free C loop of ``sqlite3_step`` for as long as a statement runs, so a
    Python SIGINT handler (and thus KeyboardInterrupt) would wait for the statement to end. The
    progress handler is Python code called every few thousand VM instructions: pending signal
    handlers run there, ours only sets a flag, and the progress handler then asks SQLite to
    stop ("interrupted"), which :meth:`call` turns back into KeyboardInterrupt or
    :class:`QueryTimeout`.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.timed_out = False
        self.interrupted = False
        self.in_step = False

    def progress(self) -> int:
        if self.interrupted:
            return 1
        if time.monotonic() > self.deadline:
            self.timed_out = True
            return 1
        return 0

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.interrupted = True
        if not self.in_step:  # in Python code (writing rows): stop right here
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def sigint(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only; the deadline still holds
            return
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        self.in_step = True
        try:
            result = fn(*args)
        except sqlite3.OperationalError as exc:
            if self.interrupted:
                raise KeyboardInterrupt from None
            if self.timed_out or str(exc) == "interrupted":
                raise QueryTimeout(self.timeout_s) from None
            raise
        except MemoryError:
            # SQLITE_NOMEM: the heap limit below (or the process's own limit) was reached
            raise QueryTooLarge(
                f"query stopped: it needs more than the {SQLITE_HEAP_LIMIT_MB} MB of memory "
                "SQLite may use here (narrow it: fewer rows, columns or groups, or a LIMIT)",
                field="query",
            ) from None
        finally:
            self.in_step = False
        if self.interrupted:  # SIGINT during a step too short to reach the progress handler
            raise KeyboardInterrupt
        return result


@contextlib.contextmanager
def _sqlite(
    engine: Engine, sql: str, timeout_s: float, max_rows: int | None, batch_rows: int
) -> Iterator[QueryStream]:
    db = make_url(str(engine.url)).database
    if not db or db == ":memory:":
        raise BadInput("read-only queries need a database file", field="database_url")
    path = Path(db)
    if not path.exists():
        raise BadInput(
            f"database file {db} does not exist (create it with `glassbench db upgrade`)",
            field="database_url",
        )
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    guard = _SqliteGuard(timeout_s)
    previous_limit = 0
    try:
        # The heap limit is process-wide: set it for this query only, before the authorizer
        # (which refuses every PRAGMA), and put the previous one back afterwards.
        previous_limit = conn.execute("PRAGMA hard_heap_limit").fetchone()[0]
        conn.execute(f"PRAGMA hard_heap_limit = {SQLITE_HEAP_LIMIT_MB * 1024 * 1024}")
        conn.set_authorizer(_sqlite_authorizer)
        conn.set_progress_handler(guard.progress, _SQLITE_PROGRESS_OPS)

        def translated(fn: Callable[..., _T], *args: Any) -> _T:
            try:
                return guard.call(fn, *args)
            except (sqlite3.DatabaseError, sqlite3.ProgrammingError, sqlite3.Warning) as exc:
                message = _first_line(exc)
                if "too big" in message:  # SQLITE_TOOBIG: a value over SQLite's 1 GB limit
                    raise QueryTooLarge(f"query stopped: {message}", field="query") from None
                raise _classify(sql, message) from None

        with guard.sigint():
            log.debug("running query on SQLite (timeout %g s)", timeout_s)
            cur = translated(conn.execute, sql)
            columns = [d[0] for d in cur.description or ()]
            if not columns:  # nothing but comments, or a statement that is not a query
                word = first_keyword(sql)
                raise _refused_write(word) if word else BadInput("empty query", field="query")
            yield QueryStream(
                columns,
                lambda n: [tuple(r) for r in translated(cur.fetchmany, n)],
                max_rows=max_rows,
                batch_rows=batch_rows,
            )
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.set_progress_handler(None, 0)
            conn.set_authorizer(None)
            conn.execute(f"PRAGMA hard_heap_limit = {int(previous_limit)}")
        conn.close()


# --- PostgreSQL -----------------------------------------------------------------------------

# SQLSTATE classes of a statement stopped for resources: 53 (out of memory, disk full,
# temp_file_limit), 54 (program limits such as a 1 GB value).
_PG_RESOURCES = ("53", "54")


@contextlib.contextmanager
def _postgres(
    engine: Engine, sql: str, timeout_s: float, max_rows: int | None, batch_rows: int
) -> Iterator[QueryStream]:
    import psycopg
    from sqlalchemy.exc import DBAPIError

    from glassbench.service.db import describe

    def translated(fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        try:
            return fn(*args, **kwargs)
        except psycopg.errors.QueryCanceled as exc:
            # 57014 also means "canceling statement due to user request": psycopg turns a
            # Ctrl-C into KeyboardInterrupt itself, so here it is the statement timeout
            if "timeout" in str(exc):
                raise QueryTimeout(timeout.seconds, by_server=timeout.by_server) from None
            raise BadInput(f"query stopped: {_first_line(exc)}", field="query") from None
        except psycopg.Error as exc:
            state = exc.sqlstate
            if state is None or state.startswith("08"):  # the connection, not the query
                raise Failure(f"cannot query {describe(engine)}: {_first_line(exc)}") from None
            if state.startswith(_PG_RESOURCES) or "memory alloc" in str(exc):
                raise QueryTooLarge(
                    f"query stopped by the server: {_first_line(exc)}", field="query"
                ) from None
            raise _classify(sql, _first_line(exc), state) from None
        except MemoryError:  # one batch of rows larger than this process may hold
            raise QueryTooLarge(
                f"query stopped: {batch_rows} rows do not fit in memory here (fewer or "
                "smaller columns, or a LIMIT)",
                field="query",
            ) from None

    name = f"glassbench_query_{uuid.uuid4().hex}"
    ms = max(1, min(round(min(timeout_s, 1e9) * 1000), 2**31 - 1))  # PostgreSQL's int range
    timeout = _Deadline(timeout_s)
    try:
        # engine.connect() (not raw_connection()) so that a connection failure arrives as
        # SQLAlchemy's error, reported with the URL masked
        conn = engine.connect()
    except DBAPIError as exc:
        raise Failure(f"cannot query {describe(engine)}: {_first_line(exc.orig)}") from None
    with conn:
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        dbapi.rollback()
        prepared = False
        rows_iter: Generator[Row, None, None] | None = None
        cur = dbapi.cursor()
        try:
            translated(cur.execute, "SET TRANSACTION READ ONLY")
            who = translated(
                cur.execute,
                "SELECT current_user, current_setting('is_superuser'), "
                "(SELECT setting::bigint FROM pg_settings WHERE name = 'statement_timeout')",
            ).fetchone()
            assert who is not None
            superuser = str(who[0]) if who[1] == "on" else None
            # A stricter statement_timeout of the role or server (docs/reliability.md) stays.
            server_ms = int(who[2] or 0)
            if 0 < server_ms < ms:
                timeout.seconds, timeout.by_server = server_ms / 1000, True
            else:
                translated(cur.execute, f"SET LOCAL statement_timeout = {ms}")
            log.debug("running query on PostgreSQL (timeout %g s)", timeout.seconds)
            # A read-only transaction still runs utility statements such as
            # COPY ... TO PROGRAM / TO 'file' (a shell command or a file write on the
            # server for a superuser). PREPARE accepts only SELECT, VALUES, INSERT, UPDATE,
            # DELETE and MERGE, so anything else is a syntax error and never runs; the
            # read-only transaction refuses the writes; prepare=True sends one statement.
            translated(cur.execute, f"PREPARE {name} AS {sql}", prepare=True)
            prepared = True
            # The columns from the prepared statement itself (a stream that ends without a
            # row leaves the cursor without a description); none: not a query (DML).
            described = dbapi.pgconn.describe_prepared(name.encode())
            if described.status != psycopg.pq.ExecStatus.COMMAND_OK:
                raise Failure(f"cannot describe the query on {describe(engine)}")
            encoding = dbapi.info.encoding
            columns = [
                (described.fname(i) or b"").decode(encoding, "replace")
                for i in range(described.nfields)
            ]
            if not columns:
                raise _refused_write(first_keyword(sql))
            # stream(): libpq's chunked mode, at most batch_rows rows in the client at a time
            rows_iter = cur.stream(f"EXECUTE {name}", size=batch_rows)
            source = rows_iter

            # The first row now, so that an error at the start of execution (a write refused
            # by the read-only transaction, a division by zero) comes before any output.
            first = translated(next, source, None)
            pending: list[Row] = [tuple(first)] if first is not None else []

            def fetch(n: int) -> list[Row]:
                rows = pending[:n]
                del pending[:n]
                if len(rows) < n:
                    more: list[Row] = translated(list, itertools.islice(source, n - len(rows)))
                    rows.extend(tuple(r) for r in more)
                return rows

            yield QueryStream(
                columns, fetch, max_rows=max_rows, batch_rows=batch_rows, superuser=superuser
            )
        finally:
            # Closing an unfinished stream cancels the statement on the server (psycopg);
            # after a Ctrl-C psycopg has cancelled it already (or closed the connection).
            with contextlib.suppress(psycopg.Error):
                if rows_iter is not None:
                    rows_iter.close()
            with contextlib.suppress(psycopg.Error):
                dbapi.rollback()
            if prepared:  # prepared statements outlive the transaction
                with contextlib.suppress(psycopg.Error):
                    cur.execute(f"DEALLOCATE {name}")
                    dbapi.rollback()
            with contextlib.suppress(psycopg.Error):
                cur.close()


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    # PostgreSQL counts positions in the PREPARE text glassbench built, not in the user's query
    return re.sub(r"\s+at character \d+$", "", line)
