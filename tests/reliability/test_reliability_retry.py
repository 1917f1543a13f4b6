"""``glassbench.service.retry``: what is retried, backoff, limits, and masked log lines."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import psycopg
import pytest
from sqlalchemy import exc as sa_exc

from glassbench.service.retry import is_transient, retry_db

URL = "postgresql+psycopg://lab:Very-Secret-1@db.example:5432/glassbench"


def _op(orig: BaseException, *, invalidated: bool = False) -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT 1", {}, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (_op(psycopg.OperationalError("connection refused")), True),
        (_op(psycopg.errors.AdminShutdown("terminating connection")), True),
        (_op(psycopg.errors.DeadlockDetected("deadlock detected")), True),
        (_op(psycopg.errors.SerializationFailure("could not serialize")), True),
        (psycopg.OperationalError("server closed the connection"), True),  # raw cursor (COPY)
        (sa_exc.DisconnectionError("gone"), True),
        (sa_exc.InterfaceError("x", {}, Exception("closed"), connection_invalidated=True), True),
        (_op(sqlite3.OperationalError("database is locked")), True),
        (_op(sqlite3.OperationalError("no such table: run")), False),
        (sa_exc.IntegrityError("x", {}, psycopg.errors.UniqueViolation("duplicate key")), False),
        (sa_exc.ProgrammingError("x", {}, psycopg.errors.UndefinedTable("no table")), False),
        (ValueError("bad"), False),
    ],
)
def test_is_transient(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


def test_retries_with_backoff_then_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    clock, calls = _Clock(), []

    def flaky() -> str:
        calls.append(clock.t)
        if len(calls) < 6:
            raise _op(psycopg.OperationalError(f"connection to {URL} failed"))
        return "written"

    with caplog.at_level(logging.WARNING):
        out = retry_db(
            flaky,
            url=URL,
            what="flush",
            initial_s=1.0,
            max_delay_s=8.0,
            sleep=clock.sleep,
            clock=clock.now,
        )
    assert out == "written" and len(calls) == 6
    # 1, 2, 4, 8, 8 s (+-20 % jitter): exponential, capped
    for got, nominal in zip(clock.sleeps, [1, 2, 4, 8, 8], strict=True):
        assert 0.8 * nominal <= got <= 1.2 * nominal
    assert (
        caplog.text.count("database unavailable") == 5
        and "succeeded after 5 retries" in caplog.text
    )
    assert "Very-Secret-1" not in caplog.text and "lab:***@db.example" in caplog.text


def test_gives_up_at_the_deadline_and_reraises(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    err = _op(psycopg.OperationalError("connection refused"))

    def down() -> None:
        raise err

    with pytest.raises(sa_exc.OperationalError) as info:
        retry_db(
            down,
            deadline_s=30.0,
            initial_s=1.0,
            max_delay_s=10.0,
            url=URL,
            sleep=clock.sleep,
            clock=clock.now,
        )
    assert info.value is err
    assert sum(clock.sleeps) <= 30.0 and len(clock.sleeps) >= 3
    assert "giving up" in caplog.text and "Very-Secret-1" not in caplog.text


def test_attempts_limit_and_permanent_errors_are_not_retried() -> None:
    clock, calls = _Clock(), []

    def down() -> None:
        calls.append(1)
        raise _op(psycopg.OperationalError("refused"))

    with pytest.raises(sa_exc.OperationalError):
        retry_db(down, attempts=3, deadline_s=None, sleep=clock.sleep, clock=clock.now)
    assert len(calls) == 3

    def broken() -> Any:
        calls.append(2)
        raise sa_exc.ProgrammingError("x", {}, psycopg.errors.UndefinedTable("no table"))

    with pytest.raises(sa_exc.ProgrammingError):
        retry_db(broken, sleep=clock.sleep, clock=clock.now)
    assert calls.count(2) == 1
    with pytest.raises(ValueError, match="deadline or a number"):
        retry_db(lambda: None, deadline_s=None, attempts=None)
