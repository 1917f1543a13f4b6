"""``glassbench sql``: read-only ad hoc queries (see the views in the README)."""

from __future__ import annotations

import click

from glassbench.cli import AppContext, pass_app
from glassbench.commands._common import FORMAT_OPTION, format_rows
from glassbench.errors import BadInput, Failure


@click.command("sql")
@click.argument("query")
@FORMAT_OPTION
@click.option("--max-rows", type=click.IntRange(min=1), default=None, help="Stop after N rows.")
@pass_app
def cli(app: AppContext, query: str, fmt: str, max_rows: int | None) -> None:
    """Run QUERY read-only; writes and DDL are refused (exit 2)."""
    from sqlalchemy.exc import OperationalError

    from glassbench.service import describe
    from glassbench.service.readonly import QueryRefused, run_readonly

    engine = app.engine
    try:
        result = run_readonly(engine, query, max_rows=max_rows)
    except QueryRefused as exc:
        raise BadInput(f"query refused (read-only): {exc}", source="QUERY") from None
    except OperationalError as exc:
        raise Failure(f"cannot query {describe(engine)}: {str(exc.orig).strip()}") from None
    click.echo(format_rows(result.columns, result.rows, fmt))
