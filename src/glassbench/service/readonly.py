"""Read-only execution of user SQL.

SQLite: a separate connection opened with ``mode=ro`` plus an authorizer that allows reads
only (so ATTACH, PRAGMA writes or temp tables are refused too). PostgreSQL: a transaction set
READ ONLY, and the query sent as one prepared statement, which the server refuses to split into
several commands (``SELECT 1; COMMIT; DROP ...`` cannot escape the transaction), wrapped in
``PREPARE``, which takes only SELECT/VALUES/DML (so ``COPY ... TO PROGRAM`` never runs).
Functions with side effects that a read-only transaction allows (``pg_read_file``,
``lo_import``, ``pg_advisory_lock``, ``pg_terminate_backend``) are limited by the connecting
role's privileges only: give analysts a read-only role (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine, make_url


class QueryRefused(Exception):
    """The statement tried to write, or is not valid SQL."""


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]


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


def run_readonly(engine: Engine, sql: str, *, max_rows: int | None = None) -> QueryResult:
    if not sql.strip():
        raise QueryRefused("empty query")
    if engine.dialect.name == "sqlite":
        return _sqlite(engine, sql, max_rows)
    if engine.dialect.name == "postgresql":
        return _postgres(engine, sql, max_rows)
    raise QueryRefused(f"unsupported database {engine.dialect.name}")


def query(engine: Engine, sql: str, *, max_rows: int | None = None) -> QueryResult:
    """:func:`run_readonly` with glassbench's errors (what ``glassbench sql`` runs).

    A refused statement is ``BadInput`` on the field ``query``; an unreachable database a
    ``Failure`` naming it (password masked).
    """
    from sqlalchemy.exc import OperationalError

    from glassbench.errors import BadInput, Failure
    from glassbench.service.db import describe

    try:
        return run_readonly(engine, sql, max_rows=max_rows)
    except QueryRefused as exc:
        raise BadInput(f"query refused (read-only): {exc}", field="query") from None
    except OperationalError as exc:
        raise Failure(f"cannot query {describe(engine)}: {str(exc.orig).strip()}") from None


def _sqlite(engine: Engine, sql: str, max_rows: int | None) -> QueryResult:
    db = make_url(str(engine.url)).database
    if not db or db == ":memory:":
        raise QueryRefused("read-only queries need a database file")
    path = Path(db)
    if not path.exists():
        raise QueryRefused(f"database file {db} does not exist (run `glassbench db upgrade`)")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        conn.set_authorizer(_sqlite_authorizer)
        try:
            cur = conn.execute(sql)
            rows = cur.fetchmany(max_rows) if max_rows else cur.fetchall()
        except (sqlite3.DatabaseError, sqlite3.ProgrammingError, sqlite3.Warning) as exc:
            msg = str(exc).splitlines()[0]
            if msg == "not authorized":
                msg = "only SELECT queries are allowed (writes, DDL, PRAGMA and ATTACH are not)"
            raise QueryRefused(msg) from None
        cols = [d[0] for d in cur.description or ()]
        return QueryResult(cols, [tuple(r) for r in rows])
    finally:
        conn.close()


def _postgres(engine: Engine, sql: str, max_rows: int | None) -> QueryResult:
    import psycopg

    name = f"glassbench_query_{uuid.uuid4().hex}"
    # engine.connect() (not raw_connection()) so that a connection failure arrives as
    # SQLAlchemy's OperationalError, which the command reports with the URL masked
    with engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        dbapi.rollback()
        prepared = False
        with dbapi.cursor() as cur:  # type: ignore[attr-defined]
            try:
                cur.execute("SET TRANSACTION READ ONLY")
                cur.execute("SET LOCAL statement_timeout = '300s'")
                # A read-only transaction still runs utility statements such as
                # COPY ... TO PROGRAM / TO 'file' (a shell command or a file write on the
                # server for a superuser). PREPARE accepts only SELECT, VALUES, INSERT, UPDATE,
                # DELETE and MERGE, so anything else is a syntax error and never runs; the
                # read-only transaction refuses the writes; prepare=True sends one statement.
                cur.execute(f"PREPARE {name} AS {sql}", prepare=True)
                prepared = True
                cur.execute(f"EXECUTE {name}")
                if cur.description is None:
                    raise QueryRefused("the statement returned no rows (only queries are allowed)")
                rows = cur.fetchmany(max_rows) if max_rows else cur.fetchall()
                cols = [d.name for d in cur.description]
            except psycopg.Error as exc:
                raise QueryRefused(str(exc).strip().splitlines()[0]) from None
            finally:
                dbapi.rollback()
                if prepared:  # prepared statements outlive the transaction
                    with contextlib.suppress(psycopg.Error):
                        cur.execute(f"DEALLOCATE {name}")
                        dbapi.rollback()
        return QueryResult(cols, [tuple(r) for r in rows])
