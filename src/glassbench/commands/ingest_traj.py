"""``glassbench ingest traj FILE --mlip NAME --x X --quench-rate Q --seed S [--stage STAGE]``."""

from __future__ import annotations

from pathlib import Path

import click

from glassbench.cli import AppContext, pass_app
from glassbench.commands._common import (
    INGEST_ANALYSIS_OPTIONS,
    RUN_KEY_OPTIONS,
    replace_option,
    stage_option,
)
from glassbench.schema.models import FRAME_STAGES


@click.command("traj")
@click.argument("path", metavar="FILE", type=click.Path(path_type=Path))
@RUN_KEY_OPTIONS
@stage_option(FRAME_STAGES)
@INGEST_ANALYSIS_OPTIONS
@pass_app
def cli(
    app: AppContext,
    path: Path,
    mlip: str,
    x: float,
    quench_rate: float,
    seed: int,
    stage: str | None,
    cutoffs: tuple[str, ...],
    replace: bool,
) -> None:
    """Ingest an ASE trajectory (extxyz or .traj): frames, analyses and per-frame thermo.

    Energy and stress come from the frames' calculator results, temperature and kinetic energy
    from the momenta, volume and density from the cell. Re-ingesting the same file for the same
    key does nothing; another file for an existing key is refused unless --replace.
    """
    from glassbench.ingest.slots import RunKey
    from glassbench.ingest.usecases import ingest_traj

    with replace_option():
        result = ingest_traj(
            app.engine,
            RunKey(mlip, x, quench_rate, seed),
            path,
            stage=stage,
            cutoffs=cutoffs,
            replace=replace,
        )
    click.echo(result.describe())
