"""``glassbench mlip``: the registry of potentials."""

from __future__ import annotations

import json
from pathlib import Path

import click

from glassbench.cli import AppContext, pass_app
from glassbench.commands._common import FORMAT_OPTION, format_rows, require_schema
from glassbench.errors import BadInput

ARCH_CHOICES = ("mace", "deepmd", "grace", "chgnet", "sevenn")
# Architectures whose weights ship inside their wheel: --model names a pretrained model.
PRETRAINED = {"chgnet": ("0.3.0", ("0.3.0", "r2scan")), "sevenn": ("7net-0", None)}


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
@click.option("--dispersion", type=click.Choice(["none", "d3"]), default="none", show_default=True)
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
    from glassbench.hashing import sha256_file
    from glassbench.service import unit_of_work
    from glassbench.service.repos import NotFound, add_mlip, get_mlip

    if not name.strip() or len(name) > 128:
        raise BadInput("name must be 1-128 characters", source="NAME")
    model_sha = None
    if arch in PRETRAINED:
        default, allowed = PRETRAINED[arch]
        model = model or default
        if allowed and model not in allowed:
            raise BadInput(
                f"{arch} pretrained model must be one of {allowed}, not {model!r}", source="--model"
            )
    else:
        if model is None:
            raise BadInput(f"--arch {arch} needs --model PATH (the model file)", source="--model")
        path = Path(model)
        if not path.exists():
            raise BadInput("model file does not exist", source=model, where="--model")
        model = str(path.resolve())
        model_sha = sha256_file(path)
    if python is not None:
        py = Path(python)
        if not py.exists():
            raise BadInput("interpreter does not exist", source=python, where="--python")
        python = str(py.absolute())
    engine = app.engine
    require_schema(engine)
    with unit_of_work(engine) as session:
        parent_id = None
        if parent is not None:
            try:
                parent_id = get_mlip(session, parent).id
            except NotFound as exc:
                raise BadInput(str(exc), source="--parent") from None
        values = {
            "name": name,
            "arch": arch,
            "model_path": model,
            "model_sha256": model_sha,
            "python": python,
            "training_data": training_data,
            "functional": functional,
            "dispersion": dispersion,
            "parent_id": parent_id,
        }
        try:
            mid = add_mlip(session, values, replace=replace)
        except ValueError as exc:
            raise BadInput(str(exc), source="NAME") from None
    sha = f", sha256 {model_sha[:12]}..." if model_sha else ""
    click.echo(f"registered MLIP {name!r} (id {mid}, {arch}, {model}{sha})")


@cli.command("list")
@FORMAT_OPTION
@pass_app
def list_(app: AppContext, fmt: str) -> None:
    """List registered MLIPs."""
    from sqlmodel import Session, select

    from glassbench.schema import MLIP

    engine = app.engine
    require_schema(engine)
    with Session(engine) as session:
        rows = session.exec(select(MLIP).order_by(MLIP.name)).all()
        names = {m.id: m.name for m in rows}
        cols = ["name", "arch", "model", "sha256", "python", "functional", "dispersion", "parent"]
        data = [
            (
                m.name,
                m.arch,
                m.model_path,
                (m.model_sha256 or "")[:12],
                m.python or "",
                m.functional or "",
                m.dispersion,
                names.get(m.parent_id, "") if m.parent_id else "",
            )
            for m in rows
        ]
    if fmt == "json":
        click.echo(json.dumps([dict(zip(cols, r, strict=True)) for r in data], indent=1))
    else:
        click.echo(format_rows(cols, data, fmt))
