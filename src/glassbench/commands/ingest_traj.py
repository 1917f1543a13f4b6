"""``glassbench ingest traj FILE --mlip NAME --x X --quench-rate Q --seed S [--stage STAGE]``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from glassbench.cli import AppContext, pass_app
from glassbench.commands._common import (
    INGEST_ANALYSIS_OPTIONS,
    RUN_KEY_OPTIONS,
    require_schema,
    stage_option,
)
from glassbench.schema.models import FRAME_STAGES

if TYPE_CHECKING:
    from sqlmodel import Session

    from glassbench.ingest.pipeline import FrameData, WriteSummary


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
    import ase

    from glassbench import __version__
    from glassbench.analysis import parse_cutoffs
    from glassbench.errors import BadInput
    from glassbench.ingest.pipeline import (
        RunKey,
        ThermoWriter,
        WriteSummary,
        content_hash_of,
        describe_result,
        ingest_run,
        progress_bar,
        store_frames,
        validate_key,
    )
    from glassbench.ingest.traj import AseTrajectory, check_input

    validate_key(x=x, quench_rate_k_ps=quench_rate, seed=seed)
    try:
        cutoff_table = parse_cutoffs(cutoffs)
    except ValueError as exc:
        raise BadInput(str(exc), source="--cutoff") from None
    fmt = check_input(path)
    digest = content_hash_of([path], {"stage": stage, "cutoffs": cutoff_table})
    engine = app.engine
    require_schema(engine)
    key = RunKey(mlip, x, quench_rate, seed, {"source": "traj"})

    if fmt == "traj":
        total, unit = None, "frame"
    else:
        total, unit = path.stat().st_size, "B"
    with progress_bar(total, unit=unit, desc="ingest") as update:
        reader = AseTrajectory(path, fmt, progress=update)

        def body(session: Session, run_id: int) -> WriteSummary:
            thermo = ThermoWriter(session, run_id)

            # Thermo rows ride along with the frames: one pass over the file.
            def frames() -> Iterator[FrameData]:
                for tf in reader.frames():
                    thermo.add(tf.thermo)
                    yield tf.frame

            summary = store_frames(
                session,
                run_id,
                frames(),
                x=x,
                default_stage=stage or "other",
                cutoffs=cutoff_table,
            )
            thermo.close()
            return WriteSummary(
                n_thermo=thermo.n_rows, n_frames=summary.n_frames, n_atoms=summary.n_atoms
            )

        result = ingest_run(
            engine,
            key,
            source=fmt,
            content_hash=digest,
            replace=replace,
            body=body,
            data_source=str(path),
            software={"glassbench": __version__, "ase": ase.__version__, "format": fmt},
        )
    click.echo(describe_result([path], key, result))
