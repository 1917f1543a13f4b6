"""``glassbench ingest experiment CSV``."""

from __future__ import annotations

from pathlib import Path

import click

from glassbench.cli import AppContext, pass_app


@click.command("experiment")
@click.argument("csv_path", metavar="CSV", type=click.Path(path_type=Path))
@pass_app
def cli(app: AppContext, csv_path: Path) -> None:
    """Ingest experimental reference values (columns x,property,value,uncertainty,source)."""
    from glassbench.ingest.usecases import ingest_experiment

    click.echo(ingest_experiment(app.engine, csv_path).describe())
