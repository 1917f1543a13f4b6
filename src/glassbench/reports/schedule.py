"""Regenerate the report on a schedule (APScheduler 3 ``BlockingScheduler``).

Each firing generates once; when the database cannot be reached it retries with exponential
backoff (logged, URL password masked) until it succeeds or the process is told to stop, so a
database restart during the night costs one late report, not a dead scheduler. Problems that
waiting does not fix (no glassbench schema, a bad output folder) are logged and left for the
next firing. SIGTERM and SIGINT stop it cleanly: no new firing starts, a retry wait is cut
short, a generation in progress finishes, and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from glassbench.errors import first_line
from glassbench.reports.generate import ReportResult

log = logging.getLogger(__name__)


class SchemaNotReady(RuntimeError):
    """The database answers but has no (or an outdated) glassbench schema."""


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 5.0
    max_s: float = 300.0
    factor: float = 2.0

    def delays(self) -> Any:
        delay = self.initial_s
        while True:
            yield delay
            delay = min(delay * self.factor, self.max_s)


def _is_outage(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError | InterfaceError | DisconnectionError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def check_schema(engine: Engine) -> None:
    """Raise SchemaNotReady unless the database is at the code's migration head.

    Connection failures propagate as SQLAlchemy errors (they are outages, to be retried).
    """
    from glassbench.service.migrations import current_revision, head_revision, is_newer

    current = current_revision(engine)
    head = head_revision(engine)
    if current != head:
        if is_newer(engine, current):
            raise SchemaNotReady(
                f"database is at revision {current}, newer than this glassbench (head {head}): "
                "upgrade glassbench"
            )
        raise SchemaNotReady(
            "database has no glassbench schema: run `glassbench db upgrade`"
            if current is None
            else f"database is at revision {current}, code expects {head}: "
            "run `glassbench db upgrade`"
        )


class ReportScheduler:
    """Runs ``generate`` on ``trigger``, retrying through database outages."""

    def __init__(
        self,
        engine: Engine,
        generate: Callable[[], ReportResult],
        *,
        database: str,
        backoff: Backoff,
    ) -> None:
        self.engine = engine
        self._generate = generate
        self.database = database  # masked URL, for logs
        self.backoff = backoff
        self.stop_event = threading.Event()
        self.generations = 0
        self._scheduler: Any = None

    def run_once(self) -> ReportResult | None:
        """One scheduled generation, retrying while the database is unavailable.

        Returns None when it gave up (a non-outage error, or a stop request).
        """
        self.generations += 1
        n = self.generations
        attempt = 0
        delays = self.backoff.delays()
        while not self.stop_event.is_set():
            attempt += 1
            try:
                check_schema(self.engine)
                result = self._generate()
            except SchemaNotReady as exc:
                log.error("report generation #%d skipped: %s (%s)", n, exc, self.database)
                return None
            except Exception as exc:
                if not _is_outage(exc):
                    log.exception("report generation #%d failed: %s", n, first_line(exc))
                    return None
                delay = next(delays)
                log.warning(
                    "report generation #%d: database %s unavailable (attempt %d: %s); "
                    "retrying in %.1f s",
                    n,
                    self.database,
                    attempt,
                    first_line(exc),
                    delay,
                )
                # Pooled connections may point at a server that went away.
                self.engine.dispose()
                if self.stop_event.wait(delay):
                    break
                continue
            finally:
                # SQLite connections keep the old file open across a move or restore, and a
                # report runs rarely: start every attempt from fresh connections.
                self.engine.dispose()
            if attempt > 1:
                log.info("report generation #%d: database %s is back", n, self.database)
            if result.status == "unchanged":
                log.info(
                    "report generation #%d: data unchanged (fingerprint %s), reusing %s",
                    n,
                    result.fingerprint[:12],
                    result.out_dir,
                )
            else:
                log.info(
                    "report generation #%d: written to %s in %.2f s (fingerprint %s, %d files)",
                    n,
                    result.out_dir,
                    result.seconds,
                    result.fingerprint[:12],
                    len(result.files),
                )
            return result
        log.info("report generation #%d: stopped before it completed", n)
        return None

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping the report scheduler", signal.Signals(signum).name)
        self.stop_event.set()
        if self._scheduler is not None and self._scheduler.running:
            # wait=False: called from the signal handler on the main thread, which is the
            # scheduler's own loop; the running job ends by itself (stop_event) and the
            # interpreter joins its thread before exiting.
            self._scheduler.shutdown(wait=False)

    def run(self, trigger: Any, *, description: str) -> None:
        """Block until SIGTERM/SIGINT, firing ``run_once`` on ``trigger``."""
        from apscheduler.schedulers.blocking import BlockingScheduler

        sched = BlockingScheduler()
        sched.add_job(
            self.run_once,
            trigger,
            id="glassbench-report",
            max_instances=1,  # a slow generation delays the next one, never overlaps it
            coalesce=True,
            misfire_grace_time=None,
        )
        self._scheduler = sched
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        log.info("report scheduler started (%s) on %s", description, self.database)
        t0 = time.monotonic()
        try:
            sched.start()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            log.info(
                "report scheduler stopped after %.0f s and %d generation(s)",
                time.monotonic() - t0,
                self.generations,
            )
