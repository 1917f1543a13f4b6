"""``glassbench reanalyze --analysis NAME [selector]``: stored frames under another cutoff set.

The use case is :func:`glassbench.stored.analyses.reanalyze` (docs/stored-data.md).
"""

from __future__ import annotations

from typing import Any

import click

from glassbench.cli import AppContext, pass_app
from glassbench.commands._selector import (
    format_runs,
    no_runs_message,
    selector_from,
    selector_options,
)


@click.command("reanalyze")
@click.option(
    "--analysis",
    required=True,
    metavar="NAME",
    help="The cutoff set (`glassbench analysis add`), not 'default'.",
)
@selector_options()
@click.option("--force", is_flag=True, help="Also redo runs already analysed under NAME.")
@pass_app
def cli(app: AppContext, /, analysis: str, force: bool, **kwargs: Any) -> None:
    """Recompute speciation and coordination of the selected runs' stored frames under the
    cutoff set NAME, beside the default analysis (never over it), and the production-window
    statistics where a run has them. One transaction per run; runs already done are skipped.
    """
    from glassbench.stored.analyses import reanalyze

    dry_run = kwargs.pop("dry_run")
    selector = selector_from(kwargs)
    report = reanalyze(app.engine, analysis, selector, force=force, dry_run=dry_run)
    if not report.runs:
        click.echo(no_runs_message(selector))
        return
    if dry_run:
        click.echo(format_runs([r.run for r in report.runs]))
    click.echo(report.describe())
