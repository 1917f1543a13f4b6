"""Engine and session factory, and the unit of work.

Nothing here runs at import time: callers build an engine with :func:`make_engine` and pass
sessions explicitly. The caller owns the transaction: :func:`unit_of_work` commits on success
and rolls back on any error, so a multi-row write is all or nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session

from glassbench.settings import (
    mask_url,
    normalize_database_url,
    register_secret,
    settings_or_defaults,
    sqlite_file,
)

if TYPE_CHECKING:
    from glassbench.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_PG_PORT = 5432
# where a PostgreSQL engine remembers its connect timeout, for the message when it expires
CONNECT_TIMEOUT_OPTION = "glassbench_connect_timeout_s"


def is_sqlite(engine_or_url: Engine | str) -> bool:
    url = engine_or_url if isinstance(engine_or_url, str) else str(engine_or_url.url)
    return url.startswith("sqlite")


def make_engine(
    url: str,
    *,
    settings: Settings | None = None,
    create: bool = True,
    check_exists: bool = True,
    **kwargs: Any,
) -> Engine:
    """Build an engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout.

    ``create=False`` refuses an SQLite file that does not exist (``BadInput`` on the field
    ``database_url``) and opens the file read-write without creating it, so a command that
    only reads never leaves an empty database behind (``check_exists=False``: no check now, for
    a service that waits for the file to come back; it still never creates it). PostgreSQL
    connections get ``connect_timeout`` (``settings.connect_timeout_s``; without settings,
    ``GLASSBENCH_CONNECT_TIMEOUT_S`` or its default) unless the URL sets one.
    """
    url = normalize_database_url(url)
    if settings is None:
        settings = settings_or_defaults()
    parsed = sa.engine.make_url(url)
    register_secret(parsed.password if isinstance(parsed.password, str) else None)
    busy_ms = settings.sqlite_busy_timeout_ms
    if is_sqlite(url):
        connect_args = kwargs.pop("connect_args", {})
        connect_args.setdefault("timeout", busy_ms / 1000)
        path = sqlite_file(url)
        if path is not None and path.exists() and not path.is_file():
            from glassbench.errors import BadInput

            raise BadInput(f"{path} is not a file (an SQLite database)", field="database_url")
        if not create and check_exists and path is not None and not path.exists():
            from glassbench.errors import BadInput

            raise BadInput(
                f"database file {path} does not exist (create it with `glassbench db upgrade`)",
                field="database_url",
            )
        engine = sa.create_engine(url, connect_args=connect_args, **kwargs)
        if not create and path is not None:
            _open_without_creating(engine, path)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite's own transaction handling defers BEGIN; take control so that
            # BEGIN IMMEDIATE-style locking and savepoints behave as documented.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
            if ":memory:" not in url and "mode=memory" not in url:
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # A deferred transaction that reads and then writes cannot wait for a lock (SQLite
            # returns "database is locked" at once to avoid a deadlock); writers therefore
            # take the write lock up front, and the busy timeout makes them queue.
            immediate = conn.get_execution_options().get("glassbench_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if parsed.get_backend_name() == "postgresql":
        connect_args = kwargs.pop("connect_args", {})
        if "connect_timeout" not in parsed.query:
            connect_args.setdefault("connect_timeout", settings.connect_timeout_s)
        kwargs["connect_args"] = connect_args
        timeout = parsed.query.get("connect_timeout", connect_args.get("connect_timeout"))
        kwargs.setdefault("execution_options", {})[CONNECT_TIMEOUT_OPTION] = timeout
    return sa.create_engine(url, **kwargs)


def _open_without_creating(engine: Engine, path: Path) -> None:
    # The file was there when the engine was built; mode=rw keeps a file removed since then
    # from being re-created empty by the first connection.
    uri = "file:" + quote(str(path.resolve()), safe="/") + "?mode=rw"

    @event.listens_for(engine, "do_connect")
    def _rw(_dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
        if cargs:
            cargs[0] = uri
        else:
            cparams["database"] = uri
        cparams["uri"] = True


def endpoint(engine: Engine) -> str:
    """``host:port`` of a PostgreSQL engine (the socket directory or default when unset)."""
    url = engine.url
    host = url.host or url.query.get("host") or "localhost (socket)"
    return f"{host}:{url.port or DEFAULT_PG_PORT}"


def verify_connection(engine: Engine) -> None:
    """Connect once, so that an unreachable server fails now, in one line.

    The ``Failure`` names the host and port and masks the password; the connection goes back
    to the pool for the command to use. An SQLite file that is not a database is a
    ``BadInput`` on the field ``database_url``.
    """
    from glassbench.errors import BadInput, Failure, first_line

    if engine.dialect.name == "sqlite":
        path = sqlite_file(str(engine.url))
        if path is None or not path.is_file():
            return
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT COUNT(*) FROM sqlite_master").scalar()
        except sa.exc.DatabaseError as exc:
            # a bare path names any existing file: say so when it is not a database
            if "not a database" not in str(exc.orig):
                raise
            raise BadInput(
                f"{path} is not an SQLite database ({first_line(exc)})", field="database_url"
            ) from None
        return

    try:
        with engine.connect():
            pass
    except sa.exc.DBAPIError as exc:
        reason = first_line(exc)
        if "timeout" in reason.lower():
            timeout = engine.get_execution_options().get(CONNECT_TIMEOUT_OPTION)
            reason += f" after {timeout} s (GLASSBENCH_CONNECT_TIMEOUT_S)"
        raise Failure(
            f"cannot connect to the database server at {endpoint(engine)} "
            f"({describe(engine)}): {mask_url(reason)}"
        ) from None


def describe(engine: Engine) -> str:
    """The engine's URL with the password masked (for messages and logs)."""
    return mask_url(engine.url.render_as_string(hide_password=False))


@contextlib.contextmanager
def unit_of_work(engine: Engine) -> Iterator[Session]:
    """One transaction: commit if the block succeeds, roll back if it raises."""
    with Session(engine, expire_on_commit=False) as session:
        if engine.dialect.name == "sqlite":
            session.connection(execution_options={"glassbench_write": True})
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
