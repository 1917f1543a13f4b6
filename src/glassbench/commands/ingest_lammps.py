"""``glassbench ingest lammps --log LOG [--dump DUMP] --mlip NAME --x X ...``."""

from __future__ import annotations

from pathlib import Path

import click

from glassbench.analysis.files import DEFAULT_TYPE_MAP
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
    default=",".join(DEFAULT_TYPE_MAP),
    show_default=True,
    help="Elements of LAMMPS atom types 1, 2, ... (dumps without an element column); "
    "`glassbench analyze` uses the same default.",
)
@stage_option(FRAME_STAGES)
@click.option(
    "--units",
    type=click.Choice(["metal", "real"]),
    default=None,
    help="Unit style of a log written with `echo none`; a log that states other units "
    "(`units metal`) is refused.",
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
    from glassbench.ingest.lammps_dump import types_named
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
    if dump_path is not None and result.action != "unchanged" and types_named(dump_path):
        symbols = [t.strip() for t in type_map.split(",")]
        names = "  ".join(f"{k}={el}" for k, el in enumerate(symbols, 1))
        click.echo(f"LAMMPS types: {names} (--type-map)")
