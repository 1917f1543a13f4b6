"""``glassbench ingest experiment CSV``."""

from __future__ import annotations

from pathlib import Path

import click

from glassbench.cli import AppContext, pass_app
from glassbench.errors import BadInput


@click.command("experiment")
@click.argument("csv_path", metavar="CSV", type=click.Path(path_type=Path))
@click.option(
    "--replace",
    is_flag=True,
    help="Update stored values that the file gives differently (default: refuse the file).",
)
@pass_app
def cli(app: AppContext, csv_path: Path, replace: bool) -> None:
    """Ingest experimental reference values (columns x,property,value,uncertainty,source).

    Rows already stored as they are count as unchanged; a row whose value or uncertainty
    differs from the stored one refuses the whole file unless --replace.
    """
    from glassbench.ingest.experiment import ExperimentConflict, ingest_experiment

    try:
        result = ingest_experiment(app.engine, csv_path, replace=replace)
    except ExperimentConflict as exc:
        raise BadInput(
            f"{exc.summary}; use --replace", source=exc.source, where=exc.where, field=exc.field
        ) from None
    click.echo(result.describe())
