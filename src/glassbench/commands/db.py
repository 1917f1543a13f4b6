"""``glassbench db``: schema migrations and integrity checks."""

from __future__ import annotations

import click

from glassbench.cli import AppContext, pass_app
from glassbench.errors import BadInput, Failure


@click.group("db")
def cli() -> None:
    """Database schema: upgrade, downgrade, current, check."""


@cli.command()
@click.argument("revision", default="head")
@pass_app
def upgrade(app: AppContext, revision: str) -> None:
    """Upgrade the schema to REVISION (default: head); creates an SQLite file if missing.

    At head, views that were dropped or changed by hand are re-created.
    """
    from glassbench.service import describe
    from glassbench.service.admin import upgrade_report

    engine = app.engine_for(create=True)
    now, restored = upgrade_report(engine, revision)
    if restored:
        click.echo(f"re-created views: {', '.join(restored)}")
    click.echo(f"{describe(engine)}: at revision {now}")


@cli.command()
@click.argument("revision")
@click.option("--yes", is_flag=True, help="Confirm a downgrade of a database that holds data.")
@pass_app
def downgrade(app: AppContext, revision: str, yes: bool) -> None:
    """Downgrade the schema to REVISION ('base' removes everything).

    A database that holds results is only downgraded with --yes: a downgrade can drop tables.
    """
    from glassbench.service import describe
    from glassbench.service.admin import PopulatedDatabase, downgrade_schema

    engine = app.engine
    try:
        now = downgrade_schema(engine, revision, force=yes)
    except PopulatedDatabase as exc:
        raise BadInput(
            f"the database holds {exc.rows} rows of results; a downgrade may drop them "
            "(back it up, then repeat with --yes)",
            source="REVISION",
        ) from None
    click.echo(f"{describe(engine)}: at revision {now or 'base'}")


@cli.command()
@pass_app
def current(app: AppContext) -> None:
    """Print the schema revision of the database."""
    from glassbench.service import describe
    from glassbench.service.admin import schema_state

    engine = app.engine
    click.echo(f"{describe(engine)}: {schema_state(engine)}")


@cli.command()
@pass_app
def check(app: AppContext) -> None:
    """Check the schema (tables and views as this glassbench defines them) and the data."""
    from glassbench.service.admin import check_database

    result = check_database(app.engine)
    counts = ", ".join(f"{k}={v}" for k, v in result.counts.items())
    if result.problems:
        for p in result.problems:
            click.echo(f"PROBLEM: {p}", err=True)
        raise Failure(f"integrity check failed with {len(result.problems)} problem(s) [{counts}]")
    click.echo(f"ok: tables and views match this glassbench; integrity checks passed [{counts}]")
