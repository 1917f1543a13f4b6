"""Alembic environment: run from code (glassbench.service.migrations), never from a checkout."""

from __future__ import annotations

from typing import TYPE_CHECKING

from alembic import context
from sqlalchemy import engine_from_config, pool

from glassbench.schema import metadata

if TYPE_CHECKING:
    from alembic.runtime.environment import NameFilterType
    from sqlalchemy.schema import SchemaItem

config = context.config
target_metadata = metadata


def _include_object(
    obj: SchemaItem,
    name: str | None,
    type_: NameFilterType,
    reflected: bool,
    compare_to: SchemaItem | None,
) -> bool:
    # Views are created by migrations with raw SQL; reflection may report them as tables.
    from glassbench.schema.views import CURRENT_VIEWS

    return not (type_ == "table" and name in {v for v, _ in CURRENT_VIEWS})


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        include_object=_include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,
            include_object=_include_object,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as conn:
        context.configure(
            connection=conn,
            target_metadata=target_metadata,
            render_as_batch=True,
            include_object=_include_object,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
