"""``glassbench compute energy --mlip NAME [selector]``: cross-evaluation of stored frames.

The work is :func:`glassbench.stored.energy.compute_energy`; docs/stored-data.md describes it.
"""

from __future__ import annotations

from typing import Any

import click

from glassbench.cli import AppContext, pass_app
from glassbench.commands._selector import (
    listing,
    no_runs_message,
    selector_from,
    selector_options,
)
from glassbench.schema.models import FRAME_STAGES


@click.command("energy")
@click.option("--mlip", required=True, metavar="NAME", help="The MLIP that evaluates the frames.")
@selector_options(mlip_flag="--run-mlip")
@click.option(
    "--stage",
    "stages",
    multiple=True,
    type=click.Choice([s for s in FRAME_STAGES if s != "strain"]),
    help="Only frames of this stage (repeatable; default: every stage but strain).",
)
@click.option(
    "--every",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="Every N-th frame of each run in step order (the last frame always).",
)
@click.option("--force", is_flag=True, help="Evaluate again frames the MLIP has evaluated.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads.")
@pass_app
def energy(
    app: AppContext,
    /,
    mlip: str,
    stages: tuple[str, ...],
    every: int,
    force: bool,
    threads: int | None,
    dry_run: bool,
    **kwargs: Any,
) -> None:
    """Evaluate the stored frames of the selected runs with --mlip (energy, forces, stress)
    and store how far they are from those of the MLIP that made each frame.

    Without --run-mlip every selected run is evaluated, whichever MLIP made it. Frames already
    evaluated by --mlip are skipped unless --force. Results: the cross_eval view.
    """
    selector = selector_from(kwargs)
    if dry_run:
        from glassbench.service.selection import select_runs

        runs = select_runs(app.engine, selector, mlip_field="run_mlip")
        click.echo(listing(runs, selector))
        return
    from glassbench.stored.energy import compute_energy

    report = compute_energy(
        app.engine,
        mlip,
        selector,
        stages=stages or None,
        every=every,
        force=force,
        threads=threads if threads is not None else app.settings.threads,
        notify=lambda message: click.echo(message, err=True),
    )
    click.echo(report.describe() if report.runs else no_runs_message(selector))
