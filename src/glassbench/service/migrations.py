"""Alembic driven from code, so ``glassbench db upgrade`` works from an installed wheel."""

from __future__ import annotations

from importlib import resources
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from glassbench.schema import metadata


def alembic_config(engine: Engine) -> Config:
    """An Alembic config pointing at the migrations inside the installed package."""
    cfg = Config()
    script_location = str(resources.files("glassbench") / "migrations")
    cfg.set_main_option("script_location", script_location)
    # The URL is only used offline; online runs reuse the engine's connection (no password
    # ever goes through Alembic's logging of the config).
    cfg.set_main_option("sqlalchemy.url", "sqlite://")
    cfg.attributes["engine"] = engine
    return cfg


def _run(engine: Engine, fn: Any, *args: Any) -> None:
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        fn(cfg, *args)


def upgrade(engine: Engine, revision: str = "head") -> None:
    _run(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    _run(engine, command.downgrade, revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def require_schema(engine: Engine) -> None:
    """Fail with a helpful message unless the database is migrated to head.

    Every use case that reads or writes results calls this first (``glassbench db upgrade``
    and ``glassbench.api.connect`` migrate).
    """
    from sqlalchemy.exc import OperationalError

    from glassbench.errors import Failure, first_line
    from glassbench.service.db import describe

    try:
        current = current_revision(engine)
    except OperationalError as exc:
        raise Failure(f"cannot open database {describe(engine)}: {first_line(exc)}") from None
    head = head_revision(engine)
    if current is None:
        raise Failure(
            f"database {describe(engine)} has no glassbench schema: run `glassbench db upgrade`"
        )
    if current != head:
        raise Failure(
            f"database {describe(engine)} is at revision {current}, code expects {head}: "
            "run `glassbench db upgrade`"
        )


def revisions(engine: Engine) -> list[str]:
    """All revisions, oldest first."""
    script = ScriptDirectory.from_config(alembic_config(engine))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def schema_drift(engine: Engine) -> list[Any]:
    """Differences between the models and the database (empty when they agree)."""
    from glassbench.schema.views import CURRENT_VIEWS

    views = {v for v, _ in CURRENT_VIEWS}

    def include_object(obj: Any, name: Any, type_: Any, reflected: Any, compare_to: Any) -> bool:
        return not (type_ == "table" and name in views)

    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": include_object}
        )
        return list(compare_metadata(ctx, metadata))
