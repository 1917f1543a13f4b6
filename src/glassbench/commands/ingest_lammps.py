"""``glassbench ingest lammps --log LOG [--dump DUMP] --mlip NAME --x X ...``."""

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


@click.command("lammps")
@click.option(
    "--log", "log_path", required=True, type=click.Path(path_type=Path), help="LAMMPS log file."
)
@click.option(
    "--dump",
    "dump_path",
    default=None,
    type=click.Path(path_type=Path),
    help="LAMMPS text dump whose frames are stored and analysed.",
)
@RUN_KEY_OPTIONS
@click.option(
    "--type-map",
    default="Na,P,S,O",
    show_default=True,
    help="Elements of LAMMPS atom types 1, 2, ... (dumps without an element column).",
)
@stage_option(FRAME_STAGES)
@click.option(
    "--units",
    type=click.Choice(["metal", "real"]),
    default=None,
    help="Override the log's `units` command (for logs written with `echo none`).",
)
@INGEST_ANALYSIS_OPTIONS
@pass_app
def cli(
    app: AppContext,
    log_path: Path,
    dump_path: Path | None,
    mlip: str,
    x: float,
    quench_rate: float,
    seed: int,
    type_map: str,
    stage: str | None,
    units: str | None,
    cutoffs: tuple[str, ...],
    replace: bool,
) -> None:
    """Ingest a LAMMPS run: thermo from every block of the log, frames from the dump.

    Re-ingesting the same files for the same key does nothing; other files for an existing
    key are refused unless --replace. Everything is one transaction.
    """
    from glassbench.ingest.slots import RunKey
    from glassbench.ingest.usecases import ingest_lammps

    with replace_option():
        result = ingest_lammps(
            app.engine,
            RunKey(mlip, x, quench_rate, seed),
            log_path,
            dump_path,
            type_map=type_map,
            stage=stage,
            units=units,
            cutoffs=cutoffs,
            replace=replace,
        )
    click.echo(result.describe())
