from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from glassbench.schema import TABLES
from glassbench.schema.views import CURRENT_VIEWS, RUN_SUMMARY_COLUMNS
from glassbench.service.db import make_engine
from glassbench.service.migrations import (
    current_revision,
    downgrade,
    head_revision,
    schema_drift,
    upgrade,
)


def _tables(engine: Any) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_downgrade_upgrade(db_url: str) -> None:
    engine = make_engine(db_url)
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == head_revision(engine)
    assert _tables(engine) == {t.__tablename__ for t in TABLES}  # type: ignore[attr-defined]
    assert set(sa.inspect(engine).get_view_names()) == {v for v, _ in CURRENT_VIEWS}
    downgrade(engine, "base")
    assert current_revision(engine) is None
    assert _tables(engine) == set()
    assert sa.inspect(engine).get_view_names() == []
    upgrade(engine)
    assert current_revision(engine) == head_revision(engine)
    engine.dispose()


def test_models_and_migrations_do_not_drift(engine: Any) -> None:
    assert schema_drift(engine) == []


def test_drift_is_detected(engine: Any) -> None:
    """The comparison must be able to fail: an extra column shows up as drift."""
    with engine.begin() as c:
        c.execute(sa.text("ALTER TABLE report ADD COLUMN stray INTEGER"))
    diffs = schema_drift(engine)
    assert any("stray" in str(d) for d in diffs)


def test_run_summary_has_exactly_the_contract_columns(engine: Any) -> None:
    with engine.connect() as c:
        cols = list(c.execute(sa.text("SELECT * FROM run_summary")).keys())
    assert tuple(cols) == RUN_SUMMARY_COLUMNS
    assert RUN_SUMMARY_COLUMNS == (
        "mlip",
        "x",
        "quench_rate_k_ps",
        "seed",
        "protocol",
        "status",
        "n_atoms",
        "density_g_cm3",
        "bulk_modulus_gpa",
        "young_modulus_gpa",
        "shear_modulus_gpa",
        "p0",
        "p1",
        "p2",
        "p1p",
        "p3c",
        "p2es",
        "bs",
        "nbs",
        "bo",
        "nbo",
        "na_cn",
    )
    with engine.connect() as c:
        mae_cols = list(c.execute(sa.text("SELECT * FROM mlip_mae")).keys())
    assert mae_cols == ["mlip", "property", "n", "mae", "mean_error"]


def test_released_views_are_frozen() -> None:
    """VIEWS_V1, VIEWS_V2 and VIEWS_V3 are what migrations 0001, 0002 and 0003 created when
    they were released, byte for byte."""
    import hashlib

    from glassbench.schema.views import VIEWS_V1, VIEWS_V2, VIEWS_V3
    from glassbench.schema.views_v1 import VIEWS_V1_SHA256
    from glassbench.schema.views_v2 import VIEWS_V2_SHA256
    from glassbench.schema.views_v3 import VIEWS_V3_SHA256

    assert hashlib.sha256(repr(VIEWS_V1).encode()).hexdigest() == VIEWS_V1_SHA256
    assert hashlib.sha256(repr(VIEWS_V2).encode()).hexdigest() == VIEWS_V2_SHA256
    assert hashlib.sha256(repr(VIEWS_V3).encode()).hexdigest() == VIEWS_V3_SHA256
    # The released hash, written here too: a regenerated views_v3.py cannot pass unnoticed.
    assert VIEWS_V3_SHA256 == "48741a105a463d855db6a191b34ff24f142524976b1cd46e0dc2f396f724bf49"


def test_sqlite_pragmas(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    with engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    engine.dispose()


def test_cli_db_commands(db_url: str) -> None:
    from tests.conftest import Cli

    gb = Cli(db_url)
    assert "at revision 0004" in gb.ok("db", "upgrade").output
    assert "up to date" in gb.ok("db", "current").output
    assert "integrity checks passed" in gb.ok("db", "check").output
    assert gb("db", "upgrade", "nonexistent-rev").exit_code == 2
    assert "base" in gb.ok("db", "downgrade", "base").output
    assert "base (empty)" in gb.ok("db", "current").output
    res = gb("db", "check")
    assert res.exit_code == 1
    assert "glassbench db upgrade" in res.output
