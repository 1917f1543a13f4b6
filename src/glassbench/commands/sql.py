"""``glassbench sql``: read-only ad hoc queries (see the views in the README).

Rows are written as they arrive (:func:`glassbench.service.readonly.open_query` fetches
``BATCH_ROWS`` at a time): CSV line by line, JSON as one array written element by element, the
text table in blocks of :data:`TABLE_BLOCK_ROWS` rows (each block aligned on its own, with its
header), so memory stays bounded whatever the result's size.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import click

from glassbench.cli import AppContext, pass_app
from glassbench.commands._common import FORMAT_OPTION, csv_lines, format_rows
from glassbench.errors import BadInput

TABLE_BLOCK_ROWS = 1000
"""Rows a text table aligns together (the widths of a column need all its cells)."""

SUPERUSER_WARNING = (
    "warning: connected as superuser {role!r}: a read-only transaction does not stop a "
    "superuser reading server files (pg_read_file) or other sessions; use the read-only "
    "analyst role, docs/reliability.md"
)


def _echo(text: str) -> None:
    click.echo(text, nl=False)


def _write_csv(columns: Sequence[str], batches: Iterator[list[tuple[Any, ...]]]) -> None:
    lines = csv_lines(columns, ())
    _echo(next(lines))
    for batch in batches:
        lines = csv_lines(columns, batch)
        next(lines)  # the header, written once above
        _echo("".join(lines))


def _write_json(columns: Sequence[str], batches: Iterator[list[tuple[Any, ...]]]) -> None:
    # One valid array written element by element: each batch is rendered as an array and its
    # brackets are dropped, so the elements look exactly as format_rows writes them.
    empty = True
    for batch in batches:
        text = format_rows(columns, batch, "json")
        inner = text[text.index("[") + 1 : text.rindex("]")].strip("\n")
        _echo(("[\n" if empty else ",\n") + inner)
        empty = False
    _echo("[]\n" if empty else "\n]\n")


def _write_table(columns: Sequence[str], batches: Iterator[list[tuple[Any, ...]]]) -> None:
    total = 0
    block: list[tuple[Any, ...]] = []

    def flush() -> None:
        lines = format_rows(columns, block, "table").splitlines()
        _echo("\n".join(lines[:-1]) + "\n")  # without its "(N rows)": the total comes last
        block.clear()

    for batch in batches:
        total += len(batch)
        for row in batch:
            block.append(row)
            if len(block) == TABLE_BLOCK_ROWS:
                flush()
    if block or total == 0:
        flush()
    _echo(f"({total} row{'s' if total != 1 else ''})\n")


WRITERS = {"csv": _write_csv, "json": _write_json, "table": _write_table}


def _stdout_closed() -> None:
    """The reader of our output left (``| head``): stop quietly, as other Unix tools do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file descriptor (tests capture stdout)
        pass
    sys.exit(0)


@click.command("sql")
@click.argument("query")
@FORMAT_OPTION
@click.option(
    "--max-rows",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after N rows; stderr says so when more rows existed.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Stop the query after SECONDS  [default: GLASSBENCH_SQL_TIMEOUT_S, else 60].",
)
@pass_app
def cli(
    app: AppContext, query: str, fmt: str, max_rows: int | None, timeout_s: float | None
) -> None:
    """Run QUERY read-only; rows stream out as they come.

    Writes and DDL are refused, as are syntax errors and unknown tables (exit 2, one line
    saying which); past the timeout the query stops (exit 2); Ctrl-C stops it at once (exit
    130).
    """
    from glassbench.service.readonly import QueryTimeout, open_query

    timeout = timeout_s if timeout_s is not None else app.settings.sql_timeout_s
    try:
        with open_query(app.engine, query, timeout_s=timeout, max_rows=max_rows) as q:
            if q.superuser:
                click.echo(SUPERUSER_WARNING.format(role=q.superuser), err=True)
            WRITERS[fmt](q.columns, q.batches())
    except QueryTimeout as exc:
        why = (
            "the server's statement_timeout for this role, stricter than --timeout"
            if exc.by_server
            else "timeout; --timeout / GLASSBENCH_SQL_TIMEOUT_S"
        )
        raise BadInput(f"query stopped after {exc.seconds:g} s ({why})") from None
    except BrokenPipeError:
        _stdout_closed()
    if q.cut:
        click.echo(f"output cut at {max_rows} rows (--max-rows)", err=True)
