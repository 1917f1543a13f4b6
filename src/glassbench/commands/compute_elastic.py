"""``glassbench compute elastic``: elastic moduli of stored runs (``glassbench.stored.elastic``)."""

from __future__ import annotations

from typing import Any

import click

from glassbench.cli import AppContext, pass_app
from glassbench.commands._selector import (
    listing,
    selector_from,
    selector_options,
)


def _to_stderr(message: str) -> None:
    click.echo(message, err=True)


@click.command("elastic")
@click.option("--mlip", required=True, metavar="NAME", help="Registered MLIP that computes.")
@selector_options(mlip_flag="--run-mlip")
@click.option(
    "--frames",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="1: the final frame; N: the mean over N frames of the production window.",
)
@click.option(
    "--strain",
    type=click.FloatRange(0, 0.1, min_open=True, max_open=True),
    default=0.005,
    show_default=True,
    help="Strain of each of the 6 Voigt deformations (+ and -).",
)
@click.option(
    "--fmax",
    type=click.FloatRange(0, min_open=True),
    default=0.01,
    show_default=True,
    help="Relaxation force tolerance, eV/A.",
)
@click.option(
    "--max-steps",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="Steps per relaxation.",
)
@click.option(
    "--pressure",
    type=float,
    default=None,
    metavar="GPA",
    help="Pressure of the cell relaxation  [default: the last stage's of a melt-quench "
    "protocol, else 0]",
)
@click.option(
    "--relax-cell/--no-relax-cell",
    default=True,
    show_default=True,
    help="Relax the cell at the pressure before straining.",
)
@click.option(
    "--temperature",
    type=click.FloatRange(0, 5000, min_open=True, max_open=True),
    default=None,
    metavar="K",
    help="Average the stress over NVT MD at this temperature  [default: static]",
)
@click.option("--force", is_flag=True, help="Recompute runs that already have moduli.")
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="Threads  [default: settings]"
)
@pass_app
def elastic(
    app: AppContext,
    /,
    mlip: str,
    frames: int,
    strain: float,
    fmax: float,
    max_steps: int,
    pressure: float | None,
    relax_cell: bool,
    temperature: float | None,
    force: bool,
    threads: int | None,
    dry_run: bool,
    **kwargs: Any,
) -> None:
    """Elastic moduli (bulk, shear, Young's, Poisson) of stored runs with MLIP --mlip.

    The runner's method (cell relaxed at the pressure, 6 strains, ions relaxed, Voigt-Reuss-
    Hill), stored as the run's properties, the method naming the MLIP and the frames. Without
    --run-mlip the runs are those made by --mlip. Runs that have moduli are skipped unless
    --force. See docs/stored-data.md.
    """
    from glassbench.stored.elastic import compute_elastic, select_elastic_runs

    selector = selector_from(kwargs)
    if dry_run:
        chosen, runs = select_elastic_runs(app.engine, mlip, selector)
        click.echo(listing(runs, chosen))
        return
    report = compute_elastic(
        app.engine,
        mlip,
        selector,
        frames=frames,
        strain=strain,
        fmax=fmax,
        max_steps=max_steps,
        relax_cell=relax_cell,
        pressure_gpa=pressure,
        temperature_k=temperature,
        force=force,
        threads=app.settings.threads if threads is None else threads,
        notify=_to_stderr,
    )
    click.echo(report.describe())
    if report.failed:
        raise click.exceptions.Exit(1)
