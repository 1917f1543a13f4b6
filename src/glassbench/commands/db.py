"""``glassbench db``: schema migrations and integrity checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from sqlalchemy.exc import OperationalError

from glassbench.cli import AppContext, pass_app
from glassbench.commands._common import db_error
from glassbench.errors import BadInput, Failure

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


@click.group("db")
def cli() -> None:
    """Database schema: upgrade, downgrade, current, check."""


@cli.command()
@click.argument("revision", default="head")
@pass_app
def upgrade(app: AppContext, revision: str) -> None:
    """Upgrade the schema to REVISION (default: head)."""
    from alembic.util import CommandError

    from glassbench.service import describe
    from glassbench.service.migrations import current_revision
    from glassbench.service.migrations import upgrade as do_upgrade

    engine = app.engine
    try:
        do_upgrade(engine, revision)
        click.echo(f"{describe(engine)}: at revision {current_revision(engine)}")
    except CommandError as exc:
        raise BadInput(str(exc), source="REVISION") from None
    except OperationalError as exc:
        raise db_error(exc, engine) from None


@cli.command()
@click.argument("revision")
@click.option("--yes", is_flag=True, help="Confirm a downgrade of a database that holds data.")
@pass_app
def downgrade(app: AppContext, revision: str, yes: bool) -> None:
    """Downgrade the schema to REVISION ('base' removes everything).

    A database that holds results is only downgraded with --yes: a downgrade can drop tables.
    """
    from alembic.util import CommandError

    from glassbench.service import describe
    from glassbench.service.migrations import current_revision
    from glassbench.service.migrations import downgrade as do_downgrade

    engine = app.engine
    if not yes:
        rows = _result_rows(engine)
        if rows:
            raise BadInput(
                f"the database holds {rows} rows of results; a downgrade may drop them "
                "(back it up, then repeat with --yes)",
                source="REVISION",
            )
    try:
        do_downgrade(engine, revision)
        click.echo(f"{describe(engine)}: at revision {current_revision(engine) or 'base'}")
    except CommandError as exc:
        raise BadInput(str(exc), source="REVISION") from None
    except OperationalError as exc:
        raise db_error(exc, engine) from None


def _result_rows(engine: Engine) -> int:
    """Rows in the tables that hold results (0 when the schema does not exist yet)."""
    import sqlalchemy as sa

    names = set(sa.inspect(engine).get_table_names())
    total = 0
    with engine.connect() as c:
        for table in ("mlip", "run", "thermo", "frame", "experiment", "crystal_volume"):
            if table in names:
                total += int(c.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
    return total


@cli.command()
@pass_app
def current(app: AppContext) -> None:
    """Print the schema revision of the database."""
    from glassbench.service import describe
    from glassbench.service.migrations import current_revision, head_revision

    engine = app.engine
    try:
        rev = current_revision(engine)
    except OperationalError as exc:
        raise db_error(exc, engine) from None
    head = head_revision(engine)
    state = "up to date" if rev == head else f"head is {head}"
    click.echo(f"{describe(engine)}: {rev or 'base (empty)'} ({state})")


@cli.command()
@pass_app
def check(app: AppContext) -> None:
    """Check the schema (no drift from the models) and the data's integrity."""
    from glassbench.commands._common import require_schema
    from glassbench.service.integrity import check_database
    from glassbench.service.migrations import schema_drift

    engine = app.engine
    require_schema(engine)
    problems: list[str] = []
    drift = schema_drift(engine)
    if drift:
        problems.append(f"schema differs from the models: {drift[:5]}")
    report = check_database(engine)
    problems += report.problems
    counts = ", ".join(f"{k}={v}" for k, v in report.counts.items())
    if problems:
        for p in problems:
            click.echo(f"PROBLEM: {p}", err=True)
        raise Failure(f"integrity check failed with {len(problems)} problem(s) [{counts}]")
    click.echo(f"ok: schema matches the models; integrity checks passed [{counts}]")
