"""``glassbench analysis``: named cutoff sets (add, list) and the comparison of analyses.

The use cases are :mod:`glassbench.stored.analyses`; ``glassbench reanalyze`` computes an
analysis for stored frames (docs/stored-data.md).
"""

from __future__ import annotations

import json
from typing import Any

import click

from glassbench.cli import AppContext, pass_app
from glassbench.commands._common import FORMAT_OPTION, format_rows
from glassbench.commands._selector import (
    listing,
    no_runs_message,
    selector_from,
    selector_options,
)


@click.group("analysis")
def cli() -> None:
    """Named cutoff sets under which stored frames are re-analysed (`glassbench reanalyze`)."""


@cli.command("add")
@click.argument("name")
@click.option(
    "--cutoff",
    "cutoffs",
    multiple=True,
    metavar="PAIR=A",
    help="Bond cutoff in Å, e.g. Na-S=3.4 (repeatable); built-in cutoffs for the other pairs.",
)
@click.option("--description", default=None, metavar="TEXT", help="What the set is for.")
@pass_app
def add(app: AppContext, name: str, cutoffs: tuple[str, ...], description: str | None) -> None:
    """Register the cutoff set NAME (letters, digits, '.', '_', '-'; 'default' is reserved).

    Adding a name again with the same cutoffs changes nothing; with other cutoffs it is
    refused: register the new set under another name.
    """
    from glassbench.stored.analyses import add_analysis

    click.echo(add_analysis(app.engine, name, cutoffs, description=description).describe())


@cli.command("list")
@FORMAT_OPTION
@pass_app
def list_(app: AppContext, fmt: str) -> None:
    """List the analyses: cutoffs, and how many frames (of how many runs) each covers."""
    from glassbench.stored.analyses import list_analyses

    analyses = list_analyses(app.engine)
    if fmt == "json":
        out = [
            {
                "id": a.id,
                "name": a.name,
                "cutoffs": a.cutoffs,
                "frames": a.n_frames,
                "runs": a.n_runs,
                "description": a.description,
            }
            for a in analyses
        ]
        click.echo(json.dumps(out, indent=1))
        return
    columns = ["id", "name", "cutoffs", "frames", "runs", "description"]
    rows = [
        [a.id, a.name, a.cutoff_text(), a.n_frames, a.n_runs, a.description or ""] for a in analyses
    ]
    click.echo(format_rows(columns, rows, fmt))


@cli.command("compare")
@click.argument("quantity", default="na_cn", required=False, metavar="[QUANTITY]")
@selector_options()
@FORMAT_OPTION
@pass_app
def compare(app: AppContext, /, quantity: str, fmt: str, **kwargs: Any) -> None:
    """QUANTITY (default na_cn) of the selected runs under each analysis: per MLIP, x and
    quench rate the mean over runs (n runs), one column per analysis, headed by the cutoffs
    in which the analyses differ. Window means where a run has them, else final-frame values.

    QUANTITY: a windowed column of run_summary_by_analysis (p0 ... over_o, na_cn, na_cn_s,
    na_cn_o, ss_fraction, ss_mean_length).
    """
    from glassbench.stored.analyses import compare_analyses

    dry_run = kwargs.pop("dry_run")
    selector = selector_from(kwargs)
    if dry_run:
        from glassbench.service.selection import select_runs

        runs = select_runs(app.engine, selector)
        click.echo(listing(runs, selector))
        return
    result = compare_analyses(app.engine, quantity, selector)
    if not result.rows:
        click.echo(no_runs_message(selector))
        return
    if fmt == "table":
        click.echo(f"{quantity}: mean over runs (n) per analysis")
        click.echo(format_rows(result.columns(), result.table_rows(), "table"))
    else:
        click.echo(format_rows(result.split_columns(), result.table_rows(split_n=True), fmt))
