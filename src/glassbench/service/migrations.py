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
    refuse_newer(engine, current)
    if current != head:
        raise Failure(
            f"database {describe(engine)} is at revision {current}, code expects {head}: "
            "run `glassbench db upgrade`"
        )


def revisions(engine: Engine) -> list[str]:
    """All revisions, oldest first."""
    script = ScriptDirectory.from_config(alembic_config(engine))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def is_newer(engine: Engine, current: str | None) -> bool:
    """True when the database's revision is none of this code's: a newer glassbench wrote it."""
    return current is not None and current not in revisions(engine)


def refuse_newer(engine: Engine, current: str | None) -> None:
    """A ``Failure`` (exit 1) for a database migrated by a newer glassbench.

    ``db upgrade`` cannot help (this code does not know the revision) and a downgrade by this
    code would fail the same way: the fix is a newer glassbench.
    """
    if not is_newer(engine, current):
        return
    from glassbench.errors import Failure
    from glassbench.service.db import describe

    raise Failure(
        f"database {describe(engine)} is at revision {current}, newer than this glassbench "
        f"(head {head_revision(engine)}): upgrade glassbench"
    )


def view_problems(engine: Engine) -> list[str]:
    """Views of this code's schema that are missing or defined differently in the database.

    SQLite keeps each view's CREATE statement as written, so the text is compared (whitespace
    aside). PostgreSQL keeps a parsed form: each expected view is created as a temporary view
    inside a transaction that is rolled back, and the server's rendering of both is compared.
    """
    import sqlalchemy as sa

    from glassbench.schema.views import CURRENT_VIEWS

    restore = "restore it with `glassbench db upgrade`"
    problems: list[str] = []
    with engine.connect() as conn:
        present = set(sa.inspect(conn).get_view_names())
        for name, _ in CURRENT_VIEWS:
            if name not in present:
                problems.append(f"view {name} is missing ({restore})")
        if engine.dialect.name == "sqlite":
            stored: dict[str, str] = dict(
                conn.exec_driver_sql(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'view'"
                ).all()
            )
            for name, sql in CURRENT_VIEWS:
                if name in stored and _words(stored[name]) != _words(
                    f"CREATE VIEW {name} AS {sql}"
                ):
                    problems.append(f"view {name} differs from this glassbench's ({restore})")
            return problems
        for name, sql in CURRENT_VIEWS:
            if name not in present:
                continue
            probe = f"glassbench_check_{name}"
            try:
                with conn.begin_nested():
                    conn.exec_driver_sql(f"CREATE TEMPORARY VIEW {probe} AS {sql}")
                    same = conn.execute(
                        sa.text(
                            "SELECT pg_get_viewdef(to_regclass(:a)) = "
                            "pg_get_viewdef(to_regclass(:b))"
                        ),
                        {"a": name, "b": f"pg_temp.{probe}"},
                    ).scalar_one()
            except sa.exc.DBAPIError:
                same = False  # its SQL does not even build against this database
            if not same:
                problems.append(f"view {name} differs from this glassbench's ({restore})")
        conn.rollback()  # the temporary views go with the transaction
    return problems


def _words(sql: str) -> list[str]:
    return sql.split()


def restore_views(engine: Engine) -> list[str]:
    """Re-create this code's views where they are missing or differ; the names restored.

    All views are dropped and created in one transaction (they depend on one another).
    """
    from glassbench.schema.views import create_views_sql, drop_views_sql

    broken = view_problems(engine)
    if not broken:
        return []
    with engine.begin() as conn:
        for statement in (*drop_views_sql(), *create_views_sql()):
            conn.exec_driver_sql(statement)
    return [p.split()[1] for p in broken]


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
