"""Shared fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``GLASSBENCH_TEST_POSTGRES_URL`` (default: the local server at
127.0.0.1:5432, database ``test``). Each test gets its own schema, so tests never see each
other's rows. Under ``CI=true`` an unreachable PostgreSQL is an error, not a skip.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from click.testing import CliRunner, Result

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_base_url() -> str:
    return os.environ.get("GLASSBENCH_TEST_POSTGRES_URL", DEFAULT_PG)


_pg_state: dict[str, Any] = {}


def postgres_available() -> str | None:
    """None if reachable, else the reason."""
    if "reason" not in _pg_state:
        import sqlalchemy as sa

        from glassbench.service.db import make_engine

        try:
            eng = make_engine(postgres_base_url(), connect_args={"connect_timeout": 5})
            with eng.connect() as c:
                c.execute(sa.text("SELECT 1"))
            eng.dispose()
            _pg_state["reason"] = None
        except Exception as exc:  # any connection failure
            _pg_state["reason"] = f"PostgreSQL not reachable: {str(exc).splitlines()[0]}"
    return _pg_state["reason"]


def require_postgres() -> None:
    reason = postgres_available()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true requires PostgreSQL: {reason}")
    pytest.skip(reason)


def _with_search_path(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


@contextlib.contextmanager
def fresh_pg_schema() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a new, empty schema, dropped on exit."""
    require_postgres()
    import sqlalchemy as sa

    from glassbench.service.db import make_engine

    schema = f"gbt_{uuid.uuid4().hex[:12]}"
    admin = make_engine(postgres_base_url())
    with admin.begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _with_search_path(postgres_base_url(), schema)
    finally:
        with admin.begin() as c:
            c.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh, empty schema (dropped afterwards)."""
    with fresh_pg_schema() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'glassbench.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind (not migrated)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'glassbench.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def engine(db_url: str) -> Iterator[Any]:
    """An engine on a database migrated to head."""
    from glassbench.service.db import make_engine
    from glassbench.service.migrations import upgrade

    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


class Cli:
    """Invoke ``glassbench`` in-process against one database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None) -> Result:
        from glassbench.cli import cli

        return self.runner.invoke(
            cli, ["--db", self.url, *args], input=input, catch_exceptions=False
        )

    def ok(self, *args: str) -> Result:
        res = self(*args)
        assert res.exit_code == 0, f"glassbench {' '.join(args)} -> {res.exit_code}: {res.output}"
        return res


@pytest.fixture
def gb(engine: Any, db_url: str) -> Cli:
    """CLI runner bound to a migrated database of each kind."""
    return Cli(db_url)


def table_counts(engine: Any) -> dict[str, int]:
    """Row counts of every table: tests compare them before/after a refused write."""
    import sqlalchemy as sa

    from glassbench.schema import TABLES

    with engine.connect() as c:
        return {
            t.__tablename__: int(
                c.execute(sa.text(f"SELECT COUNT(*) FROM {t.__tablename__}")).scalar_one()
            )  # type: ignore[attr-defined]
            for t in TABLES
        }
