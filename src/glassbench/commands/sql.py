"""``glassbench sql``: read-only ad hoc queries (see the views in the README)."""

from __future__ import annotations

import click

from glassbench.cli import AppContext, pass_app
from glassbench.commands._common import FORMAT_OPTION, format_rows


@click.command("sql")
@click.argument("query")
@FORMAT_OPTION
@click.option("--max-rows", type=click.IntRange(min=1), default=None, help="Stop after N rows.")
@pass_app
def cli(app: AppContext, query: str, fmt: str, max_rows: int | None) -> None:
    """Run QUERY read-only; writes and DDL are refused (exit 2)."""
    from glassbench.service.readonly import query as run_query

    result = run_query(app.engine, query, max_rows=max_rows)
    click.echo(format_rows(result.columns, result.rows, fmt))
