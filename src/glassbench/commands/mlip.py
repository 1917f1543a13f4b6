"""``glassbench mlip``: the registry of potentials."""

from __future__ import annotations

import json
from pathlib import Path

import click

from glassbench.cli import AppContext, pass_app
from glassbench.commands._common import FORMAT_OPTION, format_rows
from glassbench.errors import BadInput
from glassbench.runners.registry import ARCH_CHOICES, PRETRAINED
from glassbench.schema.models import DISPERSION


@click.group("mlip")
def cli() -> None:
    """Register and list MLIPs."""


@cli.command("add")
@click.argument("name")
@click.option("--arch", type=click.Choice(ARCH_CHOICES), required=True)
@click.option(
    "--model", "model", default=None, help="Model file (mace/deepmd/grace) or pretrained name."
)
@click.option(
    "--python", "python", default=None, help="Interpreter of the environment that runs it."
)
@click.option("--training-data", default=None)
@click.option("--functional", default=None)
@click.option("--dispersion", type=click.Choice(DISPERSION), default="none", show_default=True)
@click.option("--parent", default=None, help="Registered MLIP this one was fine-tuned from.")
@click.option("--replace", is_flag=True, help="Overwrite an existing registration of NAME.")
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
    """Register MLIP NAME (the model file's sha256 is recorded)."""
    from glassbench.runners.registry import register_mlip

    _check_options(name, arch, model, python)
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


def _check_options(name: str, arch: str, model: str | None, python: str | None) -> None:
    """The checks of ``register_mlip``, in its order, worded with this command's options."""
    if not name.strip() or len(name) > 128:
        raise BadInput("name must be 1-128 characters", source="NAME")
    if arch in PRETRAINED:
        default, allowed = PRETRAINED[arch]
        if allowed and (model or default) not in allowed:
            raise BadInput(
                f"{arch} pretrained model must be one of {allowed}, not {model!r}", source="--model"
            )
    elif model is None:
        raise BadInput(f"--arch {arch} needs --model PATH (the model file)", source="--model")
    elif not Path(model).exists():
        raise BadInput("model file does not exist", source=model, where="--model")
    if python is not None and not Path(python).exists():
        raise BadInput("interpreter does not exist", source=python, where="--python")


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
