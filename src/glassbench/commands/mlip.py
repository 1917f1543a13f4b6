"""``glassbench mlip``: the registry of potentials."""

from __future__ import annotations

import json

import click

from glassbench.cli import AppContext, pass_app
from glassbench.commands._common import FORMAT_OPTION, format_rows
from glassbench.runners.registry import ARCH_CHOICES
from glassbench.schema.models import DISPERSION


@click.group("mlip")
def cli() -> None:
    """Register and list MLIPs."""


@cli.command("add")
@click.argument("name")
@click.option("--arch", type=click.Choice(ARCH_CHOICES), required=True)
@click.option(
    "--model",
    "model",
    default=None,
    help="Model file (mace, deepmd), saved-model directory (grace) or pretrained name.",
)
@click.option(
    "--python",
    "python",
    default=None,
    help="Interpreter of the environment that runs it (must import glassbench).",
)
@click.option("--training-data", default=None)
@click.option("--functional", default=None)
@click.option("--dispersion", type=click.Choice(DISPERSION), default="none", show_default=True)
@click.option("--parent", default=None, help="Registered MLIP this one was fine-tuned from.")
@click.option(
    "--replace",
    is_flag=True,
    help="Change an existing registration of NAME (not its model once it has results).",
)
@pass_app
def add(
    app: AppContext,
    name: str,
    arch: str,
    model: str | None,
    python: str | None,
    training_data: str | None,
    functional: str | None,
    dispersion: str,
    parent: str | None,
    replace: bool,
) -> None:
    """Register MLIP NAME (the model file's sha256 is recorded).

    Registering the same values again changes nothing. Other values need --replace; the model,
    architecture or dispersion of an MLIP that has results never change (register a new name).
    """
    from glassbench.runners.registry import register_mlip

    # Every option is checked before the database is touched; errors name the fields, which
    # cli.FLAG_OF_FIELD turns into these options' flags.
    registration = register_mlip(
        app.engine,
        name,
        arch,
        model=model,
        python=python,
        training_data=training_data,
        functional=functional,
        dispersion=dispersion,
        parent=parent,
        replace=replace,
    )
    click.echo(registration.describe())


@cli.command("list")
@FORMAT_OPTION
@pass_app
def list_(app: AppContext, fmt: str) -> None:
    """List registered MLIPs."""
    from glassbench.runners.registry import LIST_COLUMNS, list_mlips

    rows = list_mlips(app.engine)
    if fmt == "json":
        click.echo(json.dumps([dict(zip(LIST_COLUMNS, r, strict=True)) for r in rows], indent=1))
    else:
        click.echo(format_rows(LIST_COLUMNS, rows, fmt))
