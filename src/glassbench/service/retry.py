"""Retry a database operation while the database is unreachable, with exponential backoff.

Long-running writers (the melt-quench runner) must survive a database restart: a lost
connection is retried until the database is back or a deadline passes, instead of failing a
run that took hours to compute. Only *transient* errors are retried (see :func:`is_transient`);
anything else (a constraint violation, a missing table, bad SQL) is raised at once.

The operation must be idempotent, because a commit whose acknowledgement was lost may have
happened: glassbench's writes are upserts / ``ON CONFLICT DO NOTHING`` on natural keys, so
repeating one is harmless. Each attempt must open its own transaction (e.g. one
``unit_of_work``), so that a retry never continues a transaction on a dead connection.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import exc as sa_exc

from glassbench.errors import first_line
from glassbench.settings import mask_url

T = TypeVar("T")

DEFAULT_DEADLINE_S = 900.0  # a database restart or fail-over takes seconds to minutes
DEFAULT_INITIAL_S = 0.5
DEFAULT_MAX_DELAY_S = 15.0

# SQLite errors worth waiting for (another writer holds the lock); "no such table" and the
# like are OperationalError too, but waiting does not fix them.
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "database is busy")

_log = logging.getLogger(__name__)


def _psycopg_operational() -> tuple[type[BaseException], ...]:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return ()
    return (psycopg.OperationalError,)


def is_transient(exc: BaseException) -> bool:
    """True for errors that a later attempt can succeed after.

    - SQLAlchemy ``DBAPIError`` with ``connection_invalidated`` (a dropped connection);
    - ``DisconnectionError``;
    - ``OperationalError`` from PostgreSQL (connection refused/reset, server shutting down,
      serialization failure, deadlock: psycopg classes all of these as OperationalError, while
      missing tables or bad SQL are ProgrammingError);
    - SQLite ``OperationalError`` only for a locked / busy database;
    - a bare ``psycopg.OperationalError`` (raised through raw cursors, e.g. COPY).
    """
    if isinstance(exc, sa_exc.DisconnectionError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        if not isinstance(exc, sa_exc.OperationalError):
            return False
        orig = exc.orig
        if type(orig).__module__.startswith("sqlite3"):
            return any(s in str(orig).lower() for s in _SQLITE_TRANSIENT)
        return True  # PostgreSQL (psycopg) and other drivers: connection-level trouble
    return isinstance(exc, _psycopg_operational())


def retry_db(
    fn: Callable[[], T],
    *,
    deadline_s: float | None = DEFAULT_DEADLINE_S,
    attempts: int | None = None,
    initial_s: float = DEFAULT_INITIAL_S,
    max_delay_s: float = DEFAULT_MAX_DELAY_S,
    url: str | None = None,
    what: str = "database operation",
    log: logging.Logger | None = None,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call ``fn()`` until it succeeds, retrying transient database errors with backoff.

    Delays grow ``initial_s, 2*initial_s, ...`` up to ``max_delay_s`` (with +-20 % jitter so
    that many workers do not reconnect in lock-step). Gives up, re-raising the last error, when
    ``attempts`` calls have failed or the next attempt would start after ``deadline_s``
    (measured from the first call); ``None`` disables that limit (not both). Each retry is
    logged as a WARNING naming ``what`` and the database ``url`` with its password masked;
    recovery is logged too.
    """
    if deadline_s is None and attempts is None:
        raise ValueError("retry_db needs a deadline or a number of attempts")
    logger = log or _log
    where = f" on {mask_url(url)}" if url else ""
    start = clock()
    delay = initial_s
    failures = 0
    while True:
        try:
            result = fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            failures += 1
            elapsed = clock() - start
            wait = min(delay, max_delay_s) * random.uniform(0.8, 1.2)
            out_of_attempts = attempts is not None and failures >= attempts
            out_of_time = deadline_s is not None and elapsed + wait > deadline_s
            if out_of_attempts or out_of_time:
                logger.error(
                    "%s%s failed %d time(s) over %.1f s; giving up: %s",
                    what,
                    where,
                    failures,
                    elapsed,
                    mask_url(first_line(exc)),
                )
                raise
            logger.warning(
                "%s%s: database unavailable (%s); retry %d in %.1f s",
                what,
                where,
                mask_url(first_line(exc)),
                failures,
                wait,
            )
            sleep(wait)
            delay = min(delay * 2.0, max_delay_s)
            continue
        if failures:
            logger.warning(
                "%s%s succeeded after %d retries (%.1f s)", what, where, failures, clock() - start
            )
        return result
