"""Engine and session factory, and the unit of work.

Nothing here runs at import time: callers build an engine with :func:`make_engine` and pass
sessions explicitly. The caller owns the transaction: :func:`unit_of_work` commits on success
and rolls back on any error, so a multi-row write is all or nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session

from glassbench.settings import mask_url, normalize_database_url

if TYPE_CHECKING:
    from glassbench.settings import Settings

log = logging.getLogger(__name__)


def is_sqlite(engine_or_url: Engine | str) -> bool:
    url = engine_or_url if isinstance(engine_or_url, str) else str(engine_or_url.url)
    return url.startswith("sqlite")


def make_engine(url: str, *, settings: Settings | None = None, **kwargs: Any) -> Engine:
    """Build an engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout."""
    url = normalize_database_url(url)
    busy_ms = settings.sqlite_busy_timeout_ms if settings is not None else 30_000
    if is_sqlite(url):
        connect_args = kwargs.pop("connect_args", {})
        connect_args.setdefault("timeout", busy_ms / 1000)
        engine = sa.create_engine(url, connect_args=connect_args, **kwargs)

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
    return sa.create_engine(url, **kwargs)


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
