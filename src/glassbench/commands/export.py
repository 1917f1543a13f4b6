"""``glassbench export``: stored frames or one whole run out to files (docs/stored-data.md).

The use cases are :func:`glassbench.stored.export.export_frames` and
:func:`~glassbench.stored.export.export_run`; this module maps options onto them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from glassbench.cli import AppContext, pass_app
from glassbench.commands._common import require_schema
from glassbench.commands._selector import (
    listing,
    selector_from,
    selector_options,
)
from glassbench.schema.models import DEFAULT_ANALYSIS, FRAME_STAGES

_OUT = click.Path(path_type=Path, dir_okay=True, file_okay=True)


@click.group()
def cli() -> None:
    """Write stored frames or runs to files, with each frame's run key and provenance."""


@cli.command("frames")
@selector_options()
@click.option(
    "--stage",
    "stages",
    multiple=True,
    type=click.Choice(FRAME_STAGES),
    help="Frames of this stage only (repeatable)  [default: all]",
)
@click.option(
    "--every",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="Every N-th frame (in step order per run, after --stage).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["extxyz", "lammps-data"]),
    default="extxyz",
    show_default=True,
    help="extxyz: OUT is one file; lammps-data: OUT is a folder of data files + index.csv.",
)
@click.option(
    "--where-unit",
    "where_unit",
    multiple=True,
    metavar="EXPR",
    help="Frames whose speciation count satisfies UNIT OP N, e.g. 'P2ES>0' "
    "(OP: > >= < <= = !=; repeatable, combined with AND).",
)
@click.option(
    "--analysis",
    default=DEFAULT_ANALYSIS,
    show_default=True,
    metavar="NAME",
    help="The analysis (cutoff set) whose counts --where-unit reads.",
)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.argument("out", type=_OUT)
@pass_app
def frames(app: AppContext, /, out: Path, **kwargs: Any) -> None:
    """Write stored frames of the selected runs to OUT (extxyz file or lammps-data folder).

    Each frame's info holds its run key and provenance (run_id, mlip, x, quench_rate_k_ps,
    seed, protocol, step, stage, ...); the making MLIP's energy and forces, where stored, as
    mlip_energy / mlip_forces.
    """
    from glassbench.service.selection import select_runs
    from glassbench.stored.export import export_frames

    selector = selector_from(kwargs)
    require_schema(app.engine)
    if kwargs.pop("dry_run"):
        runs = select_runs(app.engine, selector)
        click.echo(listing(runs, selector))
        return
    report = export_frames(
        app.engine,
        selector,
        out,
        stages=tuple(kwargs["stages"]) or None,
        every=kwargs["every"],
        fmt=kwargs["fmt"],
        where_unit=tuple(kwargs["where_unit"]),
        analysis=kwargs["analysis"],
        overwrite=kwargs["overwrite"],
    )
    click.echo(report.describe())


@cli.command("run")
@click.argument("key")
@click.argument("out_dir", type=_OUT)
@click.option(
    "--protocol",
    default=None,
    metavar="NAME",
    help="The run's protocol, where KEY names runs of several protocols.",
)
@click.option("--overwrite", is_flag=True, help="Replace OUT_DIR if it exists and is not empty.")
@pass_app
def run(app: AppContext, key: str, out_dir: Path, protocol: str | None, overwrite: bool) -> None:
    """Write one run into OUT_DIR: frames.extxyz, thermo.csv and run.json (protocol, MLIP,
    properties, window statistics, software).

    KEY is a run id (42) or MLIP/x/quench_rate/seed (MP0/1/5/1).
    """
    from glassbench.stored.export import export_run

    require_schema(app.engine)
    report = export_run(app.engine, key, out_dir, protocol=protocol, overwrite=overwrite)
    click.echo(report.describe())
