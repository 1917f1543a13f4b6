"""Shared fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``GLASSBENCH_TEST_POSTGRES_URL`` (default: the local server at
127.0.0.1:5432, database ``test``). Each test gets its own schema, so tests never see each
other's rows.

Optional things (PostgreSQL, MACE and CHGNet in this interpreter, the DeePMD and GRACE
environments, PostgreSQL server binaries, Chromium) go through `require`: missing, the test is
skipped with the reason, except under ``CI=true``, where CI installs them all
(``.ci/run``: scripts/setup-dev.sh and apt) and a missing one is a failure, not a skip.

The tiny models are built once per session, here, for every directory: `tiny_mace` (and
`tiny_mace_factory` for a second, different one), `deepmd_python` and `tiny_deepmd_graph`.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from click.testing import CliRunner, Result

# What `glassbench` itself does before anything can import torch (cli.main ->
# prefer_passive_wait): in-process CLI tests never pass through main(), and OpenMP reads the
# policy once, when torch loads. Spinning idle threads on a busy 2-core machine made a short
# melt-quench take ~100 s instead of ~6 s.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Weights of the shared tiny MACE. Any seed gives a stand-in stable enough for the tiny runs;
# 3 is the one the melt-quench and reliability tests were written with.
TINY_MACE_SEED = 3


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def require(reason: str | None) -> None:
    """Nothing when ``reason`` is None (what is needed is there); otherwise skip the test with
    ``reason``, or fail it under ``CI=true``, where a missing dependency is a broken setup.

    Works in tests, fixtures and at module level (a module-level failure is a collection
    error, which fails the run just the same).
    """
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"missing under CI=true (a failure there, not a skip): {reason}")
    pytest.skip(reason, allow_module_level=True)


def require_module(module: str, hint: str) -> None:
    """`require` that ``module`` is importable in this interpreter (``hint``: how to install)."""
    found = find_spec(module) is not None
    require(None if found else f"{module} not importable in this interpreter ({hint})")


MACE_HINT = "scripts/setup-dev.sh, or pip install torch==2.13.0 && pip install mace-torch"

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
    require(postgres_available())


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


@pytest.fixture(scope="session")
def tiny_mace_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Path]:
    """``model(seed)``: the path of an untrained tiny MACE with weights from ``seed``, pickled
    whole (the format MACE's own tools write). Each seed is built once per session, into one
    temporary folder; tests must not modify the file (copy it first)."""
    require_module("mace", MACE_HINT)
    from glassbench.testing.tiny_models import build_tiny_mace

    folder = tmp_path_factory.mktemp("tiny-mace")
    built: dict[int, Path] = {}

    def model(seed: int) -> Path:
        if seed not in built:
            built[seed] = build_tiny_mace(folder / f"tiny-mace-{seed}.model", seed=seed)
        return built[seed]

    return model


@pytest.fixture(scope="session")
def tiny_mace(tiny_mace_factory: Callable[[int], Path]) -> Path:
    """THE tiny MACE of the suite (seed `TINY_MACE_SEED`), built once per session."""
    return tiny_mace_factory(TINY_MACE_SEED)


@pytest.fixture(scope="session")
def deepmd_python() -> str:
    """Interpreter of the DeePMD environment (`require`: skipped without one, unless CI=true)."""
    from glassbench.errors import BadInput
    from glassbench.testing.tiny_models import find_deepmd_python

    reason = (
        "no DeePMD environment (.venv-deepmd or $GLASSBENCH_DEEPMD_PYTHON): "
        "run scripts/make-envs.sh"
    )
    try:
        py = find_deepmd_python()
    except BadInput as exc:  # the variable names a missing interpreter
        py, reason = None, f"{reason} ({exc.message})"
    require(None if py else reason)
    assert py is not None
    return py


@pytest.fixture(scope="session")
def tiny_deepmd_graph(tmp_path_factory: pytest.TempPathFactory, deepmd_python: str) -> Path:
    """A tiny DeePMD model (frozen ``graph.pb``), trained once per session."""
    from glassbench.testing.tiny_models import train_tiny_deepmd

    return train_tiny_deepmd(tmp_path_factory.mktemp("deepmd"), python=deepmd_python)
